"""The main job end to end on tiny configs: train, sweep, stages and figures, then a no-op rerun."""

import os
import subprocess
import sys

import numpy as np

from jaxdev import llc
from jaxdev import rundir
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
  # The estimate comes before any work: training 60 steps, then the sweep of every checkpoint.
  lines = proc.stdout.splitlines()
  assert lines[0].startswith("estimate (train): ") and "(60 steps at" in lines[0]
  assert lines[1].startswith("estimate (sweep): ") and f"({num} checkpoints in" in lines[1]
  assert lines[2].startswith("training ")
  assert "stages (from the LLC curve)" in proc.stdout
  for name in ("llc.png", "ed_pcs.png"):
    assert os.path.getsize(os.path.join(workdir, "figures", name)) > 10_000
  assert os.path.exists(os.path.join(workdir, "stages.json"))

  again = subprocess.run(command, capture_output=True, text=True)
  assert again.returncode == 0
  assert f"0 checkpoints estimated, {num} already done" in again.stdout
  assert "estimate (" not in again.stdout  # nothing left to do, nothing to estimate


def test_one_command_runs_every_seed(tmp_path):
  workdir = str(tmp_path / "seeds")
  command = [sys.executable, os.path.join(REPO, "scripts", "llc_sweep.py"), "--workdir", workdir,
             "--seeds", "0,1", "--noanalyze", "--estimate_only",
             "--config", os.path.join(REPO, "configs", "llc.py:tiny"),
             "--train_config", os.path.join(REPO, "configs", "regression.py:tiny")]
  proc = subprocess.run(command, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  num = len(train.checkpoint_steps(60, 6, 4))
  assert "(120 steps at" in proc.stdout and f"({2 * num} checkpoints in" in proc.stdout
  assert not os.path.exists(workdir)  # --estimate_only writes nothing

  proc = subprocess.run([c for c in command if c != "--estimate_only"] + ["--noestimate"],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  configs = [llc.load_run_config(os.path.join(workdir, f"seed{s}")) for s in (0, 1)]
  assert [c.seed for c in configs] == [0, 1]
  first, second = (llc.load_results(os.path.join(workdir, f"seed{s}", "llc", "default"))
                   for s in (0, 1))
  assert first["step"].tolist() == second["step"].tolist() == train.checkpoint_steps(60, 6, 4).tolist()
  assert not np.allclose(first["llc_mean"], second["llc_mean"])  # different runs


def test_main_job_on_a_tiny_language_run(tmp_path, text_data_dir):
  workdir = str(tmp_path / "lm")
  command = [sys.executable, os.path.join(REPO, "scripts", "llc_sweep.py"), "--workdir", workdir,
             "--config", os.path.join(REPO, "configs", "llc.py:language_tiny"),
             "--train_config", os.path.join(REPO, "configs", "language.py:tiny"),
             f"--train_config.data.data_dir={text_data_dir}"]
  proc = subprocess.run(command, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith("estimate (train): ")
  steps = train.checkpoint_steps(40, 4, 4).tolist()
  results = llc.load_results(os.path.join(workdir, "llc", "default"))
  assert results["step"].tolist() == steps
  assert np.all(np.isfinite(results["llc_mean"]))
  # L_n(w*) on the training rows tracks the test loss of the same checkpoint; untrained, both sit
  # a little above ln(vocab) (random logits of std ≈ 0.8).
  evals = [r for r in rundir.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "eval"]
  np.testing.assert_allclose(results["init_loss"], [r["loss"] for r in evals], atol=0.1)
  assert np.log(512) < results["init_loss"][0] < np.log(512) + 0.5
  assert "stages (from the LLC curve)" in proc.stdout
  outputs = np.load(os.path.join(workdir, "ed_outputs", "outputs.npy"))
  assert outputs.shape == (11, 16)  # probes at 0, 4, ..., 40; one true-next-token logit per row
  for name in ("llc.png", "ed_pcs.png"):
    assert os.path.getsize(os.path.join(workdir, "figures", name)) > 10_000
