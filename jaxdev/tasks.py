"""Settings (tasks) as a model and its data: pure functions shared by training, sampling and the
indicators.

A setting is a :class:`Model` (initialise parameters, apply them, the training loss; no data) and
its :class:`Data` (training batches, the evaluation set, the essential-dynamics probe inputs, the
SGLD sampling set, baselines). :func:`model_for` and :func:`data_for` build them from a training
config; every random draw of a run's data (the regression task pool, the training stream, the
evaluation, probe and sampling sets) is made by :func:`data_for`, so whatever reads the run's data
reads the same draws. :func:`make_task` composes the two into the :class:`Task` that training
(:mod:`jaxdev.train`) and the LLC sweep (:mod:`jaxdev.llc`) use; code that needs only the
parameters' shapes or the loss (the indicators, the converters, the benchmarks) takes
:func:`model_for`.
"""

from __future__ import annotations

import types
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdev import errors
from jaxdev.data import regression as regression_data
from jaxdev.models import regression as regression_model
from jaxdev.sgld import masks as sgld_masks

TASKS = ("regression", "language")


class Model(NamedTuple):
  """A setting's model: pure functions of the parameters, independent of any data.

  Attributes:
    init: key -> params.
    apply: (params, inputs, **kwargs) -> outputs. Regression: tokens [B, 2K, D+1] -> outputs
      [B, 2K, D+1] (``output_stride=s`` computes only every s-th position); language: token ids
      [B, T] int32 -> logits [B, T, V] (``return_attention=True`` adds the patterns).
    loss_fn: (params, batch) -> scalar mean training loss over the batch. Regression: a
      :class:`jaxdev.data.regression.Batch`, squared error (no ½) averaged over sequences and
      positions; language: token rows [B, L] int32 (BOS first), next-token cross-entropy in nats
      averaged over the B·(L − 1) predictions.
    module: the flax module itself (for the collections it sows, e.g. attention patterns).
    predict: regression only (None for language): (params, xs [B, K, D], ys [B, K]) -> ŷ [B, K],
      the prediction of each y_k from the examples before it and x_k.
    mask_selectors: the model's weight-mask selector kinds, ``{kind: (argument, params) ->
      boolean pytree}`` (the ``selectors`` of :func:`jaxdev.sgld.resolve_mask`). Both settings
      give ``"head"`` (``head:L.H``: head H of layer L, 0-based; the models' ``head_mask``) and
      ``"layer"`` (``layer:L``: every attention weight of layer L; ``layer_mask``).
    observables: ``{name: (params, batch) -> [O]}``, quantities the LLC sweep can record at every
      SGLD draw (:func:`jaxdev.sgld.run_chains`). Both settings give ``"positions"``: the
      batch's mean loss at each position (regression: the squared error of ŷ_k, k = 1..K;
      language: the next-token loss at each input position), whose mean over positions is
      ``loss_fn`` (to float rounding).
  """

  init: Callable[[jax.Array], Any]
  apply: Callable[..., Any]
  loss_fn: Callable[[Any, Any], jax.Array]
  module: Any
  predict: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None
  mask_selectors: Mapping[str, Callable[[str, Any], Any]] = types.MappingProxyType({})
  observables: Mapping[str, Callable[[Any, Any], jax.Array]] = types.MappingProxyType({})


def _mask_selectors(model_config, model_module) -> Mapping[str, Callable[[str, Any], Any]]:
  """``head`` and ``layer`` selector kinds from a model module's ``head_mask`` and
  ``layer_mask``."""
  def head(argument, params):
    return model_module.head_mask(model_config, params,
                                  *sgld_masks.index_argument(argument, ("LAYER", "HEAD")))

  def layer(argument, params):
    return model_module.layer_mask(model_config, params,
                                   *sgld_masks.index_argument(argument, ("LAYER",)))

  return types.MappingProxyType({"head": head, "layer": layer})


class Data(NamedTuple):
  """A setting's data: every random draw of a run, made once from the training config.

  Training batches come either from a key, drawn on the devices inside the jitted step
  (``train_batch``; regression), or from the host by step number (``host_batch``; text rows),
  exactly one of the two being set. Either way batch ``s`` depends only on ``s``.

  Attributes:
    train_batch: key -> batch (a pytree with a leading example axis), or None.
    host_batch: step -> the global batch as host numpy arrays, or None.
    eval_set: the fixed evaluation set. Regression: a ``Batch`` (xs [N, K, D], ys [N, K]);
      language: token rows [N, L] int32.
    probe_inputs: the fixed inputs of the essential-dynamics probe. Regression: tokens
      [N, 2K, D+1]; language: (rows [N, L] int32, positions [N]), one input position per row.
    sampling_data: (seed, num_examples) -> the fixed SGLD dataset (pytree, leading example axis).
    baselines: reference numbers for the evaluation set (JSON-serialisable).
    eval_references: {name: predictions on ``eval_set``} of reference predictors (regression:
      ``"ridge"`` [N, K]; language: none).
    distribution: regression only (None for language): the run's
      :class:`jaxdev.data.regression.Distribution`, task pool included.
  """

  train_batch: Callable[[jax.Array], Any] | None
  host_batch: Callable[[int], Any] | None
  eval_set: Any
  probe_inputs: Any
  sampling_data: Callable[[int, int], Any]
  baselines: dict
  eval_references: dict
  distribution: regression_data.Distribution | None = None


class Task(NamedTuple):
  """A :class:`Model` and its :class:`Data` as the functions training and LLC sampling call.

  Attributes:
    init: key -> params (``model.init``).
    train_batch: key -> batch, or None (``data.train_batch``).
    loss_fn: (params, batch) -> scalar mean loss over the batch (``model.loss_fn``).
    evaluate: params -> dict of scalar or vector metrics (jittable) on the fixed evaluation set.
    probe: params -> array, the ED probe (model outputs on the fixed probe inputs), shape
      ``probe_shape``.
    probe_shape: shape of the probe's output (regression [N, 2K, D+1], language [N]).
    sampling_data: (seed, num_examples) -> fixed dataset for SGLD (``data.sampling_data``).
    baselines: dict of reference numbers for the evaluation set (``data.baselines``).
    host_batch: step -> batch as host numpy arrays (the global batch), or None.
    model: the :class:`Model` (None where a caller assembles a task from functions alone).
    data: the :class:`Data` (None likewise).
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
  model: Model | None = None
  data: Data | None = None


# ----------------------------------------------------------------------------- regression


def _regression_model(config, matmul_dtype: str = "float32") -> Model:
  num_tokens = 2 * config.data.num_examples
  token_dim = config.data.dim + 1
  module = regression_model.build_model(config.model, max_len=num_tokens, token_dim=token_dim,
                                        matmul_dtype=matmul_dtype)

  def init(key):
    return module.init(key, jnp.zeros((1, num_tokens, token_dim)))["params"]

  def apply(params, tokens, **kwargs):
    return module.apply({"params": params}, tokens, **kwargs)

  def predict(params, xs, ys):
    # Only the x-positions are read out, so the model computes only those outputs (exact).
    outputs = apply(params, regression_data.tokenize(xs, ys), output_stride=2)
    return outputs[..., 0]  # (B, K): coordinate 0 at each x_k, as regression_data.readout

  def position_losses(params, batch):
    return jnp.mean((predict(params, batch.xs, batch.ys) - batch.ys) ** 2, axis=0)  # [K]

  def loss_fn(params, batch):
    return jnp.mean((predict(params, batch.xs, batch.ys) - batch.ys) ** 2)

  return Model(init, apply, loss_fn, module, predict,
               _mask_selectors(config.model, regression_model),
               types.MappingProxyType({"positions": position_losses}))


def _regression_data(config) -> Data:
  distribution = regression_data.distribution(config)  # the run's task pool, drawn here only

  def train_batch(key):
    return distribution.sample(key, config.optim.batch_size)

  eval_set = distribution.fixed(config.eval.seed, config.eval.num_sequences)
  ridge = regression_data.ridge_predictions(eval_set.xs, eval_set.ys, config.data.noise_variance)
  ridge_per_position = regression_data.per_position_mse(ridge, eval_set.ys)
  probe_set = distribution.fixed(config.ed.seed, config.ed.num_sequences)
  baselines = {
      "ridge_loss": float(jnp.mean(ridge_per_position)),
      "ridge_loss_per_position": [float(v) for v in ridge_per_position],
      "zero_predictor_loss": float(jnp.mean(eval_set.ys ** 2)),
  }
  return Data(train_batch, None, eval_set, regression_data.tokenize(probe_set.xs, probe_set.ys),
              distribution.fixed, baselines, {"ridge": ridge}, distribution)


def _regression_task(model: Model, data: Data) -> Task:
  eval_set, ridge = data.eval_set, data.eval_references["ridge"]

  def evaluate(params):
    pred = model.predict(params, eval_set.xs, eval_set.ys)
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

  def probe(params):
    return model.apply(params, data.probe_inputs)  # (N, 2K, D+1)

  return Task(model.init, data.train_batch, model.loss_fn, evaluate, probe,
              tuple(data.probe_inputs.shape), data.sampling_data, data.baselines, None, model, data)


def regression_task(config, matmul_dtype: str = "float32") -> Task:
  """The in-context linear regression setting (``docs/methods.md``, "The settings") for a
  training config: :func:`model_for` and :func:`data_for` composed (the model's products in
  ``matmul_dtype``, see :class:`jaxdev.models.regression.RegressionTransformer`)."""
  check_config(config)
  return _regression_task(_regression_model(config, matmul_dtype), _regression_data(config))


# ----------------------------------------------------------------------------- language


def _language_model(config) -> Model:
  from jaxdev.models import attention as attention_model  # pylint: disable=import-outside-toplevel
  module = attention_model.build_model(config.model)

  def init(key):
    return module.init(key, jnp.zeros((1, config.data.row_length - 1), jnp.int32))["params"]

  def apply(params, tokens, **kwargs):
    return module.apply({"params": params}, tokens, **kwargs)

  def loss_fn(params, rows):
    return attention_model.next_token_loss(params, module, rows)

  def position_losses(params, rows):
    logits = module.apply({"params": params}, rows[:, :-1])
    return attention_model.next_token_losses(logits, rows[:, 1:]).mean(axis=0)  # [L - 1]

  return Model(init, apply, loss_fn, module,
               mask_selectors=_mask_selectors(config.model, attention_model),
               observables=types.MappingProxyType({"positions": position_losses}))


def language_model_fns(config):
  """(init: key -> params, loss_fn: (params, rows [B, row_length] int32) -> mean next-token loss)
  of a ``configs/language.py`` config, without touching any data (``model_for(config)``'s)."""
  model = _language_model(config)
  return model.init, model.loss_fn


def text_splits(config):
  """(TFDS builder, training rows, test rows) of a ``configs/language.py`` config.

  Builds the tokenized dataset once. The test rows are the ``test`` split, or the training split
  when there is none. Rows are random-access sources (``len(src)``, ``src[i]["tokens"]``).

  Raises:
    ConfigError: the data section cannot give a dataset (missing files, a wrong tokenizer, ...).
  """
  # pylint: disable=import-outside-toplevel
  from jaxdev.data import text_rows
  try:
    builder = text_rows.dataset_from_config(config.data)
  except (ValueError, FileNotFoundError, ImportError) as err:
    raise errors.ConfigError(f"config.data: {err}") from None
  train_rows = text_rows.row_source(builder, "train")
  test_rows = (text_rows.row_source(builder, "test") if "test" in builder.info.splits
               else train_rows)
  return builder, train_rows, test_rows


def language_bigrams(train_rows, num_rows: int, vocab_size: int):
  """The bigram table (:func:`jaxdev.data.bigrams.bigram_table`) of the first
  ``min(num_rows, len(train_rows))`` training rows."""
  # pylint: disable=import-outside-toplevel
  from jaxdev.data import batches as batches_lib, bigrams as bigrams_lib
  count = min(num_rows, len(train_rows))
  return bigrams_lib.bigram_table(
      (batches_lib.read_rows(train_rows, range(start, min(start + 8192, count)))
       for start in range(0, count, 8192)), vocab_size)


def block_pool(bigrams, bos_id: int) -> np.ndarray:
  """The token ids that occur in the counted training rows, BOS excepted: what repeated blocks
  (``data.repeat_fraction``) are drawn from."""
  counts = np.asarray(bigrams.counts.sum(axis=0)).ravel() + np.asarray(
      bigrams.counts.sum(axis=1)).ravel()
  return np.setdiff1d(np.flatnonzero(counts), [bos_id])


def with_repeated_blocks(config, rows: np.ndarray, stream: tuple, pool: np.ndarray) -> np.ndarray:
  """``rows`` with the config's repeated blocks (``data.repeat_fraction`` of them carry a random
  block repeated ``data.repeat_copies`` times, :func:`jaxdev.data.rows.repeated_blocks`), drawn
  from the generator
  seeded by (``data.repeat_seed``, ``*stream``); the rows themselves when the fraction is 0.

  Streams: (0, step) a training batch, (1,) the evaluation rows, (2,) the probe rows,
  (3, seed) the SGLD sampling set, (4,) the indicators' rows.
  """
  fraction = float(config.data.get("repeat_fraction", 0.0))
  if not fraction:
    return rows
  from jaxdev.data import rows as rows_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng([int(config.data.get("repeat_seed", 0)), *map(int, stream)])
  return rows_lib.repeated_blocks(rows, fraction=fraction, pool=pool, rng=rng,
                                  length=int(config.data.get("repeat_length", 0)),
                                  copies=int(config.data.get("repeat_copies", 2)))


def _language_data(config, num_baseline_rows: int) -> Data:
  # pylint: disable=import-outside-toplevel
  from jaxdev.data import batches as batches_lib, text_rows
  builder, train_rows, test_rows = text_splits(config)
  num_baseline = min(num_baseline_rows, len(train_rows))
  bigrams = language_bigrams(train_rows, num_baseline, config.data.vocab_size)
  pool = block_pool(bigrams, text_rows.dataset_tokenizer(builder).bos_id)
  blocks = lambda rows, *stream: with_repeated_blocks(config, rows, stream, pool)
  batches = batches_lib.TokenBatches(train_rows, config.optim.batch_size,
                                     num_epochs=config.data.num_epochs,
                                     shuffle_seed=config.data.get("shuffle_seed"))
  if len(batches) < config.optim.num_steps:
    raise errors.ConfigError(
        f"the training split gives {len(batches)} batches of {config.optim.batch_size} rows over "
        f"{config.data.num_epochs} epoch(s), fewer than config.optim.num_steps "
        f"({config.optim.num_steps})")
  eval_rows = jnp.asarray(blocks(
      batches_lib.probe_rows(test_rows, config.eval.num_sequences, 0)[0], 1))
  probe_tokens, probe_positions = batches_lib.probe_rows(test_rows, config.ed.num_sequences,
                                                       config.ed.seed)
  probe_tokens = blocks(probe_tokens, 2)

  def sampling_data(seed, num_examples):
    count = min(num_examples, len(train_rows))
    index = np.sort(np.random.default_rng(seed).choice(len(train_rows), count, replace=False))
    return blocks(batches_lib.read_rows(train_rows, index), 3, seed)

  def host_batch(step):
    return blocks(batches[int(step)], 0, step)

  unigram = np.asarray(bigrams.counts.sum(axis=0)).ravel().astype(np.float64)
  unigram = unigram[unigram > 0] / unigram.sum()
  baselines = {"bigram_entropy": bigrams.entropy(),
               "unigram_entropy": float(-(unigram * np.log(unigram)).sum()),
               "baseline_rows": num_baseline,
               "train_rows": len(train_rows), "test_rows": len(test_rows)}
  probe_inputs = (jnp.asarray(probe_tokens), jnp.asarray(probe_positions))
  return Data(None, host_batch, eval_rows, probe_inputs, sampling_data, baselines, {})


def _language_task(config, model: Model, data: Data) -> Task:
  from jaxdev.models import attention as attention_model  # pylint: disable=import-outside-toplevel
  eval_rows = data.eval_set

  def evaluate(params):
    logits = model.apply(params, eval_rows[:, :-1])
    per_position = attention_model.next_token_losses(logits, eval_rows[:, 1:]).mean(axis=0)
    return {"loss": per_position.mean(), "loss_per_position": per_position,
            "icl_score": attention_model.icl_score(per_position)}

  probe_tokens, probe_positions = data.probe_inputs

  def probe(params):
    return attention_model.true_next_token_logits(params, model.module, probe_tokens,
                                                  probe_positions)

  return Task(model.init, None, model.loss_fn, evaluate, probe, tuple(probe_positions.shape),
              data.sampling_data, data.baselines, data.host_batch, model, data)


def language_task(config, *, num_baseline_rows: int = 50_000) -> Task:
  """The attention-only language-model setting (``docs/methods.md``, "The settings") for a
  ``configs/language.py`` config.

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
  check_config(config)
  data = _language_data(config, num_baseline_rows)
  return _language_task(config, _language_model(config), data)


# ----------------------------------------------------------------------------- entry points


def model_for(config) -> Model:
  """The model of a training config (``config.task``, default "regression"); reads no data.

  Raises:
    ConfigError: the config's task, data or model sections cannot make a model.
  """
  check_config(config)
  if config.get("task", "regression") == "regression":
    return _regression_model(config)
  return _language_model(config)


def data_for(config, *, num_baseline_rows: int = 50_000) -> Data:
  """The data of a training config: every random draw of the run, made here and nowhere else.

  Regression: the task pool (:func:`jaxdev.data.regression.distribution`), the training stream
  (batch ``s`` from ``fold_in(data_key, s)``), the evaluation set (``eval.seed``), the probe
  (``ed.seed``) and the sampling sets (by seed), all from that one distribution. Language: see
  :func:`language_task` (``num_baseline_rows`` bounds the rows counted for the baselines).

  Raises:
    ConfigError: the config cannot make data (bad sections, missing files, too few rows).
  """
  check_config(config)
  if config.get("task", "regression") == "regression":
    return _regression_data(config)
  return _language_data(config, num_baseline_rows)


def probe_width(config) -> int:
  """D, the number of values one ED probe row holds, from a training config (a ConfigDict or its
  dict): regression, every output of the probe's sequences (``ed.num_sequences`` × 2K tokens ×
  (d + 1)); language, one true-next-token logit per probe row."""
  probe, data = config["ed"], config["data"]
  if config.get("task") == "language":
    return int(probe["num_sequences"])
  return int(probe["num_sequences"] * 2 * data["num_examples"] * (data["dim"] + 1))


def _kind(default) -> str:
  if isinstance(default, bool):
    return "true or false"
  if isinstance(default, int):
    return "an integer"
  if isinstance(default, float):
    return "a number"
  if isinstance(default, str):
    return "a string"
  return "a list"


def _same_kind(default, value) -> bool:
  if default is None or value is None:
    return True
  if isinstance(default, bool):
    return isinstance(value, bool)
  if isinstance(default, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(default, str):
    return isinstance(value, str)
  if isinstance(default, (list, tuple)):
    return isinstance(value, (list, tuple))
  return True


def _check_shape(reference, config, path: str, task: str, required=None) -> None:
  for key in config.keys():
    if key not in reference:
      raise errors.ConfigError(f"{path}.{key} is not a field of a {task} config")
  for key, default in reference.items():
    if key not in config:
      if isinstance(default, ml_collections.ConfigDict) and (required is None or key in required):
        raise errors.ConfigError(f"{path} has no section {key!r}")
      continue  # a field added after the config was saved: its users read its default
    value = config[key]
    if isinstance(default, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise errors.ConfigError(f"{path}.{key} must be a section, got {value!r}")
      _check_shape(default, value, f"{path}.{key}", task)
    elif not _same_kind(default, value):
      raise errors.ConfigError(f"{path}.{key} must be {_kind(default)}, got {value!r}")


#: Fields a config may have that its task's default config leaves out (they are read with a
#: default): {task: {(section, field): default}}.
OPTIONAL_FIELDS = {
    "regression": {("model", "double_residual"): False},  # imported checkpoints of the authors'
    "language": {("model", "normalization"): "LN"},
}


def _reference_config(task: str):
  """The shape every config of ``task`` has: its default config and :data:`OPTIONAL_FIELDS`."""
  from jaxdev.configs import language, regression  # pylint: disable=import-outside-toplevel
  reference = (regression if task == "regression" else language).get_config()
  for (section, name), default in OPTIONAL_FIELDS[task].items():
    reference[section][name] = default
  return reference


def check_config(config, *, complete: bool = False) -> None:
  """Raises ConfigError unless the task, data and model sections of a config can make a task.

  The config must be shaped like its task's configs (``jaxdev.configs.regression`` or
  ``jaxdev.configs.language``, with :data:`OPTIONAL_FIELDS`): its data and model sections (with
  ``complete``, every section there, as a run's saved config has them), no field they lack, each
  value of its field's type (an integer where a number is expected is fine); a field added after
  a run's config was saved may be missing. Cheap (reads no data), so a run is refused before any
  work; each builder calls it too.
  """
  task = config.get("task", "regression")
  if task not in TASKS:
    raise errors.ConfigError(f"config.task must be 'regression' or 'language', got {task!r}")
  _check_shape(_reference_config(task), config, "config", task,
               required=None if complete else ("data", "model"))
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
  fraction = config.data.get("repeat_fraction", 0.0)
  if not 0.0 <= fraction <= 1.0:
    raise errors.ConfigError(f"config.data.repeat_fraction must be in [0, 1], got {fraction}")
  length = config.data.get("repeat_length", 0)
  copies = config.data.get("repeat_copies", 2)
  if fraction and not (isinstance(copies, int) and copies >= 2):
    raise errors.ConfigError(f"config.data.repeat_copies must be an integer >= 2, got {copies}")
  most = (config.data.row_length - 1) // copies if fraction else 0
  if fraction and not 0 <= length <= most:
    raise errors.ConfigError(f"config.data.repeat_length must be in [0, (row_length - 1) // "
                             f"repeat_copies = {most}], got {length}")
  if config.model.context_length < config.data.row_length - 1:
    raise errors.ConfigError(f"config.model.context_length ({config.model.context_length}) is "
                             f"shorter than the rows' {config.data.row_length - 1} input tokens")


def make_task(config, *, matmul_dtype: str = "float32") -> Task:
  """The task named by ``config.task`` ("regression" or "language"): :func:`model_for` and
  :func:`data_for` composed into the functions training and the sweep call.

  ``matmul_dtype`` "bfloat16" runs the regression model's dense products with bfloat16 inputs
  and float32 sums (mixed precision; parameters and everything else float32). A language model
  computes in its config's ``model.dtype`` instead.

  Raises:
    ConfigError: the config's task, data or model sections cannot make a task, or its data
      cannot serve it (e.g. missing files, too few rows), or ``matmul_dtype`` is not float32
      for a language model.
  """
  check_config(config)
  if config.get("task", "regression") == "regression":
    return regression_task(config, matmul_dtype)
  if matmul_dtype != "float32":
    raise errors.ConfigError(f"matmul_dtype {matmul_dtype!r} applies to the regression model; a "
                             "language model computes in its config's model.dtype")
  return language_task(config)
