"""Fault injection: damage each kind of file of a finished tiny run, rerun what reads it.

Every outcome must be a repair (the same result as the undamaged run) or one clear ``error:``
line with a non-zero exit; never a traceback, never a different result reported as success.
The commands are run in-process, as the scripts run them under ``jaxdev.cli`` (an exception
other than a UserError, a traceback on the command line, fails the test).
"""

import json
import os
import shutil

import numpy as np
import pytest

from configs import llc as llc_configs
from configs import regression as regression_configs
from jaxdev import job
from jaxdev import llc

pytestmark = pytest.mark.slow

STEPS = ["0", "5", "20", "60"]


# The scripts' mains, as functions of the run directory: what each calls, and its exit status.


def sweep_command(run):
  """``llc_sweep.py --noestimate --workdir RUN --notrain --noanalyze --steps 0,5,20,60
  --config configs/llc.py:tiny --config.sgld.num_draws=30``."""
  sweep_config = llc_configs.get_config("tiny")
  sweep_config.sgld.num_draws = 30

  def main():
    return job.main_job(regression_configs.get_config("quick"), sweep_config, run, steps=STEPS,
                        train=False, analyze=False, estimate=False).exit_status
  return main


def analyze_command(run):
  """``analyze.py --workdir RUN --noindicators``."""

  def main():
    job.run_analysis(run, indicators=False)
    return 0
  return main


def train_command(run):
  """``train.py --noestimate --workdir RUN --config configs/regression.py:tiny``."""

  def main():
    job.train_job(regression_configs.get_config("tiny"), run, estimate=False)
    return 0
  return main


def _records(run):
  out = os.path.join(run, "llc", "default")
  if not os.path.isdir(out):
    return {}
  records = {}
  for name in sorted(os.listdir(out)):
    if name.startswith("step_") and name.endswith(".npz"):
      with np.load(os.path.join(out, name)) as data:
        records[name] = {k: data[k] for k in data.files}
  return records


def _stages(run):
  path = os.path.join(run, "stages.json")
  return json.load(open(path)) if os.path.exists(path) else None


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_run):
  run = str(tmp_path_factory.mktemp("faults") / "tiny")
  shutil.copytree(tiny_run, run)
  sweep_command(run)()
  analyze_command(run)()
  return run, _records(run), _stages(run)


@pytest.fixture
def command(run_main):
  """``command(fn)``: runs ``fn`` (one of the commands above) as its script would; returns
  ``(status, stderr)``."""
  def run(fn):
    status, _, err = run_main(fn)
    return status, err
  return run


def _check(proc, run, records, stages, *, repaired=False):
  """A clear error line, or success with the undamaged result."""
  status, stderr = proc
  assert "Traceback" not in stderr, stderr[-3000:]
  if status != 0:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert not repaired, f"expected a repair, got: {errors[0]}"
    return "error"
  now = _records(run)
  for name, record in now.items():
    assert name in records, name
    assert sorted(record) == sorted(records[name]), name
    for key in record:
      np.testing.assert_array_equal(record[key], records[name][key], err_msg=f"{name} {key}")
  if repaired:
    assert sorted(now) == sorted(records)
  if _stages(run) is not None and stages is not None:
    assert _stages(run) == stages
  return "ok"


def _garble_files(directory):
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        data = f.read()
        f.seek(0)
        f.write(b"\xff" * max(1, len(data) // 2))


def _truncate(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])


def _copy(finished_run, tmp_path):
  run, records, stages = finished_run
  dest = str(tmp_path / "run")
  shutil.copytree(run, dest)
  return dest, records, stages


@pytest.mark.parametrize("part", ["params", "_CHECKPOINT_METADATA"])
def test_damaged_latest_checkpoint(finished_run, tmp_path, command, part):
  run, records, stages = _copy(finished_run, tmp_path)
  target = os.path.join(run, "checkpoints", "60", part)
  if os.path.isdir(target):
    _garble_files(target)
  else:
    open(target, "wb").write(b"\x00garbage{")
  # Without its record the sweep reads the checkpoint: either it estimates step 60 again
  # (the same numbers) or reports the checkpoint, never a different record.
  os.remove(llc.result_path(os.path.join(run, "llc", "default"), 60))
  _check(command(sweep_command(run)), run, records, stages)
  _check(command(train_command(run)), run, records, stages)


def test_damaged_llc_record_is_an_error_then_repaired(finished_run, tmp_path, command):
  run, records, stages = _copy(finished_run, tmp_path)
  path = llc.result_path(os.path.join(run, "llc", "default"), 5)
  _truncate(path)
  proc = command(analyze_command(run))
  assert _check(proc, run, records, stages) == "error" and path in proc[1]
  proc = command(sweep_command(run))
  _check(proc, run, records, stages, repaired=True)


@pytest.mark.parametrize("kind", ["metrics", "ed_probe"])
def test_damaged_analysis_inputs(finished_run, tmp_path, command, kind):
  run, records, stages = _copy(finished_run, tmp_path)
  if kind == "metrics":
    path = os.path.join(run, "metrics.jsonl")
    lines = open(path, "rb").read().splitlines(keepends=True)
    lines.insert(len(lines) // 2, b"\x00not json\n")
    open(path, "wb").write(b"".join(lines))
  else:
    _truncate(os.path.join(run, "ed_outputs", "outputs.npy"))
    path = os.path.join(run, "ed_outputs")  # the probe is named by its directory
  proc = command(analyze_command(run))
  if _check(proc, run, records, stages) == "error":
    assert path in proc[1]


@pytest.mark.parametrize("name", ["config.json", "llc/default/settings.json"])
def test_damaged_config_or_settings(finished_run, tmp_path, command, name):
  run, records, stages = _copy(finished_run, tmp_path)
  path = os.path.join(run, *name.split("/"))
  open(path, "wb").write(b"\x00garbage{")
  proc = command(sweep_command(run))
  assert _check(proc, run, records, stages) == "error" and path in proc[1]
