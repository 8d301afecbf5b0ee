"""A setting as a model and its data: every draw made once, and the same as the formulas it has
always followed (so runs, sweeps and indicator records stay comparable across versions)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdev import errors
from jaxdev import tasks
from jaxdev.configs import language as language_configs
from jaxdev.configs import regression as regression_configs
from jaxdev.data import regression as regression_data
from jaxdev.indicators import regression as regression_indicators
from jaxdev.indicators import run as indicators_run
from jaxdev.models import attention as attention_model

SETTINGS = indicators_run.IndicatorSettings(num_sequences=64, num_attention_sequences=8,
                                            hessian_sequences=16)


# Each draw written out directly from its definition, without the library's samplers.


def _pool(seed, num_tasks, dim):
  return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), 7), (num_tasks, dim))


def _sequences(key, size, d, pool, input_gain=None, task_gain=None):
  task_key, x_key, noise_key = jax.random.split(key, 3)
  if pool is None:
    t = jax.random.normal(task_key, (size, d.dim))
  else:
    t = pool[jax.random.randint(task_key, (size,), 0, pool.shape[0])]
  xs = jax.random.normal(x_key, (size, d.num_examples, d.dim))
  if input_gain is not None:
    xs = input_gain * xs
  if task_gain is not None:
    t = task_gain * t
  noise = jnp.sqrt(d.noise_variance) * jax.random.normal(noise_key, (size, d.num_examples))
  return xs, jnp.einsum("bkd,bd->bk", xs, t) + noise


def _fixed(seed, size, d, pool, chunk=65536):
  parts = [_sequences(jax.random.fold_in(jax.random.key(seed), c), min(chunk, size - start), d,
                      pool) for c, start in enumerate(range(0, size, chunk))]
  return jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts])


def _assert_batch(batch, expected):
  xs, ys = expected
  np.testing.assert_array_equal(np.asarray(batch[0]), np.asarray(xs))
  np.testing.assert_array_equal(np.asarray(batch[1]), np.asarray(ys))


def _config(num_tasks, seed=3):
  config = regression_configs.get_config("tiny")
  config.seed = seed
  config.data.num_tasks = num_tasks
  return config


@pytest.mark.parametrize("num_tasks", [0, 5])
def test_regression_draws_follow_their_definitions_bit_for_bit(num_tasks):
  config = _config(num_tasks)
  d = config.data
  data = tasks.data_for(config)
  pool = _pool(config.seed, num_tasks, d.dim) if num_tasks else None
  if num_tasks:
    np.testing.assert_array_equal(data.distribution.tasks, pool)
    assert data.distribution.tasks.shape == (5, d.dim)
  else:
    assert data.distribution.tasks is None
  # The training stream, eagerly and compiled as in the training step.
  key = jax.random.fold_in(jax.random.key(11), 4)
  batch = data.train_batch(key)
  assert batch.xs.shape == (config.optim.batch_size, d.num_examples, d.dim)
  _assert_batch(batch, _sequences(key, config.optim.batch_size, d, pool))
  _assert_batch(jax.jit(data.train_batch)(key),
                jax.jit(lambda k: _sequences(k, config.optim.batch_size, d, pool))(key))
  # Evaluation set, probe inputs, sampling set, baselines.
  _assert_batch(data.eval_set, _fixed(config.eval.seed, config.eval.num_sequences, d, pool))
  probe_xs, probe_ys = _fixed(config.ed.seed, config.ed.num_sequences, d, pool)
  np.testing.assert_array_equal(data.probe_inputs, regression_data.tokenize(probe_xs, probe_ys))
  _assert_batch(data.sampling_data(7, 300), _fixed(7, 300, d, pool))
  eval_xs, eval_ys = _fixed(config.eval.seed, config.eval.num_sequences, d, pool)
  ridge = regression_data.ridge_predictions(eval_xs, eval_ys, d.noise_variance)
  assert data.baselines["ridge_loss"] == float(jnp.mean((ridge - eval_ys) ** 2, axis=0).mean())
  assert data.baselines["zero_predictor_loss"] == float(jnp.mean(eval_ys ** 2))
  # make_task hands training and the sweep these very functions and arrays.
  task = tasks.make_task(config)
  _assert_batch(task.train_batch(key), _sequences(key, config.optim.batch_size, d, pool))
  _assert_batch(task.sampling_data(7, 300), _fixed(7, 300, d, pool))
  assert task.probe_shape == (config.ed.num_sequences, 2 * d.num_examples, d.dim + 1)
  assert task.baselines == data.baselines


@pytest.mark.parametrize("num_tasks", [0, 5])
def test_indicator_inputs_follow_their_definitions_bit_for_bit(num_tasks):
  config = _config(num_tasks)
  d = config.data
  pool = _pool(config.seed, num_tasks, d.dim) if num_tasks else None
  inputs = regression_indicators.regression_inputs(
      tasks.data_for(config).distribution, num_sequences=64, num_attention_sequences=8,
      seed=5_000, gains=(3, 10))
  key = jax.random.PRNGKey(5_000)
  _assert_batch((inputs.xs, inputs.ys), _sequences(jax.random.fold_in(key, 0), 64, d, pool))
  for g in (3, 10):
    _assert_batch(inputs.ood[f"inputs_x{g}"], _sequences(jax.random.fold_in(key, 0), 64, d, pool,
                                                         input_gain=g, task_gain=1.0))
    _assert_batch(inputs.ood[f"tasks_x{g}"], _sequences(jax.random.fold_in(key, 0), 64, d, pool,
                                                        input_gain=1.0, task_gain=g))
  # Inputs 3x larger, labels of tasks 10x larger: not the evaluation set.
  assert np.abs(inputs.ood["inputs_x3"][0]).max() > 2 * np.abs(inputs.xs).max()
  attention_xs, attention_ys = _sequences(jax.random.fold_in(key, 2), 8, d, pool)
  np.testing.assert_array_equal(inputs.attention_tokens,
                                regression_data.tokenize(attention_xs, attention_ys))
  if num_tasks:
    _assert_batch((inputs.true_xs, inputs.true_ys),
                  _sequences(jax.random.fold_in(key, 1), 64, d, None))
  else:
    assert inputs.true_xs is None and inputs.true_baselines == {}
  # The Hessian batch is the run's sampling set of the Hessian's seed and size.
  batch = indicators_run.setting(config, SETTINGS)[3]
  _assert_batch(batch, _fixed(SETTINGS.hessian_seed, SETTINGS.hessian_sequences, d, pool))
  _assert_batch(regression_indicators.hessian_batch(config, 16, SETTINGS.hessian_seed), batch)


def test_indicators_evaluate_the_training_task_pool_drawn_once(monkeypatch):
  config = _config(num_tasks=3, seed=4)
  config.data.noise_variance = 1e-8  # labels almost noiseless: each sequence reveals its task
  task = tasks.make_task(config)
  pool = np.asarray(task.data.distribution.tasks)
  other = np.asarray(_pool(config.seed + 1, 3, config.data.dim))

  def nearest(xs, ys, candidates):
    """Distance from each sequence's least-squares task to the nearest candidate task."""
    solved = jax.vmap(lambda x, y: jnp.linalg.lstsq(x, y)[0])(xs, ys)
    return np.linalg.norm(np.asarray(solved)[:, None] - candidates[None], axis=-1).min(axis=1)

  train = task.train_batch(jax.random.key(0))
  assert nearest(train.xs, train.ys, pool).max() < 1e-3
  inputs = regression_indicators.regression_inputs(task.data.distribution, num_sequences=64,
                                                   num_attention_sequences=8)
  assert nearest(inputs.xs, inputs.ys, pool).max() < 1e-3  # the indicators see the run's tasks
  assert nearest(inputs.xs, inputs.ys, other).min() > 0.1  # which another pool would not give
  # dMMSE knows the pool: with noiseless labels it finds the task after one example.
  dmmse = inputs.baselines["dmmse"]
  np.testing.assert_allclose(dmmse[:, 1:], inputs.ys[:, 1:], atol=1e-2)

  # The indicators of a run draw its pool once, the same pool as training, for every input set.
  calls = []
  original = regression_data.task_pool
  monkeypatch.setattr(regression_data, "task_pool",
                      lambda *args: calls.append(args) or original(*args))
  cheap, _, loss_fn, batch, name = indicators_run.setting(config, SETTINGS)
  assert name == "regression" and len(calls) == 1
  assert nearest(batch.xs, batch.ys, pool).max() < 1e-3
  _assert_batch(batch, task.sampling_data(SETTINGS.hessian_seed, SETTINGS.hessian_sequences))
  params = task.init(jax.random.key(1))
  got = cheap(params)
  model = tasks.model_for(config)
  inputs = regression_indicators.regression_inputs(
      task.data.distribution, num_sequences=SETTINGS.num_sequences,
      num_attention_sequences=SETTINGS.num_attention_sequences, seed=SETTINGS.seed)
  want = regression_indicators.indicators(model.module, params, inputs)
  for column in ("loss", "mse_to_dmmse", "mse_to_task_prior", "loss_true", "ood_tasks_x3"):
    assert float(got[column]) == float(want[column]), column
  # The Hessian's loss is the training loss (over all outputs instead of the x-positions only).
  np.testing.assert_allclose(loss_fn(params, batch), task.loss_fn(params, batch), rtol=1e-5)


def test_sample_batch_gains_scale_the_draws_not_change_them():
  key = jax.random.key(9)
  kwargs = dict(noise_variance=0.0, tasks=_pool(0, 6, 4))
  base = regression_data.sample_batch(key, 16, **kwargs)
  inputs = regression_data.sample_batch(key, 16, input_gain=3.0, **kwargs)
  task = regression_data.sample_batch(key, 16, task_gain=5.0, **kwargs)
  np.testing.assert_array_equal(inputs.xs, 3.0 * base.xs)
  np.testing.assert_allclose(inputs.ys, 3.0 * base.ys, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(task.xs, base.xs)
  np.testing.assert_allclose(task.ys, 5.0 * base.ys, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(base.ys).max()) > 1.0


def test_model_for_needs_no_data_and_matches_the_task():
  config = _config(num_tasks=0)
  model = tasks.model_for(config)
  task = tasks.make_task(config)
  params = model.init(jax.random.key(2))
  jax.tree.map(np.testing.assert_array_equal, params, task.init(jax.random.key(2)))
  batch = task.sampling_data(0, 32)
  assert float(model.loss_fn(params, batch)) == float(task.loss_fn(params, batch))
  # predict reads coordinate 0 of the full outputs at the x-positions.
  full = regression_data.readout(model.apply(params, regression_data.tokenize(batch.xs, batch.ys)))
  np.testing.assert_allclose(model.predict(params, batch.xs, batch.ys), full, rtol=1e-5, atol=1e-6)
  assert model.predict(params, batch.xs, batch.ys).shape == (32, config.data.num_examples)

  language = language_configs.get_config("tiny")
  language.data.data_dir = "/nonexistent"  # the model reads no data
  lm = tasks.model_for(language)
  lm_params = lm.init(jax.random.key(0))
  assert lm.predict is None
  rows = jax.random.randint(jax.random.key(1), (3, language.data.row_length), 0,
                            language.data.vocab_size)
  module = attention_model.build_model(language.model)
  want = attention_model.next_token_loss(lm_params, module, rows)
  assert float(lm.loss_fn(lm_params, rows)) == float(want)
  assert float(want) == pytest.approx(np.log(language.data.vocab_size), rel=0.1)
  init, loss_fn = tasks.language_model_fns(language)
  assert jax.tree.structure(init(jax.random.key(0))) == jax.tree.structure(lm_params)
  assert float(loss_fn(lm_params, rows)) == float(want)


def test_probe_width_is_the_width_of_the_probe_the_task_records(tiny_run, tiny_language_run):
  from jaxdev import llc, rundir
  for run in (tiny_run, tiny_language_run):
    config = llc.load_run_config(run)
    _, outputs = rundir.RunDir(run).ed_probe()
    assert tasks.probe_width(config) == int(np.prod(outputs.shape[1:]))
    assert tasks.probe_width(config.to_dict()) == tasks.probe_width(config)


@pytest.mark.parametrize("field,value,match", [
    ("repeat_fraction", 1.5, "repeat_fraction must be in"),
    ("repeat_copies", 1, "repeat_copies must be an integer >= 2"),
    ("repeat_length", 43, r"repeat_length must be in \[0, \(row_length - 1\) // repeat_copies = 42\]"),
])
def test_repeated_block_settings_are_checked(field, value, match):
  config = language_configs.get_config("cpu_random")
  config.data.repeat_copies = 3
  config.data[field] = value
  with pytest.raises(errors.ConfigError, match=match):
    tasks.check_config(config)
  assert tasks.check_config(language_configs.get_config("cpu_random")) is None
