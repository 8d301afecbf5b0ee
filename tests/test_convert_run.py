"""Importing a directory of per-step PyTorch checkpoints as a run, then the LLC sweep and the
analysis on it, unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="importing PyTorch checkpoints needs the 'torch' extra")

from test_convert import _hooked_transformer, _their_model  # noqa: E402

from jaxdev import checkpoints  # noqa: E402
from jaxdev import job  # noqa: E402
from jaxdev import llc  # noqa: E402
from jaxdev import rundir  # noqa: E402
from jaxdev import tasks  # noqa: E402
from jaxdev.analysis import run as analysis  # noqa: E402
from jaxdev.indicators import run as indicator_run  # noqa: E402
from jaxdev.configs import language as language_configs  # noqa: E402
from jaxdev.configs import llc as llc_configs  # noqa: E402
from jaxdev.configs import regression as regression_configs  # noqa: E402
from jaxdev.convert import ConversionError  # noqa: E402
from jaxdev.errors import RunDirError  # noqa: E402
from jaxdev.convert import regression as convert_regression  # noqa: E402
from jaxdev.convert import run as convert_run  # noqa: E402
from jaxdev.convert import transformer_lens as convert_tl  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = [0, 10, 30, 100, 300, 1000]
SIZES = dict(task_size=4, max_examples=8, embed_size=16, mlp_size=16, num_heads=2, num_layers=1)


def _write_regression_checkpoints(directory, steps=STEPS):
  """Their training checkpoints ({"model": state dict, ...}), one file per step, and their config."""
  os.makedirs(directory, exist_ok=True)
  state_dicts = {}
  for i, step in enumerate(steps):
    model = _their_model(seed=i, **SIZES)
    state_dicts[step] = model.state_dict()
    torch.save({"model": model.state_dict(), "optimizer": {}, "metadata": {"step": step}},
               os.path.join(directory, f"checkpoint_{step:07d}.pt"))
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump({"task_config": {**SIZES, "noise_variance": 0.125, "num_tasks": "inf",
                               "layer_norm": True, "include_output": True}}, f)
  return state_dicts


def test_import_regression_run_then_sweep_and_analysis(tmp_path):
  source, workdir = str(tmp_path / "torch"), str(tmp_path / "run")
  state_dicts = _write_regression_checkpoints(source)
  result = convert_run.import_run(source, workdir, regression_configs.get_config("tiny"))
  assert result.kind == "regression" and result.steps == STEPS

  run = rundir.RunDir(workdir)
  config = run.config
  assert run.is_complete and run.num_steps_done() == STEPS[-1]
  assert (config.model.num_layers, config.model.num_heads, config.model.embed_dim,
          config.model.mlp_dim, config.model.double_residual) == (1, 2, 16, 16, True)
  assert (config.data.dim, config.data.num_examples, config.data.num_tasks) == (4, 8, 0)
  assert checkpoints.list_steps(run.checkpoints) == STEPS
  task = tasks.make_task(config)
  with checkpoints.ParamsReader(run.checkpoints, jax.eval_shape(task.init, jax.random.PRNGKey(0))) as reader:
    for step in (STEPS[0], STEPS[-1]):
      expected = convert_regression.from_token_sequence_transformer(state_dicts[step], 2)
      jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(reader.read(step)), expected)
  evals = run.metrics("eval")
  assert [r["step"] for r in evals] == STEPS and all(np.isfinite(r["loss"]) for r in evals)
  probe_steps, outputs = run.ed_probe()
  assert probe_steps.tolist() == STEPS and outputs.shape[0] == len(STEPS)

  settings = llc.SweepSettings.from_config(llc_configs.get_config("tiny").sgld)
  sweep = llc.sweep(workdir, settings, checkpoints_per_batch=4, show_progress=False)
  assert sorted(sweep.steps_done) == STEPS and not sweep.failed
  results = llc.load_results(run.llc().path)
  assert results["step"].tolist() == STEPS and np.all(np.isfinite(results["llc_mean"]))
  # The sweep's L_n(w*) is the imported model's loss: the step-0 file's loss, recomputed here.
  data = task.sampling_data(settings.sampling_seed, settings.num_sampling_examples)
  params = convert_regression.from_token_sequence_transformer(state_dicts[0], 2)
  np.testing.assert_allclose(results["init_loss"][0], float(task.loss_fn(params, data)), rtol=1e-5)

  summary = analysis.analyze_run(workdir)
  assert os.path.exists(run.figure("llc.png")) and os.path.exists(run.stages_path)
  assert summary["stages"]
  # An imported run has the steps it was given, not a training schedule: complete as it is.
  assert run.origin() == f"imported from {os.path.abspath(source)}"
  assert not any(note.startswith("incomplete") for note in summary["notes"])

  indicators = indicator_run.evaluate_run(workdir, which="cheap", plot=False)
  assert indicators.done and all(sorted(steps) == STEPS for steps in indicators.done.values())

  # The metrics are the evaluation of each checkpoint as saved.
  last = convert_regression.from_token_sequence_transformer(state_dicts[STEPS[-1]], 2)
  np.testing.assert_allclose(evals[-1]["loss"], float(jax.jit(task.evaluate)(last)["loss"]),
                             rtol=1e-6)
  assert run.evaluations().steps() == STEPS

  # An import killed during evaluation (a record and the metrics lost) is finished by running it
  # again: checkpoints and the other records are kept, and the files end as an uninterrupted
  # import wrote them.
  with open(run.metrics_path) as f:
    metrics_text = f.read()
  os.unlink(run.evaluations().record_path(STEPS[2]))
  os.unlink(run.metrics_path)
  kept = os.path.getmtime(run.evaluations().record_path(STEPS[3]))
  again = convert_run.import_run(source, workdir, regression_configs.get_config("tiny"))
  assert again.steps == [] and again.steps_skipped == STEPS
  with open(run.metrics_path) as f:
    assert f.read() == metrics_text
  np.testing.assert_array_equal(run.ed_probe()[1], outputs)
  assert os.path.getmtime(run.evaluations().record_path(STEPS[3])) == kept


def test_import_hooked_transformer_checkpoints(tmp_path):
  source, workdir = str(tmp_path / "tl"), str(tmp_path / "run")
  os.makedirs(source)
  models = {}
  for step in (0, 100, 200):
    models[step] = _hooked_transformer(1, n_ctx=32, d_vocab=512, seed=step)
    torch.save(models[step].state_dict(), os.path.join(source, f"step-{step}.pth"))
  cfg = models[0].cfg.to_dict()
  with open(os.path.join(source, "model.json"), "w") as f:
    json.dump({k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool, type(None)))}, f)
  base = language_configs.get_config("tiny")
  result = convert_run.import_run(source, workdir, base, model_config=os.path.join(source, "model.json"),
                                  evaluate=False)
  assert result.kind == "language" and result.steps == [0, 100, 200]
  config = rundir.RunDir(workdir).config
  assert (config.model.num_layers, config.model.embed_dim, config.model.num_heads,
          config.model.head_dim, config.model.context_length, config.model.vocab_size) == (
              1, 256, 8, 32, 32, 512)
  init, _ = tasks.language_model_fns(config)
  with checkpoints.ParamsReader(rundir.RunDir(workdir).checkpoints,
                                jax.eval_shape(init, jax.random.PRNGKey(0))) as reader:
    back = convert_tl.to_hooked_transformer(jax.device_get(reader.read(200)))
  for name, tensor in back.items():
    assert torch.equal(tensor, models[200].state_dict()[name]), name


def test_import_refuses_bad_inputs(tmp_path):
  base = regression_configs.get_config("tiny")
  source = str(tmp_path / "torch")
  _write_regression_checkpoints(source, steps=[0, 5, 9])
  with pytest.raises(ConversionError, match="no such checkpoint directory"):
    convert_run.import_run(str(tmp_path / "absent"), str(tmp_path / "r0"), base)
  with pytest.raises(ConversionError, match="are a regression model but the training config is a language"):
    convert_run.import_run(source, str(tmp_path / "r1"), language_configs.get_config("tiny"))
  # A run imported from one directory is not added to from another; an import that did not
  # finish is finished by importing again, never trained by the main job.
  other = str(tmp_path / "torch-other")
  _write_regression_checkpoints(other, steps=[0, 5, 9])
  workdir = str(tmp_path / "imported")
  convert_run.import_run(source, workdir, base, evaluate=False)
  assert rundir.RunDir(workdir).identity()["origin"] == f"imported from {source}"
  with pytest.raises(RunDirError, match="holds a run of another origin .imported from .*torch,"):
    convert_run.import_run(other, workdir, base, evaluate=False)
  os.remove(rundir.RunDir(workdir).done_path)
  with pytest.raises(RunDirError, match="holds an import that did not finish"):
    job.main_job(base, llc_configs.get_config("tiny"), workdir, estimate=False, verbose=False)
  damaged = os.path.join(source, "checkpoint_0000005.pt")
  with open(damaged, "wb") as f:
    f.write(b"not a checkpoint")
  with pytest.raises(ConversionError, match="checkpoint_0000005.pt is not a readable PyTorch checkpoint"):
    convert_run.import_run(source, str(tmp_path / "r2"), base)
  os.remove(damaged)
  torch.save({"model": {"token_sequence_transformer.blocks.0.attention.attention.weight": torch.zeros(3)}},
             os.path.join(source, "checkpoint_0000007.pt"))
  with pytest.raises(ConversionError, match="checkpoint_0000007.pt"):
    convert_run.import_run(source, str(tmp_path / "r3"), base)
  with open(os.path.join(source, "nostep.pt"), "wb") as f:
    f.write(b"")
  with pytest.raises(ConversionError, match="nostep.pt: no step number"):
    convert_run.checkpoint_files(source)
  os.remove(os.path.join(source, "config.json"))
  with pytest.raises(ConversionError, match="config.json: no model config"):
    convert_run.read_model_config(os.path.join(source, "config.json"))


def test_import_command_then_sweep_without_training(tmp_path):
  source, workdir = str(tmp_path / "torch"), str(tmp_path / "run")
  _write_regression_checkpoints(source)
  script = os.path.join(REPO, "scripts", "import_torch.py")
  command = [sys.executable, script, "--checkpoints", source, "--workdir", workdir,
             "--train_config", os.path.join(REPO, "configs", "regression.py:tiny")]
  proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "imported 6 regression checkpoints" in proc.stdout
  # What llc_sweep.py --workdir WORKDIR --config configs/llc.py:tiny --notrain --noestimate runs.
  result = job.main_job(regression_configs.get_config("quick"), llc_configs.get_config("tiny"),
                        workdir, train=False, estimate=False, verbose=False)
  assert result.exit_status == 0 and result.runs[0].trained is None
  assert len(llc.load_results(rundir.RunDir(workdir).llc().path)["step"]) == len(STEPS)

  missing = command[:3] + [str(tmp_path / "absent")] + command[4:]
  proc = subprocess.run(missing, capture_output=True, text=True, timeout=600)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and lines == [f"error: {tmp_path / 'absent'}: no such checkpoint directory"]
