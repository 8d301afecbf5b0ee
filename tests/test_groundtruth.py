"""Deep linear networks: Aoyagi's exact learning coefficient, the setting, and λ̂ against it."""

import json
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdev import errors
from jaxdev import sgld
from jaxdev.groundtruth import dln
from jaxdev.groundtruth import ladder
from jaxdev.groundtruth import procedure
from jaxdev.sgld import diagnostics


# ----------------------------------------------------------------------------- the exact value


def reduced_rank_regression(m, h, n, r):
  """Aoyagi and Watanabe (2005): λ and multiplicity of x ↦ BAx with A [h, m], B [n, h] at a
  true map of rank r (M = input m, H = hidden h, N = output n), written case by case."""
  if n + r <= m + h and m + r <= n + h and h + r <= m + n:
    value = Fraction(2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2, 8)
    return (value + Fraction(1, 8), 2) if (m + h + n + r) % 2 else (value, 1)
  if m + h < n + r:
    return Fraction(h * m - h * r + n * r, 2), 1
  if n + h < m + r:
    return Fraction(h * n - h * r + m * r, 2), 1
  return Fraction(m * n, 2), 1  # m + n < h + r


def test_two_layers_equal_reduced_rank_regression_everywhere():
  """Every width triple in 1..8 and every rank 0..min: 1,808 cases, exactly."""
  count = 0
  for m in range(1, 9):
    for h in range(1, 9):
      for n in range(1, 9):
        for r in range(min(m, h, n) + 1):
          exact = dln.learning_coefficient((m, h, n), r)
          assert (exact.value, exact.multiplicity) == reduced_rank_regression(m, h, n, r), (
              m, h, n, r)
          count += 1
  assert count == 1808


def test_the_published_example():
  assert dln.learning_coefficient((5, 3, 5), 0) == (Fraction(13, 2), 2, (1, 0, 2))


# Hand-worked cases with three or more layers and r > 0. M_j = H_j − r; Σ is the shortest prefix
# (of at least two) of the indices sorted by M_j with max_Σ M < min_Σᶜ M, Σ_Σ M ≥ ℓ·max_Σ M and
# Σ_Σ M < ℓ·min_Σᶜ M, ℓ = |Σ| − 1; M̄ = Σ_Σ M, M = ⌈M̄/ℓ⌉, a = M̄ − (M − 1)ℓ, and
# λ = (−r² + r(H_0 + H_L))/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4·(M̄/ℓ)² + ½ Σ_{i<j∈Σ} M_i M_j,
# multiplicity a(ℓ − a) + 1.
HAND_WORKED = [
    # (6, 4, 2, 5, 7), r = 2: M = (4, 2, 0, 3, 5); sorted 0 (j=2), 2 (j=1), 3, 4, 5. Two: sum 2
    # ≥ 1·2, 2 < 3 and 2 < 1·3, so Σ = {2, 1}, ℓ = 1, M̄ = 2, a = 1. λ = (−4 + 2·13)/2 + 0 − 0
    # + ½·0·2 = 11 = r(H_0 + H_L − r)/2, half the dimension of the rank-2 7×6 matrices: one
    # layer as narrow as the rank is the whole story. m = 1.
    ((6, 4, 2, 5, 7), 2, Fraction(11), 1, (2, 1)),
    # (3, 4, 9, 9), r = 1: M = (2, 3, 8, 8). Two: sum 5 ≥ 3, 3 < 8, 5 < 8: Σ = {0, 1}, ℓ = 1,
    # M̄ = 5, a = 1. λ = (−1 + 12)/2 + ½·2·3 = 11/2 + 3 = 17/2, m = 1.
    ((3, 4, 9, 9), 1, Fraction(17, 2), 1, (0, 1)),
    # (2, 5, 5, 3), r = 1: M = (1, 4, 4, 2); sorted 1 (j=0), 2 (j=3), 4, 4. Two: sum 3 ≥ 2,
    # 2 < 4, 3 < 4: Σ = {0, 3} (input and output), ℓ = 1. λ = (−1 + 5)/2 + ½·1·2 = 3, m = 1.
    ((2, 5, 5, 3), 1, Fraction(3), 1, (0, 3)),
    # (3, 7, 3, 8, 4), r = 1: M = (2, 6, 2, 7, 3); sorted 2 (j=0), 2 (j=2), 3 (j=4), 6, 7. Two:
    # 4 < 1·3 fails. Three: sum 7 ≥ 2·3, 3 < 6, 7 < 2·6: Σ = {0, 2, 4}, ℓ = 2, M̄ = 7, M = 4,
    # a = 7 − 3·2 = 1; Σ_{i<j} M_i M_j = 4 + 6 + 6 = 16. λ = (−1 + 7)/2 + 1/8 − ½·49/4 + 8
    # = 3 + 1/8 − 49/8 + 8 = 5, m = 1·1 + 1 = 2.
    ((3, 7, 3, 8, 4), 1, Fraction(5), 2, (0, 2, 4)),
    # (5, 6, 7, 12, 6), r = 2: M = (3, 4, 5, 10, 4); sorted 3 (j=0), 4 (j=1), 4 (j=4), 5 (j=2),
    # 10. Two: 4 < 4 fails. Three: 11 < 2·5 fails. Four: sum 16 ≥ 3·5, 5 < 10, 16 < 30:
    # Σ = {0, 1, 4, 2}, ℓ = 3, M̄ = 16, M = 6, a = 16 − 15 = 1; Σ_{i<j} M_i M_j =
    # (16² − (9 + 16 + 16 + 25))/2 = 95. λ = (−4 + 22)/2 + 2/12 − (6/4)(16/3)² + 95/2
    # = 9 + 1/6 − 256/6 + 285/6 = 14, m = 1·2 + 1 = 3.
    ((5, 6, 7, 12, 6), 2, Fraction(14), 3, (0, 1, 4, 2)),
    # (4, 4, 4, 4), r = 1: M = (3, 3, 3, 3): every layer, ℓ = 3 (no complement; 12 ≥ 3·3),
    # M̄ = 12, M = 4, a = 3. λ = (−1 + 8)/2 + 0 − (6/4)·16 + ½·6·9 = 7/2 − 24 + 27 = 13/2, m = 1.
    ((4, 4, 4, 4), 1, Fraction(13, 2), 1, (0, 1, 2, 3)),
    # (4, 4, 4, 4), r = 4 (full rank): M = 0, Σ = every layer, ℓ = 3, M̄ = 0, M = 0, a = 3.
    # λ = (−16 + 32)/2 = 8 = 16/2, the regular 4×4 map; m = 1.
    ((4, 4, 4, 4), 4, Fraction(8), 1, (0, 1, 2, 3)),
]


@pytest.mark.parametrize("widths,rank,value,multiplicity,sigma", HAND_WORKED)
def test_hand_worked_cases(widths, rank, value, multiplicity, sigma):
  assert dln.learning_coefficient(widths, rank) == (value, multiplicity, sigma)
  assert dln.bottleneck(widths, rank) == sigma


def test_properties_over_many_networks():
  """On every network of 3 or 4 layers with widths in 1..5 and every rank: λ is the same for the
  reversed network (the transpose), at most d/2, at least the rank-r manifold's r(H_0 + H_L − r)/2
  (the map itself has to be learned), and exactly that when a layer is as narrow as r; one layer
  gives H_0·H_1/2 at any rank."""
  rng = np.random.default_rng(0)
  for _ in range(400):
    widths = tuple(int(h) for h in rng.integers(1, 6, size=rng.integers(4, 6)))
    for r in range(min(widths) + 1):
      value = dln.learning_coefficient(widths, r).value
      assert value == dln.learning_coefficient(widths[::-1], r).value
      assert value <= Fraction(dln.num_params(widths), 2)
      manifold = Fraction(r * (widths[0] + widths[-1] - r), 2)
      assert value >= manifold
      if r == min(widths):
        assert value == manifold
  for h0 in range(1, 6):
    for h1 in range(1, 6):
      for r in range(min(h0, h1) + 1):
        exact = dln.learning_coefficient((h0, h1), r)
        assert exact[:2] == (Fraction(h0 * h1, 2), 1) and set(exact.bottleneck) == {0, 1}


@pytest.mark.parametrize("widths,rank,match", [
    ((3,), 0, "two or more"), ((3, 0, 2), 0, "two or more"), ((3, 2), 3, "rank"),
    ((3, 2), -1, "rank"), ((3, 2), 1.5, "rank"), ("ab", 0, "integers"),
])
def test_bad_widths_or_rank_raise_config_error(widths, rank, match):
  with pytest.raises(errors.ConfigError, match=match):
    dln.learning_coefficient(widths, rank)


# ----------------------------------------------------------------------------- the setting


def test_setting_is_lau_et_al_s():
  setting = dln.make((4, 6, 5, 3), seed=3, num_examples=2_000)
  x, y = np.asarray(setting.data["x"]), np.asarray(setting.data["y"])
  assert x.shape == (2_000, 4) and y.shape == (2_000, 3) and x.dtype == np.float32
  assert -10.0 <= x.min() < -9.9 and 9.9 < x.max() <= 10.0  # U(−10, 10)
  assert abs(x.mean()) < 0.3 and x.var() == pytest.approx(100.0 / 3.0, rel=0.05)
  assert setting.nbeta == pytest.approx(2_000 / math.log(2_000))
  assert [k.shape for k in setting.params] == [(4, 6), (6, 5), (5, 3)]
  assert setting.num_params == 24 + 30 + 15 == dln.num_params(setting.widths)
  product = np.linalg.multi_dot([np.asarray(k, np.float64) for k in setting.params])
  np.testing.assert_allclose(y, x.astype(np.float64) @ product, rtol=1e-4, atol=1e-4)
  assert float(dln.loss_fn(setting.params, setting.data)) == 0.0  # noise-free: L_n(w*) = 0
  exact = dln.learning_coefficient(setting.widths, setting.rank)
  assert (setting.llc, setting.multiplicity) == exact[:2]


def test_true_parameter_ranks():
  """Each matrix has the rank it was drawn with, the product the smallest of them; about half
  the matrices are reduced; the same seed gives the same parameter."""
  widths = (6, 8, 7, 9, 5)
  reduced = total = 0
  for seed in range(40):
    params, ranks = dln.true_parameter(widths, seed)
    for kernel, k in zip(params, ranks):
      assert np.linalg.matrix_rank(np.asarray(kernel, np.float64), tol=1e-4) == k
    product = np.linalg.multi_dot([np.asarray(k, np.float64) for k in params])
    assert np.linalg.matrix_rank(product, tol=1e-4) == min(ranks)
    full = [min(a, b) for a, b in zip(widths[:-1], widths[1:])]
    reduced += sum(k < f for k, f in zip(ranks, full))
    total += len(ranks)
  # Reduced with probability ½, to a uniform rank of 1..full (which keeps it full 1/full of the
  # time): about 0.5·(1 − 1/6.25) ≈ 0.42 of the matrices end up below full rank.
  assert 0.3 < reduced / total < 0.55
  again, _ = dln.true_parameter(widths, 7)
  first, _ = dln.true_parameter(widths, 7)
  for a, b in zip(again, first):
    np.testing.assert_array_equal(a, b)
  params, ranks = dln.true_parameter(widths, 0, ranks=(2, 7, 3, 5))
  assert ranks == (2, 7, 3, 5)
  with pytest.raises(errors.ConfigError, match="ranks"):
    dln.true_parameter(widths, 0, ranks=(7, 1, 1, 1))


def test_noise_and_task():
  setting = dln.make((3, 4, 2), seed=0, num_examples=500, noise_std=0.5, ranks=(3, 2))
  assert setting.rank == 2
  residual = np.asarray(setting.data["y"] - dln.forward(setting.params, setting.data["x"]))
  assert residual.std() == pytest.approx(0.5, rel=0.1)
  task = dln.task(setting)
  assert task.baselines["llc"] == float(setting.llc)
  metrics = jax.jit(task.evaluate)(setting.params)
  assert float(metrics["map_distance"]) < 1e-5
  assert float(metrics["loss"]) == pytest.approx(0.25, rel=0.2)  # the noise variance
  assert task.probe(setting.params).shape == task.probe_shape
  batch = task.train_batch(jax.random.key(0))
  assert batch["x"].shape == (1_000, 3) and batch["y"].shape == (1_000, 2)
  other = task.sampling_data(5, 300)
  assert other["x"].shape == (300, 3)
  params = task.init(jax.random.key(1))
  assert [k.shape for k in params] == [(3, 4), (4, 2)]


def test_estimate_llc_takes_the_setting_directly():
  """Tuple params, dict data, nβ = n / ln n: a short run gives a positive λ̂ and L_n(w*) = 0."""
  setting = dln.make((3, 4, 2), seed=1, num_examples=1_000)
  result = sgld.estimate_llc(dln.loss_fn, setting.params, setting.data, jax.random.key(0),
                             nbeta=setting.nbeta, step_size=1e-6, gamma=1.0, num_chains=2,
                             num_draws=50, batch_size=100, warn=False)
  assert result.init_loss == 0.0 and result.nbeta == setting.nbeta
  assert result.num_failed == 0 and result.llc_mean > 0


# ----------------------------------------------------------------------------- the procedure


def test_top_curvature_of_a_quadratic():
  """Linear regression: the Hessian of the mean squared error is 2XᵀX/n."""
  x = jax.random.normal(jax.random.key(0), (200, 6)) * jnp.arange(1.0, 7.0)
  batch = {"x": x, "y": jnp.zeros(200)}

  def loss(w, b):
    return jnp.mean((b["x"] @ w - b["y"]) ** 2)

  expected = np.linalg.eigvalsh(2.0 * np.asarray(x, np.float64).T @ np.asarray(x, np.float64)
                                / 200)[-1]
  value = procedure.top_curvature(loss, jnp.zeros(6), batch, jax.random.key(1), 30)
  assert value == pytest.approx(expected, rel=1e-3)


def test_selection_refuses_a_small_budget_and_reports_no_usable_point():
  setting = dln.make((3, 4, 2), seed=1, num_examples=1_000)
  args = (dln.loss_fn, setting.params, setting.data, jax.random.key(0))
  with pytest.raises(errors.ConfigError, match="budget"):
    procedure.select_settings(*args, budget=1_000, nbeta=setting.nbeta, batch_size=100)
  selection = procedure.select_settings(*args, budget=20_000, nbeta=setting.nbeta,
                                        batch_size=100, scales=(4.0, 1.0), min_mala=1.01)
  assert not selection.ok and selection.settings is None
  assert "no usable grid point" in selection.reasons[-1]


def test_unsettled_chains_are_doubled_up_to_the_ceiling():
  """Step 5: from 8 draws on a 20-dimensional quadratic (far too short to settle) the estimate
  doubles its draws while the total fits under the ceiling, counts every round's evaluations,
  and says where it stopped; a settled first round is not repeated."""
  x = jax.random.normal(jax.random.key(0), (2_000, 20))
  data = {"x": x}
  loss = lambda w, batch: jnp.mean((batch["x"] @ w) ** 2)
  settings = procedure.Settings(step_size=1e-4, gamma=1.0, nbeta=100.0, num_chains=4,
                                num_draws=8, num_burnin=2, batch_size=100)
  selection = procedure.Selection(settings, [], 1.0, None, 1.0, 1_000, 10_000)
  result, last, spent, reasons = procedure.estimate_until_settled(
      loss, jnp.zeros(20), data, jax.random.key(1), selection, max_budget=1_000 + 4 * 8 * 31)
  assert [line.split("× ")[1].split(" draws")[0] for line in reasons[:-1]] == [
      "8", "16", "32", "64", "128"]
  assert last.num_draws == 128 and last.num_burnin == 32 and result.loss_trace.shape == (4, 128)
  assert spent == 1_000 + 4 * 8 * 31 and result.warnings
  assert "above the ceiling 1,992" in reasons[-1]
  long = selection.settings._replace(num_draws=4_000, num_burnin=1_000, step_size=5e-4)
  result, last, spent, reasons = procedure.estimate_until_settled(
      loss, jnp.zeros(20), data, jax.random.key(1), procedure.Selection(
          long, [], 1.0, None, 1.0, 0, 0), max_budget=10**9)
  assert not result.warnings and len(reasons) == 1 and reasons[0].endswith("settled")
  assert spent == 16_000 and result.llc_mean == pytest.approx(10.0, rel=0.05)  # λ = d/2


def test_weight_scale_gamma():
  assert procedure.weight_scale_gamma((jnp.array([1.0, -1.0]), jnp.array([[2.0]]))) == 0.5
  assert procedure.weight_scale_gamma({"w": jnp.zeros(3)}) == math.inf


def test_dln_estimate_with_the_procedure_s_settings_is_within_ten_percent():
  """A 152-parameter DLN (widths 6-8-8-5, third matrix cut to rank 3, r = 3, λ = 15) with
  Lau et al.'s data (n = 10⁵, nβ = n / ln n): every sampler setting comes from
  select_settings under a budget of 80,000 gradient evaluations; λ̂ lands within 10 % of λ and
  the chains converged (R̂, bulk ESS)."""
  setting = dln.make((6, 8, 8, 5), seed=3, num_examples=100_000)
  assert (setting.matrix_ranks, setting.rank, setting.llc) == ((6, 8, 3), 3, Fraction(15))
  budget = 80_000
  selection = procedure.select_settings(dln.loss_fn, setting.params, setting.data,
                                        jax.random.key(1), budget=budget, nbeta=setting.nbeta,
                                        batch_size=200)
  assert selection.ok, str(selection)
  settings = selection.settings
  mean_square = np.mean(np.concatenate([np.ravel(k) for k in setting.params]) ** 2)
  assert settings.gamma == pytest.approx(1.0 / mean_square, rel=1e-6)
  assert selection.reasons[1].startswith("localization: γ = 1/mean(w*²)")
  assert selection.mala >= 0.9
  assert settings.step_size in selection.calibration.step_sizes
  assert selection.calibration_evaluations + settings.num_chains * settings.num_draws <= budget
  result = sgld.estimate_llc(dln.loss_fn, setting.params, setting.data, jax.random.key(2),
                             warn=False, **settings._asdict())
  assert result.num_failed == 0
  assert result.llc_mean == pytest.approx(float(setting.llc), rel=0.1)
  kept = result.loss_trace[:, result.num_burnin:]
  converged = diagnostics.convergence(kept)
  assert converged.rhat < 1.05 and converged.ess_bulk > 100


def test_ladder_rung_records_what_the_procedure_chose():
  """One small rung through the ladder's code: the record's exact λ is Aoyagi's, its error is
  (λ̂ − λ)/λ of the estimate it reports, the budget holds, and the table and the filter by size
  say what they are given."""
  rung = ladder.Rung((5, 7, 4), seed=1)
  record = ladder.estimate(rung, budget=20_000, num_examples=20_000, batch_size=100)
  setting = dln.make(rung.widths, seed=rung.seed, num_examples=20_000)
  assert record["llc_exact"] == float(setting.llc)
  assert record["num_params"] == 63 and record["depth"] == 2 and record["rank"] == setting.rank
  assert record["rel_error"] == pytest.approx((record["llc_hat"] - record["llc_exact"])
                                              / record["llc_exact"], rel=1e-12)
  assert abs(record["rel_error"]) < 0.25
  assert record["gradient_evaluations"] <= record["max_budget"] == 16 * 20_000
  assert record["mala"] >= 0.9
  lengths = [line for line in record["reasons"] if line.startswith("length:")]
  assert f"{record['num_chains']} chains × {record['num_draws']} draws" in lengths[-1]
  assert record["step_size"] > 0 and 1.0 <= record["rhat"] < 1.1 and record["ess_bulk"] > 10
  assert any(line.startswith("step size: ε =") for line in record["reasons"])
  json.dumps(record)  # one JSON line per model
  row = ladder.table([record]).splitlines()[-1]
  assert row.startswith("| 5-7-4 | 2 | 63 |") and f"{100 * record['rel_error']:+.1f} %" in row
  assert row.endswith("| settled |") == (not record["warnings"])
  unsettled = {**record, "warnings": ["R̂ of the loss trace is 1.2 > 1.01: …"],
               "reasons": record["reasons"] + ["length: … above the ceiling 1"],
               "preconditioner": "rmsprop"}
  assert ladder.table([unsettled]).endswith("| not settled (R̂ > 1.01) at the ceiling |")
  figure = ladder.plot([record, unsettled])
  labels = figure.axes[0].get_legend_handles_labels()[1]
  assert "jaxdev RMSProp-SGLD, not settled" in labels
  assert any(label.startswith("jaxdev SGLD") for label in labels)
  sizes = [dln.num_params(r.widths) for r in ladder.LADDER]
  assert min(sizes) < 2_000 and max(sizes) == 1_000_000
  assert {len(r.widths) - 1 for r in ladder.LADDER} >= {2, 10}
  assert list(ladder.run_ladder([ladder.Rung((500, 500, 500))], max_params=1_000,
                                budget=1)) == []
