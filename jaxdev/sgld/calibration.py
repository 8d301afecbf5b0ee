"""Calibration of ε, nβ and γ: a grid of estimates in one program and the paper's selection rule."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple, Optional, Sequence, Union

import jax
import numpy as np

from jaxdev.errors import ConfigError
from jaxdev.sgld import checks
from jaxdev.sgld import plots
from jaxdev.sgld.chains import ChainTrace
from jaxdev.sgld.chains import hyperparameters
from jaxdev.sgld.chains import sample
from jaxdev.sgld.kernel import LossFn
from jaxdev.sgld.kernel import PyTree
from jaxdev.sgld.kernel import default_nbeta
from jaxdev.sgld.precondition import resolve_preconditioner
from jaxdev.sgld.summary import summarize


class Recommendation(NamedTuple):
  """A calibrated setting chosen by :meth:`CalibrationResult.recommend`.

  Attributes:
    step_size, nbeta, gamma: the chosen hyperparameters.
    llc_mean, llc_std: the estimate at that grid point.
    index: (i, j, k) position in the grid.
    reason: how it was chosen.
  """
  step_size: float
  nbeta: float
  gamma: float
  llc_mean: float
  llc_std: float
  index: tuple
  reason: str


@dataclasses.dataclass(repr=False)
class CalibrationResult:
  """A swept ε × nβ × γ grid; arrays are indexed [step_size, nbeta, gamma].

  Attributes:
    step_sizes, nbetas, gammas: the grid axes.
    results: object array of :class:`LLCResult`, one per grid point.
    init_loss: L_n(w*).
    default_nbeta: m / ln m for the sweep's batch size (the upper limit used by ``recommend``).
  """
  step_sizes: np.ndarray
  nbetas: np.ndarray
  gammas: np.ndarray
  results: np.ndarray
  init_loss: float
  default_nbeta: Optional[float] = None

  def _grid(self, fn) -> np.ndarray:
    return np.array([fn(r) for r in self.results.flat]).reshape(self.results.shape)

  @property
  def llc_mean(self) -> np.ndarray:
    """[ε, nβ, γ] mean λ̂ over healthy chains."""
    return self._grid(lambda r: float(r.llc_mean))

  @property
  def llc_std(self) -> np.ndarray:
    """[ε, nβ, γ] std of λ̂ over healthy chains (ddof = 1)."""
    return self._grid(lambda r: float(r.llc_std))

  @property
  def num_failed(self) -> np.ndarray:
    """[ε, nβ, γ] number of failed chains."""
    return self._grid(lambda r: int(r.num_failed))

  @property
  def escaped(self) -> np.ndarray:
    """[ε, nβ, γ] whether any chain escaped."""
    return self._grid(lambda r: bool(r.escaped.any()))

  @property
  def settled(self) -> np.ndarray:
    """[ε, nβ, γ] whether the estimate settled (first vs second half)."""
    return self._grid(lambda r: bool(r.settled))

  @property
  def mala_mean(self) -> np.ndarray:
    """[ε, nβ, γ] mean MALA acceptance probability (NaN when not computed)."""
    return self._grid(lambda r: float(r.diagnostics.get("mala_mean", np.nan)))

  @property
  def ok(self) -> np.ndarray:
    """[ε, nβ, γ] usable points: no failure, no escape, settled, positive estimate."""
    return self._grid(lambda r: bool(r.num_failed == 0 and not r.escaped.any() and r.settled
                                     and r.llc_mean > 0))

  def recommend(self, max_nbeta: Optional[float] = None, max_jump: float = 2.0,
                min_mala: Optional[float] = None) -> Optional[Recommendation]:
    """Chooses a setting by the paper's rules (appendix E.3.3).

    For each (nβ, γ) the step sizes are scanned in increasing order; the scan stops at the first
    point that is not usable (a failed or escaped chain, not settled, λ̂ ≤ 0, or a MALA
    acceptance below ``min_mala``) or whose λ̂ jumps above ``max_jump`` times the previous
    usable one (divergence held in by a bounding box). The last usable step size is that pair's
    candidate. Step sizes below the first usable one that are only unsettled (healthy chains
    still drifting: too small an ε for the number of draws) are passed over, not a stop. Then:
    the largest nβ not above ``max_nbeta`` (default: ``default_nbeta``), the smallest γ, and
    that candidate ε.

    These rules do not see the Euler bias of a large ε (λ̂ grows with ε while every check
    passes); ``figure()`` shows it as a rise of λ̂ against ε, and ``min_mala`` (the MALA
    acceptance falls as the bias grows; sweep with ``compute_mala="same_batch"`` when using
    minibatches) is a way to exclude it.

    Args:
      max_nbeta: upper limit for nβ (None: ``default_nbeta``, or no limit if unknown).
      max_jump: the largest accepted ratio of λ̂ between consecutive step sizes.
      min_mala: if set, the smallest accepted mean MALA acceptance probability.

    Returns:
      :class:`Recommendation`, or None when no grid point with nβ ≤ the limit is usable.
    """
    limit = self.default_nbeta if max_nbeta is None else max_nbeta
    ok, mean = self.ok, self.llc_mean
    if min_mala is not None:
      ok = ok & (self.mala_mean >= min_mala)
    slow = (self.num_failed == 0) & ~self.escaped & ~self.settled & (mean > 0)
    order = np.argsort(self.step_sizes, kind="stable")
    for j in np.argsort(-self.nbetas, kind="stable"):
      if limit is not None and self.nbetas[j] > limit * (1 + 1e-9):
        continue
      for k in np.argsort(self.gammas, kind="stable"):
        best = None
        for i in order:
          if best is None and slow[i, j, k]:
            continue
          if not ok[i, j, k] or (best is not None and mean[i, j, k] > max_jump * mean[best, j, k]):
            break
          best = i
        if best is None:
          continue
        result = self.results[best, j, k]
        reason = (f"nbeta: largest <= {limit if limit is not None else float('inf'):.4g} with a "
                  f"usable point; gamma: smallest usable; step size: largest before the first "
                  f"failed, escaped, unsettled, non-positive or jumping (x{max_jump:g}) estimate"
                  + (f" or MALA acceptance < {min_mala:g}" if min_mala is not None else ""))
        return Recommendation(float(self.step_sizes[best]), float(self.nbetas[j]),
                              float(self.gammas[k]), float(result.llc_mean),
                              float(result.llc_std), (int(best), int(j), int(k)), reason)
    return None

  def figure(self):
    """The calibration figure (see :func:`jaxdev.sgld.plot_calibration`)."""
    return plots.plot_calibration(self)

  def table(self) -> str:
    """One text line per grid point: ε, nβ, γ, λ̂ ± std, failed chains, flags, MALA."""
    mean, std, failed = self.llc_mean, self.llc_std, self.num_failed
    escaped, settled, mala = self.escaped, self.settled, self.mala_mean
    lines = [f"{'step_size':>10} {'nbeta':>9} {'gamma':>9} {'llc':>10} {'± std':>9} "
             f"{'failed':>6}  flags      mala"]
    for i, j, k in np.ndindex(self.results.shape):
      flags = ("escaped " if escaped[i, j, k] else "") + ("unsettled" if not settled[i, j, k]
                                                            else "")
      lines.append(f"{self.step_sizes[i]:10.3g} {self.nbetas[j]:9.4g} {self.gammas[k]:9.4g} "
                   f"{mean[i, j, k]:10.4g} {std[i, j, k]:9.3g} {failed[i, j, k]:6d}  "
                   f"{flags:<10} {mala[i, j, k]:.3f}")
    return "\n".join(lines)

  def write_report(self, directory: str, step: int,
                   max_nbeta: Optional[float] = None) -> str:
    """Writes ``calibration_stepSTEP.png`` and ``.json`` (the recommendation) into ``directory``.

    Args:
      directory: output folder (created if missing).
      step: the checkpoint step the grid was run at (names the files).
      max_nbeta: passed to :meth:`recommend`.

    Returns:
      The text report: :meth:`table` and one line with the recommendation (or why there is none).
    """
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, f"calibration_step{step}")
    self.figure().savefig(stem + ".png", dpi=120)
    choice = self.recommend(max_nbeta=max_nbeta)
    if choice is not None:
      line = (f"recommended at step {step}: ε {choice.step_size:g}, nβ {choice.nbeta:g}, "
              f"γ {choice.gamma:g} (λ̂ {choice.llc_mean:.4g} ± {choice.llc_std:.2g}; "
              f"{choice.reason})")
    else:
      limit = max_nbeta if max_nbeta is not None else self.default_nbeta
      within = f" with nβ ≤ {limit:.4g}" if limit is not None else ""
      line = (f"recommended at step {step}: none: no usable grid point{within} "
              "(raise --max_nbeta, or widen the grid / add draws)")
    with open(stem + ".json", "w") as f:
      json.dump({"step": step, "recommendation": choice._asdict() if choice else None}, f,
                indent=2, default=float)
    return self.table() + "\n" + line

  def __repr__(self) -> str:
    return (f"CalibrationResult({len(self.step_sizes)} step sizes × {len(self.nbetas)} nbetas × "
            f"{len(self.gammas)} gammas, init_loss={self.init_loss:.4g})")


def check_calibration(*, step_sizes, nbetas, gammas, num_chains, num_draws, batch_size,
                      num_burnin=0, thin=1, noise_level=1.0, weight_decay=0.0,
                      bounding_box=None, compute_mala=False) -> tuple:
  """Checks the arguments of :func:`calibrate` without running anything.

  The grid axes may be numbers or strings (``"1e-4"``, as a command line gives them).

  Returns:
    (step_sizes, nbetas, gammas) as flat float64 arrays.

  Raises:
    jaxdev.errors.ConfigError: an empty or unparseable axis, or a value or size out of range.
  """
  axes = tuple(checks.check_grid(name, values) for name, values in
               (("step_sizes", step_sizes), ("nbetas", nbetas), ("gammas", gammas)))
  checks.check_estimate(step_size=axes[0], nbeta=axes[1], gamma=axes[2], num_chains=num_chains,
                        num_draws=num_draws, batch_size=batch_size, num_burnin=num_burnin,
                        thin=thin, noise_level=noise_level, weight_decay=weight_decay,
                        bounding_box=bounding_box, compute_mala=compute_mala)
  return axes


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
    loss_fn, params, data, key: as for :func:`jaxdev.sgld.estimate_llc`.
    step_sizes: ε values (at least one, each > 0).
    nbetas: nβ values (at least one, each > 0; ``default_nbeta(batch_size)`` is the usual
      upper end).
    gammas: γ values (at least one, each ≥ 0).
    num_chains, num_draws, batch_size, num_burnin, thin, num_init_loss_batches: as for
      :func:`jaxdev.sgld.estimate_llc`.
    noise_level, weight_decay, mask, preconditioner, bounding_box: see
      :func:`jaxdev.sgld.build_kernel`.
    compute_mala: as for :func:`jaxdev.sgld.estimate_llc`; summarised as
      ``CalibrationResult.mala_mean``.
      ``"same_batch"`` is the one that reflects the discretisation error of a step size when
      minibatches are used (``recommend(min_mala=...)``).
    chain_map: ``"vmap"`` or ``"map"`` over chains within a grid point.
    grid_map: ``"vmap"`` or ``"map"`` over grid points.

  Returns:
    :class:`CalibrationResult` with arrays indexed [step_size, nbeta, gamma]; ``.figure()``
    plots it and ``.recommend()`` applies the paper's selection rules.

  Raises:
    jaxdev.errors.ConfigError: an empty axis, a value or size out of range (before any
      computation).
  """
  if grid_map not in ("vmap", "map"):
    raise ConfigError(f"grid_map must be 'vmap' or 'map', got {grid_map!r}")
  step_sizes, nbetas, gammas = check_calibration(
      step_sizes=step_sizes, nbetas=nbetas, gammas=gammas, num_chains=num_chains,
      num_draws=num_draws, batch_size=batch_size, num_burnin=num_burnin, thin=thin,
      noise_level=noise_level, weight_decay=weight_decay, bounding_box=bounding_box,
      compute_mala=compute_mala)
  grid = np.meshgrid(step_sizes, nbetas, gammas, indexing="ij")
  shape = grid[0].shape
  flat = [g.reshape(-1) for g in grid]
  hyper = hyperparameters(flat[0], flat[1], flat[2], np.full(flat[0].shape, noise_level),
                          np.full(flat[0].shape, weight_decay))
  chain_keys = jax.random.split(key, num_chains)
  trace, loss0 = sample(
      params, data, chain_keys, hyper, mask, bounding_box, loss_fn=loss_fn, num_draws=num_draws,
      batch_size=batch_size, num_init_loss_batches=num_init_loss_batches,
      preconditioner=resolve_preconditioner(preconditioner),
      compute_mala=checks.check_compute_mala(compute_mala), chain_map=chain_map, grid_map=grid_map)
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
