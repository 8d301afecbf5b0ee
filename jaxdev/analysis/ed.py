"""Essential dynamics: PCA of the functional trajectory and its smoothing (SPEC §5).

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
