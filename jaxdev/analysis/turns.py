"""Forms as sharp turns of the smoothed PC trajectory, judged against its own noise.

The detector calibrated on null paths (:mod:`jaxdev.analysis.nulls`): in every PC plane, the
turning angle between the chords that reach ±2σ_t on either side of an index, kept where both
chords stand out of the chord noise that the raw scores imply (:func:`chord_noise`); a form is an
index where every plane turns and the planes' turn centres lift to one point. Strength is the
weakest plane's angle, and a form's p-value is the fraction of null paths with a form at least as
strong (:func:`p_value`). Conventions and defaults: ``docs/methods.md``, "Essential dynamics".
The older detector of :func:`jaxdev.analysis.geometry.search_forms` (curvature extrema whose
osculating circles coincide) is kept beside it.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from jaxdev import errors
from jaxdev.analysis import ed
from jaxdev.analysis import geometry

# Defaults of :func:`detect_forms`, chosen on null paths (:mod:`jaxdev.analysis.nulls`): with them
# none of 30 Brownian paths of the paper's length (T = 5,001) and probe width (D = 10,240), and
# none of 30 paths with the seed-0 run's speed profile, showed a form, searching up to step 200k
# (the strongest candidates of the latter: 51° at the run's speed collapse, under MIN_TURN_DEG);
# at most 3 of 60 Brownian and 2 of 40 slowing paths of T = 600 (``tests/test_forms_null.py``).
# Over a whole run the slow late stretch of speed-profile nulls turns more: other windows need
# their own null paths (``docs/methods.md``, "Essential dynamics").
TURN_WINDOW = 2.0  # chords reach ±TURN_WINDOW σ_t indices
MIN_TURN_DEG = 60.0  # the weakest plane must turn by at least this much
MIN_SNR = 2.0  # both chords of a turning plane at least this many noise standard deviations
LIFT_TOLERANCE = 1.0  # planes' centres agree to this fraction of the local extent


def turn_widths(sigma, num_steps: int, window: float = TURN_WINDOW) -> np.ndarray:
  """Chord half-widths [T]: max(1, round(window × σ_t)) indices (σ a scalar or [T])."""
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (num_steps,))
  return np.maximum(1, np.round(window * sigma)).astype(int)


def _chords(curve, widths):
  """(before [T, d], after [T, d], valid [T]): c[t] − c[t − w_t] and c[t + w_t] − c[t]."""
  c = np.asarray(curve, np.float64).reshape(len(curve), -1)
  index = np.arange(len(c))
  valid = (index - widths >= 0) & (index + widths < len(c))
  lo, hi = np.clip(index - widths, 0, len(c) - 1), np.clip(index + widths, 0, len(c) - 1)
  return c - c[lo], c[hi] - c, valid


def turning_angles(curve, widths) -> np.ndarray:
  """Turning angle of a curve [T, d] at each index, in degrees [T].

  The angle between the chords c[t] − c[t − w_t] and c[t + w_t] − c[t] (``widths`` [T]): 0 on a
  straight stretch, 180 where the curve reverses. NaN where a chord leaves the curve or is zero.
  On a curve smoothed with σ_t and w_t = 2σ_t this is the turn that survives the smoothing: a
  corner or a cusp of the raw path shows as a turn of its full angle spread over ±w_t.
  """
  before, after, valid = _chords(curve, np.asarray(widths, int))
  norm = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    cos = np.sum(before * after, axis=1) / norm
  angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
  return np.where(valid & (norm > 0), angle, np.nan)


def _row_medians(values):
  """Median of the finite entries of each row of ``values`` [L, n] (NaN for a row without any)."""
  finite = np.isfinite(values)
  if finite.all():
    return np.median(values, axis=1)
  ordered = np.sort(values, axis=1)  # NaNs last
  count = np.sum(finite, axis=1)
  rows = np.arange(len(values))
  lo, hi = np.maximum((count - 1) // 2, 0), np.maximum(count // 2, 0)
  medians = (ordered[rows, np.minimum(lo, values.shape[1] - 1)]
             + ordered[rows, np.minimum(hi, values.shape[1] - 1)]) / 2
  return np.where(count > 0, medians, np.nan)


def chord_noise(raw, sigma, widths, *, max_lag: int = 16, min_half: int = 25,
                variance_factor=None) -> np.ndarray:
  """Standard deviation [T] of the noise in a chord of the smoothed curve, from the raw points.

  Model: raw points x_t = f(t) + n_t (shapes [T, d]) with f smooth and n the sum of a jitter (an
  AR(1) process: variance s² summed over coordinates, lag-one correlation φ) and a random walk
  (variance q per step). Second differences at lag ℓ, x_{t+ℓ} − 2x_t + x_{t−ℓ}, cancel f up to its
  curvature and have mean square 2s²(3 − 4φ^ℓ + φ^{2ℓ}) + 2qℓ. At points g spaced w_g / 2 apart,
  over g ± h (h = max(2w_g, 4L, ``min_half``)) and at lags ℓ = 1 … L (L = w_g clipped to [4,
  ``max_lag``]), their mean squares are estimated as medians (scaled by d / median(χ²_d), exact
  for Gaussian noise), so that the few second differences that straddle a sharp turn, or a
  stretch of strong curvature at one end of the window, do not count as noise. They give 2q as
  the least-squares slope over ℓ ∈ [L/2, L] (where the jitter term has levelled off; taken as 0
  unless it exceeds twice its standard error, from the spread of the slopes of the window's four
  quarters: a jitter's flat mean squares would otherwise leave a positive slope half of the time,
  and a small diffusion that the lags up to L cannot resolve would swamp the estimate at w ≫ L),
  6s² as the level at L less 2qL, and φ from lag 1. A chord of the curve smoothed with σ_t has
  noise variance

    2 s² v_t (1 + φ)/(1 − φ) + q w_t,

  v_t the smoothing's variance factor (:func:`jaxdev.analysis.ed.smoothing_variance_factor`);
  φ is clipped to [0, 0.95]. Between the points g the standard deviation is interpolated, then
  replaced by its running median over ±w_t / 2. On synthetic noise (``tests/test_forms_null.py``)
  the estimate is within 25% for a jitter and 0.6–1.25 times the truth for a random walk (the
  significance test sometimes misses its slope: conservative for a detector, since the null
  paths, which are random walks, are analysed the same way).

  A jitter is averaged away by the smoothing; a random walk is not (it turns at every scale by
  as much as it moves), which is what the q term carries. Residuals about the smoothed curve cannot
  measure q: they hold only the walk's steps shorter than σ, hence the second differences.
  ``variance_factor`` [T]: v_t if already computed.
  """
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  from scipy import stats  # pylint: disable=import-outside-toplevel
  x = np.asarray(raw, np.float64).reshape(len(raw), -1)
  num_steps, dim = x.shape
  widths = np.asarray(widths, int)
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (num_steps,))
  scale = dim / stats.chi2.median(dim)
  sq = np.full((max_lag, num_steps), np.nan)
  for i, lag in enumerate(range(1, max_lag + 1)):
    if 2 * lag < num_steps:
      sq[i, lag:num_steps - lag] = np.sum((x[2 * lag:] - 2 * x[lag:-lag] + x[:-2 * lag]) ** 2, 1)
  grid = [0]
  while grid[-1] < num_steps - 1:
    grid.append(min(num_steps - 1, grid[-1] + max(1, int(widths[grid[-1]]) // 2)))
  factor = (ed.smoothing_variance_factor(sigma, num_steps) if variance_factor is None
            else np.asarray(variance_factor, np.float64))
  grid = np.asarray(grid)
  tops = np.clip(widths[grid], 4, max_lag)
  halves = np.maximum(np.maximum(2 * widths[grid], 4 * tops), min_half)
  # Row medians of each grid point's window and of its four quarters: [G, 5, L].
  medians = np.empty((len(grid), 5, max_lag))
  inside = (grid - halves >= max_lag) & (grid + halves < num_steps - max_lag)  # no NaN there
  for half in np.unique(halves[inside]):
    at = np.flatnonzero(inside & (halves == half))
    windows = np.lib.stride_tricks.sliding_window_view(sq, 2 * half + 1, axis=1)[:, grid[at] - half]
    parts = [windows] + np.array_split(windows, 4, axis=2)
    medians[at] = np.stack([np.median(part, axis=2) for part in parts]).transpose(2, 0, 1)
  for n in np.flatnonzero(~inside):
    window = sq[:, max(0, grid[n] - halves[n]):grid[n] + halves[n] + 1]
    medians[n] = np.stack([_row_medians(window)]
                          + [_row_medians(q) for q in np.array_split(window, 4, axis=1)])
  medians *= scale
  noise = np.empty(len(grid))
  for n, g in enumerate(grid):
    top = min(int(tops[n]), max(2, int(np.sum(np.isfinite(medians[n, 0])))))
    lags = np.arange((top + 1) // 2, top + 1)
    centred = (lags - lags.mean()) / np.sum((lags - lags.mean()) ** 2)
    slopes = np.nan_to_num(medians[n][:, lags - 1]) @ centred
    slope = slopes[0] if slopes[0] > np.std(slopes[1:], ddof=1) else 0.0  # > 2 standard errors
    level_by_lag = np.nan_to_num(medians[n, 0])
    level = max(level_by_lag[top - 1] - slope * top, 0.0)  # 6 s²
    ratio = np.clip((level_by_lag[0] - slope) / max(level / 3, 1e-300), 0, 3)
    phi = float(np.clip(2.0 - np.sqrt(1.0 + ratio), 0.0, 0.95))
    noise[n] = np.sqrt(2 * level / 6 * factor[g] * (1 + phi) / (1 - phi) + 0.5 * slope * widths[g])
  noise = np.interp(np.arange(num_steps), grid, noise)
  out = noise.copy()
  for width in np.unique(widths):
    at = widths == width
    out[at] = ndimage.median_filter(noise, size=2 * max(1, width // 2) + 1, mode="nearest")[at]
  return out


def _turn_centres(a, b, c):
  """Centres of the turns a → b → c of a plane curve (rows [n, 2] each): the centre of the circle
  through the apex b and the points at the shorter chord's length r from b along both chords (the
  osculating circle of the turn at the chords' scale, unaffected by unequal legs). A reversal
  (both chords along one line, folding back) gets the midpoint of b and b + r (the circle of
  diameter r); a straight run, NaN (the centre is at infinity)."""
  ab, cb = a - b, c - b
  la, lc = np.linalg.norm(ab, axis=1), np.linalg.norm(cb, axis=1)
  r = np.minimum(la, lc)
  with np.errstate(invalid="ignore", divide="ignore"):
    ua, uc = ab / la[:, None], cb / lc[:, None]
  pa, pc = r[:, None] * ua, r[:, None] * uc  # the equal legs, relative to b
  cross = pa[:, 0] * pc[:, 1] - pa[:, 1] * pc[:, 0]
  sq = r ** 2
  with np.errstate(invalid="ignore", divide="ignore"):
    ux = (pc[:, 1] * sq - pa[:, 1] * sq) / (2 * cross)
    uy = (pa[:, 0] * sq - pc[:, 0] * sq) / (2 * cross)
  centre = b + np.stack([ux, uy], 1)
  flat = np.abs(cross) <= 1e-9 * np.maximum(sq, 1e-300)
  folds = np.sum(ua * uc, axis=1) > 0
  fallback = np.where(folds[:, None], b + pa / 2, np.nan)
  return np.where(flat[:, None], fallback, centre)


@dataclasses.dataclass
class TurnForm:
  """A form found as a sharp turn seen in every PC plane (:func:`detect_forms`).

  Attributes:
    index: trajectory index t* (the median of the planes' turning indices).
    interval: (first, last) index of t* ± w_{t*}, the precision of the location.
    strength: the smallest of the planes' turning angles, in degrees.
    centre: f* [k], the mean of the planes' estimates of each coordinate.
    spread: largest disagreement between the planes' estimates of one coordinate, relative to the
      local extent of the trajectory (the largest range of a PC over the interval).
    planes: per plane (i, j): {"index", "turn_deg", "snr"} of its turn.
    accepted: strength ≥ the threshold, spread ≤ the tolerance, inside the analysed window and
      outside excluded neighbourhoods.
    qualified: passes every test but the strength threshold (what null paths are scored on).
    reason: why a candidate was not accepted ("" when accepted).
    p_value: (1 + number of null paths whose strongest form is at least as strong) / (1 + number of
      null paths), when null strengths were given; else None.
  """

  index: int
  interval: tuple
  strength: float
  centre: np.ndarray
  spread: float
  planes: dict
  accepted: bool = True
  qualified: bool = True
  reason: str = ""
  p_value: float | None = None

  def to_dict(self, steps=None) -> dict:
    out = {"index": int(self.index), "interval": [int(v) for v in self.interval],
           "strength_deg": float(self.strength), "centre": [float(v) for v in self.centre],
           "spread": float(self.spread), "accepted": bool(self.accepted),
           "qualified": bool(self.qualified), "reason": self.reason,
           "p_value": None if self.p_value is None else float(self.p_value),
           "planes": {f"{i},{j}": {"index": int(e["index"]), "turn_deg": float(e["turn_deg"]),
                                   "snr": float(e["snr"])} for (i, j), e in self.planes.items()}}
    if steps is not None:
      out["step"] = int(steps[self.index])
      out["step_interval"] = [int(steps[v]) for v in self.interval]
    return out


@dataclasses.dataclass
class TurnSearch:
  """Result of :func:`detect_forms`.

  Attributes:
    forms: accepted forms, by index.
    candidates: every candidate (accepted or not), by index.
    smoothed: the smoothed scores [T, k].
    widths: chord half-widths [T].
    turns, snr: per plane (i, j), the turning angle [T] (degrees) and the signal-to-noise ratio
      of its shorter chord [T].
    max_strength: the strongest candidate that passes every test but the angle threshold (0 if
      none): the statistic whose distribution over null paths calibrates the threshold.
    settings: the detector's settings.
  """

  forms: list
  candidates: list
  smoothed: np.ndarray
  widths: np.ndarray
  turns: dict
  snr: dict
  max_strength: float
  settings: dict

  def to_dict(self, steps=None) -> dict:
    return {"detector": "turns", "settings": dict(self.settings),
            "max_strength_deg": float(self.max_strength),
            "forms": [f.to_dict(steps) for f in self.forms],
            "candidates": [f.to_dict(steps) for f in self.candidates]}


def p_value(strength: float, null_strengths) -> float:
  """(1 + #{null ≥ strength}) / (1 + N) for the strongest-form strengths of N null paths: the
  chance that a null path shows a form at least as strong (family-wise over the whole window,
  since each null contributes its strongest form). In (0, 1], non-increasing in ``strength``."""
  null = np.asarray(null_strengths, np.float64).ravel()
  return float((1 + np.sum(null >= strength)) / (1 + len(null)))


def detect_forms(scores, sigma, *, smoothed=None, construction: str = "all",
                 max_index: int | None = None, window: float = TURN_WINDOW,
                 min_turn_deg: float = MIN_TURN_DEG, min_snr: float = MIN_SNR,
                 lift_tolerance: float = LIFT_TOLERANCE, exclude=(),
                 null_strengths=None) -> TurnSearch:
  """Forms of a PC trajectory as sharp turns seen in every PC plane, judged against its noise.

  The rule. Smooth the raw scores [T, k] with σ_t (``smoothed`` if given). In each plane (i, j)
  of ``geometry.plane_pairs(k, construction)``, the turning angle at t is the angle between the
  chords
  c[t] − c[t − w] and c[t + w] − c[t] of the smoothed plane curve, w = w_t = round(``window`` σ_t)
  (:func:`turning_angles`); a plane turns at t where that angle is a local maximum (over
  ±w_t/2) among the indices whose shorter chord is at least ``min_snr`` standard deviations of
  its noise (:func:`chord_noise`, estimated from the raw scores; a turn of the noise itself fails
  this). A form candidate is an index t* where every plane turns within ±w_{t*}; its strength is
  the smallest of those planes' angles; each plane's centre is the centre of the circle through
  the apex and the points one shorter chord's length along each chord (the osculating circle at
  the chords' scale; the midpoint of a fold for a reversal), and the planes' centres
  must lift to one point f*: each coordinate's estimates agree to ``lift_tolerance`` × the local
  extent (the largest range of a PC over t* ± w). A candidate is a form when its strength is at
  least ``min_turn_deg``, it lifts, t* < ``max_index``, and t* ± w_{t*} holds none of the indices
  in ``exclude`` (e.g. the kinks of a σ schedule, ``ed.PAPER_SIGMA_KINKS``).

  With a null ensemble's strongest-form strengths (``null_strengths``, see
  :func:`jaxdev.analysis.nulls.run_nulls`) each candidate gets a p-value (:func:`p_value`).
  The defaults were chosen so that at most 5% of the null paths of :mod:`jaxdev.analysis.nulls`
  (the paper's T and D, the paper run's speed profile, up to step 200k) show a form; see the
  comment at :data:`MIN_TURN_DEG` and ``docs/methods.md``, "Essential dynamics".

  Args:
    scores: raw (unsmoothed) PC scores [T, k], k ≥ 2.
    sigma: the smoothing σ per index [T] (or a scalar).
    smoothed: the smoothed scores [T, k] if already computed (``ed.smooth(scores, sigma)``).
    construction: "all" PC pairs, or "pc1" (planes (PC1, PCj), the authors').
    max_index: forms only at indices < max_index (the chords may reach past it).
    window: chord half-width in units of σ_t.
    min_turn_deg, min_snr, lift_tolerance: the thresholds above.
    exclude: indices whose ±w neighbourhoods hold no form.
    null_strengths: strongest-form strengths [N] of null paths, for p-values.

  Returns:
    A :class:`TurnSearch`.
  """
  raw = np.asarray(scores, np.float64)
  if raw.ndim != 2 or raw.shape[1] < 2:
    raise errors.ConfigError(f"detect_forms needs scores [T, k] with k >= 2, got {raw.shape}")
  num_steps, k = raw.shape
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (num_steps,))
  smoothed = ed.smooth(raw, sigma) if smoothed is None else np.asarray(smoothed, np.float64)
  widths = turn_widths(sigma, num_steps, window)
  pairs = geometry.plane_pairs(k, construction)
  limit = num_steps if max_index is None else min(int(max_index), num_steps)
  factor = ed.smoothing_variance_factor(sigma, num_steps)
  turns, snr, vertices, centres = {}, {}, {}, {}
  index = np.arange(num_steps)
  for p in pairs:
    curve = smoothed[:, list(p)]
    before, after, _ = _chords(curve, widths)
    turns[p] = turning_angles(curve, widths)
    noise = chord_noise(raw[:, list(p)], sigma, widths, variance_factor=factor)
    shorter = np.minimum(np.linalg.norm(before, axis=1), np.linalg.norm(after, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
      snr[p] = np.where(noise > 0, shorter / noise, np.inf)
    gated = np.where((snr[p] >= min_snr) & np.isfinite(turns[p]), turns[p], -1.0)
    half = np.maximum(1, widths // 2)
    peaks = [t for t in index[gated > 0]
             if gated[t] >= np.max(gated[max(0, t - half[t]):t + half[t] + 1])]
    vertices[p] = np.asarray(peaks, int)
    lo, hi = np.clip(index - widths, 0, num_steps - 1), np.clip(index + widths, 0, num_steps - 1)
    centres[p] = _turn_centres(curve[lo], curve, curve[hi])
  exclude = np.asarray(list(exclude), int)
  candidates = []
  for anchor in sorted(set(int(t) for p in pairs for t in vertices[p])):
    w = int(widths[anchor])
    options = []
    for p in pairs:
      near = vertices[p][np.abs(vertices[p] - anchor) <= w]
      options.append(near[np.argsort(-turns[p][near], kind="stable")[:3]])  # its 3 strongest
    if any(len(o) == 0 for o in options):
      continue
    best = None
    for combo in itertools.product(*options):
      chosen = dict(zip(pairs, (int(t) for t in combo)))
      t_star = int(np.median(combo))
      interval = (max(0, t_star - int(widths[t_star])),
                  min(num_steps - 1, t_star + int(widths[t_star])))
      estimates = [[] for _ in range(k)]
      for (i, j), t in chosen.items():
        estimates[i].append(centres[(i, j)][t, 0])
        estimates[j].append(centres[(i, j)][t, 1])
      extent = float(np.max(np.ptp(smoothed[interval[0]:interval[1] + 1], axis=0))) or 1.0
      with np.errstate(invalid="ignore"):
        spread = max(float(np.ptp(e)) if len(e) > 1 else 0.0 for e in estimates if e) / extent
      spread = spread if np.isfinite(spread) else np.inf
      strength = float(min(turns[p][t] for p, t in chosen.items()))
      key = (spread <= lift_tolerance, strength, -spread)
      if best is None or key > best[0]:
        best = (key, chosen, t_star, interval, estimates, spread, strength)
    _, chosen, t_star, interval, estimates, spread, strength = best
    w = int(widths[t_star])
    centre = np.array([np.mean(e) if e else np.nan for e in estimates])
    planes = {p: {"index": t, "turn_deg": float(turns[p][t]), "snr": float(snr[p][t])}
              for p, t in chosen.items()}
    reasons = []
    if t_star >= limit:
      reasons.append(f"index {t_star} past the analysed window (< {limit})")
    if len(exclude) and np.any(np.abs(exclude - t_star) <= w):
      reasons.append("within ±w of an excluded index")
    if spread > lift_tolerance:
      reasons.append(f"centres do not lift (spread {spread:.2f} > {lift_tolerance})")
    qualified = not reasons
    if strength < min_turn_deg:
      reasons.append(f"turn {strength:.0f}° < {min_turn_deg:.0f}°")
    candidates.append(TurnForm(t_star, interval, strength, centre, spread, planes, not reasons,
                               qualified, "; ".join(reasons)))
  merged = []
  for form in sorted(candidates, key=lambda f: f.index):
    if merged and form.index - merged[-1].index <= widths[form.index]:
      if (form.qualified, form.strength) > (merged[-1].qualified, merged[-1].strength):
        merged[-1] = form
      continue
    merged.append(form)
  max_strength = max([f.strength for f in merged if f.qualified], default=0.0)
  if null_strengths is not None:
    for form in merged:
      form.p_value = p_value(form.strength, null_strengths)
  settings = {"construction": construction, "window": window, "min_turn_deg": min_turn_deg,
              "min_snr": min_snr, "lift_tolerance": lift_tolerance,
              "max_index": None if max_index is None else int(max_index),
              "exclude": [int(v) for v in exclude]}
  return TurnSearch([f for f in merged if f.accepted], merged, smoothed, widths, turns, snr,
                    float(max_strength), settings)
