"""Host-side summaries of SGLD chains: LLC results, failure and convergence checks, plots.

Everything here is numpy and matplotlib on the host; import it through ``from jaxdev import
sgld``. The traces come from :func:`jaxdev.sgld.run_chains`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np


class LLCWarning(RuntimeWarning):
  """A warning about an LLC estimate: failed, escaped or unsettled chains."""


@dataclasses.dataclass(repr=False)
class LLCResult:
  """An LLC estimate with its traces and diagnostics.

  Shapes: C chains, T draws (burn-in included in every trace).

  Attributes:
    llc_mean: mean of ``llc_per_chain`` over the chains that did not fail (NaN if all failed).
    llc_std: standard deviation of ``llc_per_chain`` over healthy chains, **ddof = 1** (NaN with
      fewer than two healthy chains).
    llc_sem: standard error of the mean, ``llc_std / sqrt(number of healthy chains)``.
    llc_per_chain: [C] λ̂_c = nβ·(mean of kept draws of L_m − L_n(w*)); NaN for failed chains.
    loss_trace: [C, T] pre-step minibatch losses L_m(w_t).
    llc_trace: [C, T] online estimate nβ·(mean of kept L_m up to draw t − L_n(w*)); NaN before
      the first kept draw and after a chain's failure. Its last column equals ``llc_per_chain``.
    init_loss: L_n(w*).
    nbeta: nβ used.
    num_burnin: leading draws excluded.
    thin: every ``thin``-th draw after burn-in is kept.
    failed_chains: [C] bool, a non-finite loss occurred.
    failure_step: [C] int, first draw with a non-finite loss, −1 if none.
    num_failed: number of failed chains.
    escaped: [C] bool, the chain's λ̂ over the second half of its kept draws is negative (its
      loss stays below L_n(w*): w* is not a local minimum at this temperature/localization).
    settled: False when the first and second halves of the kept draws disagree (see
      :func:`summarize`).
    warnings: human-readable messages about failures, escapes and settling.
    diagnostics: [C, T] traces ``distance`` (‖w_t − w*‖), ``grad_norm``, ``noise_norm``,
      ``drift_norm``, and with MALA ``mala`` (acceptance probability, NaN at draw 0) and
      ``mala_mean`` (mean over healthy chains and kept draws).
  """
  llc_mean: float
  llc_std: float
  llc_sem: float
  llc_per_chain: np.ndarray
  loss_trace: np.ndarray
  llc_trace: np.ndarray
  init_loss: float
  nbeta: float
  num_burnin: int
  thin: int
  failed_chains: np.ndarray
  failure_step: np.ndarray
  num_failed: int
  escaped: np.ndarray
  settled: bool
  warnings: list
  diagnostics: dict

  @property
  def num_chains(self) -> int:
    """Number of chains C."""
    return self.loss_trace.shape[0]

  @property
  def all_failed(self) -> bool:
    """True when no chain survived (then ``llc_mean`` is NaN)."""
    return self.num_failed == self.num_chains

  def __str__(self) -> str:
    healthy = self.num_chains - self.num_failed
    text = (f"LLC {self.llc_mean:.4g} ± {self.llc_std:.4g} (std over {healthy} chains, ddof=1; "
            f"nβ={self.nbeta:.4g}, L_n(w*)={self.init_loss:.4g})")
    if self.num_failed:
      text += f"; {self.num_failed} of {self.num_chains} chains failed"
    return text

  def __repr__(self) -> str:
    return f"LLCResult({self}, draws={self.loss_trace.shape[1]}, warnings={len(self.warnings)})"

  def to_dict(self, include_traces: bool = False) -> dict:
    """JSON-serialisable summary (per-chain values as lists; traces only if asked)."""
    def clean(x):
      x = np.asarray(x)
      if x.dtype.kind == "f":
        return [None if not np.isfinite(v) else float(v) for v in x.reshape(-1)] if x.ndim else (
            None if not np.isfinite(x) else float(x))
      return x.tolist()

    record = dict(llc_mean=clean(self.llc_mean), llc_std=clean(self.llc_std),
                  llc_sem=clean(self.llc_sem), llc_per_chain=clean(self.llc_per_chain),
                  init_loss=clean(self.init_loss), nbeta=float(self.nbeta),
                  num_chains=self.num_chains, num_draws=int(self.loss_trace.shape[1]),
                  num_burnin=self.num_burnin, thin=self.thin,
                  failed_chains=clean(self.failed_chains), failure_step=clean(self.failure_step),
                  num_failed=int(self.num_failed), escaped=clean(self.escaped),
                  settled=bool(self.settled), warnings=list(self.warnings))
    if "mala_mean" in self.diagnostics:
      record["mala_mean"] = clean(self.diagnostics["mala_mean"])
    if include_traces:
      record["loss_trace"] = np.asarray(self.loss_trace).tolist()
      record["llc_trace"] = np.asarray(self.llc_trace).tolist()
    return record


def _nanmean(x, axis=None):
  with np.errstate(invalid="ignore", divide="ignore"):
    count = np.sum(np.isfinite(x), axis=axis)
    total = np.sum(np.where(np.isfinite(x), x, 0.0), axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def summarize(trace, init_loss: float, *, nbeta: float, num_burnin: int = 0, thin: int = 1,
              settle_rtol: float = 0.1) -> LLCResult:
  """Turns chain traces into an :class:`LLCResult` (host-side numpy, never raises on NaN).

  Failure: a chain with any non-finite loss is failed; its first bad draw is recorded and it is
  excluded from the mean and std. Escape: a healthy chain whose λ̂ over the second half of its
  kept draws is negative. Settling: d_c = λ̂_c(second half) − λ̂_c(first half) per healthy chain;
  the estimate is "not settled" when |mean d| > ``settle_rtol``·|llc_mean| and (with two or more
  chains) |mean d| exceeds three standard errors of the d_c.

  Args:
    trace: a :class:`jaxdev.sgld.ChainTrace` (numpy or jax arrays of shape [C, T]).
    init_loss: L_n(w*).
    nbeta: nβ of the chains.
    num_burnin: leading draws to exclude (0 ≤ num_burnin < T).
    thin: keep every ``thin``-th draw after burn-in (≥ 1).
    settle_rtol: relative tolerance of the settling check.

  Returns:
    :class:`LLCResult`.
  """
  loss = np.asarray(trace.loss, np.float64)
  if loss.ndim != 2:
    raise ValueError(f"trace.loss must have shape [chains, draws], got {loss.shape}")
  num_chains, num_draws = loss.shape
  if not 0 <= num_burnin < num_draws:
    raise ValueError(f"num_burnin must be in [0, {num_draws}), got {num_burnin}")
  if thin < 1:
    raise ValueError(f"thin must be >= 1, got {thin}")
  init_loss = float(init_loss)
  nbeta = float(nbeta)

  finite = np.isfinite(loss)
  failed = ~finite.all(axis=1)
  failure_step = np.where(failed, np.argmin(finite, axis=1), -1)
  healthy = ~failed
  kept = np.zeros(num_draws, bool)
  kept[num_burnin::thin] = True
  excess = nbeta * (loss - init_loss)
  with np.errstate(invalid="ignore", divide="ignore"):
    counts = np.cumsum(kept)
    llc_trace = np.cumsum(np.where(kept, excess, 0.0), axis=1) / counts
    llc_trace[:, counts == 0] = np.nan
  for c in np.flatnonzero(failed):
    llc_trace[c, failure_step[c]:] = np.nan
  kept_excess = excess[:, kept]
  with np.errstate(invalid="ignore"):
    per_chain = np.where(healthy, kept_excess.mean(axis=1), np.nan)

  num_healthy = int(healthy.sum())
  good = per_chain[healthy]
  llc_mean = float(good.mean()) if num_healthy else float("nan")
  llc_std = float(good.std(ddof=1)) if num_healthy >= 2 else float("nan")
  llc_sem = llc_std / np.sqrt(num_healthy) if num_healthy >= 2 else float("nan")

  num_kept = kept_excess.shape[1]
  half = num_kept // 2
  escaped = np.zeros(num_chains, bool)
  settled = True
  messages = []
  if num_healthy and num_kept >= 2:
    first = kept_excess[healthy, :half].mean(axis=1)
    second = kept_excess[healthy, half:].mean(axis=1)
    escaped[healthy] = second < 0
    drift = second - first
    mean_drift = float(drift.mean())
    significant = True
    if num_healthy >= 2:
      significant = abs(mean_drift) > 3.0 * drift.std(ddof=1) / np.sqrt(num_healthy)
    if abs(mean_drift) > settle_rtol * abs(llc_mean) and significant:
      settled = False
      messages.append(
          f"LLC estimate not settled: λ̂ over the first half of the kept draws is "
          f"{first.mean():.4g}, over the second half {second.mean():.4g}; run longer chains, "
          f"add burn-in, or change step_size")

  num_failed = int(failed.sum())
  if num_failed == num_chains:
    messages.insert(0, f"all {num_chains} chains failed (non-finite loss, first at draw "
                       f"{int(failure_step.min())}); no estimate (llc_mean is NaN): reduce "
                       f"step_size or increase gamma")
  elif num_failed:
    messages.insert(0, f"{num_failed} of {num_chains} chains failed (non-finite loss at draws "
                       f"{failure_step[failed].tolist()}); they are excluded from the estimate")
  if escaped.any():
    messages.append(f"{int(escaped.sum())} of {num_chains} chains escaped (loss below "
                    f"L_n(w*) over the second half, negative λ̂): w* is not a local minimum at "
                    f"this nbeta and gamma; increase gamma or reduce step_size")

  diagnostics = {}
  for name in ("distance", "grad_norm", "noise_norm", "drift_norm", "mala"):
    value = getattr(trace, name, None)
    if value is not None:
      diagnostics[name] = np.asarray(value)
  if "mala" in diagnostics and num_healthy:
    diagnostics["mala_mean"] = float(_nanmean(diagnostics["mala"][healthy][:, kept]))

  return LLCResult(llc_mean=llc_mean, llc_std=llc_std, llc_sem=float(llc_sem),
                   llc_per_chain=per_chain, loss_trace=loss, llc_trace=llc_trace,
                   init_loss=init_loss, nbeta=nbeta, num_burnin=num_burnin, thin=thin,
                   failed_chains=failed, failure_step=failure_step, num_failed=num_failed,
                   escaped=escaped, settled=settled, warnings=messages, diagnostics=diagnostics)


def _figure(nrows: int, ncols: int, width: float, height: float):
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(width, height), layout="constrained")
  axes = figure.subplots(nrows, ncols, squeeze=False)
  return figure, axes


def plot_trace(result: LLCResult, *, title: Optional[str] = None):
  """Per-chain online λ̂ traces with their running mean across healthy chains.

  Failed chains are drawn grey up to their failure; the final estimate ± std is shaded. The
  figure is a ``matplotlib.figure.Figure`` made without pyplot (no global state; it renders
  with Agg, displays inline in notebooks, and ``fig.savefig(path)`` writes it).

  Args:
    result: an :class:`LLCResult`.
    title: optional title (default: the estimate).

  Returns:
    matplotlib Figure.
  """
  figure, axes = _figure(1, 1, 7.0, 4.0)
  ax = axes[0, 0]
  draws = np.arange(result.llc_trace.shape[1])
  for c in range(result.num_chains):
    if result.failed_chains[c]:
      ax.plot(draws, result.llc_trace[c], color="0.6", lw=0.8, ls=":",
              label="failed chain" if c == np.flatnonzero(result.failed_chains)[0] else None)
    else:
      ax.plot(draws, result.llc_trace[c], lw=0.8, alpha=0.7, color=f"C{c % 10}")
  if not result.all_failed:
    mean = _nanmean(result.llc_trace[~result.failed_chains], axis=0)
    ax.plot(draws, mean, color="k", lw=2.0, label="mean over chains")
    if np.isfinite(result.llc_std):
      ax.axhspan(result.llc_mean - result.llc_std, result.llc_mean + result.llc_std,
                 color="k", alpha=0.08, label="final ± std")
  if result.num_burnin:
    ax.axvline(result.num_burnin, color="0.4", ls="--", lw=0.8, label="end of burn-in")
  ax.set_xlim(0, max(len(draws) - 1, 1))
  ax.set_xlabel("draw")
  ax.set_ylabel("online λ̂")
  ax.set_title(title if title is not None else str(result), fontsize=9)
  ax.legend(loc="lower right", fontsize=8)
  return figure


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
    """The calibration figure (see :func:`plot_calibration`)."""
    return plot_calibration(self)

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

  def __repr__(self) -> str:
    return (f"CalibrationResult({len(self.step_sizes)} step sizes × {len(self.nbetas)} nbetas × "
            f"{len(self.gammas)} gammas, init_loss={self.init_loss:.4g})")


def plot_calibration(calibration: CalibrationResult):
  """λ̂ against ε for each nβ (one column per γ), and the mean online traces per grid point.

  Top row: λ̂ ± std against ε (log axis), one line per nβ; grid points with failed chains are
  marked ×, with escaped chains ▽. Bottom row: mean over healthy chains of the online λ̂ trace,
  one line per (ε, nβ), coloured by grid point.

  Args:
    calibration: a :class:`CalibrationResult`.

  Returns:
    matplotlib Figure (made without pyplot).
  """
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  num_gammas = len(calibration.gammas)
  figure, axes = _figure(2, num_gammas, 4.2 * num_gammas, 7.0)
  mean, std = calibration.llc_mean, calibration.llc_std
  failed, escaped = calibration.num_failed > 0, calibration.escaped
  cmap = colormaps["viridis"]
  num_lines = len(calibration.step_sizes) * len(calibration.nbetas)
  for k, gamma in enumerate(calibration.gammas):
    top, bottom = axes[0, k], axes[1, k]
    for j, nbeta in enumerate(calibration.nbetas):
      line = top.errorbar(calibration.step_sizes, mean[:, j, k], yerr=std[:, j, k], marker="o",
                          ms=3, capsize=2, label=f"nβ={nbeta:.4g}")
      color = line[0].get_color()
      bad = failed[:, j, k]
      top.plot(calibration.step_sizes[bad], np.nan_to_num(mean[bad, j, k]), "x", color=color,
               ms=8)
      top.plot(calibration.step_sizes[escaped[:, j, k]], mean[escaped[:, j, k], j, k], "v",
               color=color, ms=7, mfc="none")
      for i, step_size in enumerate(calibration.step_sizes):
        result = calibration.results[i, j, k]
        if result.all_failed:
          continue
        trace = _nanmean(result.llc_trace[~result.failed_chains], axis=0)
        color = cmap((i * len(calibration.nbetas) + j) / max(num_lines - 1, 1))
        bottom.plot(trace, color=color, lw=1.0, label=f"ε={step_size:.2g}, nβ={nbeta:.3g}")
    top.set_xscale("log")
    top.set_xlabel("step size ε")
    top.set_ylabel("λ̂")
    top.set_title(f"γ = {gamma:.4g}  (× failed, ▽ escaped)", fontsize=9)
    top.legend(fontsize=7)
    bottom.set_xlabel("draw")
    bottom.set_ylabel("online λ̂ (mean over chains)")
    if num_lines <= 12:
      bottom.legend(fontsize=6)
  return figure
