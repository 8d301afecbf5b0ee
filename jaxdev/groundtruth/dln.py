"""Deep linear networks: the one family of neural networks whose learning coefficient is exact.

A deep linear network (DLN) with widths H_0 (input), H_1, …, H_L (output) computes
f(x) = W_L ⋯ W_1 x. Its learning coefficient at a true parameter whose product has rank r
depends only on the widths and r (Aoyagi 2024, "Consideration on the learning efficiency of
multiple-layered neural networks with linear units"): :func:`learning_coefficient` computes it
in exact rational arithmetic. :func:`make` builds the setting of Lau et al. ("Quantifying
degeneracy in singular models via the learning coefficient", their DLN experiments): a true
parameter with some matrices of reduced rank drawn from a seed, inputs uniform on
[−10, 10]^{H_0}, noise-free outputs, the mean squared error and nβ = n / ln n for n examples.

Conventions:
  * ``params`` is a tuple of L kernels (K_1, …, K_L), K_j of shape [H_{j−1}, H_j] (float32), so
    a batch of inputs x [B, H_0] maps to x @ K_1 @ ⋯ @ K_L [B, H_L]; W_j = K_jᵀ.
  * ``data`` is ``{"x": [n, H_0], "y": [n, H_L]}`` (float32), a leading example axis as
    :func:`jaxdev.sgld.estimate_llc` expects.
  * :func:`loss_fn` is the mean over examples **and** output coordinates of the squared error,
    without ½ (Lau et al.'s loss).

Example (settings by :func:`jaxdev.groundtruth.procedure.select_settings`)::

  setting = dln.make((6, 8, 8, 5), seed=3, num_examples=100_000)   # λ = 15
  selection = procedure.select_settings(dln.loss_fn, setting.params, setting.data,
                                        jax.random.key(1), budget=80_000,
                                        nbeta=setting.nbeta, batch_size=200)
  result = sgld.estimate_llc(dln.loss_fn, setting.params, setting.data, jax.random.key(2),
                             **selection.settings._asdict())
  print(float(setting.llc), result.llc_mean)                          # 15.0 15.38
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdev import tasks
from jaxdev.errors import ConfigError

INPUT_RANGE = 10.0  # inputs are uniform on [−INPUT_RANGE, INPUT_RANGE]^{H_0} (Lau et al.)


# ----------------------------------------------------------------------------- the exact value


class LearningCoefficient(NamedTuple):
  """Aoyagi's learning coefficient of a DLN.

  Attributes:
    value: λ, exact.
    multiplicity: m, the power of log n in the free energy's second term.
    bottleneck: Σ, the layer indices (0 = input, L = output) of the formula's set, in
      increasing order of H_j − r.
  """
  value: Fraction
  multiplicity: int
  bottleneck: tuple


def check_widths(widths: Sequence[int]) -> tuple:
  """The widths as a tuple of ints; ConfigError unless there are two or more, all ≥ 1."""
  try:
    widths = tuple(int(h) for h in widths)
  except (TypeError, ValueError):
    raise ConfigError(f"widths must be a sequence of integers, got {widths!r}") from None
  if len(widths) < 2 or min(widths) < 1:
    raise ConfigError(f"widths must be two or more integers >= 1 (input, hidden..., output), "
                      f"got {widths}")
  return widths


def bottleneck(widths: Sequence[int], rank: int) -> tuple:
  """Σ of Aoyagi's formula: the layers that bound λ.

  With M_j = H_j − r (j = 0..L), Σ is the set of indices of the |Σ| = ℓ + 1 smallest M_j
  such that max_Σ M < min_{Σᶜ} M, Σ_Σ M ≥ ℓ·max_Σ M and Σ_Σ M < ℓ·min_{Σᶜ} M (the conditions
  on Σᶜ are void when Σ is every layer). Only the ℓ + 1 smallest deficits can form Σ, so the
  candidates are the prefixes of the indices sorted by M_j, and at most one prefix qualifies
  (if the prefix of size k does, the sum condition fails for every longer one).

  Args:
    widths: (H_0, …, H_L), L ≥ 1.
    rank: r, 0 ≤ r ≤ min H_j.

  Returns:
    The indices of Σ (at least two), sorted by M_j and then by index.

  Raises:
    ConfigError: widths or rank out of range.
  """
  widths = check_widths(widths)
  rank = check_rank(widths, rank)
  deficits = [h - rank for h in widths]
  order = sorted(range(len(widths)), key=lambda j: (deficits[j], j))
  sorted_deficits = [deficits[j] for j in order]
  for size in range(2, len(widths) + 1):
    ell = size - 1
    total = sum(sorted_deficits[:size])
    largest = sorted_deficits[size - 1]
    if total < ell * largest:
      continue
    if size < len(widths):
      smallest_outside = sorted_deficits[size]
      if not (largest < smallest_outside and total < ell * smallest_outside):
        continue
    return tuple(order[:size])
  raise AssertionError(f"no set satisfies Aoyagi's conditions for widths {widths}, rank {rank}")


def check_rank(widths: tuple, rank: int) -> int:
  """The rank as an int; ConfigError unless 0 ≤ rank ≤ min(widths)."""
  if isinstance(rank, bool) or int(rank) != rank or not 0 <= rank <= min(widths):
    raise ConfigError(f"rank must be an integer in [0, {min(widths)}] (the narrowest width) for "
                      f"widths {widths}, got {rank!r}")
  return int(rank)


def learning_coefficient(widths: Sequence[int], rank: int) -> LearningCoefficient:
  """Aoyagi's exact learning coefficient λ and multiplicity of a DLN at a true map of rank r.

  With M_j = H_j − r, Σ from :func:`bottleneck`, ℓ = |Σ| − 1, M̄ = Σ_Σ M_j,
  M = ⌈M̄ / ℓ⌉ and a = M̄ − (M − 1)·ℓ:

    λ = (−r² + r·(H_0 + H_L)) / 2 + a(ℓ − a) / (4ℓ) − ℓ(ℓ − 1)/4 · (M̄/ℓ)² + ½ Σ_{i<j ∈ Σ} M_i M_j,
    multiplicity = a(ℓ − a) + 1.

  With two layers (three widths) this is Aoyagi and Watanabe's reduced-rank regression
  formula; with one layer it is H_0·H_1 / 2, half the parameter count of a regular model.

  Args:
    widths: (H_0, …, H_L): input width, hidden widths, output width; L ≥ 1 layers.
    rank: r, the rank of the true map W_L ⋯ W_1 (0 ≤ r ≤ min H_j).

  Returns:
    :class:`LearningCoefficient` with λ as a ``fractions.Fraction`` (exact).

  Raises:
    ConfigError: fewer than two widths, a width < 1, or a rank out of range.
  """
  widths = check_widths(widths)
  rank = check_rank(widths, rank)
  sigma = bottleneck(widths, rank)
  deficits = [widths[j] - rank for j in sigma]
  ell = len(sigma) - 1
  total = sum(deficits)
  ceiling = -(-total // ell)
  a = total - (ceiling - 1) * ell
  pairs = (total * total - sum(m * m for m in deficits)) // 2  # Σ_{i<j} M_i M_j
  value = (Fraction(-rank * rank + rank * (widths[0] + widths[-1]), 2)
           + Fraction(a * (ell - a), 4 * ell)
           - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
           + Fraction(pairs, 2))
  return LearningCoefficient(value, a * (ell - a) + 1, sigma)


def num_params(widths: Sequence[int]) -> int:
  """d = Σ_j H_{j−1}·H_j, the number of parameters (no biases)."""
  widths = check_widths(widths)
  return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


# ----------------------------------------------------------------------------- the model


def forward(params, x: jax.Array) -> jax.Array:
  """x [B, H_0] -> x @ K_1 @ ⋯ @ K_L [B, H_L]."""
  for kernel in params:
    x = x @ kernel
  return x


def loss_fn(params, batch) -> jax.Array:
  """Mean squared error over examples and output coordinates (no ½) of ``batch["x"]`` ->
  ``batch["y"]``."""
  return jnp.mean((forward(params, batch["x"]) - batch["y"]) ** 2)


def init(key: jax.Array, widths: Sequence[int]):
  """A random parameter: K_j with independent N(0, 1/H_{j−1}) entries (float32)."""
  widths = check_widths(widths)
  keys = jax.random.split(key, len(widths) - 1)
  return tuple(jax.random.normal(k, (a, b)) / math.sqrt(a)
               for k, a, b in zip(keys, widths[:-1], widths[1:]))


# ----------------------------------------------------------------------------- the setting


class DLN(NamedTuple):
  """A DLN setting: the true parameter w*, its data, nβ and the exact learning coefficient.

  Attributes:
    widths: (H_0, …, H_L).
    params: w* = (K_1, …, K_L) (see the module docstring), float32.
    matrix_ranks: the rank of each K_j as drawn.
    rank: r, the rank of the true map (the smallest of ``matrix_ranks``: a product of generic
      matrices has the smallest of their ranks).
    data: ``{"x": [n, H_0], "y": [n, H_L]}``, y = f(x; w*) (+ noise if asked for).
    nbeta: n / ln n for the dataset size n (not the batch size).
    llc: λ (:func:`learning_coefficient`), exact.
    multiplicity: its multiplicity.
    noise_std: the standard deviation of the output noise (0: realizable and noise-free).
  """
  widths: tuple
  params: tuple
  matrix_ranks: tuple
  rank: int
  data: dict
  nbeta: float
  llc: Fraction
  multiplicity: int
  noise_std: float = 0.0

  @property
  def num_params(self) -> int:
    """d, the number of parameters."""
    return num_params(self.widths)

  @property
  def num_examples(self) -> int:
    """n, the dataset size."""
    return int(self.data["x"].shape[0])


def true_parameter(widths: Sequence[int], seed: int, *, reduce_probability: float = 0.5,
                   ranks: Optional[Sequence[int]] = None):
  """A true parameter w* with rank-reduced matrices, drawn from ``seed``.

  Each K_j starts with independent N(0, 1/H_{j−1}) entries (so every layer keeps the scale of
  its input). With probability ``reduce_probability``, independently per matrix, its rank is
  then cut to k drawn uniformly from {1, …, min(H_{j−1}, H_j)} by zeroing all but its k largest
  singular values (Lau et al. reduce matrices this way, about half of them in their DLN
  experiments). ``ranks`` sets each matrix's rank instead.

  Args:
    widths: (H_0, …, H_L).
    seed: the seed (numpy's PCG64; float64 draws, rounded to float32).
    reduce_probability: in [0, 1].
    ranks: optional L ranks, 1 ≤ k_j ≤ min(H_{j−1}, H_j); None draws them.

  Returns:
    (params, matrix_ranks): the kernels (float32) and the rank of each.

  Raises:
    ConfigError: widths, probability or ranks out of range.
  """
  widths = check_widths(widths)
  if not 0.0 <= reduce_probability <= 1.0:
    raise ConfigError(f"reduce_probability must be in [0, 1], got {reduce_probability}")
  shapes = list(zip(widths[:-1], widths[1:]))
  if ranks is not None:
    ranks = tuple(int(k) for k in ranks)
    if len(ranks) != len(shapes) or any(not 1 <= k <= min(s) for k, s in zip(ranks, shapes)):
      raise ConfigError(f"ranks must give one rank in [1, min(H_(j-1), H_j)] per matrix of "
                        f"widths {widths}, got {ranks}")
  rng = np.random.default_rng(seed)
  params, matrix_ranks = [], []
  for j, (a, b) in enumerate(shapes):
    kernel = rng.standard_normal((a, b)) / math.sqrt(a)
    full = min(a, b)
    if ranks is not None:
      k = ranks[j]
    elif rng.random() < reduce_probability:
      k = int(rng.integers(1, full + 1))
    else:
      k = full
    if k < full:
      u, s, vt = np.linalg.svd(kernel, full_matrices=False)
      kernel = (u[:, :k] * s[:k]) @ vt[:k]
    params.append(jnp.asarray(kernel, jnp.float32))
    matrix_ranks.append(k)
  return tuple(params), tuple(matrix_ranks)


def sample_data(params, num_examples: int, seed: int, *, noise_std: float = 0.0) -> dict:
  """n examples x ~ U(−10, 10)^{H_0}, y = f(x; params) + noise_std·N(0, I), from ``seed``.

  Lau et al.'s DLN inputs: a wide input range makes the loss large against the float32
  rounding of the outputs, and ``noise_std = 0`` (theirs) makes every true parameter an exact
  minimum of L_n (L_n(w*) = 0 for any n), so the local learning coefficient at w* is the global
  one of the formula. With noise, w* is a minimum of the population loss only.

  Returns:
    ``{"x": [n, H_0], "y": [n, H_L]}`` float32.
  """
  if num_examples < 1:
    raise ConfigError(f"num_examples must be >= 1, got {num_examples}")
  if not noise_std >= 0.0:
    raise ConfigError(f"noise_std must be >= 0, got {noise_std}")
  rng = np.random.default_rng(seed)
  x = rng.uniform(-INPUT_RANGE, INPUT_RANGE, (num_examples, params[0].shape[0]))
  x = jnp.asarray(x, jnp.float32)
  y = jax.jit(forward)(params, x)
  if noise_std > 0.0:
    y = y + jnp.asarray(noise_std * rng.standard_normal(y.shape), jnp.float32)
  return {"x": x, "y": y}


def dataset_nbeta(num_examples: int) -> float:
  """nβ = n / ln n for the dataset size n (Lau et al.'s; the sampler's default uses the batch
  size instead)."""
  if num_examples < 2:
    raise ConfigError(f"n / ln n needs n >= 2, got {num_examples}")
  return num_examples / math.log(num_examples)


def make(widths: Sequence[int], *, seed: int, num_examples: int,
         reduce_probability: float = 0.5, ranks: Optional[Sequence[int]] = None,
         noise_std: float = 0.0) -> DLN:
  """The DLN setting of the given widths, drawn from ``seed``.

  The true parameter comes from :func:`true_parameter` and the data from :func:`sample_data`
  (with independent streams of ``seed``); nβ = n / ln n; λ and its multiplicity are Aoyagi's
  at the true map's rank.

  Args:
    widths: (H_0, …, H_L), L ≥ 1.
    seed: one seed for the parameter and the data.
    num_examples: n ≥ 2.
    reduce_probability, ranks: see :func:`true_parameter`.
    noise_std: output noise (0 as in Lau et al.).

  Returns:
    :class:`DLN`.

  Raises:
    ConfigError: an argument out of range.
  """
  widths = check_widths(widths)
  nbeta = dataset_nbeta(num_examples)
  param_seed, data_seed = np.random.SeedSequence(seed).spawn(2)
  params, matrix_ranks = true_parameter(widths, param_seed, reduce_probability=reduce_probability,
                                        ranks=ranks)
  rank = min(matrix_ranks)
  exact = learning_coefficient(widths, rank)
  data = sample_data(params, num_examples, data_seed, noise_std=noise_std)
  return DLN(widths, params, matrix_ranks, rank, data, nbeta, exact.value, exact.multiplicity,
             float(noise_std))


# ----------------------------------------------------------------------------- as a task


def model(widths: Sequence[int]) -> tasks.Model:
  """The DLN as a :class:`jaxdev.tasks.Model`: ``init`` (:func:`init`), ``apply`` (x [B, H_0]
  -> [B, H_L]) and ``loss_fn``; no flax module."""
  widths = check_widths(widths)
  return tasks.Model(init=lambda key: init(key, widths), apply=lambda params, x: forward(params, x),
                     loss_fn=loss_fn, module=None)


def task(setting: DLN, *, num_eval: int = 1_000, num_probe: int = 100) -> tasks.Task:
  """The setting as a :class:`jaxdev.tasks.Task` (a teacher–student regression).

  ``train_batch(key)`` draws fresh examples of the teacher w* (one batch of ``num_eval``;
  training is optional: the learning coefficient is known at w* itself), ``evaluate`` gives the
  loss on a fixed evaluation set and the Frobenius distance of the product from the true map,
  ``probe`` the outputs on fixed probe inputs, ``sampling_data(seed, n)`` another dataset of n
  examples drawn from ``seed`` (the setting's own is ``setting.data``). The true parameter is
  ``setting.params``; ``baselines`` records λ, the multiplicity, r, nβ and d.
  """
  teacher = setting.params
  true_map = forward(teacher, jnp.eye(setting.widths[0]))
  eval_set = sample_data(teacher, num_eval, [1, 0], noise_std=setting.noise_std)
  probe_inputs = sample_data(teacher, num_probe, [1, 1])["x"]

  def train_batch(key):
    key_x, key_noise = jax.random.split(key)
    x = jax.random.uniform(key_x, (num_eval, setting.widths[0]), minval=-INPUT_RANGE,
                           maxval=INPUT_RANGE)
    y = forward(teacher, x)
    return {"x": x, "y": y + setting.noise_std * jax.random.normal(key_noise, y.shape)}

  def evaluate(params):
    return {"loss": loss_fn(params, eval_set),
            "map_distance": jnp.linalg.norm(forward(params, jnp.eye(setting.widths[0]))
                                            - true_map)}

  def probe(params):
    return forward(params, probe_inputs)

  def sampling_data(seed, num_examples):
    return sample_data(teacher, num_examples, [2, seed], noise_std=setting.noise_std)

  baselines = {"llc": float(setting.llc), "multiplicity": setting.multiplicity,
               "rank": setting.rank, "nbeta": setting.nbeta, "num_params": setting.num_params}
  return tasks.Task(init=lambda key: init(key, setting.widths), train_batch=train_batch,
                    loss_fn=loss_fn, evaluate=evaluate, probe=probe,
                    probe_shape=(num_probe, setting.widths[-1]), sampling_data=sampling_data,
                    baselines=baselines, host_batch=None, model=model(setting.widths), data=None)
