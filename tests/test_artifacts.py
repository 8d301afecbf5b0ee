"""Published artifacts: exporting a run, and re-analysing the committed ones."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxdev import errors
from jaxdev import rundir
from jaxdev.analysis import run as analysis_run
from jaxdev.report import artifacts
from jaxdev.report import files
from conftest import _snapshot  # pylint: disable=import-error
from test_analysis import _fake_run  # pylint: disable=import-error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = os.path.join(REPO, "docs", "reproduction")


def _assert_same(a, b, path="", rtol=1e-9):
  """Equal records: same keys, types and strings, ints exactly, floats to ``rtol``."""
  if isinstance(a, dict):
    assert isinstance(b, dict) and sorted(a) == sorted(b), f"{path}: keys {sorted(a)} {sorted(b)}"
    for k in a:
      _assert_same(a[k], b[k], f"{path}.{k}", rtol)
  elif isinstance(a, list):
    assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
    for i, (x, y) in enumerate(zip(a, b)):
      _assert_same(x, y, f"{path}[{i}]", rtol)
  elif isinstance(a, float) or isinstance(b, float):
    assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12), \
        f"{path}: {a} != {b}"
  else:
    assert a == b, f"{path}: {a!r} != {b!r}"


def test_exported_artifacts_hold_the_runs_numbers_and_reproduce_its_analysis(tmp_path):
  run = str(_fake_run(tmp_path))
  analysis_run.analyze_run(run, sigma_schedule="scaled")
  out = str(tmp_path / "published")
  result = artifacts.export_run(run, out)

  llc = files.read_csv(os.path.join(out, files.LLC_CSV))
  own = analysis_run.load_llc(run)
  np.testing.assert_array_equal(llc["step"], own["step"])
  np.testing.assert_array_equal(llc["llc_mean"], own["llc_mean"])  # bitwise: repr round trip
  np.testing.assert_allclose(llc["chain_2"] - llc["chain_1"], 1.0, rtol=1e-12)
  np.testing.assert_allclose(llc["llc_se"], np.std([-.5, .5, -.5, .5], ddof=1) / 2, rtol=1e-12)
  assert list(llc["status"]) == ["ok"] * len(own["step"])
  metrics = files.read_csv(os.path.join(out, files.METRICS_CSV))
  assert list(metrics["split"]) == ["eval"] * len(own["step"])
  np.testing.assert_array_equal(metrics["loss"], 1 / (1 + own["step"]))

  scores = files.read_csv(os.path.join(out, files.ED_SCORES_CSV))
  # 16 components published; the forms read the 4 the run's analysis used.
  assert [n for n in scores if n.startswith("pc_")] == [f"pc_{i}" for i in range(1, 17)]
  assert len(scores["step"]) == 600 and scores["step"][-1] == 5990
  options = files.load_json(out, files.RUN_JSON)["ed_options"]
  assert options["num_components"] == 4 and len(options["explained_variance"]) == 16
  assert np.all(np.diff(options["explained_variance"]) <= 0)

  with open(os.path.join(run, "stages.json")) as f:
    _assert_same(result["stages"], json.load(f))
  with open(os.path.join(run, "forms.json")) as f:
    _assert_same(result["forms"], json.load(f), rtol=1e-6)
  assert abs(result["forms"]["forms"][0]["step"] - 3000) <= 100
  assert result["forms"]["sigma_schedule"] == "scaled"
  assert os.path.getsize(os.path.join(out, "figures", "ed_pcs.png")) > 10_000

  # The published directory stands alone: the run can go, its analysis can be redone.
  shutil.rmtree(run)
  again = artifacts.analyze_artifacts(out)
  _assert_same(again["stages"], files.load_json(out, files.STAGES_JSON))
  _assert_same(again["forms"], files.load_json(out, files.FORMS_JSON))


def test_changed_artifacts_change_the_analysis(tmp_path):
  run = str(_fake_run(tmp_path))
  analysis_run.analyze_run(run, sigma_schedule="scaled")
  out = str(tmp_path / "published")
  artifacts.export_run(run, out)
  # Mirror the LLC curve after its peak (the fall becomes a rise, noise and all): the falling
  # stage (B3) must disappear.
  table = files.read_csv(os.path.join(out, files.LLC_CSV))
  assert [s["kind"] for s in artifacts.analyze_artifacts(out)["stages"]["stages"]] == ["A", "A", "B"]
  peak = int(np.argmax(table["llc_mean"]))
  table["llc_mean"][peak:] = 2 * table["llc_mean"][peak] - table["llc_mean"][peak:]
  files.write_csv(os.path.join(out, files.LLC_CSV), table)
  kinds = [s["kind"] for s in artifacts.analyze_artifacts(out)["stages"]["stages"]]
  assert "B" not in kinds
  # Drop the first 100 probe rows: the form is found at the same step (read from the file),
  # 100 rows earlier.
  path = os.path.join(out, files.ED_SCORES_CSV)
  scores = files.read_csv(path)
  before = artifacts.analyze_artifacts(out)["forms"]["forms"]
  files.write_csv(path, {n: v[100:] for n, v in scores.items()})
  forms = artifacts.analyze_artifacts(out)["forms"]["forms"]
  assert len(before) == len(forms) == 1 and forms[0]["index"] == before[0]["index"] - 100
  assert abs(forms[0]["step"] - 3000) <= 100
  # A straight trajectory has no form.
  line = {"step": scores["step"], **{f"pc_{k}": np.linspace(0, k, 600) for k in range(1, 5)}}
  files.write_csv(path, line)
  assert artifacts.analyze_artifacts(out)["forms"]["forms"] == []


def test_csv_round_trip_keeps_types_and_empty_cells(tmp_path):
  path = str(tmp_path / "t.csv")
  files.write_csv(path, {"step": [0, 5], "split": ["train", "eval"], "lr": [0.1, ""],
                             "x": [1 / 3, float("nan")]})
  table = files.read_csv(path)
  assert table["step"].dtype == np.int64 and list(table["split"]) == ["train", "eval"]
  assert table["lr"][0] == 0.1 and np.isnan(table["lr"][1])
  assert table["x"][0] == 1 / 3 and np.isnan(table["x"][1])  # repr: exact round trip
  with open(path, "a") as f:
    f.write("7,eval\n")  # a short row: damaged
  with pytest.raises(errors.UserError, match="unequal length"):
    files.read_csv(path)


def test_export_refuses_a_run_without_llc_results(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.UserError, match="no LLC results"):
    artifacts.export_run(str(tmp_path / "empty"), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def _published():
  if not os.path.isdir(PUBLISHED):
    return []
  return sorted(d for d in os.listdir(PUBLISHED)
                if os.path.isfile(os.path.join(PUBLISHED, d, files.RUN_JSON)))


def test_export_command_refuses_a_missing_page_before_writing_anything(tmp_path):
  run = _fake_run(tmp_path)
  out = tmp_path / "out"
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "export_run.py"),
                         "--workdir", str(run), "--out", str(out), "--page",
                         str(tmp_path / "no-page.md")], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [f"error: --page {tmp_path / 'no-page.md'} is not a file"]
  assert not out.exists()


def test_export_command_without_a_run_rewrites_the_comparison_from_the_published_files(tmp_path):
  out = tmp_path / "quick"
  shutil.copytree(os.path.join(PUBLISHED, "quick"), out)
  os.remove(out / files.COMPARISON_MD)
  script = os.path.join(REPO, "scripts", "export_run.py")
  reference = os.path.join(REPO, "tests", "data", "authors-lr-seed0")
  proc = subprocess.run([sys.executable, script, "--out", str(out), "--reference", reference],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(PUBLISHED, "quick", files.COMPARISON_MD)) as f:
    assert (out / files.COMPARISON_MD).read_text() == f.read()
  assert not (out / files.FIGURES).exists()  # no figures published there: none drawn
  proc = subprocess.run([sys.executable, script, "--out", str(out), "--sweep", "other",
                         "--reference", reference], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: without --workdir, give --reference or --form_detector (and no --sweep, "
      "--check_sweeps)"]


def test_some_artifacts_are_published():
  assert "quick" in _published()


# Re-analysing the committed files on another CPU. The analysis is float64 throughout, but the
# stage detector's GP system K + Σ is ill-conditioned for a long, precise curve: its condition
# number κ is ≈ 2e10 for lr-seed0's 190 checkpoints (1e5 for quick's). A BLAS that sums in another
# order (AVX2 or AVX-512 kernels, another blocking) moves its solution by up to
# ε₆₄ κ ≈ 2.2e-16 × 2e10 ≈ 4e-6 relative, and the hyperparameter fit and the noise re-estimate
# built on it carry that along. Slopes in a plateau are ≈ 1/50 of the curve's largest (sums of
# terms of the largest slope's size that cancel), and their ratios and z-scores inherit
# 50 × 4e-6 = 2e-4 of the largest value of their kind, however small the value itself. So a float
# is compared to PORTABLE_RTOL = 2e-3 of the largest magnitude its field has in the committed
# record (e.g. the largest dip_z over all candidates): ten times that estimate, and 6 times the
# largest spread measured across four OpenBLAS kernels on one machine (3.4e-4, a rejected
# candidate's dip ratio; milestones and stages moved by < 1e-5). Steps (boundaries, stage ends,
# milestone locations) are read off the GP's grid, whose neighbouring points are 2.6 % apart in
# step, and are compared to PORTABLE_RTOL of their own value: a boundary one grid point away
# fails. Everything else is compared exactly: keys, list lengths, strings and flags (stage kinds,
# rules, accepted candidates, excluded steps) and integers (ED indices and steps).
PORTABLE_RTOL = 2e-3
STEP_FIELDS = ("boundaries", "step", "step_low", "step_high", "start", "end")


def _field(path):
  return "".join(part.split("[")[0] for part in path.split("."))  # list indices dropped


def _field_scales(record, path="", scales=None):
  """{field (path without list indices): largest finite |value|} over the floats of a record."""
  scales = {} if scales is None else scales
  if isinstance(record, dict):
    for k, v in record.items():
      _field_scales(v, f"{path}.{k}", scales)
  elif isinstance(record, list):
    for i, v in enumerate(record):
      _field_scales(v, f"{path}[{i}]", scales)
  elif isinstance(record, float) and math.isfinite(record):
    scales[_field(path)] = max(scales.get(_field(path), 0.0), abs(record))
  return scales


def _assert_portable(again, committed, path="", scales=None):
  """``again`` matches ``committed`` in structure exactly and in floats to PORTABLE_RTOL of the
  largest magnitude of the same field in ``committed`` (of their own value for steps)."""
  scales = _field_scales(committed) if scales is None else scales
  if isinstance(committed, dict):
    assert isinstance(again, dict) and sorted(again) == sorted(committed), f"{path}: keys differ"
    for k in committed:
      _assert_portable(again[k], committed[k], f"{path}.{k}", scales)
  elif isinstance(committed, list):
    assert isinstance(again, list) and len(again) == len(committed), f"{path}: lengths differ"
    for i, (x, y) in enumerate(zip(again, committed)):
      _assert_portable(x, y, f"{path}[{i}]", scales)
  elif isinstance(committed, float) and isinstance(again, float):
    if not (math.isfinite(committed) and math.isfinite(again)):
      assert repr(again) == repr(committed), f"{path}: {again} != {committed}"
    else:
      is_step = path.rsplit(".", 1)[-1].split("[")[0] in STEP_FIELDS
      scale = abs(committed) if is_step else scales.get(_field(path), 0.0)
      tolerance = PORTABLE_RTOL * scale + 1e-12
      assert abs(again - committed) <= tolerance, \
          f"{path}: {again} != {committed} (± {tolerance:.2g})"
  else:
    assert type(again) is type(committed) and again == committed, \
        f"{path}: {again!r} != {committed!r}"


@pytest.mark.parametrize("name", _published())
def test_committed_artifacts_reproduce_their_stages_and_forms(name):
  out = os.path.join(PUBLISHED, name)
  again = artifacts.analyze_artifacts(out)
  committed_stages = files.load_json(out, files.STAGES_JSON)
  if os.path.isfile(os.path.join(out, files.LLC_CSV)):  # a run published without a sweep has none
    assert committed_stages is not None and again["stages"] is not None
    _assert_portable(again["stages"], committed_stages)
  else:
    assert committed_stages is None and again["stages"] is None
  committed_forms = files.load_json(out, files.FORMS_JSON)
  if committed_forms is not None or again["forms"] is not None:
    _assert_portable(again["forms"], committed_forms)


def test_the_portable_comparison_sees_a_changed_analysis():
  """The tolerance lets a CPU's rounding through, not a change: a boundary at the next grid
  point, standard errors 1 % larger, or one LLC estimate 0.1 % larger all fail it."""
  out = os.path.join(PUBLISHED, "lr-seed0")
  committed = files.load_json(out, files.STAGES_JSON)
  moved = json.loads(json.dumps(committed))
  moved["milestones"][1]["step"] *= 1.026
  with pytest.raises(AssertionError, match=r"milestones\[1\]\.step"):
    _assert_portable(moved, committed)
  llc, llc_se = artifacts.load_llc_csv(os.path.join(out, files.LLC_CSV))

  def record(llc_mean, se):
    found = analysis_run.stages_from_llc({**llc, "llc_mean": llc_mean}, se)
    return json.loads(json.dumps(analysis_run.stages_record(found["analysis"], "paper_cpu", [])))

  _assert_portable(record(llc["llc_mean"], llc_se), committed)  # unchanged: passes
  with pytest.raises(AssertionError):
    _assert_portable(record(llc["llc_mean"], 1.01 * llc_se), committed)
  nudged = llc["llc_mean"].copy()
  nudged[100] *= 1.001
  with pytest.raises(AssertionError):
    _assert_portable(record(nudged, llc_se), committed)


def test_check_sweeps_are_published_with_their_llc_after_their_first_draws(tmp_path):
  run = _fake_run(tmp_path)
  check = run / "llc" / "check"
  check.mkdir()
  rng = np.random.default_rng(1)
  traces = {}
  for step in (1, 1000):
    trace = 2.0 + rng.normal(0, 0.1, (4, 1200)) + np.linspace(1.0, 0.0, 1200)  # settling chains
    per_chain = 10.0 * (trace.mean(axis=1) - 1.5)
    np.savez(check / f"step_{step:08d}.npz", step=step, llc_mean=per_chain.mean(),
             llc_std=per_chain.std(), num_failed=0, llc_per_chain=per_chain, loss_trace=trace,
             init_loss=1.5, nbeta=10.0)
    traces[step] = trace
  record = {"loss_trace": traces[1000], "init_loss": 1.5, "nbeta": 10.0}
  np.testing.assert_allclose(artifacts.running_llc(record, 1200),
                             10.0 * (traces[1000].mean(axis=1) - 1.5), rtol=1e-12)
  out = str(tmp_path / "published")
  artifacts.export_run(str(run), out, check_sweeps=["check"], draw_points=(300, 500, 5000),
                       reference_dir=os.path.join(os.path.dirname(__file__), "data",
                                                  "authors-lr-seed0"))
  table = files.read_csv(os.path.join(out, "llc_check.csv"))
  assert list(table["step"]) == [1, 1000] and list(table["num_draws"]) == [1200, 1200]
  assert list(table["num_chains"]) == [4, 4]
  assert "llc_mean_first_5000" not in table  # longer than the chains
  first = 10.0 * (traces[1000][:, :300].mean(axis=1) - 1.5)
  np.testing.assert_allclose(table["llc_mean_first_300"][1], first.mean(), rtol=1e-12)
  np.testing.assert_allclose(table["llc_std_first_300"][1], first.std(ddof=1), rtol=1e-12)
  assert np.all(table["llc_mean_first_300"] > table["llc_mean_first_500"])
  assert np.all(table["llc_mean_first_500"] > table["llc_mean"])
  with open(os.path.join(out, files.COMPARISON_MD)) as f:
    report = f.read()
  assert "### The sampler's reduction against check" in report
  assert "| 1,000 | " in report and "first 300 draws" in report
  with open(os.path.join(out, files.FIGURES, files.COMPARISON_PNG), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  with pytest.raises(errors.UserError, match="no LLC results"):
    artifacts.export_run(str(run), str(tmp_path / "other"), check_sweeps=["missing"])
  assert not (tmp_path / "other").exists()  # refused before anything is written
  with pytest.raises(errors.UserError, match="does not exist"):
    artifacts.export_run(str(run), str(tmp_path / "other"), reference_dir=str(tmp_path / "nope"))


def test_a_check_sweep_run_in_parts_is_merged_into_its_published_table(tmp_path):
  run = _fake_run(tmp_path)
  check = run / "llc" / "check"
  check.mkdir()
  rng = np.random.default_rng(2)
  for step in (1, 1000):
    trace = 2.0 + rng.normal(0, 0.1, (4, 600))
    per_chain = 10.0 * (trace.mean(axis=1) - 1.5)
    np.savez(check / f"step_{step:08d}.npz", step=step, llc_mean=per_chain.mean(),
             llc_std=per_chain.std(ddof=1), num_failed=0, llc_per_chain=per_chain,
             loss_trace=trace, init_loss=1.5, nbeta=10.0)
  out = tmp_path / "published"
  out.mkdir()
  part = {"step": [1, 10, 5000], "num_draws": [600] * 3, "llc_mean": [4.0, 7.0, 9.0],
          "llc_std": [0.5, 0.6, 0.7], "num_chains": [4, 4, 3]}
  files.write_csv(str(out / "llc_check.csv"), part)
  mine = artifacts._check_csv(rundir.RunDir(str(run)), "check", (300,))  # pylint: disable=protected-access
  path, overlap = artifacts.merge_check(str(run), str(out), "check", draw_points=(300,))
  table = files.read_csv(path)
  assert list(table["step"]) == [1, 10, 1000, 5000]
  assert list(table["num_chains"]) == [4, 4, 4, 3] and table["num_chains"].dtype == np.int64
  np.testing.assert_array_equal(table["llc_mean"], [mine["llc_mean"][0], 7.0,
                                                    mine["llc_mean"][1], 9.0])
  np.testing.assert_array_equal(np.isnan(table["llc_mean_first_300"]), [False, True, False, True])
  assert overlap == [(1, 4.0, mine["llc_mean"][0])]
  # Merging again changes nothing: the run's rows replace themselves.
  before = (out / "llc_check.csv").read_text()
  assert artifacts.merge_check(str(run), str(out), "check", draw_points=(300,))[1] == [
      (1, mine["llc_mean"][0], mine["llc_mean"][0]), (1000, mine["llc_mean"][1],
                                                      mine["llc_mean"][1])]
  assert (out / "llc_check.csv").read_text() == before

  # Another sweep published under the name is refused, and the file left as it was.
  files.write_csv(str(out / "llc_check.csv"), dict(part, num_draws=[5000] * 3))
  before = (out / "llc_check.csv").read_text()
  with pytest.raises(errors.UserError, match=r"different num_draws \(\[600, 5000\]\)"):
    artifacts.merge_check(str(run), str(out), "check")
  assert (out / "llc_check.csv").read_text() == before
  with pytest.raises(errors.UserError, match="published check table lacks num_chains"):
    artifacts.merge_check_tables({n: v for n, v in part.items() if n != "num_chains"}, mine)

  files.write_csv(str(out / "llc_check.csv"), part)
  script = os.path.join(REPO, "scripts", "export_run.py")
  proc = subprocess.run([sys.executable, script, "--workdir", str(run), "--out", str(out),
                         "--merge_checks", "check"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[:2] == [
      "check: checkpoints both published and in the run: 1, with the same LLC: 0",
      f"check at step 1: published 4.0000, the run's record {mine['llc_mean'][0]:.4f}"]
  assert list(files.read_csv(path)["step"]) == [1, 10, 1000, 5000]
  proc = subprocess.run([sys.executable, script, "--out", str(out), "--merge_checks", "check"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: --add_checks and --merge_checks need --workdir"]


def test_a_failed_checkpoint_is_excluded_for_the_same_reason_after_export(tmp_path):
  run = _fake_run(tmp_path)
  path = sorted((run / "llc" / "default").glob("step_*.npz"))[10]
  record = dict(np.load(path))
  step = int(record["step"])
  record.update(num_failed=3, llc_per_chain=np.array([record["llc_mean"], np.nan, np.nan, np.nan]))
  np.savez(path, **record)
  analysis_run.analyze_run(str(run), sigma_schedule="scaled")
  with open(run / "stages.json") as f:
    own = json.load(f)
  assert [e["step"] for e in own["excluded"]] == [step]
  assert "survived" in own["excluded"][0]["reason"]
  result = artifacts.export_run(str(run), str(tmp_path / "published"))
  _assert_same(result["stages"], own)


def test_forms_against_null_paths_are_published_and_re_derived(tmp_path):
  run = str(_fake_run(tmp_path))
  shutil.rmtree(os.path.join(run, "llc"))  # a run with an ED probe and no sweep publishes too
  summary = analysis_run.analyze_run(run, sigma_schedule="scaled", form_detector="turns",
                                     form_nulls=4)
  own = rundir.RunDir(run).forms()
  assert own["detector"] == "turns" and own["num_nulls"] == 4
  assert sorted(own["nulls"]) == ["brownian", "speed"]
  assert all(len(r["strengths"]) == 4 and r["dim"] == 80 for r in own["nulls"].values())
  assert [e["paper_step"] for e in own["paper_forms"]] == [2_500]  # the run ends at 5,990
  assert own["kinks"] == [50, 240]  # the scaled kinks: indices 40 and 200 × 600 / 5,001, ×10
  assert "ed_pcs.png" in {os.path.basename(p) for p in summary["figures"]}
  out = str(tmp_path / "published")
  result = artifacts.export_run(run, out)
  assert not os.path.exists(os.path.join(out, files.LLC_CSV)) and result["stages"] is None
  _assert_same(result["forms"], own, rtol=1e-6)
  published = files.load_json(out, files.FORMS_JSON)
  for candidate in published["candidates"]:
    assert 0 < candidate["p_value"] <= 1
  # From the published files alone: with the recorded null paths, and drawing them again.
  _assert_same(artifacts.analyze_artifacts(out)["forms"], published)
  _assert_same(artifacts.analyze_artifacts(out, recompute_nulls=True)["forms"], published)
  # A changed record of the null paths changes the p-values.
  changed = json.loads(json.dumps(published))
  for report in changed["nulls"].values():
    report["strengths"] = [180.0] * 4
  again = artifacts.analyze_artifacts(out, null_record=changed)["forms"]
  assert all(c["p_value"] == 1.0 for c in again["candidates"])


def test_a_published_directory_is_re_analysed_with_another_detector(tmp_path):
  run = str(_fake_run(tmp_path))
  analysis_run.analyze_run(run, sigma_schedule="scaled")
  out = str(tmp_path / "published")
  artifacts.export_run(run, out)
  assert files.load_json(out, files.FORMS_JSON).get("detector") is None  # the vertex detector
  with pytest.raises(errors.UserError, match="probe width is unknown"):
    artifacts.reanalyze_forms(out, detector="turns", num_nulls=2)  # no training config
  forms = artifacts.reanalyze_forms(out, detector="turns")
  assert forms["detector"] == "turns" and forms["num_nulls"] == 0
  assert files.load_json(out, files.RUN_JSON)["ed_options"]["detector"] == "turns"
  _assert_same(artifacts.analyze_artifacts(out)["forms"], files.load_json(out, files.FORMS_JSON))


def test_an_incomplete_run_is_marked_and_published_only_when_allowed(tiny_run, run_copy,
                                                                      tmp_path):
  from jaxdev import checkpoints, llc  # pylint: disable=import-outside-toplevel
  from jaxdev.configs import llc as llc_configs  # pylint: disable=import-outside-toplevel
  workdir = run_copy(tiny_run)
  run = rundir.RunDir(workdir)
  steps = checkpoints.list_steps(run.checkpoints)
  assert analysis_run.incomplete(workdir) == []
  settings = llc.SweepSettings.from_config(llc_configs.get_config("tiny").sgld)
  llc.sweep(workdir, settings, steps=steps[:3], show_progress=False)
  partial = analysis_run.incomplete(workdir)
  assert partial == [f"sweep 'default' has no record at {len(steps) - 3} of {len(steps)} "
                     f"checkpoints (steps {', '.join(map(str, steps[3:8]))}"
                     + (f" and {len(steps) - 8} more)" if len(steps) > 8 else ")")]
  shutil.rmtree(os.path.join(run.checkpoints, str(steps[-1])))
  shutil.copytree(os.path.join(run.checkpoints, str(steps[1])),
                  os.path.join(run.checkpoints, "999"))
  reasons = analysis_run.incomplete(workdir)
  assert f"scheduled checkpoints missing at steps {steps[-1]}" in reasons
  assert "checkpoints not in the run's schedule at steps 999" in reasons
  os.unlink(run.done_path)
  assert analysis_run.incomplete(workdir)[0] == ("training has not finished (newest checkpoint "
                                                 "999 of 60 steps)")
  out = str(tmp_path / "published")
  with pytest.raises(errors.UserError, match="is incomplete .*training has not finished.*"
                                             "--allow_incomplete"):
    artifacts.export_run(workdir, out)
  assert not os.path.exists(out)
  artifacts.export_run(workdir, out, allow_incomplete=True)
  meta = json.load(open(os.path.join(out, files.RUN_JSON)))
  assert meta["incomplete"] == analysis_run.incomplete(workdir)
  assert meta["identity"] == run.identity() and meta["identity"]["origin"] == "trained"
  assert len(meta["identity"]["run_id"]) == 32  # made when the run was created
  notes = analysis_run.analyze_run(workdir)["notes"]
  assert "incomplete: training has not finished (newest checkpoint 999 of 60 steps)" in notes


def test_export_replaces_the_published_directory_whole_or_not_at_all(tmp_path):
  run = str(_fake_run(tmp_path))
  analysis_run.analyze_run(run, sigma_schedule="scaled")
  out = str(tmp_path / "published")
  artifacts.export_run(run, out)
  assert os.path.exists(os.path.join(out, files.STAGES_JSON))
  assert files.load_json(out, files.RUN_JSON)["identity"] is None  # no config: not a whole run
  with open(os.path.join(out, "notes.md"), "w") as f:  # a file export does not write: kept
    f.write("notes\n")
  before = _snapshot(out)
  # A failure after some files are written (a reference directory that is not one) leaves the
  # old export as it was, and nothing else beside it.
  garbage = tmp_path / "garbage"
  garbage.mkdir()
  (garbage / "llc.csv").write_text("not,a\ncsv")
  with pytest.raises(Exception):  # pylint: disable=broad-exception-caught
    artifacts.export_run(run, out, reference_dir=str(garbage))
  assert _snapshot(out) == before
  assert sorted(os.listdir(tmp_path)) == sorted(["garbage", "published", os.path.basename(run)])
  # The run exported again without its sweep: no stale stages.json or LLC table of the old one.
  shutil.rmtree(os.path.join(run, "llc"))
  result = artifacts.export_run(run, out)
  assert result["stages"] is None
  assert not os.path.exists(os.path.join(out, files.STAGES_JSON))
  assert not os.path.exists(os.path.join(out, files.LLC_CSV))
  assert _snapshot(out)["notes.md"] == b"notes\n"
  assert all(p.startswith(out + os.sep) and os.path.exists(p) for p in result["files"])
  with pytest.raises(errors.UserError, match="is the run directory itself"):
    artifacts.export_run(run, run)
  os.remove(os.path.join(run, "metrics.jsonl"))
  os.mkfifo(os.path.join(run, "metrics.jsonl"))  # would block a reader for ever
  with pytest.raises(errors.UserError, match="metrics.jsonl is not a regular file"):
    artifacts.export_run(run, out)
