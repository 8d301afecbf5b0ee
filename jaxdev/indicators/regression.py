"""Indicators of the in-context regression transformer (docs/methods.md, "Indicators"; paper
appendix D).

``regression_inputs(distribution)`` draws the fixed inputs once from the run's training
distribution (its task pool included); ``behaviour(model, params, inputs)``
and ``structure(model, params, inputs)`` are pure functions of (params, inputs) that jit and vmap
over stacked parameters. Column names follow the authors' ``evals.csv`` and ``layernorm.csv``
where they computed the same quantity (``loss``, ``loss_position_k``, ``prediction_norm``,
``mse_to_ridge``, ``ood_inputs_xG``, ``ood_tasks_xG``, ``weight_norm``,
``layernorm_{name}_{weight,bias}_{mean,std,min,max,norm}``).

Conventions: MSE without ½; per-position losses are 1-based (``loss_position_1`` is the loss of
the prediction of y_1 from x_1 alone); standard deviations use ddof = 1 (as torch's ``std``, which
the authors used); OOD MSEs are raw (not divided by g²), with ``..._normalized`` = MSE / g².
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdev import tasks as tasks_lib
from jaxdev.data import regression as regression_data
from jaxdev.indicators import attention as attention_lib
from jaxdev.models import regression as regression_model

OOD_GAINS = (3, 5, 10, 100)


class RegressionInputs(NamedTuple):
  """Fixed inputs of the regression indicators (a pytree of arrays; dicts keyed by name).

  Attributes:
    xs, ys: evaluation sequences from the pretraining distribution, [N, K, D] and [N, K].
    baselines: {"ridge", "ols", and for finite pools "dmmse", "task_prior"}: predictions [N, K].
    true_xs, true_ys, true_baselines: the same on the true distribution (fresh Gaussian tasks);
      empty for M = ∞, where both distributions are the same.
    ood: {"inputs_x{g}" / "tasks_x{g}": (xs, ys)}: the draws of the evaluation set with inputs
      or tasks scaled by g (so g = 1 gives the evaluation set itself).
    attention_tokens: [B, 2K, D+1] token sequences for the attention statistics.
  """

  xs: jax.Array
  ys: jax.Array
  baselines: dict
  true_xs: jax.Array | None
  true_ys: jax.Array | None
  true_baselines: dict
  ood: dict
  attention_tokens: jax.Array


def baseline_predictions(xs, ys, noise_variance: float, tasks=None) -> dict:
  """Ridge and OLS predictions, and for a finite pool dMMSE and the task-prior prediction x·W̄."""
  out = {"ridge": regression_data.ridge_predictions(xs, ys, noise_variance),
         "ols": regression_data.ols_predictions(xs, ys)}
  if tasks is not None:
    out["dmmse"] = regression_data.dmmse_predictions(xs, ys, tasks, noise_variance)
    out["task_prior"] = jnp.einsum("bkd,d->bk", xs, tasks.mean(0))
  return out


def regression_inputs(distribution: regression_data.Distribution, *, num_sequences: int = 4096,
                      num_attention_sequences: int = 256, seed: int = 5_000,
                      gains=OOD_GAINS) -> RegressionInputs:
  """Fixed inputs for a run whose training distribution is ``distribution``.

  Pass the run's own distribution (``jaxdev.tasks.data_for(config).distribution``, or
  :func:`jaxdev.data.regression.distribution`), so that a finite task pool is the one the run
  trained on. Every set has its own key from ``seed``: ``fold_in(key(seed), 0)`` the evaluation
  set (and, rescaled, the OOD sets), ``1`` the true-distribution set, ``2`` the attention set.
  """
  tasks = distribution.tasks
  noise_variance = distribution.noise_variance
  key = jax.random.PRNGKey(seed)
  batch = distribution.sample(jax.random.fold_in(key, 0), num_sequences)
  baselines = baseline_predictions(batch.xs, batch.ys, noise_variance, tasks)
  true_xs = true_ys = None
  true_baselines = {}
  if tasks is not None:
    true = distribution._replace(tasks=None).sample(jax.random.fold_in(key, 1), num_sequences)
    true_xs, true_ys = true.xs, true.ys
    true_baselines = baseline_predictions(true.xs, true.ys, noise_variance, tasks)
  ood = {}
  for g in gains:
    # The draws of the evaluation set, rescaled: at g = 1 both OOD sets are the evaluation set,
    # and the curves over g differ only by the gain.
    ood_key = jax.random.fold_in(key, 0)
    ood[f"inputs_x{g:g}"] = tuple(distribution.sample(ood_key, num_sequences, input_gain=g))
    ood[f"tasks_x{g:g}"] = tuple(distribution.sample(ood_key, num_sequences, task_gain=g))
  attention = distribution.sample(jax.random.fold_in(key, 2), num_attention_sequences)
  return RegressionInputs(batch.xs, batch.ys, baselines, true_xs, true_ys, true_baselines, ood,
                          regression_data.tokenize(attention.xs, attention.ys))


def build_model(config) -> regression_model.RegressionTransformer:
  """The run's flax module (``jaxdev.tasks.model_for(config).module``)."""
  return tasks_lib.model_for(config).module


def init(config, key):
  """Parameters of the run's model from ``key`` (``jaxdev.tasks.model_for(config).init``)."""
  return tasks_lib.model_for(config).init(key)


def predict(model, params, xs, ys):
  """Predictions ŷ [N, K] of the model (coordinate 0 of the output at each x_k)."""
  return regression_data.readout(model.apply({"params": params}, regression_data.tokenize(xs, ys)))


def prediction_metrics(pred, ys, baselines, suffix: str = "") -> dict:
  """Losses, ICL scores, prediction norm and MSE to each baseline of predictions ``pred`` [N, K]
  of labels ``ys`` [N, K]; names get ``suffix``."""
  per_position = regression_data.per_position_mse(pred, ys)  # (K,)
  last = per_position.shape[0]
  out = {f"loss{suffix}": per_position.mean(),
         f"icl_1_4{suffix}": per_position[min(3, last - 1)] - per_position[0],
         f"icl_4_8{suffix}": per_position[last - 1] - per_position[min(3, last - 1)],
         f"prediction_norm{suffix}": jnp.mean(pred ** 2)}
  for k in range(last):
    out[f"loss_position_{k + 1}{suffix}"] = per_position[k]
  for name, reference in baselines.items():
    out[f"mse_to_{name}{suffix}"] = jnp.mean((pred - reference) ** 2)
  return out


def behaviour(model, params, inputs: RegressionInputs) -> dict:
  """Behavioural indicators: losses, ICL scores, prediction norm, distances to baselines, OOD.

  Returns scalars: ``loss``, ``loss_position_{1..K}``, ``icl_1_4`` (ℓ_4 − ℓ_1), ``icl_4_8``
  (ℓ_8 − ℓ_4), ``prediction_norm`` (E[ŷ²]), ``mse_to_{ridge,ols[,dmmse,task_prior]}`` (mean
  squared difference of predictions), the same with suffix ``_true`` on the true distribution for
  a finite pool, ``ood_{inputs,tasks}_x{g}`` (raw MSE) and ``..._normalized`` (MSE / g²), and
  ``weight_norm`` (L2 norm of all parameters).
  """
  out = prediction_metrics(predict(model, params, inputs.xs, inputs.ys), inputs.ys,
                            inputs.baselines)
  if inputs.true_xs is not None:
    out.update(prediction_metrics(predict(model, params, inputs.true_xs, inputs.true_ys),
                                   inputs.true_ys, inputs.true_baselines, "_true"))
  for name, (xs, ys) in inputs.ood.items():
    gain = float(name.split("_x")[1])
    mse = jnp.mean((predict(model, params, xs, ys) - ys) ** 2)
    out[f"ood_{name}"] = mse
    out[f"ood_{name}_normalized"] = mse / gain ** 2
  out["weight_norm"] = jnp.sqrt(sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params)))
  return out


# ----------------------------------------------------------------------------- structure


def layernorm_name(path: tuple) -> str:
  """The authors' name of a LayerNorm from its parameter path: block_0/ln1 -> block0_ln1,
  ln_f -> ln_final (language model: ln1_0 -> block0_ln1)."""
  names = [str(p) for p in path]
  if names[-1] in ("ln_f", "ln_final"):
    return "ln_final"
  if names[-1].startswith("ln") and "_" in names[-1] and len(names) == 1:  # ln1_0
    kind, layer = names[-1].split("_")
    return f"block{layer}_{kind}"
  return f"{names[-2].replace('_', '')}_{names[-1]}"


def layernorms(params) -> dict:
  """{authors' name: (scale [C], bias [C])} of every LayerNorm in a parameter tree."""
  found = {}

  def walk(tree, path):
    if isinstance(tree, dict) or hasattr(tree, "keys"):
      if set(tree.keys()) == {"scale", "bias"}:
        found[layernorm_name(path)] = (tree["scale"], tree["bias"])
        return
      for k in tree.keys():
        walk(tree[k], path + (k,))

  walk(params, ())
  return found


def layernorm_statistics(params, small: float = 0.1) -> dict:
  """Per LayerNorm: mean / std (ddof 1) / min / max / L2 norm of weight (scale) and bias, and
  ``..._weight_frac_small``, the fraction of weights with |w| < ``small`` (the collapse)."""
  out = {}
  for name, (scale, bias) in layernorms(params).items():
    for part, values in (("weight", scale), ("bias", bias)):
      prefix = f"layernorm_{name}_{part}"
      out[f"{prefix}_mean"] = values.mean()
      out[f"{prefix}_std"] = values.std(ddof=1)
      out[f"{prefix}_min"] = values.min()
      out[f"{prefix}_max"] = values.max()
      out[f"{prefix}_norm"] = jnp.sqrt(jnp.sum(values ** 2))
    out[f"layernorm_{name}_weight_frac_small"] = jnp.mean(jnp.abs(scale) < small)
  return out


def subspace_cosines(a, b, num_directions: int | None = None) -> jnp.ndarray:
  """Cosines of the principal angles between the row space of a [m, C] (full rank) and the span
  of the top ``num_directions`` right singular vectors of b [n, C] (default: all), descending,
  [min(m, num_directions)]: 1 = a shared direction, 0 = orthogonal."""
  basis_a = jnp.linalg.svd(a, full_matrices=False)[2]  # (min(m, C), C) orthonormal rows
  basis_b = jnp.linalg.svd(b, full_matrices=False)[2][:num_directions]
  return jnp.linalg.svd(basis_a @ basis_b.T, compute_uv=False)


def embedding_structure(params) -> dict:
  """Singular values of the token embedding [D+1, C] and positional embedding [T, C] (descending),
  and how aligned their subspaces are: ``embedding_cosines`` [D+1], the principal cosines between
  the token embedding's row space and the span of the positional embedding's top D+1 singular
  directions (its dominant subspace of the same dimension; all T directions would fill a narrow
  residual stream), and their mean square ``embedding_overlap`` ∈ [0, 1]."""
  wte, wpe = params["wte"]["kernel"], params["wpe"]
  cosines = subspace_cosines(wte, wpe, wte.shape[0])
  return {"token_embedding_sv": jnp.linalg.svd(wte, compute_uv=False),
          "positional_embedding_sv": jnp.linalg.svd(wpe, compute_uv=False),
          "embedding_cosines": cosines, "embedding_overlap": jnp.mean(cosines ** 2)}


def effective_unembedding(params, small: float = 0.1) -> dict:
  """The read-out of ŷ as one LayerNorm-then-linear map (paper D.3.3).

  ŷ = Σ_i w_i (LN-normalised residual)_i + b with w = γ ⊙ W_U[:, 0] and b = β · W_U[:, 0] + b_U[0]
  (γ, β the final LayerNorm's scale and bias). Returns ``unembed_effective_weight`` [C], its norm
  and fraction |w| < ``small``, and ``unembed_effective_bias``.
  """
  gamma, beta = params["ln_f"]["scale"], params["ln_f"]["bias"]
  readout = params["head"]["kernel"][:, 0]
  weight = gamma * readout
  return {"unembed_effective_weight": weight,
          "unembed_effective_weight_norm": jnp.sqrt(jnp.sum(weight ** 2)),
          "unembed_effective_weight_frac_small": jnp.mean(jnp.abs(weight) < small),
          "unembed_effective_bias": beta @ readout + params["head"]["bias"][0]}


def attention_patterns(model, params, tokens) -> jnp.ndarray:
  """The sown attention patterns of every block: [L, B, H, T, T]."""
  _, state = model.apply({"params": params}, tokens, mutable=["intermediates"])
  blocks = state["intermediates"]
  return jnp.stack([blocks[f"block_{i}"]["attn"]["attention"][0] for i in range(model.num_layers)])


def attention_structure(model, params, tokens) -> dict:
  """Per block, head and query position ([L, H, T]; positions 0-based, x-tokens even):
  ``attention_entropy`` (normalised), ``attention_variability``, ``attention_self``,
  ``attention_previous``, ``attention_x`` (total attention to x-tokens), ``attention_y``.

  Also per head and query type (``B{l}H{h}{x|y}`` 1-based, as the paper names heads) the mean over
  query positions of that type, e.g. ``attention_entropy_B1H3y``.
  """
  patterns = attention_patterns(model, params, tokens)  # (L, B, H, T, T)
  length = patterns.shape[-1]
  x_keys = jnp.arange(length) % 2 == 0
  stats = {
      "attention_entropy": jax.vmap(attention_lib.normalized_entropy)(patterns),
      "attention_variability": jax.vmap(attention_lib.variability)(patterns),
      "attention_self": jax.vmap(lambda p: attention_lib.offset_attention(p, 0))(patterns),
      "attention_previous": jax.vmap(lambda p: attention_lib.offset_attention(p, 1))(patterns),
      "attention_x": jax.vmap(lambda p: attention_lib.key_set_attention(p, x_keys))(patterns),
      "attention_y": jax.vmap(lambda p: attention_lib.key_set_attention(p, ~x_keys))(patterns),
  }
  out = dict(stats)
  num_layers, num_heads = patterns.shape[0], patterns.shape[2]
  for name, values in stats.items():
    for l in range(num_layers):
      for h in range(num_heads):
        out[f"{name}_B{l + 1}H{h + 1}x"] = values[l, h, 0::2].mean()
        out[f"{name}_B{l + 1}H{h + 1}y"] = values[l, h, 1::2].mean()
  return out


def structure(model, params, inputs: RegressionInputs) -> dict:
  """Structural indicators: embeddings, LayerNorms, effective unembedding, attention."""
  out = {}
  out.update(embedding_structure(params))
  out.update(layernorm_statistics(params))
  out.update(effective_unembedding(params))
  out.update(attention_structure(model, params, inputs.attention_tokens))
  return out


def indicators(model, params, inputs: RegressionInputs) -> dict:
  """:func:`behaviour` and :func:`structure` together (the cheap set)."""
  return {**behaviour(model, params, inputs), **structure(model, params, inputs)}


def hessian_batch(config, num_sequences: int = 1024, seed: int = 3_000):
  """The fixed training-distribution batch the Hessian is taken on (1,024 sequences as the
  authors): the run's sampling set of that seed and size (``data_for(config).sampling_data``)."""
  return regression_data.distribution(config).fixed(seed, num_sequences)


@functools.lru_cache(maxsize=None)
def loss_fn(model):
  """(params, batch) -> mean MSE over batch and positions: the training loss (one function per
  model, so that jitted curvature code compiles once)."""
  def fn(params, batch):
    return jnp.mean((predict(model, params, batch.xs, batch.ys) - batch.ys) ** 2)
  return fn
