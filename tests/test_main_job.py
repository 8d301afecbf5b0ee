"""The main job end to end on tiny configs: train, sweep, stages and figures, then a no-op rerun.

The job is a library function (jaxdev.job.main_job) tested in-process; two subprocess tests run
the command-line script itself: the job end to end, and an error line.
"""

import ast
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import language as language_configs
from configs import llc as llc_configs
from configs import regression as regression_configs
from jaxdev import errors
from jaxdev import job
from jaxdev import llc
from jaxdev import rundir
from jaxdev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = [sys.executable, os.path.join(REPO, "scripts", "llc_sweep.py")]
TINY_STEPS = train.checkpoint_steps(60, 6, 4).tolist()


def test_main_job_command_on_tiny_configs(tmp_path, capsys):
  workdir = str(tmp_path / "tiny")
  command = SWEEP + ["--workdir", workdir, "--config", os.path.join(REPO, "configs", "llc.py:tiny"),
                     "--train_config", os.path.join(REPO, "configs", "regression.py:tiny")]
  proc = subprocess.run(command, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert train.is_complete(workdir)
  results = llc.load_results(os.path.join(workdir, "llc", "default"))
  assert results["step"].tolist() == TINY_STEPS
  assert np.all(np.isfinite(results["llc_mean"]))
  num = len(TINY_STEPS)
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

  # The same command again (what it calls): nothing left to do, nothing to estimate.
  capsys.readouterr()
  again = job.main_job(regression_configs.get_config("tiny"), llc_configs.get_config("tiny"),
                       workdir, train_config_chosen=True)
  out = capsys.readouterr().out
  assert again.exit_status == 0
  assert f"0 checkpoints estimated, {num} already done" in out
  assert "estimate (" not in out


def test_main_job_in_process_every_seed(tmp_path, capsys):
  workdir = str(tmp_path / "seeds")
  train_config = regression_configs.get_config("tiny")
  sweep_config = llc_configs.get_config("tiny")
  result = job.main_job(train_config, sweep_config, workdir, seeds=["0", "1"], analyze=False,
                        estimate_only=True, train=True)
  out = capsys.readouterr().out
  num = len(TINY_STEPS)
  assert "(120 steps at" in out and f"({2 * num} checkpoints in" in out
  assert [r["job"] for r in result.estimates] == ["train", "sweep"] and result.runs == []
  assert not os.path.exists(workdir)  # estimate_only writes nothing
  job.main_job(train_config, sweep_config, workdir, seeds=["0", "1"], analyze=False,
               estimate_only=True, train=True, steps=[str(TINY_STEPS[0]), str(TINY_STEPS[-1]), "7"])
  assert "(4 checkpoints in" in capsys.readouterr().out  # only the chosen ones that exist

  result = job.main_job(train_config, sweep_config, workdir, seeds=[0, 1], analyze=False,
                        estimate=False, train=True, verbose=False)
  assert capsys.readouterr().out == ""
  assert result.exit_status == 0 and [r.workdir for r in result.runs] == [
      os.path.join(workdir, "seed0"), os.path.join(workdir, "seed1")]
  configs = [llc.load_run_config(os.path.join(workdir, f"seed{s}")) for s in (0, 1)]
  assert [c.seed for c in configs] == [0, 1]
  first, second = (llc.load_results(os.path.join(workdir, f"seed{s}", "llc", "default"))
                   for s in (0, 1))
  assert first["step"].tolist() == second["step"].tolist() == TINY_STEPS
  assert not np.allclose(first["llc_mean"], second["llc_mean"])  # different runs
  assert all(r.sweep.steps_done == TINY_STEPS and r.trained.status == "finished"
             for r in result.runs)

  # Run again: nothing is trained or estimated; the same numbers are read back.
  again = job.main_job(train_config, sweep_config, workdir, seeds=[0, 1], analyze=False,
                       estimate=True, verbose=False)
  assert again.estimates == [] and all(r.trained is None for r in again.runs)
  assert all(r.sweep.steps_done == [] and r.sweep.steps_skipped == TINY_STEPS for r in again.runs)
  np.testing.assert_array_equal(
      llc.load_results(os.path.join(workdir, "seed0", "llc", "default"))["llc_mean"],
      first["llc_mean"])


def test_main_job_on_the_ci_sized_cpu_language_run(tmp_path, text_data_dir, capsys):
  """configs/language.py:cpu_random_ci with configs/llc.py:language_cpu_random_ci: training on
  rows with a block at random places, the LLC sweep, weight-restricted sweeps (two heads and a
  layer) at named checkpoints, stages, ED and figures."""
  workdir = str(tmp_path / "lm")
  train_config = language_configs.get_config("cpu_random_ci")
  train_config.data.data_dir = text_data_dir
  sweep_config = llc_configs.get_config("language_cpu_random_ci")
  result = job.main_job(train_config, sweep_config, workdir, train=True)
  out = capsys.readouterr().out
  assert result.exit_status == 0
  assert out.startswith("estimate (train): ")
  # The sweep's estimate counts each restricted sweep's padded group: 8 checkpoints in 2 groups
  # of 4, then 4 named checkpoints in one group for each of the 3 restrictions.
  assert "estimate (sweep): " in out and "(20 checkpoints in 5 groups of 4," in out, out
  assert "the 3 restricted sweeps ran as one program (" in out
  assert "LLC sweep 'default-head1.0': 4 checkpoints estimated, 0 already done\n" in out
  steps = train.checkpoint_steps(40, 4, 5).tolist()
  results = llc.load_results(os.path.join(workdir, "llc", "default"))
  assert results["step"].tolist() == steps
  names = ["head1.0", "head1.1", "layer0"]
  assert sorted(result.runs[0].restricted) == [f"default-{h}" for h in names]
  for suffix, mask in zip(names, ["head:1.0", "head:1.1", "layer:0"]):
    restricted = llc.load_results(os.path.join(workdir, "llc", f"default-{suffix}"))
    assert restricted["step"].tolist() == [0, 12, 20, 40]
    assert np.all(np.isfinite(restricted["llc_mean"]))
    # Each sweep records its mask with its settings (and nothing else differs from the main one).
    recorded = rundir.RecordDir(os.path.join(workdir, "llc", f"default-{suffix}")).settings()
    main = rundir.RecordDir(os.path.join(workdir, "llc", "default")).settings()
    assert recorded["mask"] == [mask]
    assert {k: v for k, v in recorded.items() if k != "mask"} == {
        k: v for k, v in main.items() if k != "mask"}
  # A restricted sweep is the sweep with that mask: the same records (to float rounding: there
  # the checkpoint is sampled in a group of four, here alone).
  settings = llc.SweepSettings.from_config(sweep_config.sgld)
  llc.sweep(workdir, dataclasses.replace(settings, mask="head:1.0"), steps=[steps[-1]],
            name="check", show_progress=False)
  direct = rundir.RecordDir(os.path.join(workdir, "llc", "check")).read(steps[-1], ("llc_per_chain",))
  via_job = rundir.RecordDir(os.path.join(workdir, "llc", "default-head1.0")).read(
      steps[-1], ("llc_per_chain",))
  np.testing.assert_allclose(direct["llc_per_chain"], via_job["llc_per_chain"], rtol=1e-4)
  assert os.path.getsize(os.path.join(workdir, "figures", "llc_restricted.png")) > 10_000
  assert np.all(np.isfinite(results["llc_mean"]))
  # L_n(w*) on the training rows tracks the test loss of the same checkpoint; untrained, both sit
  # a little above ln(vocab) (random logits of std ≈ 0.8).
  evals = [r for r in rundir.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "eval"]
  np.testing.assert_allclose(results["init_loss"], [r["loss"] for r in evals], atol=0.1)
  assert np.log(512) < results["init_loss"][0] < np.log(512) + 0.5
  assert "stages (from the LLC curve)" in out
  outputs = np.load(os.path.join(workdir, "ed_outputs", "outputs.npy"))
  assert outputs.shape == (11, 16)  # probes at 0, 4, ..., 40; one true-next-token logit per row
  for name in ("llc.png", "ed_pcs.png"):
    assert os.path.getsize(os.path.join(workdir, "figures", name)) > 10_000


def test_an_unfinished_run_is_resumed_with_its_own_config(tiny_run, run_copy, capsys):
  workdir = run_copy(tiny_run, "partial")
  # Unfinished, as a kill leaves it: no done marker, the newest checkpoints not yet written.
  run = rundir.RunDir(workdir)
  os.remove(run.done_path)
  for step in TINY_STEPS[-2:]:
    shutil.rmtree(os.path.join(run.checkpoints, str(step)))
  resumes_from = TINY_STEPS[-3]
  # The job's default training config is another one (quick: 5,000 steps, a bigger model); the
  # run keeps its own, and only the steps after its newest checkpoint are estimated.
  quick, sweep_config = regression_configs.get_config("quick"), llc_configs.get_config("tiny")
  job.main_job(quick, sweep_config, workdir, estimate_only=True)
  out = capsys.readouterr().out
  assert out.startswith("estimate (train): ") and f"({60 - resumes_from} steps at" in out, out
  result = job.main_job(quick, sweep_config, workdir, analyze=False, estimate=False, verbose=False)
  assert result.runs[0].trained.final_step == 60 and train.is_complete(workdir)
  assert llc.load_results(os.path.join(workdir, "llc", "default"))["step"].tolist() == TINY_STEPS
  # A training config chosen explicitly that is not the run's is refused before any work.
  with pytest.raises(errors.RunDirError, match="holds a run with a different config"):
    job.main_job(quick, sweep_config, workdir, train_config_chosen=True, estimate=False,
                 verbose=False)


def test_a_missing_workdir_is_not_trained_unless_asked(tmp_path):
  typo = tmp_path / "runs" / "lr-sed0"
  base = SWEEP + ["--noestimate", "--config", os.path.join(REPO, "configs", "llc.py:tiny")]
  proc = subprocess.run(base + ["--workdir", str(typo)], capture_output=True, text=True, cwd=REPO)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr
  assert str(typo) in lines[0] and "does not exist" in lines[0] and "--train" in lines[0]
  assert not typo.exists() and not (tmp_path / "runs").exists()
  # A config override naming a field the config lacks: one line naming it.
  proc = subprocess.run(base + ["--workdir", str(typo), "--config.sgld.num_draws=5",
                                "--config.sgld.min_good_fractoin=0.3"],
                        capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      "error: --config.sgld.min_good_fractoin names a field the config does not have "
      "('min_good_fractoin'; did you mean 'min_good_fraction')"], proc.stderr
  # From Python the same: train=None never creates a run outside the default workdir.
  with pytest.raises(errors.RunDirError, match="does not exist"):
    job.main_job(regression_configs.get_config("tiny"), llc_configs.get_config("tiny"),
                 str(typo), estimate=False, verbose=False)
  assert not typo.exists()


@pytest.mark.parametrize("args, message", [
    ({"steps": ["7", "abc"]}, "checkpoint steps must be whole numbers, got 'abc'"),  # --steps 7,abc
    ({"seeds": ["0", "x"]}, "seeds must be whole numbers, got 'x'"),  # --seeds 0,x
    ({"seeds": []}, "seeds is empty"),  # --seeds=
    ({"sgld": {"num_chains": 0}}, "num_chains must be positive"),  # --config.sgld.num_chains=0
    ({"sgld": {"sampling_seed": 10 ** 20}}, "sgld.sampling_seed must be below 2**31"),
])
def test_bad_job_arguments_are_one_line_before_any_work(tmp_path, command_error, args, message):
  # What llc_sweep.py --train --workdir WORKDIR --config configs/llc.py:tiny ARGS calls.
  workdir = tmp_path / "run"
  sweep_config = llc_configs.get_config("tiny")
  sweep_config.sgld.update(args.get("sgld", {}))
  line, out = command_error(job.main_job, regression_configs.get_config("quick"), sweep_config,
                            str(workdir), steps=args.get("steps"), seeds=args.get("seeds"),
                            train=True)
  assert message in line
  assert "estimate (" not in out and not workdir.exists()


def _code_strings(path):
  """String constants of a module that are not docstrings."""
  tree = ast.parse(path.read_text())
  docstrings = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        docstrings.add(id(body[0].value))
  return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
          and isinstance(n.value, str) and id(n) not in docstrings]


def _path_joins(path):
  """String constants passed to os.path.join (or epath / pathlib joins) in a module."""
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
        "join", "joinpath"):
      out += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
      out += [a.value for a in (node.left, node.right)
              if isinstance(a, ast.Constant) and isinstance(a.value, str)]
  return out


def test_only_the_run_directory_module_names_its_files():
  package = pathlib.Path(REPO) / "jaxdev"
  names = set(rundir.FILE_NAMES) | {".npz"}
  directories = {rundir.CHECKPOINTS, rundir.LLC, rundir.INDICATORS, rundir.FIGURES, rundir.DONE,
                 rundir.CALIBRATION}
  # Files of other directories that happen to share a name with a run file.
  elsewhere = {"convert/run.py": {"config.json"}}  # a PyTorch checkpoint folder's model config
  offenders = []
  for path in sorted(package.rglob("*.py")):
    if path == package / "rundir.py":
      continue
    for text in _code_strings(path):
      if text in elsewhere.get(str(path.relative_to(package)), ()):
        continue
      if any(name in text for name in names):
        offenders.append(f"{path.relative_to(REPO)}: {text!r}")
    for text in _path_joins(path):
      if text.strip("/") in directories:
        offenders.append(f"{path.relative_to(REPO)}: path part {text!r}")
  assert not offenders, offenders


def test_no_module_calls_a_private_function_of_llc():
  offenders = []
  for path in sorted(pathlib.Path(REPO).glob("*/**/*.py")):
    if path.parts[len(pathlib.Path(REPO).parts)] in ("runs", ".git") or path.name == "llc.py":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
          and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
          and node.value.id == "llc"):
        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: llc.{node.attr}")
  assert not offenders, offenders
