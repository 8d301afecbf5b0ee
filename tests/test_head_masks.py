"""Per-head and per-layer weight masks (``head:L.H``, ``layer:L``): what each model's head owns,
and the sweep restricted to one head."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs import regression as regression_configs
from jaxdev import checkpoints
from jaxdev import errors
from jaxdev import job
from jaxdev import llc
from jaxdev import sgld
from jaxdev import tasks
from jaxdev import train
from jaxdev.configs import language as language_configs
from jaxdev.models import attention as attention_model
from jaxdev.models import regression as regression_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD = llc.SweepSettings(step_size=1e-3, gamma=10.0, nbeta=None, num_chains=4, num_draws=30,
                         batch_size=16, num_sampling_examples=256, sampling_seed=5, seed=3,
                         mask="head:0.1", preconditioner="rmsprop")


def _config(task, num_layers=2):
  """The tiny config of a setting with ``num_layers`` layers (regression: 4 heads of 4, width
  16; language: 2 heads of 8, width 16)."""
  module = regression_configs if task == "regression" else language_configs
  config = module.get_config("tiny")
  config.model.num_layers = num_layers
  return config


def _model_and_abstract(task, num_layers=2):
  config = _config(task, num_layers)
  model = tasks.model_for(config)
  return config, model, jax.eval_shape(model.init, jax.random.key(0))


def _dense(mask, abstract):
  """{path: the mask broadcast to the parameter's shape}."""
  return {p: np.broadcast_to(np.asarray(m, bool), x.shape)
          for p, m, x in zip(sgld.parameter_paths(abstract), jax.tree.leaves(mask),
                             jax.tree.leaves(abstract))}


def _layer_paths(task, layer):
  if task == "regression":
    return {f"block_{layer}/attn/qkv/kernel", f"block_{layer}/attn/proj/kernel"}
  return {f"attn_{layer}/{name}" for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")}


@pytest.mark.parametrize("task", ["regression", "language"])
def test_heads_partition_their_layers_attention_weights(task):
  config, model, abstract = _model_and_abstract(task)
  assert set(model.mask_selectors) == {"head", "layer"}
  width, heads = config.model.embed_dim, config.model.num_heads
  head_dim = width // heads if task == "regression" else config.model.head_dim
  per_head = 4 * width * head_dim + (3 * head_dim if task == "language" else 0)
  assert per_head == (4 * 16 * 4 if task == "regression" else 4 * 16 * 8 + 3 * 8)
  for layer in range(config.model.num_layers):
    owners = {p: np.zeros(x.shape, int) for p, x in
              zip(sgld.parameter_paths(abstract), jax.tree.leaves(abstract))}
    for head in range(heads):
      mask = sgld.resolve_mask(f"head:{layer}.{head}", abstract, model.mask_selectors)
      assert sgld.masks.num_selected(mask, abstract) == per_head
      for path, chosen in _dense(mask, abstract).items():
        owners[path] += chosen
    # Every weight of the layer's Q, K, V, O belongs to exactly one head, nothing else to any.
    for path, count in owners.items():
      expected = 1 if path in _layer_paths(task, layer) else 0
      np.testing.assert_array_equal(count, expected, err_msg=path)
    # layer:L is the union of its heads, plus the output bias the heads share (language).
    whole = _dense(sgld.resolve_mask(f"layer:{layer}", abstract, model.mask_selectors), abstract)
    shared = {f"attn_{layer}/b_O"} if task == "language" else set()
    for path, chosen in whole.items():
      np.testing.assert_array_equal(chosen, owners[path] == 1 if path not in shared else True,
                                    err_msg=path)
  # Several selectors are their union; a repeated one changes nothing.
  two = sgld.resolve_mask("head:0.0, head:1.1,head:0.0", abstract, model.mask_selectors)
  assert sgld.masks.num_selected(two, abstract) == 2 * per_head


def _head_h_of_regression(mask, h_params, keep):
  """The attention parameters with the weights ``mask`` selects kept (keep=True) or zeroed."""
  return jax.tree.map(lambda w, m: jnp.where(m == keep, w, 0.0), h_params, mask)


def test_a_regression_head_mask_is_that_heads_computation():
  config, model, _ = _model_and_abstract("regression")
  params = model.init(jax.random.key(1))
  layer, heads = 1, config.model.num_heads
  attn = params[f"block_{layer}"]["attn"]
  module = regression_model.CausalSelfAttention(heads)
  x = jax.random.normal(jax.random.key(2), (3, 8, config.model.embed_dim))

  def run(attn_params):
    out, state = module.apply({"params": attn_params}, x, mutable=["intermediates"])
    return out, state["intermediates"]["attention"][0]  # (B, T, C), (B, nh, T, T)

  full, patterns = run(attn)
  parts = []
  for head in range(heads):
    mask = model.mask_selectors["head"](f"{layer}.{head}", params)[f"block_{layer}"]["attn"]
    mask = jax.tree.map(lambda m, w: np.broadcast_to(m, w.shape), mask, attn)
    alone, _ = run(_head_h_of_regression(mask, attn, keep=True))
    without, _ = run(_head_h_of_regression(mask, attn, keep=False))
    # The output is a sum over heads: head h's weights alone give its term, the others the rest.
    np.testing.assert_allclose(alone + without, full, atol=1e-5)
    assert np.abs(np.asarray(alone)).max() > 1e-2
    parts.append(alone)
    # Moving head h's weights changes head h's attention pattern and no other head's.
    noise = jax.tree.map(lambda w, m: w + jnp.where(m, 0.5, 0.0) * jax.random.normal(
        jax.random.key(head), w.shape), attn, mask)
    _, moved = run(noise)
    change = np.abs(np.asarray(moved - patterns)).max(axis=(0, 2, 3))  # (nh,)
    assert change[head] > 1e-3
    np.testing.assert_array_equal(np.delete(change, head), 0.0)
  np.testing.assert_allclose(sum(parts), full, atol=1e-5)


def test_a_language_head_mask_is_that_heads_computation():
  config, model, _ = _model_and_abstract("language")
  params = model.init(jax.random.key(1))
  layer = 1
  attn = jax.tree.map(  # biases are 0 at initialisation: give them values
      lambda w: w + 0.1 * jax.random.normal(jax.random.key(3), w.shape), params[f"attn_{layer}"])
  module = attention_model.Attention(config.model.num_heads, config.model.head_dim, 0.05)
  qk = jax.random.normal(jax.random.key(4), (2, 6, config.model.embed_dim))
  v = jax.random.normal(jax.random.key(5), (2, 6, config.model.embed_dim))

  def run(attn_params):
    return module.apply({"params": attn_params}, qk, v, return_pattern=True)[0]

  full, total = run(attn), 0.0
  for head in range(config.model.num_heads):
    mask = model.mask_selectors["head"](f"{layer}.{head}", params)[f"attn_{layer}"]
    assert not bool(mask["b_O"])
    # Head h's parameters alone (and no output bias) give its term of the output.
    alone = run(jax.tree.map(lambda w, m: jnp.where(m, w, 0.0), attn, mask))
    assert np.abs(np.asarray(alone)).max() > 1e-3
    total = total + alone
  np.testing.assert_allclose(total + attn["b_O"], full, atol=1e-5)


@pytest.mark.parametrize("task, spec, message", [
    ("regression", "head:0.4", "head 4 is out of range: each layer has 4 head(s), 0 to 3"),
    ("regression", "head:2.0", "layer 2 is out of range: the model has 2 layer(s), 0 to 1"),
    ("regression", "layer:5", "layer 5 is out of range"),
    ("language", "head:0.9", "mask selector 'head:0.9': head 9 is out of range: each layer has "
                             "2 head(s), 0 to 1"),
    ("language", "head:0", "mask selector 'head:0': expected LAYER.HEAD"),
    ("language", "head:0.-1", "expected LAYER.HEAD"),
    ("language", "head:a.b", "expected LAYER.HEAD"),
    ("language", "layer:0.1", "mask selector 'layer:0.1': expected LAYER"),
    ("language", "neuron:0", "unknown kind 'neuron' (known: glob, head, layer)"),
])
def test_bad_head_selectors_are_config_errors(task, spec, message):
  _, model, abstract = _model_and_abstract(task)
  with pytest.raises(errors.ConfigError) as info:
    sgld.resolve_mask(spec, abstract, model.mask_selectors)
  assert message in str(info.value) and str(info.value).startswith("mask selector"), info.value
  with pytest.raises(errors.ConfigError, match="^sgld.mask selector"):
    dataclasses.replace(HEAD, mask=spec).resolved(abstract, model.mask_selectors)


# ----------------------------------------------------------------------------- the sweep


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


def test_a_head_sweep_records_its_mask_and_equals_estimate_llc(tiny_run, tmp_path):
  run = _copy_run(tiny_run, tmp_path)
  steps = [0, 60]
  result = llc.sweep(run, HEAD, steps=steps, checkpoints_per_batch=2, show_progress=False)
  assert result.steps_done == steps and not result.failed
  saved = json.load(open(os.path.join(result.out_dir, "settings.json")))
  assert saved["mask"] == ["head:0.1"] and saved["preconditioner"] == "rmsprop"
  config = llc.load_run_config(run)
  task = tasks.make_task(config)
  selectors = tasks.model_for(config).mask_selectors
  settings = HEAD.resolved()
  abstract = jax.eval_shape(task.init, jax.random.key(0))
  data = task.sampling_data(settings.sampling_seed, settings.num_sampling_examples)
  with checkpoints.ParamsReader(os.path.join(run, "checkpoints"), abstract) as reader:
    params = {s: reader.read(s) for s in steps}
  mask = settings.weight_mask(abstract, selectors)
  assert sgld.masks.num_selected(mask, abstract) == 4 * 16 * 4  # one head of 4 in width 16
  options = dict(step_size=settings.step_size, gamma=settings.gamma, nbeta=settings.nbeta,
                 num_chains=settings.num_chains, num_draws=settings.num_draws,
                 batch_size=settings.batch_size, preconditioner=settings.sampler_preconditioner(),
                 warn=False)
  for step in steps:
    single = sgld.estimate_llc(task.loss_fn, params[step], data, jax.random.key(settings.seed),
                               mask=mask, **options)
    stored = np.load(llc.result_path(result.out_dir, step))
    assert str(stored["status"]) == "ok"
    np.testing.assert_allclose(stored["llc_per_chain"], single.llc_per_chain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stored["loss_trace"], single.loss_trace, rtol=1e-5, atol=1e-6)
    # Another head's chains read differently: the mask reached the sampler.
    other = sgld.estimate_llc(task.loss_fn, params[step], data, jax.random.key(settings.seed),
                              mask=sgld.resolve_mask("head:0.2", abstract, selectors),
                              **options)
    assert np.abs(other.loss_trace[:, 1:] - stored["loss_trace"][:, 1:]).max() > 1e-6


def test_a_bad_head_is_one_config_error_before_any_file(tiny_run, tmp_path):
  run = _copy_run(tiny_run, tmp_path)
  before = _files(run)
  with pytest.raises(errors.ConfigError) as info:
    llc.sweep(run, dataclasses.replace(HEAD, mask="*attn*,head:0.9"), steps=[0],
              show_progress=False)
  assert str(info.value) == ("sgld.mask selector 'head:0.9': head 9 is out of range: each layer "
                             "has 4 head(s), 0 to 3")
  assert _files(run) == before


def _parse(*args):
  """The sweep config as ``scripts/llc_sweep.py`` parses it from ``args``."""
  argv = ["llc_sweep.py", *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs", "llc.py:tiny"),
                                  flag_values=values, sys_argv=argv)
  values(argv)
  return values.config


def test_the_main_job_takes_a_head_mask_from_the_command_line(tiny_run, tmp_path):
  config = _parse("--config.sgld.preconditioner=rmsprop", "--config.sgld.mask=head:0.3,layer:0")
  run = _copy_run(tiny_run, tmp_path)
  job.main_job(regression_configs.get_config("tiny"), config, run, steps=[0], train=False,
               analyze=False, estimate=False, verbose=False)
  saved = json.load(open(os.path.join(run, "llc", config.sweep.name, "settings.json")))
  assert (saved["mask"], saved["preconditioner"]) == (["head:0.3", "layer:0"], "rmsprop")
  # A head the run's model lacks is refused before anything is written.
  bad = _parse("--config.sgld.mask=head:1.0")
  other = _copy_run(tiny_run, tmp_path, "other")
  before = _files(other)
  with pytest.raises(errors.ConfigError, match="layer 1 is out of range"):
    job.main_job(regression_configs.get_config("tiny"), bad, other, steps=[0], train=False,
                 analyze=False, estimate=False, verbose=False)
  assert _files(other) == before
