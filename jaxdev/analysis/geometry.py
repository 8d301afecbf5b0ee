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
