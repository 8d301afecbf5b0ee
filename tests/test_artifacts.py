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
from jaxdev.analysis import artifacts
from jaxdev.analysis import run as analysis_run
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

  llc = artifacts.read_csv(os.path.join(out, artifacts.LLC_CSV))
  own = analysis_run.load_llc(run)
  np.testing.assert_array_equal(llc["step"], own["step"])
  np.testing.assert_array_equal(llc["llc_mean"], own["llc_mean"])  # bitwise: repr round trip
  np.testing.assert_allclose(llc["chain_2"] - llc["chain_1"], 1.0, rtol=1e-12)
  np.testing.assert_allclose(llc["llc_se"], np.std([-.5, .5, -.5, .5], ddof=1) / 2, rtol=1e-12)
  assert list(llc["status"]) == ["ok"] * len(own["step"])
  metrics = artifacts.read_csv(os.path.join(out, artifacts.METRICS_CSV))
  assert list(metrics["split"]) == ["eval"] * len(own["step"])
  np.testing.assert_array_equal(metrics["loss"], 1 / (1 + own["step"]))

  scores = artifacts.read_csv(os.path.join(out, artifacts.ED_SCORES_CSV))
  assert [n for n in scores if n.startswith("pc_")] == ["pc_1", "pc_2", "pc_3", "pc_4"]
  assert len(scores["step"]) == 600 and scores["step"][-1] == 5990

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
  _assert_same(again["stages"], artifacts.load_json(out, artifacts.STAGES_JSON))
  _assert_same(again["forms"], artifacts.load_json(out, artifacts.FORMS_JSON))


def test_changed_artifacts_change_the_analysis(tmp_path):
  run = str(_fake_run(tmp_path))
  analysis_run.analyze_run(run, sigma_schedule="scaled")
  out = str(tmp_path / "published")
  artifacts.export_run(run, out)
  # Mirror the LLC curve after its peak (the fall becomes a rise, noise and all): the falling
  # stage (B3) must disappear.
  table = artifacts.read_csv(os.path.join(out, artifacts.LLC_CSV))
  assert [s["kind"] for s in artifacts.analyze_artifacts(out)["stages"]["stages"]] == ["A", "A", "B"]
  peak = int(np.argmax(table["llc_mean"]))
  table["llc_mean"][peak:] = 2 * table["llc_mean"][peak] - table["llc_mean"][peak:]
  artifacts.write_csv(os.path.join(out, artifacts.LLC_CSV), table)
  kinds = [s["kind"] for s in artifacts.analyze_artifacts(out)["stages"]["stages"]]
  assert "B" not in kinds
  # Drop the first 100 probe rows: the form is found at the same step (read from the file),
  # 100 rows earlier.
  path = os.path.join(out, artifacts.ED_SCORES_CSV)
  scores = artifacts.read_csv(path)
  before = artifacts.analyze_artifacts(out)["forms"]["forms"]
  artifacts.write_csv(path, {n: v[100:] for n, v in scores.items()})
  forms = artifacts.analyze_artifacts(out)["forms"]["forms"]
  assert len(before) == len(forms) == 1 and forms[0]["index"] == before[0]["index"] - 100
  assert abs(forms[0]["step"] - 3000) <= 100
  # A straight trajectory has no form.
  line = {"step": scores["step"], **{f"pc_{k}": np.linspace(0, k, 600) for k in range(1, 5)}}
  artifacts.write_csv(path, line)
  assert artifacts.analyze_artifacts(out)["forms"]["forms"] == []


def test_csv_round_trip_keeps_types_and_empty_cells(tmp_path):
  path = str(tmp_path / "t.csv")
  artifacts.write_csv(path, {"step": [0, 5], "split": ["train", "eval"], "lr": [0.1, ""],
                             "x": [1 / 3, float("nan")]})
  table = artifacts.read_csv(path)
  assert table["step"].dtype == np.int64 and list(table["split"]) == ["train", "eval"]
  assert table["lr"][0] == 0.1 and np.isnan(table["lr"][1])
  assert table["x"][0] == 1 / 3 and np.isnan(table["x"][1])  # repr: exact round trip
  with open(path, "a") as f:
    f.write("7,eval\n")  # a short row: damaged
  with pytest.raises(errors.UserError, match="unequal length"):
    artifacts.read_csv(path)


def test_export_refuses_a_run_without_llc_results(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.UserError, match="no LLC results"):
    artifacts.export_run(str(tmp_path / "empty"), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def _published():
  if not os.path.isdir(PUBLISHED):
    return []
  return sorted(d for d in os.listdir(PUBLISHED)
                if os.path.isfile(os.path.join(PUBLISHED, d, artifacts.RUN_JSON)))


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


def test_some_artifacts_are_published():
  assert "quick" in _published()


@pytest.mark.parametrize("name", _published())
def test_committed_artifacts_reproduce_their_stages_and_forms(name):
  out = os.path.join(PUBLISHED, name)
  again = artifacts.analyze_artifacts(out)
  committed_stages = artifacts.load_json(out, artifacts.STAGES_JSON)
  assert committed_stages is not None and again["stages"] is not None
  _assert_same(again["stages"], committed_stages, rtol=1e-6)
  committed_forms = artifacts.load_json(out, artifacts.FORMS_JSON)
  if committed_forms is not None or again["forms"] is not None:
    _assert_same(again["forms"], committed_forms, rtol=1e-6)


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
  table = artifacts.read_csv(os.path.join(out, "llc_check.csv"))
  assert list(table["step"]) == [1, 1000] and list(table["num_draws"]) == [1200, 1200]
  assert list(table["num_chains"]) == [4, 4]
  assert "llc_mean_first_5000" not in table  # longer than the chains
  first = 10.0 * (traces[1000][:, :300].mean(axis=1) - 1.5)
  np.testing.assert_allclose(table["llc_mean_first_300"][1], first.mean(), rtol=1e-12)
  np.testing.assert_allclose(table["llc_std_first_300"][1], first.std(ddof=1), rtol=1e-12)
  assert np.all(table["llc_mean_first_300"] > table["llc_mean_first_500"])
  assert np.all(table["llc_mean_first_500"] > table["llc_mean"])
  with open(os.path.join(out, artifacts.COMPARISON_MD)) as f:
    report = f.read()
  assert "### The sampler's reduction against check" in report
  assert "| 1,000 | " in report and "first 300 draws" in report
  with open(os.path.join(out, artifacts.FIGURES, artifacts.COMPARISON_PNG), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  with pytest.raises(errors.UserError, match="no LLC results"):
    artifacts.export_run(str(run), str(tmp_path / "other"), check_sweeps=["missing"])
  assert not (tmp_path / "other").exists()  # refused before anything is written
  with pytest.raises(errors.UserError, match="does not exist"):
    artifacts.export_run(str(run), str(tmp_path / "other"), reference_dir=str(tmp_path / "nope"))


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
