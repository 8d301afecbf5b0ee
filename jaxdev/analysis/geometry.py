"""Plane-curve geometry of PC trajectories: osculating circles, evolutes, vertices, cusps, forms.

Conventions (SPEC §5): for a curve c[t] in the plane, r' = (c[t+1] − c[t−1]) / 2,
r'' = c[t+1] − 2c[t] + c[t−1], signed curvature κ = (x'y'' − y'x'') / |r'|³, and the centre of
the osculating circle is c[t] + N/κ with N the unit tangent turned by +90°. End points have no
central difference and are NaN. The evolute is the path of the centres.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np


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
  dk = np.gradient(kappa)
  out = []
  for t in range(2, len(kappa) - 2):
    if np.isfinite(dk[t - 1]) and np.isfinite(dk[t]) and dk[t - 1] * dk[t] < 0:
      out.append(t if abs(dk[t]) < abs(dk[t - 1]) else t - 1)
  return np.unique(np.asarray(out, int))


def cusps(curve, *, speed_fraction: float = 0.05, min_turn_deg: float = 90.0,
          half_width: int | None = None) -> np.ndarray:
  """Indices where the curve nearly stops (|r'| a local minimum below ``speed_fraction`` of its
  median) and its direction turns by at least ``min_turn_deg`` across the stop, measured by the
  chords to the points ``half_width`` indices before and after (default max(3, T // 50), so a
  cusp rounded by smoothing still counts)."""
  c = np.asarray(curve, np.float64)
  k = max(3, len(c) // 50) if half_width is None else half_width
  osc = osculating_circles(c)
  speed = osc.speed
  threshold = speed_fraction * np.nanmedian(speed)
  out = []
  for t in range(max(2, k), len(c) - max(2, k)):  # full chords only: no end artefacts
    if speed[t] <= speed[t - 1] and speed[t] <= speed[t + 1] and speed[t] < threshold:
      before = c[t] - c[t - k]
      after = c[t + k] - c[t]
      norm = np.linalg.norm(before) * np.linalg.norm(after)
      if norm > 0:
        angle = np.degrees(np.arccos(np.clip(before @ after / norm, -1, 1)))
        if angle >= min_turn_deg:
          out.append(t)
  return np.asarray(out, int)


@dataclasses.dataclass
class Form:
  """A form: at index ``index`` every PC pair has a vertex or cusp whose centres lift to ``centre``.

  Attributes:
    index: trajectory index t*.
    centre: f* in PC space [k].
    spread: largest disagreement between the pairs' estimates of a coordinate, relative to the
      trajectory's scale.
    events: per pair (i, j): (index, "vertex" | "cusp").
  """

  index: int
  centre: np.ndarray
  spread: float
  events: dict

  def to_dict(self, steps=None) -> dict:
    out = {"index": int(self.index), "centre": [float(v) for v in self.centre],
           "spread": float(self.spread),
           "events": {f"{i},{j}": [int(t), kind] for (i, j), (t, kind) in self.events.items()}}
    if steps is not None:
      out["step"] = int(steps[self.index])
    return out


def _events(curve, max_radius: float, still: float, half_width: int):
  """(index, centre [2], kind) of the cusps and of the vertices whose osculating circles are
  small (radius ≤ max_radius) and nearly coincide over ±half_width indices (centres within
  ``still`` and moving less than a quarter of the curve's own arc length): the evolute has a
  cusp there, as opposed to a wiggle whose circle centres just follow the curve."""
  osc = osculating_circles(curve)
  found = []
  for t in vertices(curve):
    lo, hi = t - half_width, t + half_width + 1
    if lo < 1 or hi > len(curve) - 1 or not np.isfinite(osc.radii[t]) or osc.radii[t] > max_radius:
      continue
    drift = np.linalg.norm(osc.centres[lo:hi] - osc.centres[t], axis=1)
    arc = np.sum(np.linalg.norm(np.diff(np.asarray(curve)[lo:hi], axis=0), axis=1))
    if np.all(drift <= min(still, 0.25 * arc)):
      found.append((int(t), osc.centres[t], "vertex"))
  for t in cusps(curve):
    found.append((int(t), np.asarray(curve)[t], "cusp"))
  return found


def find_forms(scores, *, window: int | None = None, tolerance: float = 0.05,
               max_radius: float = 0.1) -> list:
  """Forms of a smoothed PC trajectory [T, k] (k ≥ 2).

  A form is an index t* where every pair (i, j) of PCs has a vertex (with an osculating circle
  of radius ≤ ``max_radius`` × scale) or a cusp within ``window`` indices of t*, and the pairs'
  2-D centres agree on every shared coordinate to within ``tolerance`` × scale; f* takes the
  mean of those estimates. A vertex counts only where successive osculating circles nearly
  coincide (centres within ``tolerance`` × scale over ±window/2 indices: a cusp of the evolute),
  which rejects the wiggles of an unsmoothed or random path. Scale is the largest range of a PC.

  Args:
    scores: smoothed PC scores [T, k].
    window: index tolerance for simultaneity (default max(2, T // 100)).
    tolerance: allowed disagreement of centres, relative to the scale.
    max_radius: largest osculating radius of a vertex that can mark a form, relative to scale.

  Returns:
    Forms sorted by index (events closer than ``window`` merged, the tightest kept).
  """
  scores = np.asarray(scores, np.float64)
  num_steps, k = scores.shape
  window = max(2, num_steps // 100) if window is None else window
  scale = float(np.max(np.ptp(scores, axis=0))) or 1.0
  pairs = list(itertools.combinations(range(k), 2))
  half_width = max(1, window // 2)
  events = {p: _events(scores[:, list(p)], max_radius * scale, tolerance * scale, half_width)
            for p in pairs}
  candidates = []
  for t0, _, _ in events[pairs[0]]:
    choice = {}
    for p in pairs:
      near = [e for e in events[p] if abs(e[0] - t0) <= window]
      if not near:
        break
      choice[p] = near
    if len(choice) < len(pairs):
      continue
    # Choose, per pair, the event whose centre best agrees with the others (greedy over pairs).
    best = None
    for combo in itertools.product(*(choice[p] for p in pairs)):
      estimates = [[] for _ in range(k)]
      for (i, j), (_, centre, _) in zip(pairs, combo):
        estimates[i].append(centre[0])
        estimates[j].append(centre[1])
      spread = max(np.ptp(e) for e in estimates) / scale
      if best is None or spread < best[0]:
        best = (spread, combo, np.array([np.mean(e) for e in estimates]))
      if len(choice[pairs[0]]) * len(pairs) > 64:
        break
    spread, combo, centre = best
    if spread <= tolerance:
      index = int(round(np.mean([e[0] for e in combo])))
      candidates.append(Form(index, centre, spread,
                             {p: (e[0], e[2]) for p, e in zip(pairs, combo)}))
  forms = []
  for form in sorted(candidates, key=lambda f: f.index):
    if forms and form.index - forms[-1].index <= window:
      if form.spread < forms[-1].spread:
        forms[-1] = form
      continue
    forms.append(form)
  return forms


def form_potential(scores, centre) -> np.ndarray:
  """‖f(t) − f*‖² over the trajectory [T, k] for a form centre f* [k]."""
  scores = np.asarray(scores, np.float64)
  return np.sum((scores - np.asarray(centre)[None, :]) ** 2, axis=1)
