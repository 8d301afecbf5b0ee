"""The main job end to end on tiny configs: train, sweep, stages and figures, then a no-op rerun."""

import os
import subprocess
import sys

import numpy as np

from jaxdev import llc
from jaxdev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_main_job_on_tiny_configs(tmp_path):
  workdir = str(tmp_path / "tiny")
  command = [sys.executable, os.path.join(REPO, "scripts", "llc_sweep.py"), "--workdir", workdir,
             "--config", os.path.join(REPO, "configs", "llc.py:tiny"),
             "--train_config", os.path.join(REPO, "configs", "regression.py:tiny")]
  proc = subprocess.run(command, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert train.is_complete(workdir)
  results = llc.load_results(os.path.join(workdir, "llc", "default"))
  assert results["step"].tolist() == train.checkpoint_steps(60, 6, 4).tolist()
  assert np.all(np.isfinite(results["llc_mean"]))
  num = len(train.checkpoint_steps(60, 6, 4))
  assert f"LLC sweep 'default': {num} checkpoints estimated" in proc.stdout
  assert "stages (from the LLC curve)" in proc.stdout
  for name in ("llc.png", "ed_pcs.png"):
    assert os.path.getsize(os.path.join(workdir, "figures", name)) > 10_000
  assert os.path.exists(os.path.join(workdir, "stages.json"))

  again = subprocess.run(command, capture_output=True, text=True)
  assert again.returncode == 0
  assert f"0 checkpoints estimated, {num} already done" in again.stdout
