"""Convergence diagnostics: ESS and split-R̂ against known answers and against ArviZ."""

import numpy as np
import pytest
import scipy.signal
import scipy.stats

from jaxdev import errors
from jaxdev import sgld
from jaxdev.sgld import diagnostics


def ar1(rng, num_chains, num_draws, rho):
  """Stationary Gaussian AR(1) chains x_t = ρ x_{t−1} + ξ_t (unit innovations)."""
  noise = rng.standard_normal((num_chains, num_draws))
  noise[:, 0] /= np.sqrt(1.0 - rho ** 2)  # start in the stationary law
  return scipy.signal.lfilter([1.0], [1.0, -rho], noise, axis=1)


@pytest.mark.parametrize("rho", [0.5, -0.5, 0.0])
@pytest.mark.parametrize("method", ["bulk", "mean"])
def test_ess_of_ar1_chains(rho, method):
  """ESS of the mean of an AR(1) chain is S(1 − ρ)/(1 + ρ).

  The estimator's own spread at this size (4 chains × 10,000 draws), measured over 100
  independent replicates, is a relative standard deviation of 1.5 % (ρ = 0) to 3.3 %
  (ρ = ±0.5), so 15 % is over four of them; a wrong truncation of the autocorrelation sum,
  a missing factor 2 or a per-chain instead of pooled S each miss by far more (factor 2 to 3).
  The Gaussian marginal makes the rank normalization nearly affine, so bulk ESS has the same
  target.
  """
  draws = ar1(np.random.default_rng(0), 4, 10_000, rho)
  expected = draws.size * (1.0 - rho) / (1.0 + rho)
  assert diagnostics.ess(draws, method) == pytest.approx(expected, rel=0.15)


def test_rhat_of_well_mixed_chains_is_one():
  draws = ar1(np.random.default_rng(1), 4, 10_000, 0.5)
  value = diagnostics.rhat(draws)
  assert 0.999 < value < 1.005


def test_rhat_sees_chains_with_different_means():
  """One chain shifted by one marginal standard deviation (1/√(1 − ρ²) = 1.15)."""
  draws = ar1(np.random.default_rng(2), 4, 2_000, 0.5)
  assert diagnostics.rhat(draws) < 1.01
  draws[3] += 1.15
  assert diagnostics.rhat(draws) > 1.05


def test_rhat_sees_chains_with_different_scales_through_the_folded_draws():
  """Same means, one chain three times wider: the bulk R̂ stays near 1, the folded one does not."""
  draws = np.random.default_rng(3).standard_normal((4, 2_000))
  draws[0] *= 3.0
  chains = diagnostics.split_chains(draws)
  bulk = diagnostics._rhat(diagnostics.rank_normalize(chains))
  assert bulk < 1.01
  assert diagnostics.rhat(draws) > 1.05


def test_ess_of_independent_draws_is_their_number():
  draws = np.random.default_rng(4).standard_normal((4, 5_000))
  assert diagnostics.ess(draws, "bulk") == pytest.approx(draws.size, rel=0.05)


def test_mcse_mean_of_ar1_chains():
  """Var(mean) of AR(1) draws = σ²/ESS with σ² = 1/(1 − ρ²)."""
  rho = 0.5
  draws = ar1(np.random.default_rng(5), 4, 10_000, rho)
  expected = np.sqrt(1.0 / (1.0 - rho ** 2) / (draws.size * (1.0 - rho) / (1.0 + rho)))
  assert diagnostics.mcse_mean(draws) == pytest.approx(expected, rel=0.1)


def test_split_chains_drops_the_middle_draw():
  draws = np.arange(10.0).reshape(2, 5)
  np.testing.assert_array_equal(diagnostics.split_chains(draws),
                                [[0, 1], [5, 6], [3, 4], [8, 9]])


def test_rank_normalize_is_blom_scores_of_pooled_ranks():
  draws = np.array([[3.0, 1.0], [2.0, 2.0]])
  ranks = np.array([[4.0, 1.0], [2.5, 2.5]])
  np.testing.assert_allclose(diagnostics.rank_normalize(draws),
                             scipy.stats.norm.ppf((ranks - 0.375) / (4 + 0.25)), rtol=1e-12)


def test_unusable_draws_give_nan():
  rng = np.random.default_rng(6)
  with_nan = rng.standard_normal((4, 100))
  with_nan[1, 7] = np.nan
  assert np.isnan(diagnostics.rhat(with_nan)) and np.isnan(diagnostics.ess(with_nan))
  assert np.isnan(diagnostics.ess(rng.standard_normal((4, 3))))  # fewer than 4 draws
  assert np.isnan(diagnostics.rhat(rng.standard_normal((1, 100))))  # one chain
  assert not np.isnan(diagnostics.ess(rng.standard_normal((1, 100))))
  constant = np.ones((2, 11))
  assert diagnostics.ess(constant) == 20.0  # the split draws
  assert np.isnan(diagnostics.rhat(constant))
  assert all(np.isnan(v) for v in diagnostics.convergence(with_nan))


def test_bad_arguments_raise_config_error():
  with pytest.raises(errors.ConfigError, match="chains, draws"):
    diagnostics.ess(np.zeros((2, 3, 4)))
  with pytest.raises(errors.ConfigError, match="method"):
    diagnostics.ess(np.zeros((2, 10)), method="tail")


def test_equal_to_arviz_on_the_same_draws():
  """ArviZ's own functions (arviz-stats, the dev extra) on chains of every kind: short, odd
  lengths, one chain, strong positive and negative autocorrelation, offsets, ties."""
  from arviz_stats.base import array_stats  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(7)
  cases = []
  for num_chains, num_draws, rho in [(4, 1000, 0.9), (1, 57, 0.3), (8, 4, 0.0), (3, 5, 0.5),
                                     (2, 999, -0.8), (6, 300, 0.99), (4, 200, 0.0)]:
    draws = ar1(rng, num_chains, num_draws, rho)
    cases.append(draws)
    cases.append(draws + rng.normal(0.0, 1.0, (num_chains, 1)))
    cases.append(np.round(draws, 1))
  cases.append(np.tile([1.0, -1.0], (3, 20)))  # perfectly antithetic
  for draws in cases:
    ours = diagnostics.convergence(draws)
    with np.errstate(invalid="ignore", divide="ignore"):  # ArviZ's R̂ of a constant split
      theirs = (array_stats.rhat(draws, method="rank"), array_stats.ess(draws, method="bulk"),
                array_stats.ess(draws, method="mean"), array_stats.mcse(draws, method="mean"))
    for mine, reference in zip(ours, theirs):
      reference = float(reference)
      if np.isnan(reference):
        assert np.isnan(mine)
      else:
        assert mine == pytest.approx(reference, rel=1e-10), draws.shape


def _trace(loss):
  zeros = np.zeros_like(loss)
  return sgld.ChainTrace(loss, zeros, zeros, zeros, zeros)


def test_summarize_reports_convergence_of_the_kept_healthy_draws():
  rng = np.random.default_rng(3)
  loss = 1.1 + 0.01 * rng.normal(size=(4, 400))
  loss[2, 50] = np.nan  # a failed chain is left out of the diagnostics
  result = sgld.summarize(_trace(loss), 1.0, nbeta=10.0, num_burnin=100)
  kept = loss[[0, 1, 3], 100:]
  np.testing.assert_allclose(result.convergence, diagnostics.convergence(kept), rtol=1e-12)
  assert 250 < result.convergence.ess_mean < 1500 and result.convergence.rhat < 1.01
  assert "R̂ 1.0" in str(result)
  assert len(result.warnings) == 1 and "1 of 4 chains failed" in result.warnings[0]
  assert set(result.to_dict()) >= {"rhat", "ess_bulk", "ess_mean", "mcse_mean"}


def test_summarize_warns_on_unmixed_or_too_correlated_chains():
  rng = np.random.default_rng(4)
  # Chains at different levels: R̂ far above 1.01.
  loss = 1.1 + 0.01 * rng.normal(size=(4, 400)) + 0.05 * np.arange(4)[:, None]
  result = sgld.summarize(_trace(loss), 1.0, nbeta=10.0)
  assert result.convergence.rhat > 1.01
  assert any(w.startswith("R̂ of the loss trace") for w in result.warnings)
  # AR(1) chains with ρ = 0.99 that happen to agree: their λ̂ spread understates the error.
  rho, steps = 0.99, 400
  noise = rng.normal(size=(4, steps))
  ar = np.zeros((4, steps))
  for t in range(1, steps):
    ar[:, t] = rho * ar[:, t - 1] + noise[:, t]
  ar -= ar.mean(axis=1, keepdims=True)  # identical chain means: the ± from the chains is 0
  result = sgld.summarize(_trace(1.1 + 0.01 * ar), 1.0, nbeta=10.0)
  assert result.llc_sem < 1e-12
  assert any("too small for the standard error" in w for w in result.warnings)
  assert result.convergence.ess_mean < 0.1 * ar.size
