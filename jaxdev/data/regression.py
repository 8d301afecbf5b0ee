"""In-context linear regression data (docs/methods.md, "The settings").

A sequence holds K examples (x_k, y_k) of one task t: x_k ~ N(0, I_D), y_k = t·x_k + N(0, σ²).
Tasks are fresh draws t ~ N(0, I_D) (infinite task diversity, ``num_tasks=0``) or picked uniformly
from a pool of M tasks drawn once (Raventós et al. 2023). A run's :class:`Distribution` (sizes,
noise, pool) comes from :func:`distribution`, the one place its pool is drawn.

Shapes: xs [B, K, D], ys [B, K], tasks [B, D]; tokens [B, 2K, D+1]; predictions [B, K].
The prediction for y_k is made from the first k-1 examples and x_k.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdev import errors

DIM = 4
NUM_EXAMPLES = 8
NOISE_VARIANCE = 0.125


class Batch(NamedTuple):
  """A batch of regression sequences: xs [B, K, D], ys [B, K]."""

  xs: jax.Array
  ys: jax.Array


def check_config(data_config) -> None:
  """Raises ConfigError unless a ``data`` config section (dim, num_examples, noise_variance,
  num_tasks; 0 tasks = infinite diversity) describes data that can be drawn."""
  errors.require_positive("data", data_config, ("dim", "num_examples"))
  if not data_config.noise_variance >= 0:
    raise errors.ConfigError(
        f"config.data.noise_variance must be >= 0, got {data_config.noise_variance}")
  if data_config.num_tasks < 0:
    raise errors.ConfigError(
        f"config.data.num_tasks must be >= 0 (0 = infinite), got {data_config.num_tasks}")


def task_pool(key, num_tasks: int, dim: int = DIM) -> jax.Array:
  """A finite pool of M tasks ~ N(0, I_D), shape [M, D]."""
  return jax.random.normal(key, (num_tasks, dim))


class Distribution(NamedTuple):
  """The sequence distribution of a regression run: sizes, label noise and task pool.

  Attributes:
    dim: D.
    num_examples: K.
    noise_variance: σ².
    tasks: the finite task pool [M, D], or None for a fresh Gaussian task per sequence (M = ∞).
  """

  dim: int = DIM
  num_examples: int = NUM_EXAMPLES
  noise_variance: float = NOISE_VARIANCE
  tasks: jax.Array | None = None

  def sample(self, key, batch_size: int, *, input_gain: float = 1.0,
             task_gain: float = 1.0) -> Batch:
    """:func:`sample_batch` from this distribution (gains as there)."""
    return sample_batch(key, batch_size, dim=self.dim, num_examples=self.num_examples,
                        noise_variance=self.noise_variance, tasks=self.tasks,
                        input_gain=input_gain, task_gain=task_gain)

  def fixed(self, seed: int, num_sequences: int) -> Batch:
    """:func:`fixed_dataset` of ``num_sequences`` sequences from this distribution."""
    return fixed_dataset(seed, num_sequences, dim=self.dim, num_examples=self.num_examples,
                         noise_variance=self.noise_variance, tasks=self.tasks)


POOL_STREAM = 7  # the run key ``key(config.seed)`` is folded with this to draw the task pool


def distribution(config) -> Distribution:
  """The training distribution of a regression config (``configs/regression.py``).

  The one place a run's finite task pool is drawn: ``task_pool(fold_in(key(config.seed), 7),
  config.data.num_tasks, config.data.dim)``; no pool for ``num_tasks = 0``. Training batches,
  the evaluation, probe and sampling sets and the indicators' inputs all come from it.

  Raises:
    ConfigError: the data section cannot describe a distribution.
  """
  d = config.data
  check_config(d)
  pool = None
  if d.num_tasks > 0:
    pool = task_pool(jax.random.fold_in(jax.random.key(config.seed), POOL_STREAM), d.num_tasks,
                     d.dim)
  return Distribution(d.dim, d.num_examples, d.noise_variance, pool)


def sample_batch(key, batch_size: int, *, dim: int = DIM, num_examples: int = NUM_EXAMPLES,
                 noise_variance: float = NOISE_VARIANCE, tasks: jax.Array | None = None,
                 input_gain: float = 1.0, task_gain: float = 1.0) -> Batch:
  """Samples ``batch_size`` sequences.

  Args:
    key: PRNG key; the batch is a pure function of it.
    batch_size: B.
    dim: D, the input dimension.
    num_examples: K, examples per sequence.
    noise_variance: σ², the variance of the label noise.
    tasks: optional finite task pool [M, D]; each sequence picks one uniformly. None means a fresh
      Gaussian task per sequence (M = ∞).
    input_gain, task_gain: g_x, g_t: the sequences hold inputs g_x·x and tasks g_t·t with the
      noise unchanged (the out-of-distribution sets of the indicators, paper eqs. 34–35). The
      draws do not depend on the gains, so gains of 1 give the training distribution bit for bit.

  Returns:
    A :class:`Batch` with xs [B, K, D] and ys [B, K].
  """
  task_key, x_key, noise_key = jax.random.split(key, 3)
  if tasks is None:
    t = jax.random.normal(task_key, (batch_size, dim))  # (B, D)
  else:
    t = tasks[jax.random.randint(task_key, (batch_size,), 0, tasks.shape[0])]  # (B, D)
  xs = input_gain * jax.random.normal(x_key, (batch_size, num_examples, dim))  # (B, K, D)
  noise = jnp.sqrt(noise_variance) * jax.random.normal(noise_key, (batch_size, num_examples))
  ys = jnp.einsum("bkd,bd->bk", xs, task_gain * t) + noise  # (B, K)
  return Batch(xs, ys)


def fixed_dataset(seed: int, num_sequences: int, *, chunk: int = 65536, **kwargs) -> Batch:
  """A fixed, seeded dataset of ``num_sequences`` sequences (evaluation, ED probe, SGLD sampling).

  Sampled in chunks so that 2**20 sequences do not need one giant random draw; chunk c uses key
  ``fold_in(key(seed), c)``. Keyword arguments go to :func:`sample_batch`.
  """
  key = jax.random.key(seed)
  parts = []
  for c, start in enumerate(range(0, num_sequences, chunk)):
    size = min(chunk, num_sequences - start)
    parts.append(sample_batch(jax.random.fold_in(key, c), size, **kwargs))
  return Batch(*(jnp.concatenate(field) for field in zip(*parts)))


def tokenize(xs: jax.Array, ys: jax.Array) -> jax.Array:
  """Interleaves examples into tokens x1, y1, ..., xK, yK.

  x-token = [0, x_1..x_D], y-token = [y, 0, ..., 0].

  Args:
    xs: [B, K, D] inputs.
    ys: [B, K] labels.

  Returns:
    tokens [B, 2K, D+1].
  """
  batch, num_examples, dim = xs.shape
  x_tokens = jnp.concatenate([jnp.zeros((batch, num_examples, 1), xs.dtype), xs], axis=-1)
  y_tokens = jnp.concatenate(
      [ys[..., None], jnp.zeros((batch, num_examples, dim), ys.dtype)], axis=-1)  # (B, K, D+1)
  tokens = jnp.stack([x_tokens, y_tokens], axis=2)  # (B, K, 2, D+1)
  return tokens.reshape(batch, 2 * num_examples, dim + 1)  # (B, 2K, D+1)


def readout(outputs: jax.Array) -> jax.Array:
  """Predictions ŷ_k: coordinate 0 of the output at each x_k position. [B, 2K, D+1] -> [B, K]."""
  return outputs[:, 0::2, 0]


# ----------------------------------------------------------------------------- baselines


def _prefix_stats(xs, ys):
  """For each k, XᵀX and Xᵀy over the first k-1 examples: [B, K, D, D] and [B, K, D]."""
  outer = jnp.einsum("bki,bkj->bkij", xs, xs)  # (B, K, D, D)
  xty = xs * ys[..., None]  # (B, K, D)
  # Exclusive cumulative sums: position k sees examples 1..k-1.
  xtx = jnp.cumsum(outer, axis=1) - outer
  xty = jnp.cumsum(xty, axis=1) - xty
  return xtx, xty


def ridge_predictions(xs, ys, noise_variance: float = NOISE_VARIANCE, prior_variance: float = 1.0):
  """Bayes posterior-mean (ridge) predictions, λ = σ²/τ².

  ŵ_k = (XᵀX + λI)⁻¹ Xᵀy over the first k-1 examples, prediction x_k·ŵ_k (0 at k = 1).
  Shapes: xs [B, K, D], ys [B, K] -> [B, K].
  """
  dim = xs.shape[-1]
  xtx, xty = _prefix_stats(xs, ys)
  lam = noise_variance / prior_variance
  w = jnp.linalg.solve(xtx + lam * jnp.eye(dim), xty[..., None])[..., 0]  # (B, K, D)
  return jnp.einsum("bkd,bkd->bk", xs, w)


def ols_predictions(xs, ys):
  """Ordinary least squares (minimum-norm) predictions from the first k-1 examples. [B, K]."""
  xtx, xty = _prefix_stats(xs, ys)
  w = jnp.einsum("bkij,bkj->bki", jnp.linalg.pinv(xtx, hermitian=True), xty)  # (B, K, D)
  return jnp.einsum("bkd,bkd->bk", xs, w)


def dmmse_predictions(xs, ys, tasks, noise_variance: float = NOISE_VARIANCE):
  """Discrete minimum-MSE predictions for a finite task pool W [M, D].

  ŵ_k = softmax_m(-Σ_{i<k} (y_i - x_i·w_m)² / 2σ²) · W; equals ridge as M → ∞.
  Shapes: xs [B, K, D], ys [B, K], tasks [M, D] -> [B, K].
  """
  residual = ys[:, :, None] - jnp.einsum("bkd,md->bkm", xs, tasks)  # (B, K, M)
  sq = residual ** 2 / (2.0 * noise_variance)
  log_weights = -(jnp.cumsum(sq, axis=1) - sq)  # exclusive prefix sums, (B, K, M)
  w = jax.nn.softmax(log_weights, axis=-1) @ tasks  # (B, K, D)
  return jnp.einsum("bkd,bkd->bk", xs, w)


def per_position_mse(predictions, ys) -> jax.Array:
  """Mean over the batch of (ŷ_k - y_k)², shape [K]."""
  return jnp.mean((predictions - ys) ** 2, axis=0)

