"""Stage detection and essential dynamics on curves with known answers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

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
  _check(stages.detect_stages(steps, noisy, llc_std=np.full(len(steps), 1.5)))


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


@pytest.mark.parametrize("seed", range(4))
def test_brownian_motion_has_no_forms(seed):
  rng = np.random.default_rng(seed)
  path = np.cumsum(rng.standard_normal((1000, 400)), axis=0)
  scores = ed.pca(path, 3).scores
  for schedule in (ed.scaled_sigma_schedule(1000), ed.paper_sigma_schedule(1000)):
    assert geometry.find_forms(ed.smooth(scores, schedule)) == []


def _fake_run(root):
  """A run directory with a known LLC curve and an ED trajectory holding one form."""
  run = root / "run"
  (run / "llc" / "default").mkdir(parents=True)
  steps = np.unique(np.round(np.logspace(0, np.log10(5e5), 60)).astype(int))
  llc = _llc_curve(np.log(steps + 1))
  for s, v in zip(steps, llc):
    np.savez(run / "llc" / "default" / f"step_{s:08d}.npz", step=s, llc_mean=v, llc_std=0.5,
             num_failed=0, llc_per_chain=np.full(4, v), loss_trace=np.zeros((4, 3)), init_loss=1.0)
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
  forms = json.load(open(run / "forms.json"))["forms"]
  assert len(forms) == 1 and abs(forms[0]["step"] - 3000) <= 100
  for name in ("llc.png", "llc_slope.png", "ed_pcs.png", "ed_scores.png", "ed_form_potentials.png"):
    assert (run / "figures" / name).stat().st_size > 10_000


def test_analyze_run_without_llc_or_ed(tmp_path):
  (tmp_path / "empty").mkdir()
  summary = analysis_run.analyze_run(str(tmp_path / "empty"))
  assert summary["stages"] == [] and len(summary["notes"]) == 2
