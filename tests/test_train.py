"""Training: schedule, checkpoint steps, learning, exact resume after SIGKILL or a crash, bad input.

Input errors are checked in-process on the library calls the script makes (as ``jaxdev.cli``
reports them); ``test_train_command_errors_are_one_line`` runs the script itself.
"""

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

from configs import language as language_configs
from configs import regression as regression_configs
from conftest import _snapshot  # pylint: disable=import-error
from jaxdev import checkpoints
from jaxdev import job
from jaxdev import llc
from jaxdev import rundir
from jaxdev import tasks
from jaxdev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(REPO, "scripts", "train.py"), "--noestimate"]


def test_checkpoint_steps_of_the_paper_run():
  steps = train.checkpoint_steps(500_000, 100, 100)
  assert len(steps) == 190
  assert steps[0] == 0 and steps[-1] == 500_000
  assert np.all(np.diff(steps) > 0)
  assert {1, 2, 3, 5051, 10101, 494949}.issubset(set(steps.tolist()))


def test_one_cycle_schedule_start_peak_end():
  config = regression_configs.get_config("paper").optim
  schedule = train.learning_rate_schedule(config)
  np.testing.assert_allclose(schedule(0), 3e-3 / 249_999, rtol=1e-5)
  np.testing.assert_allclose(schedule(249_999), 3e-3, rtol=1e-6)
  np.testing.assert_allclose(schedule(125_000), 3e-3 / 249_999 + (3e-3 - 3e-3 / 249_999) * 125_000 / 249_999, rtol=1e-4)
  np.testing.assert_allclose(schedule(499_999), 3e-3 / 249_999 ** 2, rtol=1e-3)
  assert schedule(400_000) < schedule(300_000) < 3e-3


def test_tiny_training_beats_the_zero_predictor(tmp_path):
  config = regression_configs.get_config("tiny")
  config.optim.num_steps = 300
  config.data.num_tasks = 1  # one task: learnable in a few hundred steps by a tiny model
  result = train.train(config, str(tmp_path), show_progress=False)
  assert result.status == "finished"
  baselines = json.load(open(tmp_path / "baselines.json"))
  records = rundir.read_jsonl(str(tmp_path / "metrics.jsonl"))
  evals = [r for r in records if r["split"] == "eval"]
  assert evals[-1]["step"] == 300
  assert evals[-1]["loss"] < 0.5 * baselines["zero_predictor_loss"]
  assert evals[-1]["loss"] < evals[0]["loss"]
  steps = checkpoints.list_steps(str(tmp_path / "checkpoints"))
  assert steps == train.checkpoint_steps(300, 6, 4).tolist()
  progress = json.load(open(tmp_path / "ed_outputs" / "progress.json"))
  outputs = np.load(tmp_path / "ed_outputs" / "outputs.npy")
  assert progress["num_written"] == 61 and outputs.shape == (61, 8, 16, 5)
  # The probe at step 300 is the final model's output on the probe inputs.
  task = tasks.make_task(config)
  with checkpoints.ParamsReader(str(tmp_path / "checkpoints"),
                                jax.eval_shape(task.init, jax.random.PRNGKey(0))) as reader:
    final = reader.read(300)
  np.testing.assert_allclose(outputs[-1], np.asarray(task.probe(final)), rtol=1e-5, atol=1e-6)
  # A second call leaves the finished run alone.
  mtime = os.path.getmtime(tmp_path / "metrics.jsonl")
  assert train.train(config, str(tmp_path)).status == "already finished"
  assert os.path.getmtime(tmp_path / "metrics.jsonl") == mtime


def _run_files(workdir):
  metrics = open(os.path.join(workdir, "metrics.jsonl"), "rb").read()
  outputs = np.load(os.path.join(workdir, "ed_outputs", "outputs.npy"))
  config = llc.load_run_config(workdir)
  task = tasks.make_task(config)
  with checkpoints.ParamsReader(os.path.join(workdir, "checkpoints"),
                                jax.eval_shape(task.init, jax.random.PRNGKey(0))) as reader:
    params = {s: jax.device_get(reader.read(s)) for s in reader.steps()}
  return metrics, outputs, params


def _assert_same_run(a, b):
  """Two run directories hold bitwise the same metrics, ED probe and checkpoints."""
  a_metrics, a_outputs, a_params = _run_files(a)
  b_metrics, b_outputs, b_params = _run_files(b)
  assert a_metrics == b_metrics
  np.testing.assert_array_equal(a_outputs, b_outputs)
  assert sorted(a_params) == sorted(b_params)
  for step in a_params:
    jax.tree.map(np.testing.assert_array_equal, a_params[step], b_params[step])


def test_killed_run_resumes_to_the_identical_result(tmp_path):
  """A real SIGKILL of the script, at whatever moment it lands (mid-checkpoint, mid-line)."""
  config = regression_configs.get_config("tiny")
  config.optim.num_steps = 1500  # time to kill the run mid-way
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  train.train(config, straight, show_progress=False)

  proc = subprocess.Popen(TRAIN + ["--config", os.path.join(REPO, "configs", "regression.py:tiny"),
                                   "--config.optim.num_steps=1500", "--workdir", killed],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = os.path.join(killed, "metrics.jsonl")
  deadline = time.time() + 120
  while time.time() < deadline:
    records = rundir.read_jsonl(metrics)
    if records and records[-1]["step"] >= 600:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not train.is_complete(killed)
  resumed_from = checkpoints.list_steps(os.path.join(killed, "checkpoints"))[-1]
  assert 0 < resumed_from < 1500

  train.train(config, killed, show_progress=False)  # what the same command runs again
  _assert_same_run(straight, killed)


@pytest.mark.parametrize("task", ["regression", "language"])
def test_a_run_stopped_between_checkpoints_resumes_to_the_identical_result(
    tiny_run, tiny_language_run, text_data_dir, tmp_path, crash_at_checkpoint, task):
  """Stopped where a kill often lands: the metrics, evaluation and probe rows of the steps after
  the last saved checkpoint are written, the next checkpoint is not. Text rows come from the
  host by step: the resumed language run must read the same rows."""
  if task == "regression":
    config, straight = regression_configs.get_config("tiny"), tiny_run
  else:
    config, straight = language_configs.get_config("tiny"), tiny_language_run
    config.data.data_dir = text_data_dir
  steps = train.checkpoint_steps(config.optim.num_steps, config.checkpoint.num_log,
                                 config.checkpoint.num_linear).tolist()
  crash_step = steps[-2]  # with saved checkpoints and logged steps between it and the last
  killed = str(tmp_path / "killed")
  with pytest.raises(crash_at_checkpoint(crash_step)):
    train.train(config, killed, show_progress=False)
  assert not train.is_complete(killed)
  resumed_from = checkpoints.list_steps(os.path.join(killed, "checkpoints"))[-1]
  assert 0 < resumed_from < crash_step
  assert rundir.read_jsonl(os.path.join(killed, "metrics.jsonl"))[-1]["step"] == crash_step

  train.train(config, killed, show_progress=False)  # the crash point fires once
  _assert_same_run(straight, killed)


def test_train_command_errors_are_one_line(tmp_path):
  """The script itself: a config variant its config file refuses, and a config it validates,
  each one ``error:`` line and a non-zero exit, nothing written."""
  with pytest.raises(ValueError, match="unknown config variant"):  # what the flag parser reports
    regression_configs.get_config("nonsense")
  workdir = tmp_path / "run"
  for args, message, status in (
      (["--config", "configs/regression.py:nonsense"], "unknown config variant", 2),
      (["--config", "configs/regression.py:tiny", "--config.optim.num_steps=0"],
       "config.optim.num_steps must be positive", 2)):
    proc = subprocess.run(TRAIN + args + ["--workdir", str(workdir)], capture_output=True,
                          text=True, cwd=REPO)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == status and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not workdir.exists() or not os.listdir(workdir)


@pytest.mark.parametrize("field, value, message", [
    ("num_steps", 0, "num_steps must be positive"),
    ("peak_lr", -1e-3, "peak_lr must be positive"),
    ("batch_size", -4, "batch_size must be positive"),
    ("peak_lr", float("inf"), "peak_lr must be positive and finite, got inf"),
    ("weight_decay", float("nan"), "config.optim.weight_decay must be a number in [0, inf), got nan"),
    ("b1", float("nan"), "config.optim.b1 must be a number in [0, 1), got nan"),
    ("b2", 1.0, "config.optim.b2 must be a number in [0, 1), got 1.0"),
    ("num_steps", 10 ** 10, "makes 2,000,000,001 ED probes (at most 1,000,000): raise "
                            "config.ed.every"),
])
def test_bad_config_gives_one_line_and_writes_nothing(tmp_path, command_error, field, value,
                                                      message):
  config = regression_configs.get_config("tiny")
  config.optim[field] = value
  workdir = tmp_path / "run"
  line, _ = command_error(job.train_job, config, str(workdir), estimate=False)
  assert message in line
  assert not workdir.exists() or not os.listdir(workdir)


def test_workdir_with_another_config_or_unwritable_is_refused(tmp_path, command_error):
  config = regression_configs.get_config("tiny")
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"seed": 123}))
  line, _ = command_error(job.train_job, config, str(workdir), estimate=False)
  assert "different config" in line
  assert sorted(os.listdir(workdir)) == ["config.json"]
  # Checkpoints whose config was removed: not trained on with whatever config is given.
  os.remove(workdir / "config.json")
  (workdir / "checkpoints" / "40").mkdir(parents=True)
  line, _ = command_error(job.train_job, config, str(workdir), estimate=False)
  assert "holds checkpoints but no config.json: restore it" in line
  assert sorted(os.listdir(workdir)) == ["checkpoints"]

  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  line, _ = command_error(job.train_job, config, str(blocker / "run"), estimate=False)
  assert "cannot create workdir" in line


def test_a_damaged_latest_checkpoint_is_skipped_and_rewritten(tiny_run, run_copy, capsys):
  workdir = run_copy(tiny_run)
  os.unlink(os.path.join(workdir, "done"))
  steps = checkpoints.list_steps(os.path.join(workdir, "checkpoints"))
  latest, previous = steps[-1], steps[-2]
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(latest), "params")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  result = train.train(regression_configs.get_config("tiny"), workdir, show_progress=False)
  out = capsys.readouterr().out
  assert result.status == "finished"
  assert f"checkpoint at step {latest} could not be read, resuming from step {previous}" in out
  assert os.path.isdir(os.path.join(workdir, "damaged-checkpoints", str(latest)))  # kept aside
  a_metrics, a_outputs, a_params = _run_files(tiny_run)
  b_metrics, b_outputs, b_params = _run_files(workdir)
  assert a_metrics == b_metrics
  np.testing.assert_array_equal(a_outputs, b_outputs)
  assert sorted(a_params) == sorted(b_params)
  jax.tree.map(np.testing.assert_array_equal, a_params[latest], b_params[latest])


@pytest.mark.parametrize("damage, message", [
    (lambda w: open(os.path.join(w, "config.json"), "w").write("{not json"),
     "config.json is damaged"),
    (lambda w: open(os.path.join(w, "ed_outputs", "outputs.npy"), "r+b").truncate(200),
     "outputs.npy is damaged"),
], ids=["config", "ed-probe"])
def test_a_damaged_run_file_is_one_line_naming_it(tiny_run, run_copy, command_error, damage,
                                                  message):
  workdir = run_copy(tiny_run)
  os.unlink(os.path.join(workdir, "done"))  # an unfinished run: resuming reads every file
  damage(workdir)
  before = _snapshot(workdir)
  line, _ = command_error(job.train_job, regression_configs.get_config("tiny"), workdir,
                          estimate=False)
  assert message in line and workdir in line
  assert _snapshot(workdir) == before


def test_damaged_metrics_lines_are_set_aside_not_deleted(tiny_run, run_copy, capsys):
  """A damaged line, a line with a string loss and a NUL-filled tail of metrics.jsonl: resuming
  training moves the three to metrics.jsonl.damaged byte for byte, says how many, and finishes;
  every other line is kept."""
  workdir = run_copy(tiny_run)
  os.unlink(os.path.join(workdir, "done"))
  path = os.path.join(workdir, "metrics.jsonl")
  original = open(path, "rb").read().splitlines(keepends=True)
  _rewrite_line(path, 3, b"{\"step\": 2, garbage\n")
  _rewrite_line(path, 5, b"{\"step\": 4, \"split\": \"train\", \"loss\": \"low\"}\n")  # a string loss
  _append(path, b"\0" * 64 + b"\n")
  run = rundir.RunDir(workdir)
  with pytest.raises(rundir.RunDirError, match="line 3 is damaged.*deleting nothing"):
    run.metrics()
  result = train.train(regression_configs.get_config("tiny"), workdir, show_progress=False)
  assert result.status == "finished"
  assert "3 damaged line(s)" in capsys.readouterr().out
  assert open(path + ".damaged", "rb").read() == (
      b"{\"step\": 2, garbage\n" + b"{\"step\": 4, \"split\": \"train\", \"loss\": \"low\"}\n"
      + b"\0" * 64 + b"\n")
  kept = open(path, "rb").read().splitlines(keepends=True)
  # the rest as an uninterrupted run wrote it
  assert kept == original[:2] + original[3:4] + original[5:]
  assert rundir.set_aside_damaged_lines(path) == 0  # nothing more to move


def _rewrite_line(path, number, text):
  lines = open(path, "rb").read().splitlines(keepends=True)
  lines[number - 1] = text
  open(path, "wb").write(b"".join(lines))


def _append(path, data):
  with open(path, "ab") as f:
    f.write(data)


def test_a_full_disk_is_one_line_and_the_same_command_then_finishes(tiny_run, run_copy,
                                                                     command_error, monkeypatch):
  workdir = run_copy(tiny_run, "full")
  run = rundir.RunDir(workdir)
  os.remove(run.done_path)
  for step in checkpoints.list_steps(run.checkpoints)[-2:]:
    shutil.rmtree(os.path.join(run.checkpoints, str(step)))
  config = regression_configs.get_config("tiny")
  save = checkpoints.save

  def full(*args, **kwargs):  # how tensorstore, under orbax, words a full disk
    raise ValueError('Error writing local file "/runs/x/d/3a1f": No space left on device '
                     '[tensorstore_spec=...]')

  monkeypatch.setattr(checkpoints, "save", full)
  line, _ = command_error(job.train_job, config, workdir, estimate=False, verbose=False)
  assert line.startswith("error: no space left on the device; what was finished is kept")
  assert line.endswith("run the same command again")
  assert not os.path.exists(os.path.join(workdir, ".lock")) and not train.is_complete(workdir)
  monkeypatch.setattr(checkpoints, "save", save)
  # Less room than a checkpoint needs: refused before orbax writes anything.
  before = sorted(os.listdir(run.checkpoints))
  usage = checkpoints.shutil.disk_usage
  monkeypatch.setattr(checkpoints.shutil, "disk_usage",
                      lambda path: usage(path)._replace(free=100_000))
  line, _ = command_error(job.train_job, config, workdir, estimate=False, verbose=False)
  assert line.startswith("error: no room for the checkpoint at step ")
  assert "0.1 MB are free; make room and run the same command again" in line
  assert sorted(os.listdir(run.checkpoints)) == before
  monkeypatch.setattr(checkpoints.shutil, "disk_usage", usage)
  job.train_job(config, workdir, estimate=False)  # the same command, with room again
  _assert_same_run(tiny_run, workdir)


def test_errors_of_the_machine_are_one_line_and_bugs_keep_their_traceback(run_main):
  import errno  # pylint: disable=import-outside-toplevel

  def raises(err):
    raise err

  status, _, err = run_main(raises, OSError(errno.ENOSPC, "No space left on device", "/r/x.npz"))
  assert status == 2 and err.splitlines() == [
      "error: no space left on the device (/r/x.npz); what was finished is kept: make room (or "
      "fix the permissions) and run the same command again"]
  try:
    raise OSError(errno.EROFS, "Read-only file system")
  except OSError as cause:
    wrapped = RuntimeError("could not save")
    wrapped.__cause__ = cause
  status, _, err = run_main(raises, wrapped)
  assert status == 2 and err.startswith("error: the file system is read-only; ")
  with pytest.raises(ValueError, match="a bug"):
    run_main(raises, ValueError("a bug"))
  with pytest.raises(FileNotFoundError):  # not the machine's doing: a traceback
    run_main(raises, FileNotFoundError(errno.ENOENT, "No such file", "/x"))


def test_the_probe_file_has_its_disk_blocks_before_it_is_written(tmp_path):
  path = str(tmp_path / "outputs.npy")
  array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(256, 1024))
  array.flush()
  del array
  size = os.path.getsize(path)
  assert os.stat(path).st_blocks * 512 < size  # sparse: a memory-mapped write may find no room
  rundir.allocate(path)
  assert os.stat(path).st_blocks * 512 >= size
  assert not np.load(path).any()


def test_a_diverging_run_is_one_line_and_keeps_its_checkpoints(tmp_path, command_error):
  config = regression_configs.get_config("tiny")
  config.optim.peak_lr = 1e30  # valid, finite, and far too large
  workdir = str(tmp_path / "run")
  line, _ = command_error(job.train_job, config, workdir, estimate=False, verbose=False)
  assert "training loss became nan" in line and "the run diverged" in line
  kept = checkpoints.list_steps(os.path.join(workdir, "checkpoints"))
  assert kept and f"checkpoints up to step {kept[-1]} are kept" in line
  assert not train.is_complete(workdir)
