"""Figures of LLC estimates and calibration grids: the sampler's only matplotlib module.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot (no global state; they
render with Agg, display inline in notebooks, and ``fig.savefig(path)`` writes them).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from jaxdev.sgld.summary import LLCResult
from jaxdev.sgld.summary import nanmean


def _figure(nrows: int, ncols: int, width: float, height: float):
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(width, height), layout="constrained")
  axes = figure.subplots(nrows, ncols, squeeze=False)
  return figure, axes


def plot_trace(result: LLCResult, *, title: Optional[str] = None):
  """Per-chain online λ̂ traces with their running mean across healthy chains.

  Failed chains are drawn grey up to their failure; the final estimate ± std is shaded.

  Args:
    result: an :class:`LLCResult`.
    title: optional title (default: the estimate, with R̂ and the bulk ESS of the loss trace).

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
    mean = nanmean(result.llc_trace[~result.failed_chains], axis=0)
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


def plot_calibration(calibration):
  """λ̂ against ε for each nβ (one column per γ), and the mean online traces per grid point.

  Top row: λ̂ ± std against ε (log axis), one line per nβ; grid points with failed chains are
  marked ×, with escaped chains ▽. Bottom row: mean over healthy chains of the online λ̂ trace,
  one line per (ε, nβ), coloured by grid point.

  Args:
    calibration: a :class:`jaxdev.sgld.CalibrationResult`.

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
        trace = nanmean(result.llc_trace[~result.failed_chains], axis=0)
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
