"""The sweep is the sampler over a run: the sampler's options, one validation path, traced
hyperparameters."""

import dataclasses
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs import regression as regression_configs
from jaxdev import checkpoints
from jaxdev import distributed
from jaxdev import errors
from jaxdev import job
from jaxdev import llc
from jaxdev import sgld
from jaxdev import tasks
from jaxdev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = llc.SweepSettings(step_size=1e-3, gamma=10.0, nbeta=None, num_chains=4, num_draws=30,
                         batch_size=16, num_sampling_examples=256, sampling_seed=5, seed=3)
OPTIONS = dataclasses.replace(BASE, mask="*attn*, head/*", preconditioner="rmsprop",
                              rmsprop_alpha=0.9, rmsprop_eps=0.05, weight_decay=0.01,
                              bounding_box=0.05, compute_mala="consecutive")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("runs") / "tiny")
  train.train(regression_configs.get_config("tiny"), workdir, show_progress=False)
  return workdir


def _copy_run(run, tmp_path, name="run"):
  dest = str(tmp_path / name)
  shutil.copytree(run, dest, ignore=shutil.ignore_patterns("llc"))
  return dest


def _files(root):
  return sorted(os.path.relpath(os.path.join(r, f), root) for r, _, fs in os.walk(root) for f in fs)


def _task_and_params(run, steps):
  task = tasks.make_task(llc.load_run_config(run))
  abstract = jax.eval_shape(task.init, jax.random.key(0))
  with checkpoints.ParamsReader(os.path.join(run, "checkpoints"), abstract) as reader:
    return task, {s: reader.read(s) for s in steps}


def _estimate(loss_fn, params, settings, data, **overrides):
  """sgld.estimate_llc with the sweep settings' options."""
  options = dict(step_size=settings.step_size, gamma=settings.gamma, nbeta=settings.nbeta,
                 num_chains=settings.num_chains, num_draws=settings.num_draws,
                 batch_size=settings.batch_size, noise_level=settings.noise_level,
                 weight_decay=settings.weight_decay, mask=settings.weight_mask(params),
                 preconditioner=settings.sampler_preconditioner(),
                 bounding_box=settings.bounding_box, compute_mala=settings.compute_mala,
                 warn=False)
  options.update(overrides)
  return sgld.estimate_llc(loss_fn, params, data, jax.random.key(settings.seed), **options)


def test_glob_mask_resolves_against_the_parameter_tree():
  task = tasks.make_task(regression_configs.get_config("tiny"))
  abstract = jax.eval_shape(task.init, jax.random.key(0))
  paths = sgld.parameter_paths(abstract)
  assert "block_0/attn/qkv/kernel" in paths and "head/bias" in paths
  mask = sgld.resolve_mask("*attn*, head/*", abstract)
  chosen = {p for p, m in zip(paths, jax.tree.leaves(mask)) if bool(m)}
  assert chosen == {"block_0/attn/proj/kernel", "block_0/attn/qkv/kernel", "head/bias",
                    "head/kernel"}
  # A list of globs is the same mask; None and "" are every weight.
  again = sgld.resolve_mask(["*attn*", "head/*"], abstract)
  assert [bool(m) for m in jax.tree.leaves(again)] == [bool(m) for m in jax.tree.leaves(mask)]
  assert sgld.resolve_mask(None, abstract) is None and sgld.resolve_mask("", abstract) is None
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
  assert sgld.masks.num_selected(mask, abstract) == 16 * 16 + 16 * 48 + 5 + 16 * 5 < total
  # A later selector kind (e.g. one attention head) is a function of (argument, params).
  first_row = lambda arg, params: jax.tree.map(  # noqa: E731
      lambda x: np.arange(x.shape[0])[:, None] == int(arg) if x.ndim == 2 else np.bool_(False),
      params)
  rows = sgld.resolve_mask("row:0", abstract, {"row": first_row})
  assert sgld.masks.num_selected(rows, abstract) == sum(
      x.shape[1] for x in jax.tree.leaves(abstract) if x.ndim == 2)


def test_sweep_with_rmsprop_mask_and_mala_equals_estimate_llc(tiny_run, tmp_path):
  run = _copy_run(tiny_run, tmp_path)
  steps = [0, 60]
  result = llc.sweep(run, OPTIONS, steps=steps, checkpoints_per_batch=2, show_progress=False)
  assert result.steps_done == steps and not result.failed
  saved = json.load(open(os.path.join(result.out_dir, "settings.json")))
  assert saved["mask"] == ["*attn*", "head/*"] and saved["preconditioner"] == "rmsprop"
  assert (saved["rmsprop_alpha"], saved["rmsprop_eps"]) == (0.9, 0.05)
  assert (saved["weight_decay"], saved["bounding_box"]) == (0.01, 0.05)
  assert saved["compute_mala"] == "consecutive"
  settings = OPTIONS.resolved()
  task, params = _task_and_params(run, steps)
  data = task.sampling_data(settings.sampling_seed, settings.num_sampling_examples)
  for step in steps:
    single = _estimate(task.loss_fn, params[step], settings, data)
    stored = np.load(llc.result_path(result.out_dir, step))
    assert str(stored["status"]) == "ok"
    np.testing.assert_allclose(stored["llc_per_chain"], single.llc_per_chain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stored["loss_trace"], single.loss_trace, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stored["init_loss"], single.init_loss, rtol=1e-6)
    # MALA acceptance per chain, over the kept draws: its mean is estimate_llc's.
    per_chain = np.nanmean(single.diagnostics["mala"], axis=1)
    np.testing.assert_allclose(stored["mala_acceptance"], per_chain, rtol=1e-5)
    np.testing.assert_allclose(stored["mala_acceptance"].mean(), single.diagnostics["mala_mean"],
                               rtol=1e-5)
    assert np.all((stored["mala_acceptance"] > 0) & (stored["mala_acceptance"] <= 1))
    # The options change the chains: plain SGLD on every weight reads differently.
    plain = _estimate(task.loss_fn, params[step], settings, data, mask=None, preconditioner=None,
                      weight_decay=0.0, bounding_box=None, compute_mala=False)
    assert np.abs(plain.loss_trace[:, 1:] - stored["loss_trace"][:, 1:]).max() > 1e-4
    assert "mala" not in plain.diagnostics
    # The box holds every coordinate within b of w*: the distance is at most b·√(sampled).
    sampled = sgld.masks.num_selected(settings.weight_mask(params[step]), params[step])
    assert stored["distance_trace"].max() <= 0.05 * np.sqrt(sampled) * (1 + 1e-5)
  # Records of a sweep without MALA have no mala_acceptance.
  llc.sweep(run, BASE, steps=[0], name="plain", show_progress=False)
  assert "mala_acceptance" not in np.load(llc.result_path(os.path.join(run, "llc", "plain"), 0))


def test_masked_out_weights_never_move(tiny_run):
  settings = OPTIONS.resolved()
  task, params = _task_and_params(tiny_run, [60])
  params = params[60]
  mask = settings.weight_mask(params)
  data = task.sampling_data(settings.sampling_seed, settings.num_sampling_examples)
  kernel = jax.jit(sgld.build_kernel(
      task.loss_fn, step_size=1e-2, nbeta=settings.nbeta, gamma=settings.gamma,
      weight_decay=0.5, mask=mask, preconditioner=settings.sampler_preconditioner(),
      bounding_box=settings.bounding_box))
  state = sgld.init(params, preconditioner=settings.sampler_preconditioner())
  for t in range(20):
    batch = jax.tree.map(lambda x, t=t: x[16 * t:16 * (t + 1)], data)
    state, _ = kernel(jax.random.key(t), state, batch)
  for path, m, before, after in zip(sgld.parameter_paths(params), jax.tree.leaves(mask),
                                    jax.tree.leaves(params), jax.tree.leaves(state.params)):
    if bool(m):
      assert np.abs(np.asarray(after) - np.asarray(before)).max() > 1e-4, path
    else:
      np.testing.assert_array_equal(np.asarray(after), np.asarray(before), err_msg=path)


@pytest.mark.parametrize("change, message", [
    (dict(step_size=-1e-3), "sgld.step_size must be finite and > 0, got -0.001"),
    (dict(gamma=float("nan")), "sgld.gamma must be finite"),
    (dict(num_chains=0), "sgld.num_chains must be positive, got 0"),
    (dict(num_burnin=30), "sgld.num_burnin (30) must be below sgld.num_draws (30)"),
    (dict(num_burnin=29), "sgld.num_draws 30 with sgld.num_burnin 29 and sgld.thin 1 keeps 1 draw"),
    (dict(thin=1000), "sgld.num_draws 30 with sgld.num_burnin 0 and sgld.thin 1000 keeps 1 draw"),
    (dict(weight_decay=-1.0), "sgld.weight_decay must be finite and >= 0"),
    (dict(bounding_box=-0.1), "sgld.bounding_box must be finite and > 0"),
    (dict(preconditioner="adam"), "sgld.preconditioner must be 'none' or 'rmsprop', got 'adam'"),
    (dict(preconditioner="rmsprop", rmsprop_alpha=1.0), "sgld.rmsprop_alpha must be in [0, 1)"),
    (dict(preconditioner="rmsprop", rmsprop_eps=0.0), "sgld.rmsprop_eps must be finite and > 0"),
    (dict(preconditioner=sgld.RMSProp(initial=1.0)), "RMSProp(initial=1) is an option of"),
    (dict(compute_mala="always"), "sgld.compute_mala must be"),
    (dict(min_good_fraction=1.0), "sgld.min_good_fraction must be in [0, 1)"),
    (dict(batch_size=512), "sgld.batch_size (512) exceeds the sampling dataset"),
    (dict(mask=3), "sgld.mask must be a string or a list of strings"),
    # Found against the model's parameters, still before the sweep's settings are recorded.
    (dict(mask="*attention*"), "sgld.mask selector '*attention*' selects no parameter"),
    (dict(mask="*attn*,heads/*"), "sgld.mask selector 'heads/*' selects no parameter"),
    (dict(mask="neuron:0"), "sgld.mask selector 'neuron:0': unknown kind 'neuron'"),
    (dict(mask="head:0.9"), "head 9 is out of range"),
    (dict(matmul_dtype="float16"), "sgld.matmul_dtype must be 'float32' or 'bfloat16'"),
])
def test_bad_settings_are_one_config_error_before_any_file(tiny_run, tmp_path, change, message):
  run = _copy_run(tiny_run, tmp_path)
  before = _files(run)
  with pytest.raises(errors.ConfigError) as info:
    llc.sweep(run, dataclasses.replace(BASE, **change), steps=[0], show_progress=False)
  assert isinstance(info.value, errors.UserError) and message in str(info.value), info.value
  assert "\n" not in str(info.value)
  assert _files(run) == before


def test_bfloat16_products_move_the_llc_less_than_its_standard_error(tiny_run, tmp_path):
  """Mixed precision (bfloat16 inputs, float32 sums) with the same chain keys: the model's
  outputs differ at bfloat16's rounding, and the LLC by far less than the chains' spread."""
  run = _copy_run(tiny_run, tmp_path)
  task, params = _task_and_params(run, [60])
  mixed = tasks.make_task(llc.load_run_config(run), matmul_dtype="bfloat16")
  data = task.sampling_data(0, 64)
  exact, rounded = task.loss_fn(params[60], data), mixed.loss_fn(params[60], data)
  assert 0 < abs(float(rounded) - float(exact)) < 2e-2 * abs(float(exact))
  steps = [5, 20, 60]
  for dtype in ("float32", "bfloat16"):
    llc.sweep(run, dataclasses.replace(BASE, num_draws=100, matmul_dtype=dtype), steps=steps,
              name=dtype, show_progress=False)
  f32 = llc.load_results(os.path.join(run, "llc", "float32"))
  b16 = llc.load_results(os.path.join(run, "llc", "bfloat16"))
  standard_error = f32["llc_std"] / np.sqrt(BASE.num_chains)
  assert np.all(f32["llc_mean"] != b16["llc_mean"])
  np.testing.assert_array_less(np.abs(b16["llc_mean"] - f32["llc_mean"]), standard_error)
  with pytest.raises(errors.ConfigError, match="applies to the regression model"):
    from jaxdev.configs import language  # pylint: disable=import-outside-toplevel
    tasks.make_task(language.get_config("tiny"), matmul_dtype="bfloat16")


def _hyperparameter_variants():
  first = dataclasses.replace(OPTIONS, compute_mala=False)
  second = dataclasses.replace(first, step_size=2e-3, gamma=30.0, nbeta=9.0, noise_level=0.5,
                               weight_decay=0.1, bounding_box=0.2, mask="block_0/fc*")
  return first.resolved(), second.resolved()


def test_new_hyperparameters_do_not_retrace_estimate_llc(tiny_run):
  task, params = _task_and_params(tiny_run, [60])
  traces = []

  def loss_fn(p, batch):
    traces.append(1)
    return task.loss_fn(p, batch)

  first, second = _hyperparameter_variants()
  data = task.sampling_data(first.sampling_seed, first.num_sampling_examples)
  a = _estimate(loss_fn, params[60], first, data)
  count = len(traces)
  assert count > 0
  b = _estimate(loss_fn, params[60], second, data)
  assert len(traces) == count
  assert np.abs(a.loss_trace[:, 1:] - b.loss_trace[:, 1:]).max() > 1e-4


def test_new_hyperparameters_do_not_retrace_the_sweep_estimator(tiny_run):
  task, params = _task_and_params(tiny_run, [0, 60])
  traces = []

  def loss_fn(p, batch):
    traces.append(1)
    return task.loss_fn(p, batch)

  first, second = _hyperparameter_variants()
  mesh = distributed.sweep_mesh(first.num_chains)
  stacked = llc.engine.stack_group([jax.device_get(params[s]) for s in (0, 60)], 2, mesh)
  data, keys = llc.sampling_data(task, first, mesh), llc.chain_keys(first, mesh)
  loss_a, trace_a, _ = llc.build_estimator(loss_fn, first, mesh)(stacked, keys, data)
  count = len(traces)
  assert count > 0
  loss_b, trace_b, _ = llc.build_estimator(loss_fn, second, mesh)(stacked, keys, data)
  assert len(traces) == count
  np.testing.assert_array_equal(np.asarray(loss_a), np.asarray(loss_b))
  assert np.abs(np.asarray(trace_a.loss) - np.asarray(trace_b.loss))[..., 1:].max() > 1e-4
  # The second estimator's numbers are estimate_llc's with the second settings.
  data_host = task.sampling_data(second.sampling_seed, second.num_sampling_examples)
  single = _estimate(task.loss_fn, params[60], second, data_host)
  np.testing.assert_allclose(np.asarray(trace_b.loss)[1], single.loss_trace, rtol=1e-5, atol=1e-6)


def _parse(*args):
  """The sweep config as ``scripts/llc_sweep.py`` parses it from ``args``."""
  argv = ["llc_sweep.py", *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs", "llc.py:tiny"),
                                  flag_values=values, sys_argv=argv)
  values(argv)
  return values.config


def test_config_overrides_reach_the_records(tiny_run, tmp_path):
  config = _parse("--config.sgld.preconditioner=rmsprop", "--config.sgld.mask=*attn*,head/*",
                  "--config.sgld.compute_mala=consecutive", "--config.sgld.min_good_fraction=0.25",
                  "--config.sgld.weight_decay=0.01", "--config.sgld.bounding_box=0.5",
                  "--config.sgld.num_chains=4")
  settings = llc.SweepSettings.from_config(config.sgld).resolved()
  assert settings.mask == ("*attn*", "head/*") and settings.preconditioner == "rmsprop"
  assert (settings.min_good_fraction, settings.bounding_box) == (0.25, 0.5)
  # The defaults of the config are today's plain sweep.
  plain = llc.SweepSettings.from_config(_parse().sgld).resolved()
  assert (plain.mask, plain.preconditioner, plain.bounding_box, plain.compute_mala,
          plain.weight_decay, plain.min_good_fraction) == (None, "none", None, False, 0.0, 0.5)
  run = _copy_run(tiny_run, tmp_path)
  job.main_job(regression_configs.get_config("tiny"), config, run, steps=[0], train=False,
               analyze=False, estimate=False, verbose=False)
  out = os.path.join(run, "llc", config.sweep.name)
  saved = json.load(open(os.path.join(out, "settings.json")))
  assert (saved["preconditioner"], saved["mask"], saved["compute_mala"]) == (
      "rmsprop", ["*attn*", "head/*"], "consecutive")
  assert saved["min_good_fraction"] == 0.25
  assert np.load(llc.result_path(out, 0))["mala_acceptance"].shape == (4,)


def test_a_sweep_recorded_before_the_options_resumes(tiny_run, tmp_path):
  run = _copy_run(tiny_run, tmp_path)
  llc.sweep(run, BASE, steps=[0], show_progress=False)
  path = os.path.join(run, "llc", "default", "settings.json")
  old = json.load(open(path))
  new_fields = ("weight_decay", "mask", "preconditioner", "rmsprop_alpha", "rmsprop_eps",
                "bounding_box", "compute_mala")
  json.dump({k: v for k, v in old.items() if k not in new_fields}, open(path, "w"))
  result = llc.sweep(run, BASE, steps=[0, 5], show_progress=False)
  assert result.steps_done == [5] and result.steps_skipped == [0]
  for change in (dict(preconditioner="rmsprop"), dict(mask="*attn*"), dict(weight_decay=0.1),
                 dict(compute_mala=True), dict(bounding_box=1.0)):
    with pytest.raises(errors.SweepError, match=next(iter(change))):
      llc.sweep(run, dataclasses.replace(BASE, **change), steps=[0], show_progress=False)


def test_restrictions_name_each_head_layer_or_mask():
  model = ml_collections.ConfigDict({"num_layers": 2, "num_heads": 3})
  assert llc.restrictions("", model) == []
  assert llc.restrictions("heads", model) == [
      (f"head{l}.{h}", f"head:{l}.{h}") for l in range(2) for h in range(3)]
  assert llc.restrictions("layers", model) == [("layer0", "layer:0"), ("layer1", "layer:1")]
  assert llc.restrictions("head:1.2; layer:0,*W_E*", model) == [
      ("head1.2", "head:1.2"), ("layer0+_W_E_", "layer:0,*W_E*")]
  with pytest.raises(errors.ConfigError, match="empty mask"):
    llc.restrictions("head:0.0;;layer:1", model)
  with pytest.raises(errors.ConfigError, match="twice"):
    llc.restrictions("head:0.0;head:0.0", model)
  assert llc.every_nth([9, 0, 3, 6, 12], 2) == [0, 6, 12]
  assert llc.every_nth([0, 3, 6, 9], 2) == [0, 6, 9]  # the last checkpoint is always kept
  with pytest.raises(errors.ConfigError, match="restriction_every"):
    llc.every_nth([0, 1], 0)


def test_restricted_sweeps_at_named_checkpoints():
  from jaxdev.configs import language as language_configs  # pylint: disable=import-outside-toplevel
  from jaxdev.configs import llc as llc_configs  # pylint: disable=import-outside-toplevel
  train_config = language_configs.get_config("cpu_random")
  sweep_config = llc_configs.get_config("language_cpu_random")
  steps = job.restriction_steps(train_config, sweep_config)
  assert steps == [0, 3000, 4800, 5400, 6000, 6600, 7200, 24000]
  assert job.restriction_steps(train_config, sweep_config, steps=[600, 4800, 5400]) == [4800, 5400]
  sweep_config.sweep.restriction_steps = "4800,4801"
  with pytest.raises(errors.ConfigError, match=r"restriction_steps \[4801\] are not checkpoint"):
    job.restriction_steps(train_config, sweep_config)
  sweep_config.sweep.restriction_steps = ""
  sweep_config.sweep.restriction_every = 20
  every = job.restriction_steps(train_config, sweep_config)
  planned = train.checkpoint_steps(24_000, 20, 41)
  assert every == sorted(planned)[::20] + ([24_000] if sorted(planned)[::20][-1] != 24_000 else [])
