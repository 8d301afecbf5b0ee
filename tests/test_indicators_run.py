"""scripts/indicators.py on tiny runs: records, summary, panels, author column names, resuming."""

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxdev import engine
from jaxdev import rundir
from jaxdev import train
from jaxdev.indicators import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, os.path.join(REPO, "scripts", "indicators.py")]
SMALL = ["--num_probes", "4", "--hessian_sequences", "32"]
SMALL_SETTINGS = run.IndicatorSettings(num_probes=4, hessian_sequences=32)

# The authors' evals.csv / hessian.csv columns, and their layernorm.csv statistics.
AUTHOR_EVALS = (["loss"] + [f"loss_position_{k}" for k in range(1, 9)] +
                ["prediction_norm", "mse_to_ridge"] +
                [f"ood_{kind}_x{g}" for g in (3, 5, 10, 100) for kind in ("inputs", "tasks")] +
                ["weight_norm"])
AUTHOR_HESSIAN = ["hessian_trace", "hessian_trace_sem", "eig_1", "eig_2", "eig_3"]
AUTHOR_LAYERNORM = ["weight_mean", "weight_std", "weight_min", "weight_max", "weight_norm",
                    "bias_mean", "bias_std", "bias_norm"]


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_run):
  """A copy of the session's tiny run, for this module's indicator records."""
  workdir = str(tmp_path_factory.mktemp("runs") / "reg")
  shutil.copytree(tiny_run, workdir)
  return workdir


def _records(workdir, name):
  records = rundir.RunDir(workdir).indicators(name)
  return {s: records.read(s) for s in records.steps()}


def test_command_on_a_tiny_regression_run(regression_run):
  proc = subprocess.run(COMMAND + ["--workdir", regression_run, "--which", "all"] + SMALL,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  steps = train.checkpoint_steps(60, 6, 4).tolist()
  assert f"indicators[cheap]: {len(steps)} checkpoints evaluated" in proc.stdout
  assert sorted(_records(regression_run, "cheap")) == sorted(_records(regression_run, "hessian")) == steps
  run_dir = rundir.RunDir(regression_run)
  with open(run_dir.indicator_summary_path("csv")) as f:
    rows = list(csv.DictReader(f))
  assert [int(r["step"]) for r in rows] == steps
  names = set(rows[0])
  # Every author column has a jaxdev column of the same name (the 1-block tiny model has
  # block0_ln1, block0_ln2 and ln_final).
  assert set(AUTHOR_EVALS + AUTHOR_HESSIAN) <= names
  for ln in ("block0_ln1", "block0_ln2", "ln_final"):
    assert {f"layernorm_{ln}_{stat}" for stat in AUTHOR_LAYERNORM} <= names
  first = rows[0]
  assert float(first["layernorm_ln_final_weight_mean"]) == 1.0  # checkpoint 0 is the init
  assert float(first["layernorm_ln_final_weight_std"]) == 0.0
  # The summary's loss is the training loop's evaluation metric at the same checkpoint to within
  # the sampling error of two different evaluation sets.
  evals = {r["step"]: r["loss"] for r in run_dir.metrics("eval")}
  for row in rows:
    assert float(row["loss"]) == pytest.approx(evals[int(row["step"])], rel=0.15)
  assert os.path.getsize(run_dir.figure("indicators.png")) > 20_000

  again = run.evaluate_run(regression_run, which="all", settings=SMALL_SETTINGS, plot=False)
  assert again.done == {"cheap": [], "hessian": []}
  assert again.skipped == {"cheap": steps, "hessian": steps}
  with pytest.raises(engine.SettingsConflictError, match="other settings"):
    run.evaluate_run(regression_run, which="all", plot=False,
                     settings=run.IndicatorSettings(num_probes=5, hessian_sequences=32))


def test_killed_evaluation_resumes_to_the_same_records(regression_run, tmp_path, capsys,
                                                       crash_after_records):
  straight = _records(regression_run, "cheap") or None
  if straight is None:  # run alone: make the uninterrupted records first
    run.evaluate_run(regression_run, which="all", settings=SMALL_SETTINGS)
    straight = _records(regression_run, "cheap")
  straight_hessian = _records(regression_run, "hessian")
  killed = str(tmp_path / "killed")
  shutil.copytree(regression_run, killed, ignore=shutil.ignore_patterns("indicators", "figures"))
  # What the same command runs; stopped (as killed) after every cheap record and two Hessian ones.
  evaluate = lambda: run.evaluate_run(killed, which="all", settings=SMALL_SETTINGS,  # noqa: E731
                                      verbose=True)
  with pytest.raises(crash_after_records(len(straight) + 2)):
    evaluate()
  partial = len(rundir.RunDir(killed).indicators("hessian").steps())
  assert partial == 2 and sorted(_records(killed, "cheap")) == sorted(straight)
  capsys.readouterr()
  evaluate()
  if partial < len(straight):  # killed mid-way (not after the last record)
    assert "already done" in capsys.readouterr().out
  for name, reference in (("cheap", straight), ("hessian", straight_hessian)):
    got = _records(killed, name)
    assert sorted(got) == sorted(reference)
    for step, record in reference.items():
      assert set(got[step]) == set(record)
      for key, value in record.items():
        np.testing.assert_allclose(got[step][key], value, rtol=1e-6, atol=1e-9, err_msg=f"{name} {step} {key}")


@pytest.mark.slow
def test_evaluation_of_a_tiny_language_run(tiny_language_run, run_copy):
  workdir = run_copy(tiny_language_run, "lm")
  # What the command (--which all --num_probes 4 --hessian_sequences 32) runs.
  run.evaluate_run(workdir, which="all", settings=SMALL_SETTINGS, verbose=True)
  run_dir = rundir.RunDir(workdir)
  with open(run_dir.indicator_summary_path("csv")) as f:
    rows = list(csv.DictReader(f))
  steps = train.checkpoint_steps(40, 4, 4).tolist()
  assert [int(r["step"]) for r in rows] == steps
  for name in ("bigram_score", "icl_score", "ngram_score_2", "ngram_score_3", "loss_pos_ablated",
               "previous_token_score_B1H1", "prefix_matching_score_B1H2", "hessian_trace", "eig_1"):
    assert np.isfinite(float(rows[-1][name])), name
  summary = rundir.read_json(run_dir.indicator_summary_path("json"))
  entropy = summary["constants"]["bigram_entropy"]
  # The bigram score is a cross-entropy against the empirical bigram distribution: never below
  # its entropy; untrained (uniform-ish logits) it is near ln V.
  assert all(float(r["bigram_score"]) > entropy for r in rows)
  assert float(rows[0]["bigram_score"]) == pytest.approx(np.log(512), abs=0.5)
  # Step 0: the positional embedding has not been used yet, ablating it changes the loss little.
  assert float(rows[0]["loss_pos_ablated"]) == pytest.approx(float(rows[0]["loss"]), abs=0.05)
  assert os.path.getsize(run_dir.figure("indicators.png")) > 20_000
