"""Settings (tasks) as bundles of pure functions that training and LLC sampling share.

A :class:`Task` ties a model to its data: how to initialise parameters, draw a training batch
from a key, compute the loss, evaluate, and compute the essential-dynamics probe. Training
(:mod:`jaxdev.train`) and the LLC sweep (:mod:`jaxdev.llc`) only talk to this interface.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxdev.data import regression as regression_data
from jaxdev.models import regression as regression_model


class Task(NamedTuple):
  """Pure functions describing one training setting.

  Attributes:
    init: key -> params.
    train_batch: key -> batch (a pytree of arrays with a leading example axis).
    loss_fn: (params, batch) -> scalar mean loss over the batch.
    evaluate: params -> dict of scalar or vector metrics (jittable) on a fixed evaluation set.
    probe: params -> array, the ED probe (model outputs on fixed inputs), shape ``probe_shape``.
    probe_shape: shape of one probe row.
    sampling_data: (seed, num_examples) -> fixed dataset for SGLD (pytree, leading example axis).
    baselines: dict of reference numbers for the evaluation set (JSON-serialisable).
  """

  init: Callable[[jax.Array], Any]
  train_batch: Callable[[jax.Array], Any]
  loss_fn: Callable[[Any, Any], jax.Array]
  evaluate: Callable[[Any], dict]
  probe: Callable[[Any], jax.Array]
  probe_shape: tuple
  sampling_data: Callable[[int, int], Any]
  baselines: dict


def regression_task(config) -> Task:
  """The in-context linear regression setting (SPEC §1) for a training config."""
  data_kwargs = dict(dim=config.data.dim, num_examples=config.data.num_examples,
                     noise_variance=config.data.noise_variance)
  tasks = None
  if config.data.num_tasks > 0:
    # The pool is part of the run: drawn once from the run's seed.
    tasks = regression_data.task_pool(
        jax.random.fold_in(jax.random.PRNGKey(config.seed), 7), config.data.num_tasks,
        config.data.dim)
  num_tokens = 2 * config.data.num_examples
  token_dim = config.data.dim + 1
  model = regression_model.build_model(config.model, max_len=num_tokens, token_dim=token_dim)

  def init(key):
    return model.init(key, jnp.zeros((1, num_tokens, token_dim)))["params"]

  def predict(params, xs, ys):
    # Only the x-positions are read out, so the model computes only those outputs (exact).
    outputs = model.apply({"params": params}, regression_data.tokenize(xs, ys), output_stride=2)
    return outputs[..., 0]  # (B, K): coordinate 0 at each x_k, as regression_data.readout

  def loss_fn(params, batch):
    return jnp.mean((predict(params, batch.xs, batch.ys) - batch.ys) ** 2)

  def train_batch(key):
    return regression_data.sample_batch(key, config.optim.batch_size, tasks=tasks, **data_kwargs)

  eval_set = regression_data.fixed_dataset(config.eval.seed, config.eval.num_sequences,
                                           tasks=tasks, **data_kwargs)
  ridge = regression_data.ridge_predictions(eval_set.xs, eval_set.ys, config.data.noise_variance)
  ridge_per_position = regression_data.per_position_mse(ridge, eval_set.ys)

  def evaluate(params):
    pred = predict(params, eval_set.xs, eval_set.ys)
    per_position = regression_data.per_position_mse(pred, eval_set.ys)  # [K]
    last = per_position.shape[0]
    return {
        "loss": jnp.mean(per_position),
        "loss_per_position": per_position,
        "icl_1_4": per_position[min(3, last - 1)] - per_position[0],
        "icl_4_8": per_position[last - 1] - per_position[min(3, last - 1)],
        "pred_norm": jnp.mean(pred ** 2),
        "mse_to_ridge": jnp.mean((pred - ridge) ** 2),
    }

  probe_set = regression_data.fixed_dataset(config.ed.seed, config.ed.num_sequences,
                                            tasks=tasks, **data_kwargs)
  probe_tokens = regression_data.tokenize(probe_set.xs, probe_set.ys)

  def probe(params):
    return model.apply({"params": params}, probe_tokens)  # (N, 2K, D+1)

  def sampling_data(seed, num_examples):
    return regression_data.fixed_dataset(seed, num_examples, tasks=tasks, **data_kwargs)

  baselines = {
      "ridge_loss": float(jnp.mean(ridge_per_position)),
      "ridge_loss_per_position": [float(v) for v in ridge_per_position],
      "zero_predictor_loss": float(jnp.mean(eval_set.ys ** 2)),
  }
  return Task(init, train_batch, loss_fn, evaluate, probe, tuple(probe_tokens.shape),
              sampling_data, baselines)


def make_task(config) -> Task:
  """The task named by ``config.task``."""
  if config.task == "regression":
    return regression_task(config)
  raise ValueError(f"unknown task {config.task!r}")
