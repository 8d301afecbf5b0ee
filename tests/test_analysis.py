"""Stage detection and essential dynamics on curves with known answers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxdev import errors
from jaxdev import rundir
from jaxdev.analysis import ed
from jaxdev.analysis import geometry
from jaxdev.analysis import run as analysis_run
from jaxdev.analysis import stages


def _bump(x, a, b):
  t = np.clip((x - a) / (b - a), 0, 1)
  return np.sin(np.pi * t) ** 2


def _llc_curve(x):
  """LLC as a function of x = ln(step+1): A on [1, 4.5], plateau [4.5, 5.5], A on [5.5, 9.5], B after."""
  grid = np.linspace(0, 14, 4001)
  slope = 20 * _bump(grid, 1, 4.5) + 20 * _bump(grid, 5.5, 9.5) - 15 * _bump(grid, 9.5, 13)
  y = np.concatenate([[0], np.cumsum((slope[1:] + slope[:-1]) / 2 * np.diff(grid))])
  return np.interp(x, grid, y)


PLATEAU = (np.exp(4.5) - 1, np.exp(5.5) - 1)  # steps 89 .. 244: boundary between A1 and A2
PEAK = np.exp(9.5) - 1  # step 13,359: boundary between A2 and B3


def _check(analysis):
  assert [s.kind for s in analysis.stages] == ["A", "A", "B"]
  first, second = np.log(np.asarray(analysis.boundaries) + 1)
  assert 4.5 - 0.3 <= first <= 5.5 + 0.3
  assert abs(second - 9.5) < 0.3  # ≈ 3 log-spaced checkpoints


def test_stages_of_a_clean_piecewise_curve():
  steps = np.unique(np.round(np.logspace(0, np.log10(5e5), 150)).astype(int))
  _check(stages.detect_stages(steps, _llc_curve(np.log(steps + 1))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stages_survive_noise(seed):
  steps = np.unique(np.round(np.logspace(0, np.log10(5e5), 150)).astype(int))
  rng = np.random.default_rng(seed)
  noisy = _llc_curve(np.log(steps + 1)) + rng.normal(0, 1.5, len(steps))
  _check(stages.detect_stages(steps, noisy, llc_se=np.full(len(steps), 1.5)))


def test_stages_with_uneven_checkpoint_spacing():
  from jaxdev.train import checkpoint_steps  # the paper's 190 log + linear steps
  steps = checkpoint_steps(500_000)
  _check(stages.detect_stages(steps, _llc_curve(np.log(steps + 1))))


def test_pca_matches_svd_and_smoothing_keeps_constants():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 300)) @ np.diag(np.linspace(3, 0.1, 300))
  result = ed.pca(x, 3)
  centred = x - x.mean(0)
  u, s, _ = np.linalg.svd(centred, full_matrices=False)
  np.testing.assert_allclose(np.abs(result.scores), np.abs(u[:, :3] * s[:3]), rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(result.explained_variance_ratio, s[:3] ** 2 / np.sum(s ** 2), rtol=1e-8)
  np.testing.assert_allclose(ed.smooth(np.full((40, 2), 3.0), np.linspace(1, 9, 40)), 3.0)
  sigma = ed.paper_sigma_schedule(5001)
  assert sigma[0] == 1 and sigma[40] == 1 and sigma[120] == pytest.approx(30.5) and sigma[4000] == 60


@pytest.mark.parametrize("seed", [0, 1])
def test_smoothing_is_the_gaussian_filter_and_adds_no_vertices(seed):
  from scipy.ndimage import gaussian_filter1d  # pylint: disable=import-outside-toplevel
  walk = np.cumsum(np.random.default_rng(seed).standard_normal((2000, 2)), axis=0)
  smoothed = ed.smooth(walk, 60.0)
  # Away from the ends (where ours renormalises and SciPy reflects) it is SciPy's filter.
  reference = gaussian_filter1d(walk, 60.0, axis=0, truncate=12.0)
  np.testing.assert_allclose(smoothed[700:1300], reference[700:1300], rtol=0, atol=1e-9)
  # A curve smooth on the scale σ has of the order of one curvature extremum per σ indices; a
  # kernel cut at 4σ leaves a jitter that adds a few per σ (61–123 here).
  assert len(geometry.vertices(smoothed)) <= 2000 / 60


def test_osculating_circle_of_a_circle():
  t = np.linspace(0, 2 * np.pi, 200)
  circle = np.stack([2 + 3 * np.cos(t), -1 + 3 * np.sin(t)], 1)
  osc = geometry.osculating_circles(circle)
  np.testing.assert_allclose(osc.radii[1:-1], 3.0, rtol=1e-3)
  np.testing.assert_allclose(osc.centres[1:-1], np.tile([2.0, -1.0], (198, 1)), atol=5e-3)
  assert np.all(osc.curvature[1:-1] > 0)  # counter-clockwise: positive curvature


def test_ellipse_has_vertices_at_its_four_axis_points():
  t = np.linspace(0.3, 0.3 + 2 * np.pi, 801)
  ellipse = np.stack([3 * np.cos(t), np.sin(t)], 1)
  found = t[geometry.vertices(ellipse)]
  np.testing.assert_allclose(found, [np.pi / 2, np.pi, 3 * np.pi / 2, 2 * np.pi], atol=0.01)


def test_cusp_is_found():
  s = np.linspace(-1, 1, 201)
  curve = np.stack([s ** 2, s ** 3], 1) + np.stack([0.3 * s, 0 * s], 1) * 0
  np.testing.assert_array_equal(geometry.cusps(curve), [100])
  smooth_curve = np.stack([s, s ** 2], 1)
  assert len(geometry.cusps(smooth_curve)) == 0


def test_constructed_form_is_found_with_its_step_and_centre():
  t = np.arange(600)
  u = (t - 300) / 100.0
  centre = np.array([2.0, -1.0, 0.5])
  curve = (centre + np.outer(u ** 2, [1.0, 0.6, -0.4]) + np.outer(u ** 3, [-0.3, 1.0, 0.8])
           + np.outer(0.05 * u ** 4, [0.5, -0.2, 1.0]))
  forms = geometry.find_forms(curve)
  assert len(forms) == 1
  assert forms[0].index == 300
  np.testing.assert_allclose(forms[0].centre, centre, atol=1e-3)
  potential = geometry.form_potential(curve, forms[0].centre)
  assert np.argmin(potential) == 300


def test_cusp_threshold_follows_local_speed_not_the_run():
  """The same cusp is found whether the rest of the run is slow or fast (no global median)."""
  s = np.linspace(-1, 1, 201)
  cusp = np.stack([s ** 2, s ** 3], 1)
  for tail_speed in (1e-3, 1e3):
    tail = cusp[-1] + np.outer(np.arange(1, 400), [tail_speed, 0.0])
    np.testing.assert_array_equal(geometry.cusps(np.concatenate([cusp, tail])), [100])


def test_no_form_where_a_path_only_wiggles():
  """A smooth wiggle has vertices in its planes, but they do not lift to one point: no form."""
  t = np.linspace(0, 6 * np.pi, 900)
  curve = np.stack([t, np.sin(t), 0.3 * np.cos(2 * t)], 1)
  result = geometry.search_forms(curve)
  assert result.forms == []
  assert len(result.events[(0, 1)]) >= 5  # its vertices were examined and scored


PAPER_T = 5001  # the paper's ED trajectory: every 100 steps to step 500k


@pytest.fixture(scope="module")
def paper_sigma():
  return ed.paper_sigma_schedule(PAPER_T)


@pytest.mark.parametrize("seed", range(20))
def test_brownian_motion_has_no_forms_at_paper_scale(seed, paper_sigma):
  """PCA of a random walk gives Lissajous curves; they must not give forms (docs/methods.md,
  "Essential dynamics")."""
  path = np.cumsum(np.random.default_rng(seed).standard_normal((PAPER_T, 40)), axis=0)
  smoothed = ed.smooth(ed.pca(path, 4).scores, paper_sigma)
  for construction in ("all", "pc1"):
    assert geometry.find_forms(smoothed, sigma=paper_sigma, construction=construction) == []


def _planted_form(index, num_steps, centre, dim=80):
  """A trajectory with one form at ``index``: a semicubical cusp u² a + u³ b (+ u⁴, u⁵ terms so
  that it spans 4 dimensions) with u = asinh((t − index) / 20), embedded in ``dim`` dimensions."""
  u = np.arcsinh((np.arange(num_steps) - index) / 20.0)
  low = (centre + np.outer(u ** 2, [1.0, 0.6, -0.4, 0.2]) + np.outer(u ** 3, [-0.3, 1.0, 0.8, -0.5])
         + np.outer(0.05 * u ** 4, [0.5, -0.2, 1.0, 0.4])
         + np.outer(0.01 * u ** 5, [0.2, 0.3, -0.1, 1.0]))
  basis = np.linalg.qr(np.random.default_rng(0).normal(size=(dim, 4)))[0]  # (dim, 4) orthonormal
  return low @ basis.T, basis


@pytest.mark.parametrize("construction", ["all", "pc1"])
def test_planted_form_at_index_25_found_with_the_paper_schedule(construction, paper_sigma):
  """The paper's first LR form sits at index 25 (step 2.5k), inside the σ = 1 stretch."""
  centre = np.array([2.0, -1.0, 0.5, 0.3])
  trajectory, basis = _planted_form(25, PAPER_T, centre)
  result = ed.pca(trajectory, 4)
  smoothed = ed.smooth(result.scores, paper_sigma)
  search = geometry.search_forms(smoothed, sigma=paper_sigma, construction=construction)
  assert [f.index for f in search.forms] == [25]
  # f* is the planted point, seen in PC coordinates (PCA centres the trajectory over time).
  mean = trajectory.mean(0)
  expected = np.linalg.lstsq(result.scores, trajectory - mean, rcond=None)[0]  # (4, dim)
  np.testing.assert_allclose(search.forms[0].centre @ expected + mean, centre @ basis.T,
                             atol=1e-3 * np.abs(trajectory).max())


def test_analysis_window_drops_late_forms():
  centre = np.array([2.0, -1.0, 0.5, 0.3])
  trajectory, _ = _planted_form(700, 1000, centre)
  scores = ed.pca(trajectory, 3).scores
  assert [f.index for f in geometry.find_forms(scores)] == [700]
  assert geometry.find_forms(scores, max_index=600) == []


def _fake_run(root):
  """A run directory with a known LLC curve and an ED trajectory holding one form."""
  run = root / "run"
  (run / "llc" / "default").mkdir(parents=True)
  steps = np.unique(np.round(np.logspace(0, np.log10(5e5), 60)).astype(int))
  # Independent noise at the level of the standard error (chain std 0.58 over 4 chains): a
  # noiseless curve is not what a sweep gives.
  llc = _llc_curve(np.log(steps + 1)) + np.random.default_rng(0).normal(0, 0.29, len(steps))
  for s, v in zip(steps, llc):
    np.savez(run / "llc" / "default" / f"step_{s:08d}.npz", step=s, llc_mean=v, llc_std=0.58,
             num_failed=0, llc_per_chain=v + np.array([-0.5, 0.5, -0.5, 0.5]), loss_trace=np.zeros((4, 3)), init_loss=1.0)
  with open(run / "metrics.jsonl", "w") as f:
    for s in steps:
      f.write(json.dumps({"step": int(s), "split": "eval", "loss": float(1 / (1 + s))}) + "\n")
  (run / "ed_outputs").mkdir()
  t = np.arange(600)
  u = (t - 300) / 100.0
  low = np.outer(u ** 2, [1.0, 0.6, -0.4]) + np.outer(u ** 3, [-0.3, 1.0, 0.8]) + np.outer(0.05 * u ** 4, [0.5, -0.2, 1.0])
  basis = np.linalg.qr(np.random.default_rng(0).normal(size=(80, 3)))[0]  # (80, 3) orthonormal
  outputs = (low @ basis.T).reshape(600, 1, 16, 5).astype(np.float32)
  np.save(run / "ed_outputs" / "steps.npy", t * 10)
  np.save(run / "ed_outputs" / "outputs.npy", outputs)
  (run / "ed_outputs" / "progress.json").write_text(json.dumps({"num_written": 600}))
  return run


def test_analyze_run_end_to_end(tmp_path):
  run = _fake_run(tmp_path)
  proc = subprocess.run([sys.executable, "scripts/analyze.py", "--workdir", str(run),
                         "--sigma_schedule", "scaled"], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr
  assert "A1" in proc.stdout and "B3" in proc.stdout
  saved = json.load(open(run / "stages.json"))
  assert [s["kind"] for s in saved["stages"]] == ["A", "A", "B"]
  assert [m["rule"] for m in saved["milestones"]] == ["plateau", "sign change"]
  record = json.load(open(run / "forms.json"))
  forms = record["forms"]
  assert len(forms) == 1 and abs(forms[0]["step"] - 3000) <= 100 and forms[0]["accepted"]
  assert any(c["step"] == forms[0]["step"] for c in record["candidates"])
  assert record["events"]["cusps"] and record["ed_max_step"] is None
  for name in ("llc.png", "llc_slope.png", "ed_pcs.png", "ed_scores.png", "ed_form_potentials.png"):
    assert (run / "figures" / name).stat().st_size > 10_000


def test_what_an_analysis_no_longer_makes_is_not_left_behind(tmp_path):
  run = _fake_run(tmp_path)
  analysis_run.analyze_run(str(run), sigma_schedule="scaled")
  assert (run / "stages.json").exists() and (run / "figures" / "llc_slope.png").exists()
  for path in (run / "llc" / "default").glob("step_*.npz"):  # the sweep redone: every chain failed
    record = dict(np.load(path))
    record.update(num_failed=4, llc_per_chain=np.full(4, np.nan))
    np.savez(path, **record)
  summary = analysis_run.analyze_run(str(run), sigma_schedule="scaled")
  assert summary["stages"] == []
  assert not (run / "stages.json").exists() and not (run / "figures" / "llc_slope.png").exists()
  assert sum("made by an earlier analysis" in n for n in summary["notes"]) == 2
  assert (run / "forms.json").exists() and (run / "figures" / "ed_pcs.png").exists()  # remade


def test_a_probe_progress_record_out_of_range_is_damaged(tmp_path):
  run = _fake_run(tmp_path)
  for written in (-5, 601):
    (run / "ed_outputs" / "progress.json").write_text(json.dumps({"num_written": written}))
    with pytest.raises(errors.RunDirError, match=f"600 rows, {written} written"):
      rundir.RunDir(str(run)).ed_probe()


def test_analyze_run_without_llc_or_ed(tmp_path):
  (tmp_path / "empty").mkdir()
  summary = analysis_run.analyze_run(str(tmp_path / "empty"))
  assert summary["stages"] == [] and len(summary["notes"]) == 2


def test_induction_milestones_from_indicator_curves():
  from jaxdev.analysis import circuits
  from jaxdev.analysis import stages as stages_lib
  steps = np.array([0, 10, 20, 30, 40, 50, 60, 80, 100])
  flat = np.full(9, 0.02)
  summary = {
      "step": steps,
      "previous_token_score_B1H1": np.array([.05, .06, .2, .45, .6, .7, .7, .7, .7]),
      "previous_token_score_B1H2": flat,
      "prefix_matching_score_B2H1": np.array([.01, .01, .02, .05, .08, .25, .5, .6, .6]),
      "prefix_matching_score_B2H2": np.array([.3, .3, .3, .3, .3, .3, .3, .3, .3]),  # never below
      "icl_score": np.array([.1, .1, .1, .1, .08, -.1, -.3, -.3, -.3]),
  }
  stage = lambda start, end: stages_lib.Stage(start=start, end=end, kind="A", llc_change=1.0)
  found = circuits.induction_milestones(summary, [stage(0, 25), stage(25, 55), stage(55, 100)])
  assert [f["name"] for f in found["previous_token"]] == ["previous_token_score_B1H1"]
  prev = found["previous_token"][0]
  assert (prev["start"], prev["end"], prev["steepest"]) == (10, 30, 30)
  assert found["induction_score"] == []  # no such columns in this summary
  (ind,) = found["induction"]
  assert (ind["start"], ind["end"], ind["steepest"]) == (40, 60, 60)
  assert ind["before"] == pytest.approx(0.08) and ind["after"] == pytest.approx(0.6)
  assert found["icl"]["change"] == pytest.approx(-0.38)
  assert found["order"] is True
  assert found["boundaries"] == [{"head": "prefix_matching_score_B2H1", "boundary": 55,
                                  "inside": True}]
  assert "B2H1" in circuits.format_milestones(found)
  # A score that never rises from below `low` to `high` is no formation.
  assert circuits.formation(steps, flat) is None
  assert circuits.formation(steps, np.array([.5, .05, .1, .2, .29, .2, .1, .05, .0])) is None
