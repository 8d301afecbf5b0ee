"""Forms against null models: false positives, recall of planted turns, σ kinks, p-values."""

import numpy as np
import pytest
from scipy import stats

from jaxdev.analysis import ed
from jaxdev.analysis import geometry
from jaxdev.analysis import nulls
from jaxdev.analysis import turns

T = 600  # test-sized trajectory; the scaled σ schedule keeps the paper's shape in t / T
SIGMA = ed.smooth_scaled_sigma_schedule(T)


def _bartlett_walk(num_steps, dim, steps, seed):
  """The explicit [T, T] path whose PCA RandomWalkNull.sample(default_rng(seed)) computes."""
  rng = np.random.default_rng(seed)
  a = np.zeros((num_steps, num_steps))
  for i in range(1, num_steps):
    a[:i, i] = rng.standard_normal(i)
  a[np.diag_indices(num_steps)] = np.sqrt(rng.chisquare(dim - np.arange(num_steps)))
  return nulls._walk(a.T, steps)  # pylint: disable=protected-access


@pytest.mark.parametrize("dim", [30, 700])
def test_null_scores_are_the_pca_of_the_walk(dim):
  """Subspace iteration on the triangular factor gives ed.pca's scores of the same path."""
  steps = np.linspace(2.0, 0.1, 300)
  model = nulls.RandomWalkNull(300, dim, steps, num_components=4)
  scores = model.sample(np.random.default_rng(7))
  if dim >= 300:
    path = _bartlett_walk(300, dim, steps, 7)
  else:
    noise = np.random.default_rng(7).standard_normal((300, dim))
    path = nulls._walk(noise, steps)  # pylint: disable=protected-access
  np.testing.assert_allclose(scores, ed.pca(path, 4).scores, atol=1e-6 * np.abs(scores).max())


def test_bartlett_walk_has_the_distribution_of_the_wide_walk():
  """The [T, T] stand-in has the D-wide walk's explained variance (mean over 300 draws)."""
  num_steps, dim, draws = 40, 90, 300
  model = nulls.RandomWalkNull(num_steps, dim, num_components=2)
  short = [model.sample(np.random.default_rng(n)) for n in range(draws)]
  wide = [ed.pca(np.cumsum(np.random.default_rng(10_000 + n).standard_normal((num_steps, dim)),
                           axis=0), 2).scores for n in range(draws)]
  for component in range(2):
    a = np.array([np.sum(s[:, component] ** 2) for s in short])
    b = np.array([np.sum(s[:, component] ** 2) for s in wide])
    assert stats.ttest_ind(a, b).pvalue > 0.001
    assert abs(a.mean() / b.mean() - 1) < 0.05


def test_null_roughness_shrinks_like_one_over_sqrt_dim():
  """The scores' shape converges with D but their roughness (second differences, relative to the
  range) falls like 1/√D: nulls must be drawn at the probe's D, not at a smaller one."""
  def roughness(dim):
    model = nulls.RandomWalkNull(200, dim, num_components=1)
    values = []
    for n in range(40):
      score = model.sample(np.random.default_rng(n))[:, 0]
      values.append(np.std(np.diff(score, 2)) / np.ptp(score))
    return np.mean(values)
  ratio = roughness(20) / roughness(1280)
  assert 6.5 < ratio < 9.5  # √64 = 8


def test_turning_angle_and_chord_noise_of_known_curves():
  corner = np.concatenate([np.stack([np.arange(50.0), np.zeros(50)], 1),
                           np.stack([np.full(50, 49.0), np.arange(1.0, 51.0)], 1)])
  angles = turns.turning_angles(corner, np.full(100, 10))
  assert angles[49] == pytest.approx(90.0, abs=0.5) and np.nanmax(angles[:35]) < 1e-6
  rng = np.random.default_rng(0)
  widths = np.full(4000, 20)
  jitter = np.outer(np.arange(4000.0), [0.3, 0.1]) + 0.5 * rng.standard_normal((4000, 2))
  expected = np.sqrt(2 * (2 * 0.25) * ed.smoothing_variance_factor(10.0, 4000))
  noise = turns.chord_noise(jitter, 10.0, widths)
  assert np.median(noise[100:-100] / expected[100:-100]) == pytest.approx(1.0, abs=0.25)
  walk = np.cumsum(0.5 * rng.standard_normal((4000, 2)), axis=0)
  noise = turns.chord_noise(walk, 10.0, widths)
  assert 0.6 < np.median(noise[100:-100]) / np.sqrt(2 * 0.25 * 20) < 1.25


def test_brownian_nulls_show_no_more_than_five_percent_forms():
  """60 Brownian paths (T = 600, D = 200): at most 3 with a form. If the true rate were 15%, this
  would pass with probability 0.02; the one-sided 95% bound on the rate from 0 of 60 is 4.9%."""
  model = nulls.null_model("brownian", T, 200)
  report = nulls.run_nulls({"turns": nulls.turn_detector(SIGMA)}, model, 60, seed=1,
                           kind="brownian")["turns"]
  assert report.num_paths == 60 and report.num_with_form <= 3
  assert np.all(np.isfinite(report.strengths)) and np.all(report.strengths >= 0)


def test_speed_profile_nulls_show_no_more_than_five_percent_forms():
  """Paths that slow down a hundredfold over the run, like a training run (T = 600, D = 200)."""
  speed = np.exp(-np.arange(T) / 120.0) + 0.01
  model = nulls.null_model("speed", T, 200, speed=speed)
  report = nulls.run_nulls({"turns": nulls.turn_detector(SIGMA)}, model, 40, seed=2,
                           kind="speed")["turns"]
  assert report.num_with_form <= 2


@pytest.mark.parametrize("index", [60, 300])
def test_planted_hairpin_is_found_within_two_sigma(index):
  """A hairpin turning by 120° in every PC plane within ±σ/2, on a Brownian background (a plane's
  chord over ±2σ ≈ 8 noise standard deviations), is found within ±2σ of its index in at least 9
  of 10 trials; no form elsewhere."""
  widths = turns.turn_widths(SIGMA, T)
  chord = widths[index] / np.sqrt(2)  # the shortest plane chord of the hairpin at speed 1
  noise = chord / (8.0 * np.sqrt(2 * widths[index]))  # per-coordinate step of the walk
  detect = nulls.turn_detector(SIGMA)
  report = nulls.planted_recall(detect, T, index, 10, turn_deg=120.0, speed=1.0, noise=noise,
                                sigma=SIGMA, seed=3)
  assert report.found >= 9 and report.elsewhere == 0
  assert np.all(report.strengths[report.strengths > 0] >= turns.MIN_TURN_DEG)
  for n in range(3):
    scores = nulls.planted_hairpin(T, index, turn_deg=120.0, speed=1.0, noise=noise, sigma=SIGMA,
                                   rng=np.random.default_rng([3, index, n]))
    forms = detect(scores).forms
    assert len(forms) == 1 and abs(forms[0].index - index) <= 2 * SIGMA[index] + 1
    assert forms[0].interval[0] <= index <= forms[0].interval[1]


def test_sigma_kinks_make_corners_but_no_form():
  """A smooth path through index 200, where the paper's σ schedule stops growing: the kinked
  schedule puts a corner into the smoothed path there (one index turns many times more than its
  neighbours); the rounded schedule does not; neither makes a form."""
  num_steps, kink = 1500, ed.PAPER_SIGMA_KINKS[1]
  t = np.arange(num_steps, dtype=np.float64)
  angle = np.pi / 2 * t / 100.0  # a quarter turn per 100 indices, through 4 dimensions
  path = np.stack([np.cos(angle), np.sin(angle), 0.3 * np.cos(angle / 3), t / 300.0], 1) * 50
  jitter = 0.05 * np.random.default_rng(0).standard_normal(path.shape)
  for schedule, corner in ((ed.paper_sigma_schedule(num_steps), True),
                           (ed.smooth_paper_sigma_schedule(num_steps), False)):
    step = np.diff(ed.smooth(path, schedule), axis=0)
    cos = np.sum(step[1:] * step[:-1], 1) / (np.linalg.norm(step[1:], axis=1)
                                             * np.linalg.norm(step[:-1], axis=1))
    turn = np.degrees(np.arccos(np.clip(cos, -1, 1)))  # turn of the smoothed path per index
    near, typical = turn[kink - 3:kink + 2].max(), np.median(turn[kink + 150:kink + 400])
    assert (near > 5 * typical) == corner
    assert turns.detect_forms(path + jitter, schedule).forms == []


def test_p_values_are_in_unit_interval_and_monotone():
  null = np.array([0.0, 0.0, 10.0, 35.0, 70.0, 120.0])
  strengths = np.linspace(0, 180, 37)
  p = [turns.p_value(s, null) for s in strengths]
  assert all(0 < v <= 1 for v in p) and np.all(np.diff(p) <= 0)
  assert turns.p_value(180.0, null) == pytest.approx(1 / 7)
  assert turns.p_value(0.0, null) == 1.0
  scores = nulls.planted_hairpin(T, 300, turn_deg=150.0, speed=1.0, noise=0.2, sigma=SIGMA,
                                 rng=np.random.default_rng(0))
  search = turns.detect_forms(scores, SIGMA, null_strengths=null)
  assert search.forms and all(f.p_value == turns.p_value(f.strength, null)
                              for f in search.candidates)
  assert search.forms[0].p_value == pytest.approx(1 / 7 if search.forms[0].strength >= 120
                                                  else 2 / 7)


def test_authors_procedure_finds_a_clear_vertex():
  """The authors' procedure (smallest centre steps every 8 indices, lifted on PC1) finds the
  planted cusp of a clean trajectory."""
  u = np.arcsinh((np.arange(T) - 300) / 20.0)
  curve = (np.outer(u ** 2, [1.0, 0.6, -0.4, 0.2]) + np.outer(u ** 3, [-0.3, 1.0, 0.8, -0.5])
           + np.outer(0.05 * u ** 4, [0.5, -0.2, 1.0, 0.4]))
  search = geometry.search_forms_authors(ed.smooth(curve, SIGMA), sigma=SIGMA)
  assert [abs(f.index - 300) <= 16 for f in search.forms] == [True]
