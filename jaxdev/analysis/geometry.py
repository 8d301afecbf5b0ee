"""Plane-curve geometry of PC trajectories: osculating circles, evolutes, vertices, cusps, forms.

Conventions (docs/methods.md, "Essential dynamics"): for a curve c[t] in the plane,
r' = (c[t+1] − c[t−1]) / 2,
r'' = c[t+1] − 2c[t] + c[t−1], signed curvature κ = (x'y'' − y'x'') / |r'|³, and the centre of
the osculating circle is c[t] + N/κ with N the unit tangent turned by +90°. End points have no
central difference and are NaN. The evolute is the path of the centres.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np

from jaxdev import errors


@dataclasses.dataclass
class Osculating:
  """Per-point curvature [T], centres [T, 2], radii [T] (NaN at the ends and where r' = 0)."""

  curvature: np.ndarray
  centres: np.ndarray
  radii: np.ndarray
  speed: np.ndarray


def osculating_circles(curve) -> Osculating:
  """Osculating circles of a plane curve [T, 2] by central differences."""
  c = np.asarray(curve, np.float64)
  d1 = np.full_like(c, np.nan)
  d2 = np.full_like(c, np.nan)
  d1[1:-1] = (c[2:] - c[:-2]) / 2.0
  d2[1:-1] = c[2:] - 2.0 * c[1:-1] + c[:-2]
  speed = np.hypot(d1[:, 0], d1[:, 1])
  with np.errstate(divide="ignore", invalid="ignore"):
    kappa = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / speed ** 3
    normal = np.stack([-d1[:, 1], d1[:, 0]], axis=1) / speed[:, None]
    centres = c + normal / kappa[:, None]
    radii = 1.0 / np.abs(kappa)
  return Osculating(kappa, centres, radii, speed)


def vertices(curve) -> np.ndarray:
  """Indices of vertices: local extrema of curvature (κ' = 0), i.e. cusps of the evolute."""
  kappa = osculating_circles(curve).curvature
  if len(kappa) < 5:
    return np.zeros(0, int)
  dk = np.gradient(kappa)
  t = np.arange(2, len(kappa) - 2)
  prev, cur = dk[t - 1], dk[t]
  with np.errstate(invalid="ignore"):
    change = np.isfinite(prev) & np.isfinite(cur) & (prev * cur < 0)
  t = t[change]
  return np.unique(np.where(np.abs(dk[t]) < np.abs(dk[t - 1]), t, t - 1))


def local_windows(num_steps: int, sigma=None) -> np.ndarray:
  """Index half-widths [T] for the local tests: max(2, round(2σ_t)), σ_t the smoothing at t.

  A Gaussian filter of width σ rounds every feature of the curve over about ±2σ indices, so a
  vertex or cusp of the smoothed curve can only be located, and matched across PC planes, to that
  precision. Without ``sigma`` (an unsmoothed curve) the half-width is 2.
  """
  sigma = np.ones(num_steps) if sigma is None else np.broadcast_to(np.asarray(sigma, float),
                                                                    (num_steps,))
  return np.maximum(2, np.round(2.0 * sigma)).astype(int)


def cusps(curve, *, speed_fraction: float = 0.05, min_turn_deg: float = 135.0, sigma=None,
          widths=None, return_scores: bool = False):
  """Indices where a curve [T, d] (a plane curve or the trajectory in PC space) stops and turns.

  At t, with k the local half-width (``widths[t]``, default ``local_windows(T, sigma)``): |r'(t)|
  is a local minimum below ``speed_fraction`` of the largest |r'| within ±2k (a stop relative to
  the curve's own local speed, not to the run's), and the chords to c[t − k] and c[t + k] turn
  by at least ``min_turn_deg`` (135°: nearer a reversal than a right angle; a cusp rounded by
  smoothing still counts). Only t with full chords.

  Returns:
    Indices [n]; with ``return_scores`` also a list of (index, speed ratio, turn in degrees) for
    every local speed minimum examined.
  """
  c = np.asarray(curve, np.float64).reshape(len(curve), -1)
  widths = local_windows(len(c), sigma) if widths is None else np.asarray(widths, int)
  speed = np.full(len(c), np.nan)
  speed[1:-1] = np.linalg.norm(c[2:] - c[:-2], axis=1) / 2.0
  out, scores = [], []
  for t in range(2, len(c) - 2):
    k = int(widths[t])
    if t - k < 0 or t + k >= len(c):
      continue
    if not (speed[t] <= speed[t - 1] and speed[t] <= speed[t + 1]):
      continue
    ratio = speed[t] / max(np.nanmax(speed[max(1, t - 2 * k):t + 2 * k + 1]), 1e-300)
    before, after = c[t] - c[t - k], c[t + k] - c[t]
    norm = np.linalg.norm(before) * np.linalg.norm(after)
    angle = float(np.degrees(np.arccos(np.clip(before @ after / norm, -1, 1)))) if norm > 0 else 0.0
    scores.append((t, float(ratio), angle))
    if ratio < speed_fraction and angle >= min_turn_deg:
      out.append(t)
  out = np.asarray(out, int)
  return (out, scores) if return_scores else out


@dataclasses.dataclass
class Form:
  """A form: at ``index`` every PC plane has a vertex or cusp whose centres lift to ``centre``.

  Attributes:
    index: trajectory index t*.
    centre: f* in PC space [k].
    spread: largest disagreement between the planes' estimates of a coordinate, relative to the
      trajectory's scale (the largest range of a PC).
    events: per plane (i, j): (index, "vertex" | "cusp").
    accepted: whether the spread is within the tolerance (candidates that are not are kept so a
      reader can see the near-misses).
  """

  index: int
  centre: np.ndarray
  spread: float
  events: dict
  accepted: bool = True

  def to_dict(self, steps=None) -> dict:
    out = {"index": int(self.index), "centre": [float(v) for v in self.centre],
           "spread": float(self.spread), "accepted": bool(self.accepted),
           "events": {f"{i},{j}": [int(t), kind] for (i, j), (t, kind) in self.events.items()}}
    if steps is not None:
      out["step"] = int(steps[self.index])
    return out


def _vertex_events(curve, max_radius: float, still: float, widths):
  """Vertex events of one plane curve, and the scores of every candidate vertex.

  A vertex counts where its osculating circle is small (radius ≤ max_radius) and successive
  circles nearly coincide over ±half the local width (centres within ``still`` and moving less
  than a quarter of the curve's own arc length there): the evolute has a cusp, as opposed to a
  wiggle whose circle centres just follow the curve.

  Returns:
    (events [(index, centre [2], kind)], scores [dict]).
  """
  osc = osculating_circles(curve)
  curve = np.asarray(curve)
  found, scores = [], []
  for t in vertices(curve):
    half = max(1, int(widths[t]) // 2)
    lo, hi = t - half, t + half + 1
    if lo < 1 or hi > len(curve) - 1 or not np.isfinite(osc.radii[t]):
      continue
    drift = float(np.max(np.linalg.norm(osc.centres[lo:hi] - osc.centres[t], axis=1)))
    arc = float(np.sum(np.linalg.norm(np.diff(curve[lo:hi], axis=0), axis=1)))
    ok = bool(osc.radii[t] <= max_radius and drift <= min(still, 0.25 * arc))
    scores.append({"index": int(t), "kind": "vertex", "radius": float(osc.radii[t]),
                   "centre_drift": drift, "arc": arc, "accepted": ok})
    if ok:
      found.append((int(t), osc.centres[t], "vertex"))
  return found, scores


def plane_pairs(num_components: int, construction: str = "all") -> list:
  """PC planes that a form must hold in: "all" pairs (i < j), or "pc1": (PC1, PCj), the authors'."""
  if construction == "all":
    return list(itertools.combinations(range(num_components), 2))
  if construction == "pc1":
    return [(0, j) for j in range(1, num_components)]
  raise ValueError(f"unknown form construction {construction!r} (all, pc1)")


@dataclasses.dataclass
class FormSearch:
  """Result of ``search_forms``: accepted forms, all candidates, and the scores of every
  candidate vertex (per plane, keyed (i, j)) and cusp (key "cusps")."""

  forms: list
  candidates: list
  events: dict

  def to_dict(self, steps=None) -> dict:
    def with_step(d):
      if steps is not None:
        d = dict(d, step=int(steps[d["index"]]))
      return d
    return {"forms": [f.to_dict(steps) for f in self.forms],
            "candidates": [f.to_dict(steps) for f in self.candidates],
            "events": {(key if isinstance(key, str) else f"{key[0]},{key[1]}"):
                       [with_step(e) for e in ev] for key, ev in self.events.items()}}


def search_forms(scores, *, sigma=None, construction: str = "all", max_index: int | None = None,
                 tolerance: float = 0.05, max_radius: float = 0.1, speed_fraction: float = 0.05,
                 min_turn_deg: float = 135.0) -> FormSearch:
  """Forms of a smoothed PC trajectory [T, k] (k ≥ 2), with every candidate and its scores.

  A form is an index t* where every plane (``plane_pairs(k, construction)``) has a vertex (its
  osculating circle of radius ≤ ``max_radius`` × scale, successive circles coinciding) or a cusp
  (``cusps``) within the local window of t* (``local_windows``: ±2σ_t indices, σ_t the smoothing
  at t), and the planes' 2-D centres agree on every shared coordinate to within ``tolerance`` ×
  scale; f* takes the mean of those estimates. Scale is the largest range of a PC over the
  analysed indices. Nothing depends on T: windows follow the local smoothing, the cusp speed
  test the local speed.

  Args:
    scores: smoothed PC scores [T, k].
    sigma: smoothing σ per index [T] (or scalar) used to make ``scores``; None for unsmoothed.
    construction: "all" PC pairs, or "pc1" (the authors': planes (PC1, PCj)).
    max_index: analyse only indices < max_index (the authors stopped at step 200k).
    tolerance: allowed disagreement of centres (and drift of a vertex's circles), relative to
      the scale.
    max_radius: largest osculating radius of a vertex that can mark a form, relative to scale.
    speed_fraction, min_turn_deg: the cusp tests (``cusps``).

  Returns:
    A FormSearch; forms sorted by index (candidates closer than a window merged, the tightest
    kept).
  """
  scores = np.asarray(scores, np.float64)
  if sigma is not None:
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(scores),))[:max_index]
  scores = scores[:max_index]
  num_steps, k = scores.shape
  widths = local_windows(num_steps, sigma)
  scale = float(np.max(np.ptp(scores, axis=0))) or 1.0
  pairs = plane_pairs(k, construction)
  # A cusp is a stop and reversal of the trajectory itself, so it is found in PC space and holds
  # in every plane at the same index (centre: the point itself); vertices are per plane.
  cusp_index, cusp_scores = cusps(scores, speed_fraction=speed_fraction,
                                  min_turn_deg=min_turn_deg, widths=widths, return_scores=True)
  events, event_scores = {}, {}
  for p in pairs:
    events[p], event_scores[p] = _vertex_events(scores[:, list(p)], max_radius * scale,
                                                tolerance * scale, widths)
    events[p] += [(int(t), scores[t, list(p)], "cusp") for t in cusp_index]
  accepted = set(int(t) for t in cusp_index)
  event_scores["cusps"] = [{"index": int(t), "kind": "cusp", "speed_ratio": ratio,
                            "turn_deg": angle, "accepted": t in accepted}
                           for t, ratio, angle in cusp_scores]
  candidates = []
  for t0, _, _ in events[pairs[0]]:
    window = int(widths[t0])
    choice = {}
    for p in pairs:
      near = [e for e in events[p] if abs(e[0] - t0) <= window]
      if not near:
        break
      choice[p] = near
    if len(choice) < len(pairs):
      continue
    best = None
    for n, combo in enumerate(itertools.product(*(choice[p] for p in pairs))):
      estimates = [[] for _ in range(k)]
      for (i, j), (_, centre, _) in zip(pairs, combo):
        estimates[i].append(centre[0])
        estimates[j].append(centre[1])
      spread = max(np.ptp(e) for e in estimates if e) / scale
      if best is None or spread < best[0]:
        best = (spread, combo, np.array([np.mean(e) if e else np.nan for e in estimates]))
      if n >= 256:
        break
    spread, combo, centre = best
    index = int(round(np.mean([e[0] for e in combo])))
    candidates.append(Form(index, centre, float(spread),
                           {p: (e[0], e[2]) for p, e in zip(pairs, combo)},
                           bool(spread <= tolerance)))
  merged = []
  for form in sorted(candidates, key=lambda f: f.index):
    if merged and form.index - merged[-1].index <= widths[form.index]:
      if (form.accepted, -form.spread) > (merged[-1].accepted, -merged[-1].spread):
        merged[-1] = form
      continue
    merged.append(form)
  return FormSearch([f for f in merged if f.accepted], merged, event_scores)


def find_forms(scores, **kwargs) -> list:
  """The accepted forms of ``search_forms`` (same arguments)."""
  return search_forms(scores, **kwargs).forms


def form_potential(scores, centre) -> np.ndarray:
  """‖f(t) − f*‖² over the trajectory [T, k] for a form centre f* [k]."""
  scores = np.asarray(scores, np.float64)
  return np.sum((scores - np.asarray(centre)[None, :]) ** 2, axis=1)


# Forms as sharp turns judged against the curve's own noise (the calibrated detector).
#
# Defaults of :func:`detect_forms`, chosen on null paths (:mod:`jaxdev.analysis.nulls`): with them
# at most 5% of Brownian paths of the paper's length and probe width, and of paths with the paper
# run's own speed profile, show any form (``docs/methods.md``, "Essential dynamics").
TURN_WINDOW = 2.0  # chords reach ±TURN_WINDOW σ_t indices
MIN_TURN_DEG = 60.0  # the weakest plane must turn by at least this much
MIN_SNR = 3.0  # both chords of a turning plane at least this many noise standard deviations
LIFT_TOLERANCE = 0.5  # planes' centres agree to this fraction of the local extent


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


def chord_noise(raw, sigma, widths, *, max_lag: int = 16, min_half: int = 25) -> np.ndarray:
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
  quarters: a jitter's flat mean squares would otherwise leave a positive slope half of the time),
  6s² as the level at L less 2qL, and φ from lag 1. A chord of the curve smoothed with σ_t has
  noise variance

    2 s² v_t (1 + φ)/(1 − φ) + q w_t,

  v_t the smoothing's variance factor (:func:`jaxdev.analysis.ed.smoothing_variance_factor`);
  φ is clipped to [0, 0.95]. Between the points g the standard deviation is interpolated, then
  replaced by its running median over ±w_t / 2.

  A jitter is averaged away by the smoothing; a random walk is not (it turns at every scale by
  as much as it moves), which is what the q term carries. Residuals about the smoothed curve cannot
  measure q: they hold only the walk's steps shorter than σ, hence the second differences.
  """
  from jaxdev.analysis import ed  # pylint: disable=import-outside-toplevel
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
  factor = ed.smoothing_variance_factor(sigma, num_steps)
  noise = []
  for g in grid:
    top = int(np.clip(widths[g], 4, max_lag))
    half = max(2 * int(widths[g]), 4 * top, min_half)
    window = sq[:, max(0, g - half):g + half + 1]
    quarters = np.array_split(window, 4, axis=1)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)  # lags with no pair in a short run
      level_by_lag = scale * np.nanmedian(window, axis=1)
      by_quarter = [scale * np.nanmedian(part, axis=1) for part in quarters]
    top = min(top, max(2, int(np.sum(np.isfinite(level_by_lag)))))
    lags = np.arange((top + 1) // 2, top + 1)
    design = np.stack([np.ones(len(lags)), lags], 1)
    slope = np.linalg.lstsq(design, np.nan_to_num(level_by_lag[lags - 1]), rcond=None)[0][1]
    per_quarter = [np.linalg.lstsq(design, np.nan_to_num(q[lags - 1]), rcond=None)[0][1]
                   for q in by_quarter]
    slope = slope if slope > 2 * np.std(per_quarter, ddof=1) / 2 else 0.0
    level = max(float(np.nan_to_num(level_by_lag[top - 1])) - slope * top, 0.0)  # 6 s²
    ratio = np.clip((np.nan_to_num(level_by_lag[0]) - slope) / max(level / 3, 1e-300), 0, 3)
    phi = float(np.clip(2.0 - np.sqrt(1.0 + ratio), 0.0, 0.95))
    noise.append(np.sqrt(2 * level / 6 * factor[g] * (1 + phi) / (1 - phi)
                         + 0.5 * slope * widths[g]))
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
  of ``plane_pairs(k, construction)``, the turning angle at t is the angle between the chords
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
  The defaults hold the false-positive rate at or below 5% on the null models of
  :mod:`jaxdev.analysis.nulls` (``docs/methods.md``, "Essential dynamics").

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
  from jaxdev.analysis import ed  # pylint: disable=import-outside-toplevel
  raw = np.asarray(scores, np.float64)
  if raw.ndim != 2 or raw.shape[1] < 2:
    raise errors.ConfigError(f"detect_forms needs scores [T, k] with k >= 2, got {raw.shape}")
  num_steps, k = raw.shape
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (num_steps,))
  smoothed = ed.smooth(raw, sigma) if smoothed is None else np.asarray(smoothed, np.float64)
  widths = turn_widths(sigma, num_steps, window)
  pairs = plane_pairs(k, construction)
  limit = num_steps if max_index is None else min(int(max_index), num_steps)
  turns, snr, vertices, centres = {}, {}, {}, {}
  index = np.arange(num_steps)
  for p in pairs:
    curve = smoothed[:, list(p)]
    before, after, _ = _chords(curve, widths)
    turns[p] = turning_angles(curve, widths)
    noise = chord_noise(raw[:, list(p)], sigma, widths)
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


def search_forms_authors(smoothed, *, sigma=None, max_index: int | None = None, every: int = 8,
                         num_vertices: int = 5, tolerance: float = 0.05,
                         construction: str = "pc1") -> FormSearch:
  """The authors' procedure, automated: evolute cusps as the smallest centre steps, lifted on PC1.

  In each plane (``plane_pairs(k, construction)``; the authors used (PC1, PCj)) of the smoothed
  trajectory [T, k], the osculating circles at indices 1, 1 + ``every``, 1 + 2 ``every``, … below
  ``max_index`` (the authors: every 8 indices, up to step 200k) are compared with the previous one
  in that list; the ``num_vertices`` with the smallest |Δcentre| are the plane's candidate vertices
  (the authors marked these and chose forms among them by inspection). A form is a candidate of
  the first plane with a candidate of every other plane within ±max(``every``, w) indices (w the
  local window, :func:`local_windows`), whose centres agree on every shared coordinate to
  ``tolerance`` × scale (the largest range of a PC over the analysed indices; with (PC1, PCj) the
  shared coordinate is PC1). Nothing compares a candidate with what the noise of the curve or a
  null path would give: its false-positive rate is measured in :mod:`jaxdev.analysis.nulls`.

  Returns:
    A :class:`FormSearch` (events: per plane, the candidates with their |Δcentre| and radius).
  """
  scores = np.asarray(smoothed, np.float64)
  num_steps, k = scores.shape
  limit = num_steps if max_index is None else min(int(max_index), num_steps)
  windows = np.maximum(local_windows(num_steps, sigma), every)
  analysed = scores[:limit]
  scale = float(np.max(np.ptp(analysed, axis=0))) or 1.0
  pairs = plane_pairs(k, construction)
  grid = np.arange(1, min(limit, num_steps - 1), every)
  events, event_scores = {}, {}
  for p in pairs:
    osc = osculating_circles(scores[:, list(p)])
    centres = osc.centres[grid]
    step = np.full(len(grid), np.inf)
    step[1:] = np.linalg.norm(centres[1:] - centres[:-1], axis=1)
    step = np.where(np.isfinite(step), step, np.inf)
    best = np.argsort(step, kind="stable")[:num_vertices]
    events[p] = [(int(grid[i]), centres[i]) for i in best if np.isfinite(step[i])]
    event_scores[p] = [{"index": int(grid[i]), "kind": "vertex", "centre_step": float(step[i]),
                        "radius": float(osc.radii[grid[i]]), "accepted": True} for i in best
                       if np.isfinite(step[i])]
  candidates = []
  for t0, c0 in events[pairs[0]]:
    w = int(windows[t0])
    choice = [[e for e in events[p] if abs(e[0] - t0) <= w] for p in pairs]
    if any(not c for c in choice):
      continue
    best = None
    for combo in itertools.islice(itertools.product(*choice), 256):
      estimates = [[] for _ in range(k)]
      for (i, j), (_, centre) in zip(pairs, combo):
        estimates[i].append(centre[0])
        estimates[j].append(centre[1])
      spread = max(np.ptp(e) for e in estimates if e) / scale
      if best is None or spread < best[0]:
        best = (spread, combo, np.array([np.mean(e) if e else np.nan for e in estimates]))
    spread, combo, centre = best
    index = int(round(np.mean([e[0] for e in combo])))
    candidates.append(Form(index, centre, float(spread),
                           {p: (e[0], "vertex") for p, e in zip(pairs, combo)},
                           bool(spread <= tolerance)))
  merged = []
  for form in sorted(candidates, key=lambda f: f.index):
    if merged and form.index - merged[-1].index <= windows[form.index]:
      if (form.accepted, -form.spread) > (merged[-1].accepted, -merged[-1].spread):
        merged[-1] = form
      continue
    merged.append(form)
  return FormSearch([f for f in merged if f.accepted], merged, event_scores)
