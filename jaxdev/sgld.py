"""SGLD sampling of a localized tempered posterior, and the local learning coefficient (LLC).

Entry point: ``from jaxdev import sgld`` gives everything. The pure JAX sampler (state, kernel,
chains, L_n(w*)) lives in :mod:`jaxdev.sgld_sampler`, the host-side summaries and plots in
:mod:`jaxdev.sgld_diagnostics`; this module adds :func:`estimate_llc` and :func:`calibrate`.

Target (SPEC §3). Around a point w* (a checkpoint) the sampler draws from

    p(w) ∝ exp( −nβ·L_n(w) − (γ/2)‖w − w*‖² − (λ_wd/2)‖w‖² )

with the update, on the minibatch mean loss L_m,

    w ← w − (ε/2)·G·( nβ ∇L_m(w) + γ(w − w*) + λ_wd·w ) + √(ε·G)·noise_level·ξ,   ξ ~ N(0, I)

where G = 1 without a preconditioner, and for RMSProp-SGLD (devinterp's ``rmsprop_sgld``)
V ← αV + (1−α)(∇L_m)², G = 1/(√V + eps), elementwise. A weight mask zeroes drift, localization
and noise of the frozen coordinates; a bounding box clips |w − w*| coordinatewise after the step.
The LLC estimate is

    λ̂(w*) = nβ · ( mean over chains and kept draws of L_m(w_t) − L_n(w*) )

with L_m(w_t) the minibatch loss at the **pre-step** weights of draw t.

Conventions:
  * ``nbeta`` is the product nβ (effective sample size times inverse temperature), not β.
    Default nβ = m / ln m for batch size m (devinterp's and the paper's convention).
  * ``loss_fn(params, batch) -> scalar`` is the **mean** loss over the batch. Its scale matters
    at finite nβ: loss c·L with nβ/c gives exactly the same chains and estimate as L with nβ.
  * ``data`` is a pytree of arrays with a leading example axis of size n. Minibatch indices are
    drawn uniformly **with replacement**, independently for every draw and chain (``batch_size
    < n``; duplicates within a batch are possible, as are examples never seen); with
    ``batch_size == n`` every draw uses the whole dataset in order (full batch, no gather).
  * Randomness: draw t of a chain with key k uses ``fold_in(k, t)``, split into a batch key and a
    noise key. Batches and noise depend only on (chain key, t), so two parameter points sampled
    with the same keys see identical batches and noise (smooth LLC curves across checkpoints).
  * Every chain starts at w* itself (draw 0 is the loss at w*). ``llc_std`` is the standard
    deviation of the per-chain estimates with **ddof = 1**; ``llc_sem`` = llc_std / √C.
  * :func:`init`, :func:`build_kernel`, :func:`run_chains` and :func:`init_loss` are pure and
    jittable (chains ``vmap``-ed or ``lax.map``-ped, draws under ``lax.scan``);
    :func:`estimate_llc` and :func:`calibrate` run one jitted program each and summarise on the
    host (:func:`summarize`, numpy).

Accuracy against analytic learning coefficients (``tests/test_sgld.py``). Normal crossing
(devinterp's cases): x ~ N(0, 2²), y ~ 0.25·N(0, 1), f(x) = x·∏ w_i^{p_i}, w* = 0; reduced-rank
regression (RRR, m inputs, h hidden, n outputs): x ~ N(0, I), y ~ 0.25·N(0, I), w* = (A, B) = 0.
All with n = 1000, full batch, nβ = 1000/ln 1000 = 144.8, loss ``mean((y − f)²)`` **without**
½ (torch's ``mse_loss``, devinterp's convention). "target" is the exact E[nβ(L_n(w) − L_n(0))]
of the box-localized posterior that the chains sample (one-dimensional quadrature). ± is the
standard error over chains; "¼" means a quarter of the draws is burn-in::

  case          λ     ε, localization, chains × draws    λ̂               target
  quadratic d=10 5    2e-4, γ=1,     16 × 6000           5.01 ± 0.05    5.06 (Euler chain)
  [0,1]         1/2   5e-5, box 1,   10 × 5000           0.501 ± 0.016  0.500
  [0,2]         1/4   1e-3, box 1,   10 × 5000           0.259 ± 0.008  0.254
  [0,3]         1/6   1e-3, box 1,   10 × 5000           0.164 ± 0.007  0.167
  [1,2]         1/4   1e-3, box 2,   10 × 5000           0.244 ± 0.011  0.241
  [1,3]         1/6   3e-4, box 2,   10 × 50k ¼          0.160 ± 0.005  0.165
  [1,1]         1/2   3e-4, box 1,   10 × 5000           0.369 ± 0.015  0.379
                      5e-5, box 5,   10 × 400k ¼         0.459 ± 0.021  0.432
  [2,2]         1/4   1e-3, box 1,   10 × 5000           0.158 ± 0.007  0.159
                      1e-4, box 5,   10 × 400k ¼         0.213 ± 0.006  0.211
  [3,3]         1/6   3e-4, box 2,   10 × 50k ¼          0.120 ± 0.006  0.119
  RRR (5,3,5)   6.5   1e-3, γ=1,     4 × 4000 ¼          6.22 ± 0.27
                      2e-4, γ=0.3,   8 × 40k ¼           6.29 ± 0.05
  RRR (4,3,8)   6     1e-3, γ=1,     4 × 4000 ¼          5.93 ± 0.19
                      2e-4, γ=0.3,   8 × 40k ¼           6.09 ± 0.03
  RRR (5,4,5)   8     2e-4, γ=0.3,   8 × 40k ¼           7.98 ± 0.05

Within 10% of λ: the regular quadratic, [0,1], [0,2], [0,3], [1,2], [1,3] and RRR with the
settings above. The regular direction of [0,1] needs ε ≪ 4/(2nβ·E[x²]) ≈ 3.5e-3: the Euler
chain inflates λ̂ by 1/(1 − ε·a/4) for curvature a (0.70 instead of 0.5 at ε = 1e-3); RRR
converges to 6.00 (5,3,5) and 7.59 (5,4,5) with γ = 1 (the localization caps the flat
directions), closer to λ with γ = 0.3 and a small ε, while larger ε with small γ overestimates.

Not within 10%: normal crossings with two maximal powers ([1,1], [2,2], [3,3], multiplicity 2).
Their deficit is a property of the target, not of the sampler: at finite nβ the localized
posterior has E[nβK] ≈ λ(1 − 1/(ln(b²) + ln(nβ·E[x²])/(2k) + const)), a logarithmic correction.
For [2,2] the target is 0.156 at box 1 (devinterp's setting; it reports 0.155), 0.211 at box 5,
0.2195 at box 10 and reaches 0.225 (−10%) only at box 40; with a Gaussian localization instead
of a box it is 0.161 (γ = 1), 0.201 (0.1), 0.216 (0.01), 0.224 (1e-3). The chains follow these
targets (table), but the arms of the cross stiffen as the box widens (ε must shrink like 1/b²
while the chain has to travel a distance b: ∝ b⁴ steps): at box 10, ε = 5e-5, 10 × 10⁶ draws
gave 0.218–0.238 over two seeds for a target of 0.2195, and box 40 is out of reach. [1,1] gets
within 10% (0.459 at box 5, 0.452 at box 10 with ε = 5e-6, 2·10⁶ draws) only because the
finite step size overestimates its target (0.432, 0.443) by 2–6%.

Loss scale. λ is the nβ → ∞ limit and does not depend on the loss scale c, but the finite-nβ
estimate does, since loss c·L with nβ equals loss L with c·nβ: the ½ convention (c = ½) lowers
[2,2] at box 1 from 0.156 to 0.149 and RRR (5,3,5) (γ = 1, ε = 5e-4) from 6.10 to 5.92. The
analytic values above are matched with the convention without ½. Output noise also matters at
finite n: with devinterp's y ~ N(0, 1) instead of 0.25·N(0, 1), RRR (5,3,5) gives 5.83 (the
posterior partly fits the noise; L_n(0) is not the minimum of L_n).
"""

from __future__ import annotations

import functools
import warnings
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxdev.sgld_diagnostics import CalibrationResult
from jaxdev.sgld_diagnostics import LLCResult
from jaxdev.sgld_diagnostics import LLCWarning
from jaxdev.sgld_diagnostics import Recommendation
from jaxdev.sgld_diagnostics import plot_calibration
from jaxdev.sgld_diagnostics import plot_trace
from jaxdev.sgld_diagnostics import summarize
from jaxdev.sgld_sampler import ChainTrace
from jaxdev.sgld_sampler import LossFn
from jaxdev.sgld_sampler import PyTree
from jaxdev.sgld_sampler import RMSProp
from jaxdev.sgld_sampler import SGLDInfo
from jaxdev.sgld_sampler import SGLDState
from jaxdev.sgld_sampler import build_kernel
from jaxdev.sgld_sampler import default_nbeta
from jaxdev.sgld_sampler import init
from jaxdev.sgld_sampler import init_loss
from jaxdev.sgld_sampler import mala_acceptance_probability
from jaxdev.sgld_sampler import resolve_preconditioner
from jaxdev.sgld_sampler import run_chains

__all__ = [
    "RMSProp", "SGLDState", "SGLDInfo", "ChainTrace", "LLCResult", "CalibrationResult",
    "Recommendation", "LLCWarning", "default_nbeta", "init", "build_kernel",
    "mala_acceptance_probability", "run_chains", "init_loss", "summarize", "estimate_llc",
    "calibrate", "plot_trace", "plot_calibration",
]


_STATIC = ("loss_fn", "num_draws", "batch_size", "num_init_loss_batches", "preconditioner",
           "compute_mala", "chain_map", "grid_map")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _sample(params, data, chain_keys, hyper, mask, bounding_box, *, loss_fn, num_draws,
            batch_size, num_init_loss_batches, preconditioner, compute_mala, chain_map,
            grid_map=None):
  """Chains (over a grid of hyperparameters when ``grid_map`` is set) and L_n(w*), one program."""
  def chains(h):
    return run_chains(loss_fn, params, data, chain_keys, **h, num_draws=num_draws,
                      batch_size=batch_size, mask=mask, preconditioner=preconditioner,
                      bounding_box=bounding_box, compute_mala=compute_mala, chain_map=chain_map)

  if grid_map is None:
    trace = chains(hyper)
  elif grid_map == "vmap":
    trace = jax.vmap(chains)(hyper)
  else:
    trace = jax.lax.map(chains, hyper)
  loss0 = init_loss(loss_fn, params, data, batch_size=batch_size,
                    num_batches=num_init_loss_batches)
  return trace, loss0


def _hyper(step_size, nbeta, gamma, noise_level, weight_decay):
  """Hyperparameters as float32 arrays: traced, so new values do not recompile."""
  values = dict(step_size=step_size, nbeta=nbeta, gamma=gamma, noise_level=noise_level,
                weight_decay=weight_decay)
  return {name: jnp.asarray(value, jnp.float32) for name, value in values.items()}


def _emit(messages: Sequence[str]) -> None:
  for message in messages:
    warnings.warn(message, LLCWarning, stacklevel=3)


def estimate_llc(loss_fn: LossFn, params: PyTree, data: PyTree, key: jax.Array, *,
                 step_size: float, gamma: float, num_chains: int, num_draws: int,
                 batch_size: int, nbeta: Optional[float] = None, num_burnin: int = 0,
                 thin: int = 1, num_init_loss_batches: Optional[int] = None,
                 noise_level: float = 1.0, weight_decay: float = 0.0, mask: PyTree = None,
                 preconditioner=None, bounding_box: Optional[float] = None,
                 compute_mala: Union[bool, str] = False, chain_map: str = "vmap",
                 warn: bool = True) -> LLCResult:
  """Estimates the local learning coefficient λ̂(w*) of ``loss_fn`` at ``params``.

  One jitted call runs all chains (:func:`run_chains` with ``chain_keys = split(key,
  num_chains)``) and L_n(w*) (:func:`init_loss`); :func:`summarize` turns the traces into an
  :class:`LLCResult` on the host. The compiled program is cached per ``loss_fn`` object and
  static settings, so re-estimating at other parameters or hyperparameters does not recompile.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
    params: the point w*.
    data: pytree with a leading example axis: the sampling dataset.
    key: PRNG key; the same key gives the same numbers, and the same batches and noise at any w*.
    step_size: ε.
    gamma: localization γ.
    num_chains: number of independent chains C.
    num_draws: SGLD steps per chain (burn-in included).
    batch_size: SGLD minibatch size m (also the batch size for L_n(w*)).
    nbeta: nβ; None uses m / ln m.
    num_burnin: leading draws excluded from the estimate.
    thin: keep every ``thin``-th draw after burn-in.
    num_init_loss_batches: None: L_n(w*) over the whole dataset; k: over its first k batches.
    noise_level, weight_decay, mask, preconditioner, bounding_box: see :func:`build_kernel`.
    compute_mala: False, True / ``"consecutive"`` (devinterp's, free) or ``"same_batch"`` (one
      extra gradient per draw): record MALA acceptance probabilities in
      ``result.diagnostics["mala"]`` and their mean in ``["mala_mean"]`` (see :func:`run_chains`).
    chain_map: ``"vmap"`` or ``"map"`` over chains.
    warn: also issue each message of ``result.warnings`` as an :class:`LLCWarning`.

  Returns:
    :class:`LLCResult` (failed chains are reported and excluded, never raised).

  Example::

    result = sgld.estimate_llc(loss_fn, params, data, jax.random.key(0), step_size=1e-4,
                               gamma=100.0, num_chains=8, num_draws=1000, batch_size=256)
    print(result)                       # λ̂ = mean ± std over chains
    sgld.plot_trace(result)
  """
  nbeta = default_nbeta(batch_size) if nbeta is None else float(nbeta)
  chain_keys = jax.random.split(key, num_chains)
  trace, loss0 = _sample(
      params, data, chain_keys, _hyper(step_size, nbeta, gamma, noise_level, weight_decay), mask,
      bounding_box, loss_fn=loss_fn, num_draws=num_draws, batch_size=batch_size,
      num_init_loss_batches=num_init_loss_batches,
      preconditioner=resolve_preconditioner(preconditioner), compute_mala=compute_mala,
      chain_map=chain_map)
  result = summarize(jax.device_get(trace), float(loss0), nbeta=nbeta, num_burnin=num_burnin,
                     thin=thin)
  if warn:
    _emit(result.warnings)
  return result


def calibrate(loss_fn: LossFn, params: PyTree, data: PyTree, key: jax.Array, *,
              step_sizes: Sequence[float], nbetas: Sequence[float],
              gammas: Sequence[float] = (1.0, 10.0, 100.0), num_chains: int, num_draws: int,
              batch_size: int, num_burnin: int = 0, thin: int = 1,
              num_init_loss_batches: Optional[int] = None, noise_level: float = 1.0,
              weight_decay: float = 0.0, mask: PyTree = None, preconditioner=None,
              bounding_box: Optional[float] = None, compute_mala: Union[bool, str] = False,
              chain_map: str = "vmap", grid_map: str = "vmap") -> CalibrationResult:
  """Sweeps the ε × nβ × γ grid in one jitted call and summarizes every grid point.

  All grid points use the same chain keys (common random numbers), so differences between
  points are due to the hyperparameters, not to the noise. ``grid_map="map"`` runs the grid
  points one after the other inside the same program (less memory, same numbers).

  Args:
    loss_fn, params, data, key: as for :func:`estimate_llc`.
    step_sizes: ε values.
    nbetas: nβ values (``default_nbeta(batch_size)`` is the usual upper end).
    gammas: γ values.
    num_chains, num_draws, batch_size, num_burnin, thin, num_init_loss_batches: as for
      :func:`estimate_llc`.
    noise_level, weight_decay, mask, preconditioner, bounding_box: see :func:`build_kernel`.
    compute_mala: as for :func:`estimate_llc`; summarised as ``CalibrationResult.mala_mean``.
      ``"same_batch"`` is the one that reflects the discretisation error of a step size when
      minibatches are used (``recommend(min_mala=...)``).
    chain_map: ``"vmap"`` or ``"map"`` over chains within a grid point.
    grid_map: ``"vmap"`` or ``"map"`` over grid points.

  Returns:
    :class:`CalibrationResult` with arrays indexed [step_size, nbeta, gamma]; ``.figure()``
    plots it and ``.recommend()`` applies the paper's selection rules.
  """
  if grid_map not in ("vmap", "map"):
    raise ValueError(f"grid_map must be 'vmap' or 'map', got {grid_map!r}")
  step_sizes, nbetas, gammas = (np.asarray(v, np.float64).reshape(-1)
                                for v in (step_sizes, nbetas, gammas))
  grid = np.meshgrid(step_sizes, nbetas, gammas, indexing="ij")
  shape = grid[0].shape
  flat = [g.reshape(-1) for g in grid]
  hyper = _hyper(flat[0], flat[1], flat[2], np.full(flat[0].shape, noise_level),
                 np.full(flat[0].shape, weight_decay))
  chain_keys = jax.random.split(key, num_chains)
  trace, loss0 = _sample(
      params, data, chain_keys, hyper, mask, bounding_box, loss_fn=loss_fn, num_draws=num_draws,
      batch_size=batch_size, num_init_loss_batches=num_init_loss_batches,
      preconditioner=resolve_preconditioner(preconditioner), compute_mala=compute_mala,
      chain_map=chain_map, grid_map=grid_map)
  trace = jax.device_get(trace)
  loss0 = float(loss0)
  results = np.empty(len(flat[0]), dtype=object)
  for i in range(len(results)):
    point = ChainTrace(*(None if x is None else x[i] for x in trace))
    results[i] = summarize(point, loss0, nbeta=float(flat[1][i]), num_burnin=num_burnin,
                           thin=thin)
  return CalibrationResult(step_sizes=step_sizes, nbetas=nbetas, gammas=gammas,
                           results=results.reshape(shape), init_loss=loss0,
                           default_nbeta=default_nbeta(batch_size) if batch_size >= 2 else None)
