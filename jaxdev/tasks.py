"""Settings (tasks) as bundles of pure functions that training and LLC sampling share.

A :class:`Task` ties a model to its data: how to initialise parameters, draw a training batch
from a key, compute the loss, evaluate, and compute the essential-dynamics probe. Training
(:mod:`jaxdev.train`) and the LLC sweep (:mod:`jaxdev.llc`) only talk to this interface.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdev import errors
from jaxdev.data import regression as regression_data
from jaxdev.models import regression as regression_model

TASKS = ("regression", "language")


class Task(NamedTuple):
  """Pure functions describing one training setting.

  A task's training batches come either from a key, drawn on the devices inside the jitted step
  (``train_batch``; regression), or from the host by step number (``host_batch``; text rows),
  exactly one of the two being set. Either way batch ``s`` depends only on ``s``, so the step
  number is the complete data position of a run.

  Attributes:
    init: key -> params.
    train_batch: key -> batch (a pytree of arrays with a leading example axis), or None.
    loss_fn: (params, batch) -> scalar mean loss over the batch.
    evaluate: params -> dict of scalar or vector metrics (jittable) on a fixed evaluation set.
    probe: params -> array, the ED probe (model outputs on fixed inputs), shape ``probe_shape``.
    probe_shape: shape of one probe row.
    sampling_data: (seed, num_examples) -> fixed dataset for SGLD (pytree, leading example axis).
    baselines: dict of reference numbers for the evaluation set (JSON-serialisable).
    host_batch: step -> batch as host numpy arrays (the global batch), or None.
  """

  init: Callable[[jax.Array], Any]
  train_batch: Callable[[jax.Array], Any]
  loss_fn: Callable[[Any, Any], jax.Array]
  evaluate: Callable[[Any], dict]
  probe: Callable[[Any], jax.Array]
  probe_shape: tuple
  sampling_data: Callable[[int, int], Any]
  baselines: dict
  host_batch: Callable[[int], Any] | None = None


def regression_task(config) -> Task:
  """The in-context linear regression setting (SPEC §1) for a training config."""
  data_kwargs = dict(dim=config.data.dim, num_examples=config.data.num_examples,
                     noise_variance=config.data.noise_variance)
  check_config(config)
  pool = None
  if config.data.num_tasks > 0:
    # The pool is part of the run: drawn once from the run's seed.
    pool = regression_data.task_pool(
        jax.random.fold_in(jax.random.key(config.seed), 7), config.data.num_tasks,
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
    return regression_data.sample_batch(key, config.optim.batch_size, tasks=pool, **data_kwargs)

  eval_set = regression_data.fixed_dataset(config.eval.seed, config.eval.num_sequences,
                                           tasks=pool, **data_kwargs)
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
                                            tasks=pool, **data_kwargs)
  probe_tokens = regression_data.tokenize(probe_set.xs, probe_set.ys)

  def probe(params):
    return model.apply({"params": params}, probe_tokens)  # (N, 2K, D+1)

  def sampling_data(seed, num_examples):
    return regression_data.fixed_dataset(seed, num_examples, tasks=pool, **data_kwargs)

  baselines = {
      "ridge_loss": float(jnp.mean(ridge_per_position)),
      "ridge_loss_per_position": [float(v) for v in ridge_per_position],
      "zero_predictor_loss": float(jnp.mean(eval_set.ys ** 2)),
  }
  return Task(init, train_batch, loss_fn, evaluate, probe, tuple(probe_tokens.shape),
              sampling_data, baselines)


def language_model_fns(config):
  """(init: key -> params, loss_fn: (params, rows [B, row_length] int32) -> mean next-token loss)
  of a ``configs/language.py`` config, without touching any data."""
  from jaxdev.models import attention as attention_model  # pylint: disable=import-outside-toplevel
  model = attention_model.build_model(config.model)

  def init(key):
    return model.init(key, jnp.zeros((1, config.data.row_length - 1), jnp.int32))["params"]

  def loss_fn(params, rows):
    return attention_model.next_token_loss(params, model, rows)

  return init, loss_fn


def language_task(config, *, num_baseline_rows: int = 50_000) -> Task:
  """The attention-only language-model setting (SPEC §2) for a ``configs/language.py`` config.

  Builds (once) the tokenized TFDS dataset named by ``config.data``. Batch ``s`` is
  ``TokenBatches[s]`` of the training split; evaluation uses the first ``eval.num_sequences``
  rows of the test split (the training split when there is none), the ED probe the true-next-token
  logit at one fixed random position of each of the first ``ed.num_sequences`` test rows, and the
  SGLD data are rows of the training split drawn without replacement by seed.

  Metrics (nats): ``loss`` (mean over all predicted positions), ``loss_per_position`` ([T]),
  and ``icl_score``, the mean loss over positions [0.44·T, 0.54·T) minus that over
  [0.04·T, 0.06·T) (for the paper's T = 1,023: around token 500 minus around token 50, Olsson
  et al.'s in-context-learning score, averaged over a window to tame the noise of single
  positions).
  Baselines: the empirical unigram and bigram entropies of the training rows (at most
  ``num_baseline_rows`` of them), the losses of the best unigram and bigram predictors in sample.
  """
  # pylint: disable=import-outside-toplevel
  from jaxdev.data import batches as batches_lib, bigrams as bigrams_lib, text_rows
  from jaxdev.models import attention as attention_model

  check_config(config)
  try:
    builder = text_rows.dataset_from_config(config.data)
  except (ValueError, FileNotFoundError, ImportError) as err:
    raise errors.ConfigError(f"config.data: {err}") from None
  train_rows = text_rows.row_source(builder, "train")
  splits = builder.info.splits
  test_rows = text_rows.row_source(builder, "test") if "test" in splits else train_rows
  batches = batches_lib.TokenBatches(train_rows, config.optim.batch_size,
                                     num_epochs=config.data.num_epochs,
                                     shuffle_seed=config.data.get("shuffle_seed"))
  if len(batches) < config.optim.num_steps:
    raise errors.ConfigError(
        f"the training split gives {len(batches)} batches of {config.optim.batch_size} rows over "
        f"{config.data.num_epochs} epoch(s), fewer than config.optim.num_steps "
        f"({config.optim.num_steps})")
  model = attention_model.build_model(config.model)
  num_inputs = config.data.row_length - 1
  init, loss_fn = language_model_fns(config)

  eval_rows = jnp.asarray(batches_lib.probe_rows(test_rows, config.eval.num_sequences, 0)[0])
  early = slice(int(0.04 * num_inputs), max(int(0.06 * num_inputs), int(0.04 * num_inputs) + 1))
  late = slice(int(0.44 * num_inputs), max(int(0.54 * num_inputs), int(0.44 * num_inputs) + 1))

  def evaluate(params):
    logits = model.apply({"params": params}, eval_rows[:, :-1])
    per_position = attention_model.next_token_losses(logits, eval_rows[:, 1:]).mean(axis=0)
    return {"loss": per_position.mean(), "loss_per_position": per_position,
            "icl_score": per_position[late].mean() - per_position[early].mean()}

  probe_tokens, probe_positions = batches_lib.probe_rows(test_rows, config.ed.num_sequences,
                                                       config.ed.seed)
  probe_tokens, probe_positions = jnp.asarray(probe_tokens), jnp.asarray(probe_positions)

  def probe(params):
    return attention_model.true_next_token_logits(params, model, probe_tokens, probe_positions)

  def sampling_data(seed, num_examples):
    count = min(num_examples, len(train_rows))
    index = np.sort(np.random.default_rng(seed).choice(len(train_rows), count, replace=False))
    return batches_lib.read_rows(train_rows, index)

  def host_batch(step):
    return batches[int(step)]

  num_baseline = min(num_baseline_rows, len(train_rows))
  bigrams = bigrams_lib.bigram_table(
      (batches_lib.read_rows(train_rows, range(start, min(start + 8192, num_baseline)))
       for start in range(0, num_baseline, 8192)), config.data.vocab_size)
  unigram = np.asarray(bigrams.counts.sum(axis=0)).ravel().astype(np.float64)
  unigram = unigram[unigram > 0] / unigram.sum()
  baselines = {"bigram_entropy": bigrams.entropy(),
               "unigram_entropy": float(-(unigram * np.log(unigram)).sum()),
               "baseline_rows": num_baseline,
               "train_rows": len(train_rows), "test_rows": len(test_rows)}
  return Task(init, None, loss_fn, evaluate, probe, tuple(probe_positions.shape), sampling_data,
              baselines, host_batch)


def check_config(config) -> None:
  """Raises ConfigError unless the task, data and model sections of a config can make a task.

  Cheap (reads no data), so a run is refused before any work; each builder calls it too.
  """
  task = config.get("task", "regression")
  if task not in TASKS:
    raise errors.ConfigError(f"config.task must be 'regression' or 'language', got {task!r}")
  if task == "regression":
    regression_data.check_config(config.data)
    regression_model.check_config(config.model)
    return
  from jaxdev.models import attention as attention_model  # pylint: disable=import-outside-toplevel
  errors.require_positive("data", config.data, ("vocab_size", "num_epochs"))
  if not config.data.row_length >= 2:
    raise errors.ConfigError(f"config.data.row_length must be >= 2, got {config.data.row_length}")
  attention_model.check_config(config.model)
  if config.model.vocab_size != config.data.vocab_size:
    raise errors.ConfigError(f"config.model.vocab_size ({config.model.vocab_size}) must equal "
                             f"config.data.vocab_size ({config.data.vocab_size})")
  if config.model.context_length < config.data.row_length - 1:
    raise errors.ConfigError(f"config.model.context_length ({config.model.context_length}) is "
                             f"shorter than the rows' {config.data.row_length - 1} input tokens")


def make_task(config) -> Task:
  """The task named by ``config.task`` ("regression" or "language").

  Raises:
    ConfigError: the config's task, data or model sections cannot make a task, or its data
      cannot serve it (e.g. missing files, too few rows).
  """
  check_config(config)
  if config.get("task", "regression") == "regression":
    return regression_task(config)
  return language_task(config)
