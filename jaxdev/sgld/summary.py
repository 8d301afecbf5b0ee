"""LLC results and their statistics: failed, escaped and unsettled chains (host-side numpy).

The traces come from :func:`jaxdev.sgld.run_chains`; everything here runs on the host and never
raises on NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from jaxdev.errors import ConfigError
from jaxdev.sgld import diagnostics as convergence_lib

#: R̂ above this draws a warning (Vehtari et al. 2021).
RHAT_LIMIT = 1.01


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
    observables: None, or with observables recorded, :func:`summarize_observables`'s dict.
    convergence: :class:`jaxdev.sgld.diagnostics.Convergence` of the kept draws of the healthy
      chains' loss trace: rank-normalized split-R̂, bulk and mean ESS, and the Monte Carlo
      standard error of the mean loss (multiply by nβ for λ̂'s); NaN where unusable.
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
  observables: Optional[dict] = None
  convergence: Optional[convergence_lib.Convergence] = None

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
    if self.convergence is not None and np.isfinite(self.convergence.ess_bulk):
      text += f"; R̂ {self.convergence.rhat:.3f}, ESS {self.convergence.ess_bulk:.0f}"
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
    if self.convergence is not None:
      record.update({k: clean(v) for k, v in self.convergence._asdict().items()})
    if include_traces:
      record["loss_trace"] = np.asarray(self.loss_trace).tolist()
      record["llc_trace"] = np.asarray(self.llc_trace).tolist()
    return record


def nanmean(x, axis=None):
  """Mean of the finite entries along ``axis`` (NaN where there are none), without warnings."""
  with np.errstate(invalid="ignore", divide="ignore"):
    count = np.sum(np.isfinite(x), axis=axis)
    total = np.sum(np.where(np.isfinite(x), x, 0.0), axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def kept_draws(num_draws: int, num_burnin: int, thin: int) -> np.ndarray:
  """[T] bool: the draws an estimate keeps, every ``thin``-th after ``num_burnin``."""
  kept = np.zeros(num_draws, bool)
  kept[num_burnin::thin] = True
  return kept


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
    raise ConfigError(f"trace.loss must have shape [chains, draws], got {loss.shape}")
  num_chains, num_draws = loss.shape
  if not 0 <= num_burnin < num_draws:
    raise ConfigError(f"num_burnin must be in [0, {num_draws}), got {num_burnin}")
  if thin < 1:
    raise ConfigError(f"thin must be >= 1, got {thin}")
  init_loss = float(init_loss)
  nbeta = float(nbeta)

  finite = np.isfinite(loss)
  failed = ~finite.all(axis=1)
  failure_step = np.where(failed, np.argmin(finite, axis=1), -1)
  healthy = ~failed
  kept = kept_draws(num_draws, num_burnin, thin)
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

  convergence = convergence_lib.convergence(loss[healthy][:, kept])
  messages.extend(convergence_warnings(convergence, nbeta, llc_sem))

  diagnostics = {}
  for name in ("distance", "grad_norm", "noise_norm", "drift_norm", "mala"):
    value = getattr(trace, name, None)
    if value is not None:
      diagnostics[name] = np.asarray(value)
  if "mala" in diagnostics and num_healthy:
    diagnostics["mala_mean"] = float(nanmean(diagnostics["mala"][healthy][:, kept]))

  return LLCResult(llc_mean=llc_mean, llc_std=llc_std, llc_sem=float(llc_sem),
                   llc_per_chain=per_chain, loss_trace=loss, llc_trace=llc_trace,
                   init_loss=init_loss, nbeta=nbeta, num_burnin=num_burnin, thin=thin,
                   failed_chains=failed, failure_step=failure_step, num_failed=num_failed,
                   escaped=escaped, settled=settled, warnings=messages, diagnostics=diagnostics,
                   convergence=convergence)


def convergence_warnings(convergence: "convergence_lib.Convergence", nbeta: float,
                         llc_sem: float) -> list:
  """Warnings about the loss trace's convergence diagnostics.

  - R̂ > :data:`RHAT_LIMIT`: the chains have not mixed into one distribution.
  - The ESS is too small for the standard error printed: nβ × the Monte Carlo standard error of
    the pooled mean loss (from the autocorrelation, ``convergence.mcse_mean``) exceeds twice
    ``llc_sem`` (from the spread of the chains' estimates), i.e. the ± shown understates the
    estimate's Monte Carlo error.
  """
  messages = []
  if np.isfinite(convergence.rhat) and convergence.rhat > RHAT_LIMIT:
    messages.append(f"R̂ of the loss trace is {convergence.rhat:.3f} > {RHAT_LIMIT}: the chains "
                    f"have not mixed; run longer chains or add burn-in")
  mcse = nbeta * convergence.mcse_mean
  if np.isfinite(mcse) and np.isfinite(llc_sem) and mcse > 2.0 * llc_sem:
    messages.append(f"effective sample size {convergence.ess_mean:.0f} is too small for the "
                    f"standard error shown: from the autocorrelation λ̂'s Monte Carlo error is "
                    f"{mcse:.3g}, more than twice {llc_sem:.3g}; run longer chains")
  return messages


def summarize_observables(observables, loss, init_observables, *, nbeta: float,
                          num_burnin: int = 0, thin: int = 1) -> dict:
  """The LLC decomposed over observables, and their susceptibilities (host-side numpy).

  The observables φ_o are quantities recorded on the draws of the chains that estimate the LLC
  (:func:`jaxdev.sgld.run_chains`), e.g. the loss at each position of a sequence. For each, from
  the kept draws (``num_burnin``, ``thin``) of the chains whose loss stayed finite:

  - ``llc_per_chain`` [C, O]: nβ·(mean of φ_o(w_t) − φ_o(w*)) per chain (NaN for a failed chain);
    ``llc`` [O]: its mean over those chains. When the loss is the mean of the observables (the
    loss at each position, averaged), the mean of ``llc`` over o is the LLC itself: the same
    draws, the same kept set, and a linear formula.
  - ``susceptibility`` [O]: χ_o = −nβ·Cov(φ_o(w_t), L_m(w_t)), the covariance over all kept draws
    of those chains pooled (ddof = 1): how the observable moves with the loss under the tempered
    posterior (the susceptibility of Baker et al. 2025, with ΔL = L_m(w_t) − L_n(w*), whose
    covariance equals that of L_m(w_t)).

  Args:
    observables: [C, T, O].
    loss: [C, T], the chains' minibatch losses (the trace's ``loss``).
    init_observables: [O], φ_n(w*).
    nbeta, num_burnin, thin: as in :func:`summarize`.

  Returns:
    ``{"llc": [O], "llc_per_chain": [C, O], "susceptibility": [O], "init": [O]}`` (float64; NaN
    where no chain survived, and χ with fewer than two kept draws).
  """
  observables = np.asarray(observables, np.float64)
  loss = np.asarray(loss, np.float64)
  init_observables = np.asarray(init_observables, np.float64).reshape(-1)
  if observables.ndim != 3 or observables.shape[:2] != loss.shape:
    raise ConfigError(f"observables must have shape [chains, draws, O] matching the loss "
                      f"{loss.shape}, got {observables.shape}")
  if observables.shape[2] != init_observables.shape[0]:
    raise ConfigError(f"init_observables has {init_observables.shape[0]} entries, the trace "
                      f"{observables.shape[2]}")
  healthy = np.isfinite(loss).all(axis=1) & np.isfinite(observables).all(axis=(1, 2))
  kept = kept_draws(loss.shape[1], num_burnin, thin)
  excess = nbeta * (observables[:, kept] - init_observables)  # [C, K, O]
  per_chain = np.where(healthy[:, None], excess.mean(axis=1), np.nan)
  llc = per_chain[healthy].mean(axis=0) if healthy.any() else np.full(len(init_observables),
                                                                       np.nan)
  phi = observables[healthy][:, kept].reshape(-1, observables.shape[2])  # [N, O]
  values = loss[healthy][:, kept].reshape(-1)
  if values.size >= 2:
    covariance = ((phi - phi.mean(axis=0)) * (values - values.mean())[:, None]).sum(axis=0) / (
        values.size - 1)
    susceptibility = -nbeta * covariance
  else:
    susceptibility = np.full(len(init_observables), np.nan)
  return {"llc": llc, "llc_per_chain": per_chain, "susceptibility": susceptibility,
          "init": init_observables}
