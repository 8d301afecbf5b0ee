"""Developmental stages from an LLC curve, decided by statistical significance (docs/methods.md,
"Stage detection").

A Gaussian process is fitted to (x = ln(step + 1), y = λ̂): kernel Constant(1, (1e-3, 1e3)) ×
RBF(3, (0.5, 1e3)), hyperparameters by maximum marginal likelihood (scikit-learn, 10 restarts).
For an RBF kernel the posterior of the derivative f'(x) is Gaussian in closed form, so every
grid point has a slope mean m(x) and std s(x), and z(x) = m(x) / s(x) says how many posterior
stds the slope is from zero.

Noise. The standard error of an LLC estimate is (chain std) / √(number of chains). Neighbouring
checkpoints share their SGLD noise (same seed, same batches), so the part of the error that is
independent from one checkpoint to the next (all a GP's noise term can see) is smaller still.
It is estimated from the curve itself (``independent_noise``: local pseudo-residuals, then the
residuals of a first fit) and capped above by the squared standard error (without standard
errors, floored at 10⁻³ of the LLC's range instead). The chain std itself is never used as
noise.

Milestones (stage boundaries):
  (a) sign change: between a significantly rising stretch (z ≥ z_threshold) and a significantly
      falling one (z ≤ −z_threshold), or the reverse, the boundary is the extremum of the LLC
      between them (peak or trough);
  (b) plateau: between two significant stretches of the same sign, or inside one, a local
      minimum of |m| that is pronounced relative to both neighbouring maxima of |m|
      (|m_dip| ≤ dip_ratio × the smaller one) and real (each exceeds the dip by at least
      dip_threshold posterior stds of the difference), with a significant stretch on each side.
A boundary's step is the posterior median of its location (the argmax of the LLC, or argmin of
|slope|, over GP posterior paths), reported with its 16–84% interval. Stage kind A: LLC
increasing; B: decreasing.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import threadpoolctl
from scipy import linalg
from scipy import signal
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, RBF

from jaxdev.errors import UserError


_CHI2_1_MEDIAN = 0.454936  # median of a χ² variable with one degree of freedom
_PRECISION = 1e-3  # smallest noise std without standard errors, relative to the LLC's range


class StageInputError(UserError, ValueError):
  """Inputs that cannot define an LLC curve (too few points, mismatched noise arguments)."""


@dataclasses.dataclass
class Milestone:
  """A boundary between two stages and the evidence for it.

  Attributes:
    step: training step of the boundary.
    rule: "sign change" (rule a) or "plateau" (rule b).
    slope: GP posterior mean of d λ̂ / d ln(step + 1) at the boundary.
    slope_std: its posterior std.
    neighbour_slopes: the slope at the largest |slope| of the stretch before and after (for a
      plateau: the two neighbouring maxima the dip is measured against).
    neighbour_z: for a sign change, slope / std at those two points; for a plateau, the most
      significant slope / std on each side of the dip (up to the neighbouring maxima).
    dip_ratio: |slope| / min(|neighbour slopes|) (plateaus; None for sign changes).
    dip_z: the smaller of (|neighbour slope| − |slope|) / std of that difference (plateaus).
    step_low, step_high: 16th and 84th percentile of the boundary's posterior location (``step``
      is its median): the argmax of the LLC between the two stretches (sign change) or the
      argmin of |slope| between the two neighbouring maxima (plateau), over GP posterior paths.
    accepted: whether the candidate passed its rule (``StageAnalysis.candidates`` also lists
      the local minima of |slope| that did not).
  """

  step: float
  rule: str
  slope: float
  slope_std: float
  neighbour_slopes: tuple
  neighbour_z: tuple
  dip_ratio: float | None = None
  dip_z: float | None = None
  accepted: bool = True
  step_low: float | None = None
  step_high: float | None = None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Stage:
  """One stage: [start, end] in training steps; kind "A" (LLC rising) or "B" (falling).

  Attributes:
    start, end: training steps (grid points of the GP fit).
    kind: "A" or "B".
    llc_change: GP mean at ``end`` minus GP mean at ``start``.
    llc_change_std: GP posterior std of that difference.
    llc_change_se: √(SE(start)² + SE(end)²) from the per-checkpoint standard errors (None if
      none were given): the difference's error if the two estimates shared no noise, an upper
      bound in practice.
    significant: whether the stage holds a significant stretch of its sign (False only for the
      single stage of a curve with no significant slope anywhere).
  """

  start: float
  end: float
  kind: str
  llc_change: float
  llc_change_std: float = float("nan")
  llc_change_se: float | None = None
  significant: bool = True

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class StageAnalysis:
  """Stages, milestones and the GP curves for plotting.

  Attributes:
    stages: the stages in order.
    boundaries: steps of the milestones between stages.
    milestones: Milestone objects (same order as ``boundaries``).
    candidates: every local minimum of |slope| examined by the plateau rule, accepted or not.
    grid_steps: steps of the evaluation grid (uniform in ln(step + 1)).
    mean, std: GP posterior mean and std of the LLC on the grid.
    slope, slope_std: GP posterior mean and std of d λ̂ / d ln(step + 1) on the grid.
    z_threshold, dip_ratio: the thresholds used.
    noise_std: std of the independent part of each checkpoint's error [N] (the GP's noise).
    length_scale: fitted RBF length scale, in units of ln(step + 1).
  """

  stages: list
  boundaries: list
  milestones: list
  candidates: list
  grid_steps: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  slope: np.ndarray
  slope_std: np.ndarray
  z_threshold: float
  dip_ratio: float
  noise_std: np.ndarray
  length_scale: float

  @property
  def z(self) -> np.ndarray:
    """Slope in units of its posterior std."""
    return self.slope / self.slope_std

  def to_dict(self) -> dict:
    return {"boundaries": [float(b) for b in self.boundaries],
            "milestones": [m.to_dict() for m in self.milestones],
            "candidates": [m.to_dict() for m in self.candidates],
            "stages": [s.to_dict() for s in self.stages],
            "z_threshold": self.z_threshold, "dip_ratio": self.dip_ratio,
            "noise_std": [float(v) for v in self.noise_std], "length_scale": self.length_scale}


@dataclasses.dataclass
class GPFit:
  """Closed-form GP posterior on a grid (see ``fit_gp``); covariances are [G, G]."""

  grid_steps: np.ndarray
  mean: np.ndarray
  mean_cov: np.ndarray
  slope: np.ndarray
  slope_cov: np.ndarray
  noise_std: np.ndarray
  length_scale: float


def standard_error(llc_se=None, llc_std=None, num_chains=None):
  """Per-checkpoint standard error: ``llc_se``, or ``llc_std / √num_chains`` (None if neither)."""
  if llc_se is not None:
    if llc_std is not None:
      raise StageInputError("give either llc_se or (llc_std, num_chains), not both")
    return np.asarray(llc_se, np.float64)
  if llc_std is None:
    return None
  if num_chains is None:
    raise StageInputError("llc_std is the std over chains: num_chains is needed to turn it into "
                          "a standard error (or pass llc_se)")
  return np.asarray(llc_std, np.float64) / np.sqrt(np.asarray(num_chains, np.float64))


def _local_median(values, window: int) -> np.ndarray:
  """Median of ``values`` [N] over ``window`` consecutive points around each (NaNs ignored).

  Near the ends the window is shifted inwards, never cut or padded, so every estimate rests on
  the same number of points.
  """
  values = np.asarray(values, np.float64)
  width = min(window, len(values))
  windows = np.lib.stride_tricks.sliding_window_view(values, width)  # (N - width + 1, width)
  start = np.clip(np.arange(len(values)) - width // 2, 0, len(values) - width)
  return np.nanmedian(windows, axis=1)[start]


def independent_noise(steps, llc, llc_se=None, *, window: int = 11) -> np.ndarray:
  """Variance of the independent part of each checkpoint's error, estimated from the curve.

  Gasser–Sroka–Jennen-Steinmetz pseudo-residuals: each interior point minus the straight line
  through its two neighbours (in x = ln(step + 1)), divided by the √(1 + a² + b²) that makes
  them unit-variance for independent noise; the median of their squares over ``window``
  consecutive checkpoints (the noise level changes slowly along training), divided by the
  median of χ²₁ (0.455) to make it unbiased for Gaussian noise, is capped at the squared standard
  error, which bounds the independent part from above. The median keeps a few points where the
  true curve bends sharply (which inflate their pseudo-residuals) from inflating their
  neighbours' noise.

  Args:
    steps: checkpoint steps [N] (sorted, N ≥ 3).
    llc: LLC estimates [N].
    llc_se: optional standard errors [N] (the cap).
    window: checkpoints per local median.

  Returns:
    Variances [N].
  """
  x = np.log(np.asarray(steps, np.float64) + 1.0)
  y = np.asarray(llc, np.float64)
  h1, h2 = x[1:-1] - x[:-2], x[2:] - x[1:-1]
  a, b = h2 / (h1 + h2), h1 / (h1 + h2)
  var = (y[1:-1] - a * y[:-2] - b * y[2:]) ** 2 / (1.0 + a ** 2 + b ** 2)
  # The end points have no pseudo-residual of their own.
  var = _local_median(np.concatenate([[np.nan], var, [np.nan]]), window) / _CHI2_1_MEDIAN
  if llc_se is not None:
    var = np.minimum(var, np.asarray(llc_se, np.float64) ** 2)
  return var


def fit_gp(steps, llc, llc_se=None, *, num_grid: int = 500, window: int = 11,
           random_state: int = 0) -> GPFit:
  """Fits the GP (docs/methods.md, "Stage detection"); returns its posterior (LLC, slope) on a grid.

  The observation noise of checkpoint i starts as ``independent_noise`` (fixed, not fitted); the
  kernel Constant(1, (1e-3, 1e3)) × RBF(3, (0.5, 1e3)) is fitted by marginal likelihood on the
  standardised LLC; the noise is then re-estimated from that fit's residuals and the kernel
  refitted from there. Both estimates are capped by ``llc_se``²; without ``llc_se`` they are
  floored at (10⁻³ × range)².
  BLAS runs single-threaded here: the matrices are small, and threads only contend.

  Args:
    steps: checkpoint steps [N], sorted.
    llc: LLC estimates [N].
    llc_se: optional standard errors [N] (cap of the noise estimate).
    num_grid: grid points, uniform in ln(step + 1) between the first and last checkpoint.
    window: checkpoints per local median of the noise estimates.
    random_state: seed of the optimizer restarts (deterministic results).

  Returns:
    A GPFit; slope is d λ̂ / d ln(step + 1).
  """
  x = np.log(np.asarray(steps, np.float64) + 1.0)
  y = np.asarray(llc, np.float64)
  y_mean, y_scale = float(np.mean(y)), float(np.std(y)) or 1.0
  target = (y - y_mean) / y_scale
  cap = None if llc_se is None else (np.asarray(llc_se, np.float64) / y_scale) ** 2
  # Without standard errors nothing says how precise the curve is, and a noiseless one would
  # make the RBF's ringing around sharp bends (a misfit, not data) "significant": its noise is
  # then floored at 10⁻³ of its range. With them, the data's own scatter decides.
  floor = 1e-12 if llc_se is not None else (_PRECISION * np.ptp(target)) ** 2 + 1e-12
  noise = np.maximum(independent_noise(steps, target, None if cap is None else np.sqrt(cap),
                                       window=window), floor)
  with threadpoolctl.threadpool_limits(1):
    return _fit(x, y_mean, y_scale, target, noise, cap, floor, num_grid, window, random_state)


def _fit(x, y_mean, y_scale, target, noise, cap, floor, num_grid, window, random_state):
  """The two GP passes of ``fit_gp`` on the standardised LLC ``target`` and its posterior."""
  kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(3.0, (0.5, 1e3))
  for restarts in (10, 0):
    gp = GaussianProcessRegressor(kernel, alpha=noise, normalize_y=False,
                                  n_restarts_optimizer=restarts, random_state=random_state)
    with warnings.catch_warnings():
      # A length scale at its bound is an answer, not a failure; sklearn's warning says otherwise.
      warnings.filterwarnings("ignore", category=ConvergenceWarning)
      gp.fit(x[:, None], target)
    if restarts:
      # Second pass: the noise re-estimated from the residuals of the first fit, which carry no
      # curvature of the true curve: r = (I − H) y with H the fit's hat matrix, so for noise of
      # locally constant variance E[r_i²] = σ_i² [(I − H)(I − H)ᵀ]_ii.
      k_f = gp.kernel_(x[:, None])
      resid_map = np.eye(len(x)) - k_f @ np.linalg.inv(k_f + np.diag(noise))
      # Points the fit nearly interpolates (factor < 0.1) say nothing about their noise: left out,
      # and where a whole window is such, the pseudo-residual estimate stays.
      factor = np.sum(resid_map ** 2, axis=1)
      resid = np.where(factor >= 0.1, (resid_map @ target) ** 2 / np.maximum(factor, 0.1), np.nan)
      with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)  # all-NaN windows
        local = _local_median(resid, window) / _CHI2_1_MEDIAN
      noise = np.where(np.isfinite(local), local, noise)
      if cap is not None:
        noise = np.minimum(noise, cap)
      noise = np.maximum(noise, floor)
      kernel = gp.kernel_
  amp = gp.kernel_.k1.constant_value
  ell = float(gp.kernel_.k2.length_scale)
  grid = np.linspace(x.min(), x.max(), num_grid)

  def rbf(a, b):
    return amp * np.exp(-0.5 * ((a[:, None] - b[None, :]) / ell) ** 2)

  chol = np.linalg.cholesky(rbf(x, x) + np.diag(noise))
  solve = lambda b: linalg.cho_solve((chol, True), b)  # noqa: E731
  alpha = solve(target)
  k_gx = rbf(grid, x)
  dk_gx = -(grid[:, None] - x[None, :]) / ell ** 2 * k_gx  # ∂k(g, x) / ∂g
  k_gg = rbf(grid, grid)
  r = grid[:, None] - grid[None, :]
  ddk_gg = k_gg * (1.0 / ell ** 2 - r ** 2 / ell ** 4)  # ∂²k(g, g') / ∂g ∂g'
  mean = y_mean + y_scale * (k_gx @ alpha)
  mean_cov = y_scale ** 2 * (k_gg - k_gx @ solve(k_gx.T))
  slope = y_scale * (dk_gx @ alpha)
  slope_cov = y_scale ** 2 * (ddk_gg - dk_gx @ solve(dk_gx.T))
  return GPFit(np.exp(grid) - 1.0, mean, mean_cov, slope, slope_cov,
               np.sqrt(noise) * y_scale, ell)


def _runs(sign):
  """Maximal runs of equal non-zero sign: [(first index, last index, sign)]."""
  runs = []
  for i, s_i in enumerate(sign):
    if s_i == 0:
      continue
    if runs and runs[-1][2] == s_i and i == runs[-1][1] + 1:
      runs[-1] = (runs[-1][0], i, s_i)
    else:
      runs.append((i, i, int(s_i)))
  return runs


def _locate(mean, cov, index, rng, num_samples: int = 400):
  """Posterior location of the maximum of a GP quantity over grid indices ``index``.

  Draws ``num_samples`` paths of the quantity (posterior ``mean`` [G], ``cov`` [G, G]) on
  ``index`` and takes each path's argmax; returns the median, 16th and 84th percentile index.
  """
  sub = cov[np.ix_(index, index)]
  vals, vecs = np.linalg.eigh(0.5 * (sub + sub.T))
  root = vecs * np.sqrt(np.clip(vals, 0, None))
  paths = mean[index][None, :] + rng.standard_normal((num_samples, len(index))) @ root.T
  where = index[np.argmax(paths, axis=1)]
  low, mid, high = np.percentile(where, [16, 50, 84], method="nearest")
  return int(mid), int(low), int(high)


def _plateaus(fit, lo, hi, sign, z_threshold, dip_ratio, dip_threshold, rng):
  """Rule (b) among grid indices [lo, hi] of one same-sign group: every local minimum of |slope|
  examined, as (grid index, Milestone, accepted)."""
  y = sign * fit.slope[lo:hi + 1]
  std = np.sqrt(np.clip(np.diag(fit.slope_cov), 1e-300, None))
  valleys, _ = signal.find_peaks(-y)
  if not len(valleys):
    return []
  _, left, right = signal.peak_prominences(-y, valleys)
  out = []
  for v, a, b in zip(valleys, left, right):
    i, ia, ib = v + lo, a + lo, b + lo
    peaks = (y[a], y[b])
    z = sign * fit.slope / std
    neighbour_z = (float(sign * np.max(z[ia:i + 1])), float(sign * np.max(z[i:ib + 1])))
    ratio = max(y[v], 0.0) / max(min(peaks), 1e-300)
    dip_z = []
    for j in (ia, ib):
      var = fit.slope_cov[j, j] + fit.slope_cov[i, i] - 2 * fit.slope_cov[i, j]
      dip_z.append(sign * (fit.slope[j] - fit.slope[i]) / np.sqrt(max(var, 1e-300)))
    accepted = (min(peaks) > 0 and min(sign * neighbour_z[0], sign * neighbour_z[1]) >= z_threshold
                and ratio <= dip_ratio and min(dip_z) >= dip_threshold)
    mid, low, high = _locate(-sign * fit.slope, fit.slope_cov, np.arange(ia, ib + 1), rng)
    mid = i if not accepted else mid
    out.append((mid, Milestone(float(fit.grid_steps[mid]), "plateau", float(fit.slope[mid]),
                               float(std[mid]), (float(fit.slope[ia]), float(fit.slope[ib])),
                               neighbour_z, float(ratio), float(min(dip_z)), bool(accepted),
                               float(fit.grid_steps[low]), float(fit.grid_steps[high])),
                bool(accepted)))
  return out


def detect_stages(steps, llc, *, llc_se=None, llc_std=None, num_chains=None,
                  z_threshold: float = 3.0, dip_ratio: float = 2 / 3,
                  dip_threshold: float = 2.0, num_grid: int = 500,
                  random_state: int = 0) -> StageAnalysis:
  """Finds the developmental stages of an LLC curve (module docstring: the rules).

  The thresholds are scale-free (units of posterior std, or ratios), so the same defaults serve
  any LLC scale, any checkpoint spacing and both settings.

  Args:
    steps: checkpoint steps [N] (any spacing, any order).
    llc: LLC estimates [N].
    llc_se: per-checkpoint standard errors [N] (chain std / √chains): the cap of the noise.
    llc_std: alternatively the std over chains [N] (or scalar) together with ``num_chains``.
    num_chains: number of chains behind each estimate ([N] or scalar).
    z_threshold: a slope is significant where |mean| ≥ z_threshold × its posterior std (3: a
      one-sided 0.13% level at each point, strict because every grid point is tested).
    dip_ratio: a dip of |slope| is a plateau when it is at most this fraction of the smaller of
      its two neighbouring maxima (2/3: the LLC changes at least a third more slowly there than
      in the slower of the two stages it separates).
    dip_threshold: and when each neighbouring maximum exceeds the dip by at least this many
      posterior stds of the difference (2: one test per candidate dip, a one-sided 2.3% level).
    num_grid: grid points of the GP posterior (uniform in ln(step + 1)).
    random_state: seed of the GP optimizer restarts and of the location sampling.

  Returns:
    A StageAnalysis (stages, milestones with their evidence, every plateau candidate examined,
    and the GP curves).

  Raises:
    StageInputError: fewer than 4 finite values, or llc_std without num_chains.
  """
  steps = np.asarray(steps, np.float64)
  llc = np.asarray(llc, np.float64)
  se = standard_error(llc_se, llc_std, num_chains)
  keep = np.isfinite(llc) & np.isfinite(steps)
  if se is not None:
    se = np.broadcast_to(se, llc.shape)
    keep &= np.isfinite(se)
    se = se[keep]
  steps, llc = steps[keep], llc[keep]
  if len(steps) < 4:
    raise StageInputError(f"need at least 4 finite LLC values to detect stages, got {len(steps)}")
  order = np.argsort(steps)
  steps, llc = steps[order], llc[order]
  se = None if se is None else se[order]
  fit = fit_gp(steps, llc, se, num_grid=num_grid, random_state=random_state)
  slope_std = np.sqrt(np.clip(np.diag(fit.slope_cov), 1e-300, None))
  z = fit.slope / slope_std
  rng = np.random.default_rng(random_state)
  stretches = _runs(np.where(z >= z_threshold, 1, np.where(z <= -z_threshold, -1, 0)))
  groups = []  # same-sign runs of stretches: [first, last, sign]
  for first, last, sign in stretches:
    if groups and groups[-1][2] == sign:
      groups[-1][1] = last
    else:
      groups.append([first, last, sign])
  milestones, cuts, candidates = [], [], []  # cuts: grid index of each milestone
  for g, (first, last, sign) in enumerate(groups):
    if g:
      prev_first, prev_last, prev_sign = groups[g - 1]
      gap = np.arange(prev_last, first + 1)
      i, low, high = _locate(prev_sign * fit.mean, fit.mean_cov, gap, rng)
      peak_a = prev_first + int(np.argmax(np.abs(fit.slope[prev_first:prev_last + 1])))
      peak_b = first + int(np.argmax(np.abs(fit.slope[first:last + 1])))
      milestones.append(Milestone(float(fit.grid_steps[i]), "sign change", float(fit.slope[i]),
                                  float(slope_std[i]),
                                  (float(fit.slope[peak_a]), float(fit.slope[peak_b])),
                                  (float(z[peak_a]), float(z[peak_b])), None, None, True,
                                  float(fit.grid_steps[low]), float(fit.grid_steps[high])))
      cuts.append(i)
    for i, m, accepted in _plateaus(fit, first, last, sign, z_threshold, dip_ratio, dip_threshold,
                                      rng):
      candidates.append(m)
      if accepted:
        milestones.append(m)
        cuts.append(i)
  order = np.argsort(cuts, kind="stable")
  cuts = [cuts[i] for i in order]
  milestones = [milestones[i] for i in order]
  edges = [0] + cuts + [num_grid - 1]
  x_grid = np.log(fit.grid_steps + 1.0)
  se_at = None if se is None else (lambda i: float(np.interp(x_grid[i], np.log(steps + 1.0), se)))
  stages = []
  for a, b in zip(edges[:-1], edges[1:]):
    change = float(fit.mean[b] - fit.mean[a])
    var = fit.mean_cov[a, a] + fit.mean_cov[b, b] - 2 * fit.mean_cov[a, b]
    inside = [s for s in groups if s[0] <= b and s[1] >= a]
    kind_sign = inside[0][2] if inside else (1 if change >= 0 else -1)
    if len(inside) > 1:  # the group holding most of [a, b]
      kind_sign = max(inside, key=lambda s: min(s[1], b) - max(s[0], a))[2]
    stages.append(Stage(float(fit.grid_steps[a]), float(fit.grid_steps[b]),
                        "A" if kind_sign > 0 else "B", change, float(np.sqrt(max(var, 0.0))),
                        None if se_at is None else float(np.hypot(se_at(a), se_at(b))),
                        bool(inside)))
  return StageAnalysis(stages, [m.step for m in milestones], milestones, candidates,
                       fit.grid_steps,
                       fit.mean, np.sqrt(np.clip(np.diag(fit.mean_cov), 0, None)), fit.slope,
                       slope_std, float(z_threshold), float(dip_ratio), fit.noise_std,
                       fit.length_scale)
