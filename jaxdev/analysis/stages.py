"""Developmental stages from an LLC curve (SPEC §4).

A Gaussian process is fitted to (x = ln(step + 1), y = λ̂) with scikit-learn; the slope of its
posterior mean with respect to x marks the stages. Milestones are where the slope changes sign
(between a rising and a falling stage) and local minima of |slope| below a tolerance (a plateau
between two stages of the same type). Stage type A: LLC increasing; type B: decreasing.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, RBF, WhiteKernel


@dataclasses.dataclass
class Stage:
  """One stage: [start, end] in training steps; kind "A" (LLC rising) or "B" (falling)."""

  start: float
  end: float
  kind: str
  llc_change: float

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class StageAnalysis:
  """Stages plus the GP curves for plotting.

  Attributes:
    stages: the stages in order.
    boundaries: steps of the milestones between stages.
    grid_steps: steps of the evaluation grid (uniform in ln(step + 1)).
    mean: GP posterior mean of the LLC on the grid.
    std: GP posterior std on the grid.
    slope: d mean / d ln(step + 1) on the grid.
    tolerance: |slope| threshold used for plateaus.
  """

  stages: list
  boundaries: list
  grid_steps: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  slope: np.ndarray
  tolerance: float


def fit_gp(steps, llc, llc_std=None, *, num_grid: int = 400, random_state: int = 0):
  """Fits the SPEC §4 GP; returns (grid_steps, mean, std, slope) on a grid uniform in ln(step+1)."""
  steps = np.asarray(steps, np.float64)
  llc = np.asarray(llc, np.float64)
  x = np.log(steps + 1.0)[:, None]
  scale = float(np.std(llc)) or 1.0
  alpha = 1e-8 if llc_std is None else np.maximum((np.asarray(llc_std) / scale) ** 2, 1e-8)
  kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(3.0, (0.5, 1e3))
            + WhiteKernel(1e-2, (1e-6, 1e0)))
  gp = GaussianProcessRegressor(kernel, alpha=alpha, normalize_y=True, n_restarts_optimizer=10,
                                random_state=random_state)
  with warnings.catch_warnings():
    # The white-noise level reaching its lower bound only means the per-point errors (alpha)
    # already explain the scatter; the fit is fine, and sklearn's warning would say otherwise.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    gp.fit(x, llc)
  grid = np.linspace(x.min(), x.max(), num_grid)
  mean, std = gp.predict(grid[:, None], return_std=True)
  slope = np.gradient(mean, grid)
  return np.exp(grid) - 1.0, mean, std, slope


def detect_stages(steps, llc, *, tolerance: float | None = None, llc_std=None,
                  min_change: float | None = None, num_grid: int = 400,
                  random_state: int = 0) -> StageAnalysis:
  """Finds the developmental stages of an LLC curve.

  Args:
    steps: checkpoint steps [N] (any spacing).
    llc: LLC estimates [N].
    tolerance: |slope| (LLC per unit of ln(step+1)) below which a local minimum of |slope| is a
      plateau boundary; default 10% of the largest |slope|.
    llc_std: optional per-checkpoint standard deviations [N], used as GP observation noise.
    min_change: smallest LLC change for a stage (default: 5% of the fitted curve's range, or
      twice the median ``llc_std`` if larger); smaller rises or falls are noise.
    num_grid: grid points for the slope.
    random_state: seed of the GP optimizer restarts (deterministic results).

  Returns:
    A StageAnalysis.
  """
  steps = np.asarray(steps, np.float64)
  llc = np.asarray(llc, np.float64)
  keep = np.isfinite(llc)
  if llc_std is not None:
    llc_std = np.asarray(llc_std, np.float64)
    keep &= np.isfinite(llc_std)
    llc_std = llc_std[keep]
  steps, llc = steps[keep], llc[keep]
  if len(steps) < 4:
    raise ValueError(f"need at least 4 finite LLC values to detect stages, got {len(steps)}")
  grid_steps, mean, std, slope = fit_gp(steps, llc, llc_std, num_grid=num_grid,
                                        random_state=random_state)
  if tolerance is None:
    tolerance = 0.1 * float(np.max(np.abs(slope)))
  # Grid points are rising (+1), falling (-1) or flat (0, |slope| < tolerance). A stage is a
  # maximal run of one sign; between two runs the milestone is where |slope| is smallest:
  # the sign change itself, or the bottom of the plateau between them.
  sign = np.where(slope > tolerance, 1, np.where(slope < -tolerance, -1, 0))
  runs = []  # (first index, last index, sign)
  for i, s_i in enumerate(sign):
    if s_i == 0:
      continue
    if runs and runs[-1][2] == s_i and i == runs[-1][1] + 1:
      runs[-1] = (runs[-1][0], i, s_i)
    else:
      runs.append((i, i, s_i))
  # A run whose LLC change is within noise is not a stage.
  if min_change is None:
    min_change = 0.05 * float(np.ptp(mean))
    if llc_std is not None and len(llc_std):
      min_change = max(min_change, 2.0 * float(np.median(llc_std)))
  runs = [r for r in runs if abs(mean[r[1]] - mean[r[0]]) >= min_change]
  merged_runs = []
  for run in runs:  # same-sign runs with no flat stretch between them are one stage
    if merged_runs and merged_runs[-1][2] == run[2] and np.all(
        np.abs(slope[merged_runs[-1][1]:run[0] + 1]) >= tolerance):
      merged_runs[-1] = (merged_runs[-1][0], run[1], run[2])
    else:
      merged_runs.append(run)
  runs = merged_runs
  if not runs:
    runs = [(0, len(slope) - 1, 1 if mean[-1] >= mean[0] else -1)]
  merged = []
  for (_, end_a, _), (start_b, _, _) in zip(runs[:-1], runs[1:]):
    gap = np.arange(end_a, start_b + 1)
    merged.append(int(gap[np.argmin(np.abs(slope[gap]))]))
  edges = [0] + merged + [len(slope) - 1]
  stages = []
  for a, b in zip(edges[:-1], edges[1:]):
    change = float(mean[b] - mean[a])
    stages.append(Stage(float(grid_steps[a]), float(grid_steps[b]), "A" if change > 0 else "B",
                        change))
  boundaries = [float(grid_steps[i]) for i in merged]
  return StageAnalysis(stages, boundaries, grid_steps, mean, std, slope, float(tolerance))

