"""Essential dynamics: PCA of the functional trajectory and its smoothing (docs/methods.md,
"Essential dynamics").

The trajectory is the ED probe: model outputs on fixed inputs at T training steps, flattened to
[T, D]. PCA centres over time and diagonalises the T × T Gram matrix, which is cheap for D ≫ T.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np


@dataclasses.dataclass
class PCAResult:
  """scores [T, k] (projections on the components), explained_variance_ratio [k], total variance."""

  scores: np.ndarray
  explained_variance_ratio: np.ndarray
  total_variance: float


def pca(trajectory, num_components: int = 3) -> PCAResult:
  """PCA of a [T, D] trajectory, centred over time.

  Via the T × T Gram matrix when D ≥ T (cheap for D ≫ T), else the thin SVD of the data.
  Scores are U·S of the SVD of the centred matrix (sign fixed so each component's largest
  |score| is positive). Variances use ddof = 0 (they only enter as ratios).
  """
  x = np.asarray(trajectory, np.float64).reshape(len(trajectory), -1)
  x = x - x.mean(axis=0, keepdims=True)
  if x.shape[1] >= x.shape[0]:
    gram = x @ x.T  # (T, T)
    eigvals, eigvecs = np.linalg.eigh(gram)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = np.clip(eigvals[order], 0, None), eigvecs[:, order]
    k = min(num_components, len(eigvals))
    scores = eigvecs[:, :k] * np.sqrt(eigvals[:k])
  else:
    u, sing, _ = np.linalg.svd(x, full_matrices=False)  # u (T, D), sing (D,)
    eigvals = sing ** 2
    k = min(num_components, len(eigvals))
    scores = u[:, :k] * sing[:k]
  signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(k)])
  scores = scores * np.where(signs == 0, 1, signs)
  total = float(eigvals.sum())
  ratio = eigvals[:k] / total if total > 0 else np.zeros(k)
  return PCAResult(scores, ratio, total)


def paper_sigma_schedule(num_steps: int) -> np.ndarray:
  """The paper's LR smoothing σ per checkpoint index: 1 for the first 40, linear to 60 at 200, then 60."""
  index = np.arange(num_steps)
  return np.interp(index, [0, 40, 200], [1.0, 1.0, 60.0])


PAPER_SIGMA_KINKS = (40, 200)  # indices where the paper's LR schedule changes slope


def _rounded_ramp(num_steps: int, start: float, stop: float, low: float, high: float,
                  rounding: float) -> np.ndarray:
  """low until ``start``, linear to ``high`` at ``stop``, then high; both corners rounded by
  ρ(u) = r log(1 + e^{u/r}) (a rounded max(u, 0), r = ``rounding`` indices)."""
  index = np.arange(num_steps, dtype=np.float64)
  ramp = lambda u: rounding * np.logaddexp(0.0, u / rounding)
  return low + (high - low) / (stop - start) * (ramp(index - start) - ramp(index - stop))


def smooth_paper_sigma_schedule(num_steps: int, rounding: float = 10.0) -> np.ndarray:
  """The paper's LR schedule with its two corners rounded: infinitely differentiable in the index.

  σ_t = 1 + (59/160) [ρ(t − 40) − ρ(t − 200)] with ρ(u) = r log(1 + e^{u/r}) (a rounded max(u, 0),
  r = ``rounding`` indices). It differs from :func:`paper_sigma_schedule` by at most
  r log 2 × 59/160 ≈ 2.6 (at indices 40 and 200) and by < 0.01 more than 6r from them. Where
  σ_t changes slope abruptly the smoothed curve gets a corner: its velocity has a term
  σ_t σ'_t ∂²f (the Gaussian blur widening with t), which jumps with σ'. Rounding spreads that
  change over ≈ ±3r indices, so no single index carries it.
  """
  return _rounded_ramp(num_steps, 40.0, 200.0, 1.0, 60.0, rounding)


def smooth_scaled_sigma_schedule(num_steps: int, reference: int = 5001,
                                 rounding: float = 10.0) -> np.ndarray:
  """:func:`scaled_sigma_schedule` with its corners rounded as in
  :func:`smooth_paper_sigma_schedule` (``rounding`` in the reference's indices, scaled too; at
  least one index)."""
  scale = num_steps / reference
  return _rounded_ramp(num_steps, 40 * scale, 200 * scale, 1.0, max(60.0 * scale, 1.0),
                       max(rounding * scale, 1.0))


def lm_sigma_schedule(num_steps: int) -> np.ndarray:
  """The paper's LM smoothing σ: linspace(1, 50) over the checkpoints."""
  return np.linspace(1.0, 50.0, num_steps)


def scaled_sigma_schedule(num_steps: int, reference: int = 5001) -> np.ndarray:
  """The LR schedule rescaled to a trajectory of ``num_steps`` points (same shape in t / T).

  For short CPU runs (a few hundred probe rows) the paper's index-based σ would smooth too
  little early and flatten everything late; scaling keeps the same relative behaviour.
  """
  scale = num_steps / reference
  index = np.arange(num_steps)
  return np.interp(index, [0, 40 * scale, 200 * scale],
                   [1.0, 1.0, max(60.0 * scale, 1.0)])


def smooth(scores, sigma, *, truncate: float = 9.0) -> np.ndarray:
  """Gaussian smoothing over the time index with a per-index σ.

  Point t of the result is the Gaussian-weighted mean of all points with weights
  exp(−(s − t)²/2σ_t²), renormalised at the ends. Shapes: scores [T, k] (or [T]), sigma [T].

  The kernel is cut at ``truncate`` σ_t, where the weights (e^−40.5 ≈ 3e−18 at 9σ) are below
  double-precision rounding. A shorter cut (4σ, SciPy's default) is not harmless here: as the
  window slides, points enter and leave with weight ≈ 3e−4, a jitter in the third differences
  that is as large as the smooth curve's own at σ ≈ 60 and puts spurious curvature extrema
  (vertices) every few indices.
  """
  scores = np.asarray(scores, np.float64)
  flat = scores.reshape(len(scores), -1)
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(scores),))
  index = np.arange(len(scores))
  out = np.empty_like(flat)
  for t in range(len(scores)):
    s = max(sigma[t], 1e-6)
    lo, hi = max(0, int(t - truncate * s)), min(len(scores), int(t + truncate * s) + 1)
    w = np.exp(-0.5 * ((index[lo:hi] - t) / s) ** 2)
    out[t] = w @ flat[lo:hi] / w.sum()
  return out.reshape(scores.shape)


def smoothing_variance_factor(sigma, num_steps: int, *, truncate: float = 9.0) -> np.ndarray:
  """Σ_s w_s² / (Σ_s w_s)² of :func:`smooth`'s weights at each index [T] (same truncation and
  renormalisation at the ends): the variance of a smoothed point per unit variance of independent
  noise on the raw points. About 1 / (2√π σ_t) away from the ends.
  """
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (num_steps,))
  index = np.arange(num_steps)
  out = np.empty(num_steps)
  for t in range(num_steps):
    s = max(sigma[t], 1e-6)
    lo, hi = max(0, int(t - truncate * s)), min(num_steps, int(t + truncate * s) + 1)
    w = np.exp(-0.5 * ((index[lo:hi] - t) / s) ** 2)
    out[t] = np.sum(w ** 2) / np.sum(w) ** 2
  return out


def benchmark_ed(num_steps: int = 5000, dim: int = 20000, seed: int = 0) -> dict:
  """Times PCA + smoothing + geometry on a random-walk probe of shape [num_steps, dim] (float32)."""
  from jaxdev.analysis import geometry  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  probe = np.cumsum(rng.standard_normal((num_steps, dim), dtype=np.float32), axis=0)
  start = time.perf_counter()
  result = pca(probe, 3)
  t_pca = time.perf_counter() - start
  sigma = scaled_sigma_schedule(num_steps)
  smoothed = smooth(result.scores, sigma)
  t_smooth = time.perf_counter() - start - t_pca
  forms = geometry.find_forms(smoothed, sigma=sigma)
  total = time.perf_counter() - start
  return {"benchmark": "ed", "num_steps": num_steps, "dim": dim, "pca_s": t_pca,
          "smooth_s": t_smooth, "geometry_s": total - t_pca - t_smooth, "total_s": total,
          "num_forms": len(forms)}
