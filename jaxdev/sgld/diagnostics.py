"""Convergence diagnostics of chains: effective sample size and split-R̂ (host-side numpy).

The definitions are ArviZ's (Vehtari, Gelman, Simpson, Carpenter and Bürkner 2021,
"Rank-normalization, folding, and localization: an improved R̂ for assessing convergence of
MCMC"), and the tests check equality with ArviZ on the same draws:

* **split chains**: each chain's draws are cut into a first and a second half (the middle draw
  is dropped when the count is odd), so C chains of T draws become 2C chains of ⌊T/2⌋;
* **rank normalization**: every draw of every chain is replaced by Φ⁻¹((rank − 3/8) / (S + 1/4)),
  with ranks over all S draws pooled (ties get their average rank);
* **R̂** (:func:`rhat`): with W the mean within-chain variance (ddof = 1) and B/N the variance
  of the chain means (ddof = 1) of N-draw chains, R̂ = √(((N − 1)/N·W + B/N) / W); the
  rank-normalized split-R̂ is the larger of R̂ of the rank-normalized split chains ("bulk") and
  of the rank-normalized |draw − median| ("tail", folded);
* **ESS** (:func:`ess`): S / τ̂ with τ̂ = −1 + 2 Σ ρ̂_t from the multi-chain autocorrelations
  ρ̂_t = 1 − (W − mean over chains of the lag-t autocovariance) / var⁺, var⁺ = (N−1)/N·W + B/N,
  summed over Geyer's initial positive sequence (pairs ρ̂_{2k} + ρ̂_{2k+1} up to the first
  negative pair) made monotone; τ̂ is kept ≥ 1/log₁₀ S. "bulk" ESS applies it to the
  rank-normalized split chains, "mean" ESS to the split chains themselves (the one that sets the
  Monte Carlo error of a mean, :func:`mcse_mean`).

Conventions: ``draws`` is an array [C chains, T draws] (for LLC chains, the kept draws of the
loss trace of the healthy chains). Any NaN or Inf, fewer than 4 draws, or (R̂ only) fewer than 2
chains gives NaN, as in ArviZ; draws that are all equal have ESS = the number of split draws and
R̂ = NaN. Thresholds in common use: R̂ < 1.01 and a bulk ESS of at least 100 per chain
(Vehtari et al.).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.fft
import scipy.special
import scipy.stats

from jaxdev.errors import ConfigError

METHODS = ("bulk", "mean")


class Convergence(NamedTuple):
  """The diagnostics of one set of chains (:func:`convergence`).

  Attributes:
    rhat: rank-normalized split-R̂.
    ess_bulk: bulk effective sample size (rank-normalized split chains).
    ess_mean: effective sample size of the mean (split chains).
    mcse_mean: Monte Carlo standard error of the mean of all draws.
  """
  rhat: float
  ess_bulk: float
  ess_mean: float
  mcse_mean: float


def as_draws(draws) -> np.ndarray:
  """``draws`` as float64 [C, T]; ConfigError unless it is two-dimensional."""
  draws = np.asarray(draws, np.float64)
  if draws.ndim != 2:
    raise ConfigError(f"draws must have shape [chains, draws], got {draws.shape}")
  return draws


def usable(draws: np.ndarray, min_chains: int) -> bool:
  """Enough finite draws for a diagnostic (ArviZ's limits: 4 draws, ``min_chains`` chains)."""
  return (draws.shape[0] >= min_chains and draws.shape[1] >= 4
          and bool(np.isfinite(draws).all()))


def split_chains(draws) -> np.ndarray:
  """[C, T] -> [2C, ⌊T/2⌋]: the first halves, then the second halves (middle draw dropped)."""
  draws = as_draws(draws)
  half = draws.shape[1] // 2
  return np.concatenate([draws[:, :half], draws[:, draws.shape[1] - half:]], axis=0)


def rank_normalize(draws) -> np.ndarray:
  """Φ⁻¹((r − 3/8) / (S + 1/4)) of the pooled ranks r (ties averaged) of all S draws."""
  draws = as_draws(draws)
  ranks = scipy.stats.rankdata(draws, method="average", axis=None).reshape(draws.shape)
  return scipy.special.ndtri((ranks - 0.375) / (draws.size + 0.25))


def _rhat(chains: np.ndarray) -> float:
  num_draws = chains.shape[1]
  within = np.mean(np.var(chains, axis=1, ddof=1))
  between = num_draws * np.var(np.mean(chains, axis=1), ddof=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return float(np.sqrt((between / within + num_draws - 1) / num_draws))


def rhat(draws) -> float:
  """Rank-normalized split-R̂ of [C, T] draws (the module docstring); NaN when unusable."""
  draws = as_draws(draws)
  if not usable(draws, min_chains=2):
    return float("nan")
  chains = split_chains(draws)
  bulk = _rhat(rank_normalize(chains))
  tail = _rhat(rank_normalize(np.abs(chains - np.median(chains))))
  return max(bulk, tail)


def autocovariance(chains: np.ndarray) -> np.ndarray:
  """[C, N] -> [C, N]: each chain's autocovariance at lags 0..N−1 (divided by N, by FFT)."""
  num_draws = chains.shape[1]
  size = scipy.fft.next_fast_len(2 * num_draws)
  centred = chains - chains.mean(axis=1, keepdims=True)
  spectrum = np.fft.rfft(centred, n=size, axis=1)
  return np.fft.irfft(spectrum * np.conjugate(spectrum), n=size, axis=1)[:, :num_draws] / num_draws


def _ess(chains: np.ndarray) -> float:
  """S / τ̂ of [C, N] chains (S = C·N), Geyer's initial monotone sequence estimate of τ."""
  num_chains, num_draws = chains.shape
  total = num_chains * num_draws
  if np.max(chains) - np.min(chains) < np.finfo(np.float64).resolution:
    return float(total)
  acov = autocovariance(chains)
  within = np.mean(acov[:, 0]) * num_draws / (num_draws - 1.0)  # W: mean variance, ddof = 1
  var_plus = within * (num_draws - 1.0) / num_draws
  if num_chains > 1:
    var_plus += np.var(np.mean(chains, axis=1), ddof=1)
  rho = 1.0 - (within - np.mean(acov, axis=0)) / var_plus  # ρ̂_t, t = 0..N−1
  rho[0] = 1.0
  half = num_draws // 2
  pairs = rho[0:2 * half:2] + rho[1:2 * half:2]  # P_k = ρ̂_2k + ρ̂_2k+1
  # P_0 always counts; pair k ≥ 1 is looked at while P_{k−1} > 0 and 2k − 1 < N − 3. The last
  # pair looked at (K) contributes its even term once: when positive, or when P_K ≥ 0.
  last = 0
  while 2 * last + 1 < num_draws - 3 and pairs[last] > 0:
    last += 1
  kept = np.minimum.accumulate(pairs[:last])  # the initial monotone sequence
  even = rho[2 * last]
  tail = even if (even > 0 or (last > 0 and pairs[last] >= 0)) else 0.0
  tau = max(-1.0 + 2.0 * np.sum(kept) + tail, 1.0 / np.log10(total))
  return float(total / tau) if np.isfinite(tau) else float("nan")


def ess(draws, method: str = "bulk") -> float:
  """Effective sample size of [C, T] draws (the module docstring); NaN when unusable.

  Args:
    draws: [C, T].
    method: ``"bulk"`` (rank-normalized split chains; ArviZ's default) or ``"mean"`` (split
      chains as they are: the ESS for the standard error of the mean).

  Returns:
    The ESS, at most S·log₁₀ S for S split draws.

  Raises:
    ConfigError: ``draws`` is not two-dimensional, or an unknown method.
  """
  if method not in METHODS:
    raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
  draws = as_draws(draws)
  if not usable(draws, min_chains=1):
    return float("nan")
  chains = split_chains(draws)
  return _ess(rank_normalize(chains) if method == "bulk" else chains)


def mcse_mean(draws) -> float:
  """Monte Carlo standard error of the mean of all draws: sd (ddof = 1) / √ESS_mean."""
  draws = as_draws(draws)
  if not usable(draws, min_chains=1):
    return float("nan")
  return float(np.std(draws, ddof=1) / np.sqrt(ess(draws, method="mean")))


def convergence(draws) -> Convergence:
  """R̂, bulk and mean ESS and the MCSE of the mean of [C, T] draws (NaN where unusable)."""
  return Convergence(rhat(draws), ess(draws, "bulk"), ess(draws, "mean"), mcse_mean(draws))
