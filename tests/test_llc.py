"""The checkpoint sweep: agreement with single estimates, devices, resume, failures.

Input errors are checked in-process on the library calls ``scripts/llc_sweep.py``,
``scripts/analyze.py`` and ``scripts/calibrate.py`` make, as ``jaxdev.cli`` reports them; each
script's own command line is tested elsewhere (``test_main_job``, ``test_analysis``,
``test_sgld``).
"""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import llc as llc_configs
from configs import regression as regression_configs
from jaxdev import distributed
from jaxdev import job
from jaxdev import llc
from jaxdev import sgld
from jaxdev import tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = llc.SweepSettings(step_size=1e-3, gamma=10.0, nbeta=None, num_chains=4, num_draws=30,
                             batch_size=16, num_sampling_examples=256, sampling_seed=5, seed=3)


def _sweep_command(workdir, *, steps=None, analyze=False, **sgld_fields):
  """What ``llc_sweep.py --notrain --noestimate --config configs/llc.py:tiny [--noanalyze]
  [--steps ...] [--config.sgld.FIELD=VALUE ...] --workdir WORKDIR`` calls."""
  sweep_config = llc_configs.get_config("tiny")
  sweep_config.sgld.update(sgld_fields)
  return job.main_job(regression_configs.get_config("quick"), sweep_config, str(workdir),
                      steps=steps, train=False, analyze=analyze, estimate=False)


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


def test_missing_run_gives_one_error_line(tmp_path, command_error):
  for workdir, message in [(tmp_path / "nope", "does not exist"), (tmp_path, "not a run directory")]:
    line, _ = command_error(_sweep_command, workdir, analyze=True)
    assert message in line
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(regression_configs.get_config("tiny").to_json())
  line, _ = command_error(_sweep_command, empty, analyze=True)
  assert "holds no checkpoints" in line


def test_killed_sweep_resumes_to_the_identical_result(tiny_run, tmp_path, crash_after_records):
  # One checkpoint per group: the records are written one by one; the computation stops
  # (as killed) before its fourth.
  sweep_config = llc_configs.get_config("tiny")
  sweep_config.sweep.checkpoints_per_batch = 1
  sweep = lambda workdir: job.main_job(  # noqa: E731
      regression_configs.get_config("quick"), sweep_config, workdir, train=False, analyze=False,
      estimate=False, verbose=False)
  straight = _copy_run(tiny_run, tmp_path, "straight")
  killed = _copy_run(tiny_run, tmp_path, "killed")
  sweep(straight)
  out = os.path.join(killed, "llc", "default")
  with pytest.raises(crash_after_records(3)):
    sweep(killed)
  partial = len([f for f in os.listdir(out) if f.startswith("step_")])
  assert 3 <= partial < 9
  sweep(killed)
  names = sorted(f for f in os.listdir(os.path.join(straight, "llc", "default")) if f.startswith("step_"))
  assert names == sorted(f for f in os.listdir(out) if f.startswith("step_")) and len(names) == 9
  for name in names:
    a = np.load(os.path.join(straight, "llc", "default", name))
    b = np.load(os.path.join(out, name))
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("field, value, message", [
    ("data.dim", 0, "config.data.dim must be positive"),
    ("data.num_tasks", -2, "config.data.num_tasks must be >= 0"),
    ("model.num_heads", 3, "divisible by config.model.num_heads"),
    ("task", "nonsense", "config.task must be"),
])
def test_bad_data_config_of_a_run_is_one_error_line(tmp_path, command_error, field, value, message):
  config = regression_configs.get_config("tiny")
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json())
  before = sorted(os.listdir(workdir))
  calibrate = lambda: llc.calibrate_checkpoint(  # noqa: E731  (what calibrate.py calls)
      str(workdir), None, step_sizes=[1e-4, 3e-4], nbetas=[15.39], gammas=[6.67], num_chains=4,
      num_draws=200, batch_size=64, num_sampling_examples=2 ** 14)
  for command in (lambda: _sweep_command(workdir, analyze=True), calibrate):
    line, _ = command_error(command)
    assert message in line
    assert sorted(os.listdir(workdir)) == before


def test_a_damaged_llc_record_is_reported_and_recomputed(tiny_run, tmp_path, command_error,
                                                         capsys):
  run = _copy_run(tiny_run, tmp_path)
  _sweep_command(run, steps=["0", "5", "60"], num_draws=30)
  out = os.path.join(run, "llc", "default")
  good = {s: dict(np.load(llc.result_path(out, s))) for s in (0, 5, 60)}
  # A truncated file, and one whose member is garbled past the zip directory's reach.
  path5, path60 = llc.result_path(out, 5), llc.result_path(out, 60)
  data = open(path5, "rb").read()
  open(path5, "wb").write(data[: len(data) // 2])
  data = bytearray(open(path60, "rb").read())
  start = data.index(b"loss_trace.npy") + 200
  data[start:start + 40] = b"\xff" * 40
  open(path60, "wb").write(bytes(data))

  line, _ = command_error(job.run_analysis, run)  # what analyze.py calls
  assert path5 in line or path60 in line

  capsys.readouterr()
  assert _sweep_command(run, steps=["0", "5", "60"], num_draws=30).exit_status == 0
  printed = capsys.readouterr()
  assert f"warning: {path5} is damaged" in printed.out + printed.err
  assert f"warning: {path60} is damaged" in printed.out + printed.err
  assert "2 checkpoints estimated, 1 already done" in printed.out
  for step, record in good.items():
    again = np.load(llc.result_path(out, step))
    assert sorted(again.files) == sorted(record)
    for key in again.files:
      np.testing.assert_array_equal(again[key], record[key])


def test_garbage_settings_or_config_is_one_line_naming_the_file(tiny_run, tmp_path, command_error):
  run = _copy_run(tiny_run, tmp_path)
  _sweep_command(run, steps=["0"])
  settings = os.path.join(run, "llc", "default", "settings.json")
  for path in (settings, os.path.join(run, "config.json")):
    original = open(path, "rb").read()
    open(path, "wb").write(b"\x00garbage{")
    files = {f: open(os.path.join(r, f), "rb").read() for r, _, fs in os.walk(run) for f in fs}
    line, _ = command_error(_sweep_command, run, steps=["0"])
    assert path in line and "damaged" in line
    assert files == {f: open(os.path.join(r, f), "rb").read() for r, _, fs in os.walk(run) for f in fs}
    open(path, "wb").write(original)


def test_an_unwritable_output_is_one_line_and_changes_nothing(tiny_run, tmp_path, command_error):
  run = _copy_run(tiny_run, tmp_path)
  open(os.path.join(run, "llc"), "w").write("a file where the sweeps' folder belongs")
  line, _ = command_error(_sweep_command, run, steps=["0"])
  assert os.path.join(run, "llc") in line
  shutil.rmtree(os.path.join(run, "figures"), ignore_errors=True)
  open(os.path.join(run, "figures"), "w").write("a file where the figures belong")
  os.unlink(os.path.join(run, "llc"))
  line, _ = command_error(job.run_analysis, run)  # what analyze.py calls
  assert os.path.join(run, "figures") in line
  assert not os.path.exists(os.path.join(run, "stages.json"))


def test_chain_status_rule_on_synthetic_chains():
  nan = np.nan
  # Not more than half survive: failed, whatever the survivors say.
  assert llc.chain_status([280_000.0, nan, nan, nan])[:2] == (1, "failed")
  assert llc.chain_status([10.0, 11.0, nan, nan])[:2] == (2, "failed")
  assert llc.chain_status([nan, nan, nan, nan])[:2] == (0, "failed")
  assert llc.chain_status([10.0, 11.0, 12.0, nan])[:2] == (3, "ok")
  # The fraction is configurable and exclusive.
  assert llc.chain_status([10.0, 11.0, nan, nan], min_good_fraction=0.49)[:2] == (2, "ok")
  assert llc.chain_status([10.0, 11.0, 12.0, nan], min_good_fraction=0.75)[1] == "failed"
  # Outliers: > 5 scaled MADs and > |median| from the median (median 10.5, MAD·1.4826 = 0.74).
  num_good, status, warnings = llc.chain_status([10.0, 11.0, 10.5, 9.5, 40.0])
  assert (num_good, status) == (5, "outliers") and "1 of 5" in warnings[0] and "40" in warnings[0]
  # Far in MADs but not beyond |median|: ordinary spread, ok.
  assert llc.chain_status([10.0, 10.01, 10.02, 10.5])[1] == "ok"
  # Beyond |median| but within 5 MADs of a wide spread: ok.
  assert llc.chain_status([1.0, 5.0, 9.0, 14.0])[1] == "ok"
  # Two good chains are never called outliers (no robust centre).
  assert llc.chain_status([1.0, 1000.0, nan])[:2] == (2, "ok")
  assert llc.chain_status([4.0, 4.1, 4.2, 4.3]) == (4, "ok", [])


def test_partly_failed_chains_are_reported_not_estimated(tiny_run, tmp_path):
  from jaxdev.analysis import run as analysis_run
  run = _copy_run(tiny_run, tmp_path)
  settings = dataclasses.replace(SETTINGS, step_size=0.035)
  result = llc.sweep(run, settings, show_progress=False)
  out = result.out_dir
  records = {s: dict(np.load(llc.result_path(out, s))) for s in result.steps_done}
  statuses = {s: str(r["status"]) for s, r in records.items()}
  assert "failed" in statuses.values() and "ok" in statuses.values(), statuses
  for step, r in records.items():
    good = int(np.isfinite(r["llc_per_chain"]).sum())
    assert int(r["num_good"]) == good == settings.num_chains - int(r["num_failed"])
    if good <= settings.min_good_fraction * settings.num_chains:
      assert statuses[step] == "failed" and np.isnan(r["llc_mean"])
      assert any("survived" in str(w) for w in r["warnings"])
    else:
      assert statuses[step] != "failed" and np.isfinite(r["llc_mean"])
  failed_steps = sorted(s for s, t in statuses.items() if t == "failed")

  table = llc.format_table(run)
  for step in failed_steps:
    row = next(line for line in table.splitlines() if line.split()[0] == str(step))
    assert row.split()[-1] == "failed" and "nan" in row
  assert "not ok:" in table

  summary = analysis_run.analyze_run(run)
  stages = json.load(open(os.path.join(run, "stages.json")))
  assert [e["step"] for e in stages["excluded"]] == failed_steps
  assert all("survived" in e["reason"] for e in stages["excluded"])
  printed = analysis_run.format_summary(summary)
  assert "excluded from stage detection" in printed and str(failed_steps) in printed
  assert os.path.getsize(os.path.join(run, "figures", "llc.png")) > 0


def test_an_all_failed_sweep_ends_with_one_note_and_draws_what_there_is(tiny_run, tmp_path):
  from jaxdev.analysis import run as analysis_run
  run = _copy_run(tiny_run, tmp_path)
  llc.sweep(run, dataclasses.replace(SETTINGS, step_size=0.05), steps=[0, 5, 12, 20, 60],
            show_progress=False)
  results = llc.load_results(os.path.join(run, "llc", "default"))
  assert list(results["status"]) == ["failed"] * 5 and np.isnan(results["llc_mean"]).all()
  summary = analysis_run.analyze_run(run)
  printed = analysis_run.format_summary(summary)
  notes = [line for line in printed.splitlines() if "enough surviving chains" in line]
  assert len(notes) == 1 and notes[0].startswith("note: no checkpoint had enough"), printed
  assert os.path.getsize(os.path.join(run, "figures", "llc.png")) > 0
  assert not os.path.exists(os.path.join(run, "stages.json"))


def test_records_and_settings_from_before_statuses_still_read(tiny_run, tmp_path):
  run = _copy_run(tiny_run, tmp_path)
  llc.sweep(run, SETTINGS, steps=[0, 5], show_progress=False)
  out = os.path.join(run, "llc", "default")
  for step, num_failed in ((0, 0), (5, 3)):
    path = llc.result_path(out, step)
    record = {k: v for k, v in np.load(path).items() if k not in llc.STATUS_KEYS}
    if num_failed:
      record["llc_per_chain"] = np.array([7.0, np.nan, np.nan, np.nan])
      record["num_failed"] = np.int64(num_failed)
    np.savez(path, **record)
  settings_path = os.path.join(out, "settings.json")
  old = json.load(open(settings_path))
  del old["min_good_fraction"]
  json.dump(old, open(settings_path, "w"))
  results = llc.load_results(out)
  assert list(results["status"]) == ["ok", "failed"]
  assert list(results["num_good"]) == [4, 1]
  assert np.isfinite(results["llc_mean"][0]) and np.isnan(results["llc_mean"][1])
  result = llc.sweep(run, SETTINGS, steps=[0, 5, 60], show_progress=False)  # settings accepted
  assert result.steps_done == [60] and result.steps_skipped == [0, 5]
  with pytest.raises(llc.SweepError, match="min_good_fraction"):
    llc.sweep(run, dataclasses.replace(SETTINGS, min_good_fraction=0.7), steps=[0],
              show_progress=False)
