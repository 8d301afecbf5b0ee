"""The checkpoint sweep: agreement with single estimates, devices, resume, failures."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import regression as regression_configs
from jaxdev import distributed
from jaxdev import llc
from jaxdev import sgld
from jaxdev import tasks
from jaxdev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = [sys.executable, os.path.join(REPO, "scripts", "llc_sweep.py"), "--noestimate"]
SETTINGS = llc.SweepSettings(step_size=1e-3, gamma=10.0, nbeta=None, num_chains=4, num_draws=30,
                             batch_size=16, num_sampling_examples=256, sampling_seed=5, seed=3)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("runs") / "tiny")
  train.train(regression_configs.get_config("tiny"), workdir, show_progress=False)
  return workdir


def _copy_run(run, tmp_path, name="run"):
  dest = str(tmp_path / name)
  shutil.copytree(run, dest, ignore=shutil.ignore_patterns("llc"))
  return dest


def test_sweep_equals_single_estimates(tiny_run, tmp_path):
  run = _copy_run(tiny_run, tmp_path)
  steps = [0, 5, 60]
  result = llc.sweep(run, SETTINGS, steps=steps, checkpoints_per_batch=2, show_progress=False)
  assert result.steps_done == steps and not result.failed
  config = llc.load_run_config(run)
  task = tasks.make_task(config)
  data = task.sampling_data(SETTINGS.sampling_seed, SETTINGS.num_sampling_examples)
  abstract = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  from jaxdev import checkpoints
  with checkpoints.ParamsReader(os.path.join(run, "checkpoints"), abstract) as reader:
    for step in steps:
      single = sgld.estimate_llc(task.loss_fn, reader.read(step), data, jax.random.PRNGKey(SETTINGS.seed),
                                 step_size=SETTINGS.step_size, gamma=SETTINGS.gamma,
                                 num_chains=SETTINGS.num_chains, num_draws=SETTINGS.num_draws,
                                 batch_size=SETTINGS.batch_size)
      stored = np.load(llc.result_path(result.out_dir, step))
      np.testing.assert_allclose(stored["llc_per_chain"], single.llc_per_chain, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(stored["loss_trace"], single.loss_trace, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(stored["init_loss"], single.init_loss, rtol=1e-6)
  llcs = llc.load_results(result.out_dir)["llc_mean"]
  assert np.all(np.isfinite(llcs))


def test_eight_devices_equal_one(tiny_run, tmp_path):
  assert jax.device_count() == 8
  one = _copy_run(tiny_run, tmp_path, "one")
  eight = _copy_run(tiny_run, tmp_path, "eight")
  mesh_one = distributed.sweep_mesh(SETTINGS.num_chains, jax.devices()[:1])
  mesh_eight = distributed.sweep_mesh(SETTINGS.num_chains)
  assert dict(mesh_eight.shape) == {"ckpt": 2, "chain": 4}
  steps = [0, 1, 2, 5, 12, 60]
  llc.sweep(one, SETTINGS, steps=steps, mesh=mesh_one, checkpoints_per_batch=4, show_progress=False)
  llc.sweep(eight, SETTINGS, steps=steps, mesh=mesh_eight, checkpoints_per_batch=4, show_progress=False)
  a = llc.load_results(os.path.join(one, "llc", "default"))
  b = llc.load_results(os.path.join(eight, "llc", "default"))
  np.testing.assert_array_equal(a["step"], b["step"])
  np.testing.assert_allclose(a["llc_mean"], b["llc_mean"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(a["init_loss"], b["init_loss"], rtol=1e-6)


def test_changed_settings_are_refused_unless_renamed(tiny_run, tmp_path):
  run = _copy_run(tiny_run, tmp_path)
  llc.sweep(run, SETTINGS, steps=[0], show_progress=False)
  changed = dataclasses.replace(SETTINGS, step_size=2e-3)
  with pytest.raises(llc.SweepError, match="other SGLD settings.*step_size"):
    llc.sweep(run, changed, steps=[0], show_progress=False)
  result = llc.sweep(run, changed, steps=[0], name="eps2e-3", show_progress=False)
  assert result.steps_done == [0]


def test_corrupt_and_missing_checkpoints_are_reported(tiny_run, tmp_path):
  run = _copy_run(tiny_run, tmp_path)
  ckpt = os.path.join(run, "checkpoints", "5", "params")
  for root, _, files in os.walk(ckpt):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  result = llc.sweep(run, SETTINGS, steps=[0, 5, 7, 60], show_progress=False)
  assert sorted(result.failed) == [5, 7]
  assert "step 5" in result.failed[5]
  assert result.steps_done == [0, 60]
  failed = json.load(open(os.path.join(result.out_dir, "failed.json")))
  assert sorted(failed) == ["5", "7"]


def test_missing_run_gives_one_error_line(tmp_path):
  for workdir, message in [(tmp_path / "nope", "does not exist"), (tmp_path, "not a run directory")]:
    proc = subprocess.run(SWEEP + ["--workdir", str(workdir), "--notrain", "--config",
                                   os.path.join(REPO, "configs", "llc.py:tiny")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(regression_configs.get_config("tiny").to_json())
  proc = subprocess.run(SWEEP + ["--workdir", str(empty), "--notrain", "--config",
                                 os.path.join(REPO, "configs", "llc.py:tiny")],
                        capture_output=True, text=True)
  assert proc.returncode == 2 and "holds no checkpoints" in proc.stderr


def test_killed_sweep_resumes_to_the_identical_result(tiny_run, tmp_path):
  args = ["--config", os.path.join(REPO, "configs", "llc.py:tiny"), "--config.sgld.num_draws=400",
          "--config.sweep.checkpoints_per_batch=1", "--noanalyze", "--notrain"]
  straight = _copy_run(tiny_run, tmp_path, "straight")
  killed = _copy_run(tiny_run, tmp_path, "killed")
  subprocess.run(SWEEP + args + ["--workdir", straight], check=True, capture_output=True)
  out = os.path.join(killed, "llc", "default")
  proc = subprocess.Popen(SWEEP + args + ["--workdir", killed],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline:
    if os.path.isdir(out) and len([f for f in os.listdir(out) if f.startswith("step_")]) >= 3:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  partial = len([f for f in os.listdir(out) if f.startswith("step_")])
  assert 3 <= partial < 9
  subprocess.run(SWEEP + args + ["--workdir", killed], check=True, capture_output=True)
  names = sorted(f for f in os.listdir(os.path.join(straight, "llc", "default")) if f.startswith("step_"))
  assert names == sorted(f for f in os.listdir(out) if f.startswith("step_")) and len(names) == 9
  for name in names:
    a = np.load(os.path.join(straight, "llc", "default", name))
    b = np.load(os.path.join(out, name))
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key])
