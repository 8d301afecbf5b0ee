"""Null models of essential dynamics: paths with no form, pushed through the same analysis.

A form detector is only as good as its false-positive rate on trajectories that have no form.
Two null models, each a random walk in D dimensions over T indices (the run's T and the ED
probe's D), analysed exactly like a run: PCA (centred over time), the run's smoothing, the
detector:

  "brownian"  independent Gaussian steps of one size. Its PC scores are the Lissajous curves of
              Antognini & Sohl-Dickstein (2018): cosines at large scales, a random walk near
              their stationary points (the start and the end of the run).
  "speed"     the steps of the walk rescaled to the run's own speed profile (the speed of its
              smoothed trajectory, :func:`speed_profile`): fast where the run is fast.

What D does. The PCA of a path X [T, D] depends on X only through its Gram matrix X Xᵀ. For a
random walk X = L diag(s) Z (L the cumulative sum over time, s the step sizes, Z [T, D]
independent standard normals), Z Zᵀ is Wishart(D, I_T), which for D ≥ T has the distribution of
A Aᵀ with A the lower-triangular Bartlett factor (A_ii² ~ χ²(D − i), A_ij ~ N(0, 1) below the
diagonal). So a [T, T] path L diag(s) A has exactly the PC scores' distribution of the D-wide
walk: :meth:`RandomWalkNull.sample` draws T(T + 1)/2 numbers instead of T D, and finds the top
components by subspace iteration on the triangular factor (never forming X Xᵀ), started from the
components of the walk's covariance (the same for every draw). Cost at T = 5,001: about 2–4 s
per path on one CPU core.

D cannot be dropped. It is tempting to think the scores' distribution hardly depends on D once
D is well above the number of components kept; that holds for their shape at large scales (it
converges to the cosines) but not for their roughness around it, which is what a turn detector
sees: a PC score moves by one step's projection per index (≈ 1 in the units of the steps) while
the cosine's amplitude is ≈ √(2 D T) / (π j) for component j. Measured at T = 200, the standard
deviation of PC1's second differences relative to its range is 0.109 / √D from D = 20 to 5,120
(``tests/test_forms_null.py`` checks the factor 8 between D = 20 and 1,280). A null of smaller D
is rougher and turns more, so nulls are drawn at the run's D, never at a smaller one.

Planted forms (:func:`planted_hairpin`) measure recall on the same footing: a hairpin turn (at least
90° in every PC plane) moving at the run's speed, on a Brownian background whose noise, as the
detector measures it (:func:`jaxdev.analysis.turns.chord_noise`), matches the run's.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
from scipy.linalg import blas

from jaxdev import errors
from jaxdev.analysis import ed
from jaxdev.analysis import geometry
from jaxdev.analysis import turns

NULL_KINDS = ("brownian", "speed")


def _walk(x, steps):
  """C L diag(steps) x: the centred (over time) cumulative sum of the rows of x [T, m] scaled by
  ``steps`` [T]."""
  y = np.cumsum(x * steps[:, None], axis=0)
  return y - y.mean(axis=0, keepdims=True)


def _walk_t(x, steps):
  """diag(steps) Lᵀ C x: the transpose of :func:`_walk`."""
  x = x - x.mean(axis=0, keepdims=True)
  return np.cumsum(x[::-1], axis=0)[::-1] * steps[:, None]


def _orth(x):
  return np.linalg.qr(x)[0]


class RandomWalkNull:
  """Random walks with ``num_steps`` indices in ``dim`` dimensions, and their top PC scores.

  Step t of the walk is ``steps[t]`` times a standard normal vector in R^dim (steps None: all 1;
  the first row is the starting point, drawn like a step, which the PCA's centring removes
  anyway). :meth:`sample` returns the scores that ``ed.pca(walk, k)`` would give, in exact
  distribution (see the module docstring), with ``ed.pca``'s sign convention.

  Args:
    num_steps: T.
    dim: D (the ED probe's width for the run's nulls).
    steps: step sizes [T] or None.
    num_components: k, the components kept.
    oversample: extra directions in the subspace iteration.
  """

  def __init__(self, num_steps: int, dim: int, steps=None, *, num_components: int = 4,
               oversample: int = 10):
    if num_steps < 3 or dim < 1 or num_components < 1:
      raise errors.ConfigError(f"a random walk needs num_steps >= 3, dim >= 1 and num_components "
                               f">= 1, got {num_steps}, {dim}, {num_components}")
    self.num_steps, self.dim, self.num_components = int(num_steps), int(dim), int(num_components)
    self.steps = (np.ones(num_steps) if steps is None
                  else np.asarray(steps, np.float64).reshape(num_steps))
    if not np.all(np.isfinite(self.steps)) or np.any(self.steps < 0):
      raise errors.ConfigError("random-walk step sizes must be finite and >= 0")
    self.block = min(num_components + oversample, num_steps - 1, dim)
    self._start = None

  def _covariance_components(self):
    """The top ``block`` eigenvectors of the walk's covariance C L diag(s²) Lᵀ C [T, block]."""
    if self._start is None:
      q = _orth(np.random.default_rng(0).standard_normal((self.num_steps, self.block)))
      for _ in range(60):
        q_new = _orth(_walk(_walk_t(q, self.steps), self.steps))
        done = np.linalg.norm(q_new @ (q_new.T @ q) - q) < 1e-10
        q = q_new
        if done:
          break
      self._start = q
    return self._start

  def sample(self, rng, *, tolerance: float = 1e-9, max_iterations: int = 40) -> np.ndarray:
    """Top-k PC scores [T, k] of one random walk (``rng`` a numpy Generator)."""
    num_steps, dim, k = self.num_steps, self.dim, self.num_components
    if dim < num_steps:  # the walk itself is the cheaper matrix
      path = _walk(rng.standard_normal((num_steps, dim)), self.steps)
      return ed.pca(path, k).scores
    # Bartlett factor A (lower triangular), stored as its transpose a = Aᵀ in Fortran order:
    # column i of a holds row i of A (i standard normals and a χ(D − i) on the diagonal).
    a = np.zeros((num_steps, num_steps), order="F")
    for i in range(1, num_steps):
      a[:i, i] = rng.standard_normal(i)
    a[np.diag_indices(num_steps)] = np.sqrt(rng.chisquare(dim - np.arange(num_steps)))

    def times_at(x):  # Aᵀ x = a x (a upper triangular)
      return blas.dtrmm(1.0, a, np.asfortranarray(x), lower=0, trans_a=0)

    def times_a(x):  # A x = aᵀ x
      return blas.dtrmm(1.0, a, np.asfortranarray(x), lower=0, trans_a=1)

    # Subspace iteration on Y Yᵀ, Y = C L diag(s) A, with Rayleigh–Ritz on Yᵀ q each time.
    q, values = self._covariance_components(), None
    for _ in range(max_iterations):
      z = times_at(_walk_t(q, self.steps))  # Yᵀ q  [T, block]
      u, sing, _ = np.linalg.svd(z.T, full_matrices=False)
      done = values is not None and np.max(np.abs(sing[:k] - values) / sing[:k]) < tolerance
      values = sing[:k]
      if done:
        break
      q = _orth(_walk(times_a(z), self.steps))
    scores = (q @ u[:, :k]) * sing[:k]
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(k)])
    return scores * np.where(signs == 0, 1, signs)


def speed_profile(smoothed) -> np.ndarray:
  """Speed [T] of a smoothed trajectory [T, k]: |c[t+1] − c[t−1]| / 2, the ends copied from
  their neighbours; the step sizes of the "speed" null model."""
  c = np.asarray(smoothed, np.float64).reshape(len(smoothed), -1)
  speed = np.empty(len(c))
  speed[1:-1] = np.linalg.norm(c[2:] - c[:-2], axis=1) / 2.0
  speed[0], speed[-1] = speed[1], speed[-2]
  return speed


def null_model(kind: str, num_steps: int, dim: int, *, speed=None,
               num_components: int = 4) -> RandomWalkNull:
  """The :class:`RandomWalkNull` of a null model: "brownian" (equal steps) or "speed" (steps
  ``speed`` [T], e.g. ``speed_profile`` of the run's smoothed scores)."""
  if kind == "brownian":
    return RandomWalkNull(num_steps, dim, None, num_components=num_components)
  if kind == "speed":
    if speed is None:
      raise errors.ConfigError("the 'speed' null model needs the run's speed profile")
    return RandomWalkNull(num_steps, dim, speed, num_components=num_components)
  raise errors.ConfigError(f"unknown null model {kind!r} (one of {', '.join(NULL_KINDS)})")


@dataclasses.dataclass
class NullReport:
  """What a detector finds on N null paths.

  Attributes:
    kind: the null model.
    num_paths: N.
    num_with_form: paths with at least one accepted form.
    strengths: per path, the strongest candidate that passes every test but the strength
      threshold (``max_strength`` of the detector's result; NaN for detectors without one) [N].
    form_indices: per path, the indices of its accepted forms.
    seconds: wall time.
  """

  kind: str
  num_paths: int
  num_with_form: int
  strengths: np.ndarray
  form_indices: list
  seconds: float

  @property
  def false_positive_rate(self) -> float:
    """Fraction of null paths with at least one form."""
    return self.num_with_form / max(self.num_paths, 1)

  def upper_bound(self, confidence: float = 0.95) -> float:
    """One-sided Clopper–Pearson upper bound on the false-positive rate."""
    from scipy import stats  # pylint: disable=import-outside-toplevel
    if self.num_with_form >= self.num_paths:
      return 1.0
    return float(stats.beta.ppf(confidence, self.num_with_form + 1,
                                self.num_paths - self.num_with_form))

  def to_dict(self) -> dict:
    return {"null": self.kind, "num_paths": self.num_paths, "num_with_form": self.num_with_form,
            "false_positive_rate": self.false_positive_rate,
            "false_positive_rate_upper_95": self.upper_bound(),
            "strengths": [float(s) for s in self.strengths],
            "form_indices": [[int(i) for i in f] for f in self.form_indices],
            "seconds": self.seconds}


def run_nulls(detectors: dict, model: RandomWalkNull, num_paths: int, *, seed: int = 0,
              kind: str = "") -> dict:
  """Runs each of ``detectors`` ({name: PC scores [T, k] → a result with ``forms``, each with an
  ``index``, and optionally ``max_strength``}) on the same ``num_paths`` draws of ``model``.

  Path n uses the random stream ``np.random.default_rng([seed, n])``, so a subset of paths can be
  recomputed alone. Returns {name: :class:`NullReport`}; ``seconds`` is each detector's share of
  the time plus the paths' generation.
  """
  strengths = {name: [] for name in detectors}
  indices = {name: [] for name in detectors}
  seconds = dict.fromkeys(detectors, 0.0)
  for n in range(num_paths):
    start = time.perf_counter()
    scores = model.sample(np.random.default_rng([seed, n]))
    generate = time.perf_counter() - start
    for name, detect in detectors.items():
      start = time.perf_counter()
      result = detect(scores)
      seconds[name] += generate + time.perf_counter() - start
      strengths[name].append(float(getattr(result, "max_strength", np.nan)))
      indices[name].append([int(f.index) for f in result.forms])
  return {name: NullReport(kind, num_paths, sum(1 for i in indices[name] if i),
                           np.asarray(strengths[name]), indices[name], seconds[name])
          for name in detectors}


def turn_detector(sigma, **options) -> Callable:
  """``scores -> turns.detect_forms(scores, sigma, **options)``: the calibrated detector as a
  function of raw scores only (for :func:`run_nulls` and :func:`planted_recall`)."""
  return lambda scores: turns.detect_forms(scores, sigma, **options)


def authors_detector(sigma, **options) -> Callable:
  """``scores -> geometry.search_forms_authors(ed.smooth(scores, sigma), sigma=sigma,
  **options)``: the authors' procedure as a function of raw scores."""
  return lambda scores: geometry.search_forms_authors(ed.smooth(scores, sigma), sigma=sigma,
                                                      **options)


def hairpin_signal(num_steps: int, index: int, *, turn_deg: float, speed, sigma,
                   num_components: int = 4) -> np.ndarray:
  """A noise-free trajectory [T, k] in PC coordinates with one form at ``index``: a turn of at
  least ``turn_deg`` (90 to 180) in every PC plane, and straight legs elsewhere.

  Its velocity is speed[t] u(t), |u| = 1. Before the turn u = a, every coordinate equal except the
  last, which is tan((180° − turn_deg)/2) times the others; after it, u = b, a with all but the
  last coordinate reversed. Planes of two reversed coordinates turn by 180°, planes with the
  last one by exactly ``turn_deg`` (the whole path turns by arccos(a·b)). The swing from a to b
  takes index ± σ_index / 2 (a smooth step, u kept at unit length), well inside the ±2σ a detector
  sees at the default window. ``speed`` [T] or a scalar.
  """
  if not 90.0 <= turn_deg <= 180.0:
    raise errors.ConfigError(f"a hairpin turns by 90 to 180 degrees, got {turn_deg}")
  k = num_components
  speed = np.broadcast_to(np.asarray(speed, np.float64), (num_steps,))
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (num_steps,))
  a = np.ones(k)
  a[-1] = np.tan(np.radians(180.0 - turn_deg) / 2)
  a /= np.linalg.norm(a)
  b = -a
  b[-1] = a[-1]
  t = np.arange(num_steps, dtype=np.float64)
  half = max(0.5, sigma[index] / 2)
  lam = np.clip((t - index + half) / (2 * half), 0.0, 1.0)
  lam = lam * lam * (3 - 2 * lam)  # smooth step from 0 to 1 over index ± σ/2
  u = (1 - lam)[:, None] * a + lam[:, None] * b
  norm = np.linalg.norm(u, axis=1, keepdims=True)
  # At a full reversal u passes through 0 mid-swing: the path stops there (a cusp), as it should.
  u = np.where(norm > 1e-12, u / np.maximum(norm, 1e-12), 0.0)
  return np.cumsum(speed[:, None] * u, axis=0)


def noise_steps(scores, sigma, *, window: float = turns.TURN_WINDOW) -> np.ndarray:
  """Step sizes [T] of a k-dimensional random walk whose chord noise (as
  :func:`jaxdev.analysis.turns.chord_noise` measures it on the full PC space) equals the
  run's: η_t = noise_t / √(w_t), w_t the chord half-width. A walk with steps η (per coordinate)
  has chord noise η √w in each coordinate, so this is the Brownian background "at the run's noise
  level" in each PC direction."""
  scores = np.asarray(scores, np.float64)
  widths = turns.turn_widths(sigma, len(scores), window)
  noise = turns.chord_noise(scores, sigma, widths) / np.sqrt(scores.shape[1])
  return noise / np.sqrt(widths)


def planted_hairpin(num_steps: int, index: int, *, turn_deg: float, speed, noise, sigma, rng,
                    num_components: int = 4) -> np.ndarray:
  """Raw PC scores [T, k] of a planted form: :func:`hairpin_signal` plus a k-dimensional random
  walk with per-coordinate steps ``noise`` [T] (e.g. :func:`noise_steps` of the run).

  Planted in the coordinates the detector sees (the PCs): the PCA of the probe only chooses those
  axes, and a form is by definition a turn seen in every plane of them; a turn planted in a
  random plane of the probe's space would show in some PC planes and not in others, which
  measures the geometry of projections rather than the detector.
  """
  signal = hairpin_signal(num_steps, index, turn_deg=turn_deg, speed=speed, sigma=sigma,
                          num_components=num_components)
  noise = np.broadcast_to(np.asarray(noise, np.float64), (num_steps,))
  walk = np.cumsum(noise[:, None] * rng.standard_normal((num_steps, num_components)), axis=0)
  return signal + walk


@dataclasses.dataclass
class RecallReport:
  """Planted hairpins found at the right place.

  Attributes:
    index: where they were planted; turn_deg: their turn.
    num_trials: trials.
    found: trials with a form within ``within`` indices of ``index``.
    strengths: per trial, the strongest candidate within ``within`` of ``index`` that passes every
      test but the strength threshold (0 if none; NaN for detectors without strengths) [N].
    elsewhere: trials with a form further away.
  """

  index: int
  turn_deg: float
  num_trials: int
  found: int
  strengths: np.ndarray
  elsewhere: int

  @property
  def recall(self) -> float:
    return self.found / max(self.num_trials, 1)

  def to_dict(self) -> dict:
    return {"index": self.index, "turn_deg": self.turn_deg, "num_trials": self.num_trials,
            "found": self.found, "recall": self.recall, "elsewhere": self.elsewhere,
            "strengths": [float(s) for s in self.strengths]}


def _accepted(result, threshold):
  """The forms of a detector's result; with ``threshold``, its candidates that pass every test
  but the strength threshold and reach ``threshold`` instead."""
  if threshold is None:
    return list(result.forms)
  return [f for f in result.candidates if f.qualified and f.strength >= threshold]


def planted_recall(detect: Callable, num_steps: int, index: int, num_trials: int, *,
                   turn_deg: float, speed, noise, sigma, seed: int = 0, num_components: int = 4,
                   within: float | None = None, threshold: float | None = None) -> RecallReport:
  """Runs ``detect`` on ``num_trials`` planted hairpins at ``index`` (:func:`planted_hairpin`;
  trial n uses ``np.random.default_rng([seed, index, n])``). A trial is found when a form lies
  within ``within`` indices of ``index`` (default 2σ_index). With ``threshold``, the forms are
  the candidates that pass every test but the strength threshold and reach ``threshold`` (for a
  detector run with its threshold at 0, to get every candidate's strength)."""
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (num_steps,))
  within = max(1.0, 2.0 * sigma[index]) if within is None else within
  found = elsewhere = 0
  strengths = []
  for n in range(num_trials):
    rng = np.random.default_rng([seed, index, n])
    scores = planted_hairpin(num_steps, index, turn_deg=turn_deg, speed=speed, noise=noise,
                             sigma=sigma, rng=rng, num_components=num_components)
    result = detect(scores)
    forms = _accepted(result, threshold)
    found += any(abs(f.index - index) <= within for f in forms)
    elsewhere += any(abs(f.index - index) > within for f in forms)
    if hasattr(result, "max_strength"):
      near = [f.strength for f in result.candidates
              if abs(f.index - index) <= within and f.qualified]
      strengths.append(max(near, default=0.0))
    else:
      strengths.append(np.nan)
  return RecallReport(int(index), float(turn_deg), num_trials, found, np.asarray(strengths),
                      elsewhere)


def roc(null_strengths, planted_strengths, thresholds) -> list:
  """[{threshold, false_positive_rate, recall}] over strength thresholds: the fraction of null
  paths whose strongest form reaches the threshold, beside the fraction of planted trials whose
  form at the planted index does. Both from strengths computed once with the threshold at 0."""
  null = np.asarray(null_strengths, np.float64)
  planted = np.asarray(planted_strengths, np.float64)
  return [{"threshold": float(th), "false_positive_rate": float(np.mean(null >= th) if th > 0
                                                                 else np.mean(null > 0)),
           "recall": float(np.mean(planted >= th) if th > 0 else np.mean(planted > 0))}
          for th in thresholds]
