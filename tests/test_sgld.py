"""SGLD sampler and LLC estimator: exact properties, failure handling and analytic answers.

Analytic cases (docs/methods.md, "The estimator"): a regular quadratic (λ = d/2), devinterp's
normal-crossing models at w* = 0 and reduced-rank regression at w* = 0 (Aoyagi & Watanabe 2005).
Normal-crossing estimates are also compared with the exact expectation of the *localized*
tempered posterior that the chains sample (a one-dimensional quadrature), which separates
sampler error from the finite-nβ deficit of the target itself.
"""

import io
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdev import errors
from jaxdev import sgld
from jaxdev.sgld import calibration as calibration_lib
from jaxdev.sgld import chains as chains_lib

N = 1000
NBETA = N / math.log(N)  # 144.76


# ----------------------------------------------------------------------------- models and data

def linear_loss(w, batch):
  return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)


@pytest.fixture(scope="module")
def regression():
  """Noise-free linear regression in d = 10: w* = 0 is the exact minimum of L_n."""
  x = jax.random.normal(jax.random.key(3), (N, 10))
  return {"x": x, "y": jnp.zeros(N)}


def exact_gaussian_llc(x, nbeta, gamma, step_size):
  """E[nβ(L − L0)] of the Euler-discretised SGLD chain for the quadratic ``linear_loss``.

  With Hessian H = 2XᵀX/n, the chain w ← w − (ε/2)Aw + √ε ξ, A = nβH + γI, has stationary
  covariance (A(I − εA/4))⁻¹, so the expectation is Σ_i (nβ h_i/2) / (a_i (1 − ε a_i/4)).
  """
  h = np.linalg.eigvalsh(2.0 * np.asarray(x, np.float64).T @ np.asarray(x, np.float64) / len(x))
  a = nbeta * h + gamma
  return float(np.sum(0.5 * nbeta * h / (a * (1.0 - step_size * a / 4.0))))


@pytest.fixture(scope="module")
def crossing_data():
  """devinterp's normal-crossing data: x ~ N(0, 2²), y ~ 0.25·N(0, 1) (true map 0)."""
  kx, ky = jax.random.split(jax.random.key(42))
  return {"x": 2.0 * jax.random.normal(kx, (N,)), "y": 0.25 * jax.random.normal(ky, (N,))}


def with_powers(data, powers):
  """The powers travel with the data (one-hot over 0..3), so all cases share one program."""
  onehot = np.eye(4, dtype=np.float32)[np.asarray(powers)]  # [2, 4]
  return dict(data, powers=jnp.broadcast_to(onehot, (N, 2, 4)))


def crossing_loss(w, batch):
  """f(x) = x·w0^p0·w1^p1 and MSE without ½ (torch's mse_loss, as devinterp)."""
  monomials = jnp.stack([jnp.ones_like(w), w, w * w, w * w * w], axis=1)  # [2, 4]
  f = jnp.prod(jnp.sum(batch["powers"][0] * monomials, axis=1))
  return jnp.mean((batch["x"] * f - batch["y"]) ** 2)


def crossing_target(powers, box, data, nbeta=NBETA):
  """E[nβ(L_n(w) − L_n(0))] under exp(−nβ L_n) on the box [−b, b]² (uniform prior).

  L_n depends on w through g = ∏ w_i^{p_i} only: L_n(w) − L_n(0) = a g² − 2 c g with
  a = mean x², c = mean xy. For w uniform on the box, −log|g| − Σp log b = Σ p_i E_i with
  E_i ~ Exp(1), whose density is known in closed form; the sign of g is symmetric when a
  power is odd.
  """
  x, y = np.asarray(data["x"], np.float64), np.asarray(data["y"], np.float64)
  a, c = np.mean(x * x), np.mean(x * y)
  p = sorted(q for q in powers if q > 0)
  t = np.linspace(0.0, 400.0, 400_001)
  if len(p) == 1:
    density = np.exp(-t / p[0]) / p[0]
  elif p[0] == p[1]:
    density = t * np.exp(-t / p[0]) / p[0] ** 2
  else:
    r0, r1 = 1.0 / p[0], 1.0 / p[1]
    density = r0 * r1 / (r1 - r0) * (np.exp(-r0 * t) - np.exp(-r1 * t))
  magnitude = box ** sum(p) * np.exp(-t)
  numerator = denominator = 0.0
  for sign in ([1.0, -1.0] if any(q % 2 for q in p) else [1.0]):
    excess = nbeta * (a * magnitude ** 2 - 2.0 * c * sign * magnitude)
    weight = density * np.exp(-excess)
    numerator += np.trapezoid(weight * excess, t)
    denominator += np.trapezoid(weight, t)
  return numerator / denominator


def aoyagi(m, h, n):
  """RLCT of reduced-rank regression with true rank 0 (Aoyagi & Watanabe 2005)."""
  if m + h < n:
    return m * h / 2
  if n + h < m:
    return h * n / 2
  if m + n < h:
    return m * n / 2
  value = (2 * m * n + 2 * h * n + 2 * m * h - m * m - n * n - h * h) / 8
  return value + 1 / 8 if (m + h + n) % 2 else value


def rrr_problem(m, h, n):
  kx, ky = jax.random.split(jax.random.key(0))
  data = {"x": jax.random.normal(kx, (N, m)), "y": 0.25 * jax.random.normal(ky, (N, n))}

  def loss_fn(params, batch):
    return jnp.mean((batch["x"] @ params["A"].T @ params["B"].T - batch["y"]) ** 2)

  return loss_fn, data, {"A": jnp.zeros((h, m)), "B": jnp.zeros((n, h))}


def small_mlp(bias_dtype=jnp.float32):
  params = {"dense": {"w": jnp.full((3, 2), 0.1), "b": jnp.array([0.5, -0.5])},
            "out": (jnp.array([1.0, -2.0]), jnp.zeros((), bias_dtype))}
  x = jax.random.normal(jax.random.key(1), (64, 3))
  data = {"x": x, "y": jnp.sin(x[:, 0])}

  def loss_fn(p, batch):
    hidden = jnp.tanh(batch["x"] @ p["dense"]["w"] + p["dense"]["b"])
    pred = hidden @ p["out"][0] + p["out"][1].astype(jnp.float32)
    return jnp.mean((pred - batch["y"]) ** 2)

  return loss_fn, params, data


# ----------------------------------------------------------------------------- kernel properties

def test_default_nbeta():
  assert sgld.default_nbeta(1000) == pytest.approx(144.764827, rel=1e-6)
  assert sgld.default_nbeta(100) == pytest.approx(21.714724, rel=1e-6)
  with pytest.raises(ValueError):
    sgld.default_nbeta(1)


# ----------------------------------------------------------------------------- argument checks

def _never_called(params, batch):
  raise AssertionError("the loss must not be traced before the arguments are checked")


VALID = dict(step_size=1e-3, gamma=1.0, num_chains=2, num_draws=10, batch_size=10)


@pytest.mark.parametrize("change,name", [
    (dict(step_size=0.0), "step_size"), (dict(step_size=-1e-3), "step_size"),
    (dict(step_size=float("nan")), "step_size"), (dict(step_size=float("inf")), "step_size"),
    (dict(nbeta=0.0), "nbeta"), (dict(nbeta=-5.0), "nbeta"), (dict(gamma=-1.0), "gamma"),
    (dict(num_chains=0), "num_chains"), (dict(num_draws=0), "num_draws"),
    (dict(num_burnin=10), "num_burnin"), (dict(num_burnin=-1), "num_burnin"),
    (dict(batch_size=0), "batch_size"), (dict(thin=0), "thin"),
    (dict(noise_level=-1.0), "noise_level"), (dict(bounding_box=0.0), "bounding_box"),
])
def test_estimate_llc_rejects_bad_arguments_before_any_work(change, name):
  with pytest.raises(errors.UserError, match=name) as info:
    sgld.estimate_llc(_never_called, jnp.zeros(3), {"x": jnp.zeros((20, 3))}, jax.random.key(0),
                      **dict(VALID, **change))
  assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("change,name", [
    (dict(step_sizes=[]), "step_sizes"), (dict(nbetas=[]), "nbetas"), (dict(gammas=[]), "gammas"),
    (dict(step_sizes=[1e-3, -1.0]), "step_size"), (dict(step_sizes=["1e-3", "abc"]), "step_sizes"),
    (dict(nbetas=[10.0, 0.0]), "nbeta"), (dict(gammas=[-1.0]), "gamma"),
    (dict(num_chains=0), "num_chains"), (dict(num_draws=0), "num_draws"),
    (dict(num_burnin=10), "num_burnin"), (dict(batch_size=0), "batch_size"),
])
def test_calibrate_rejects_bad_grids_and_sizes_before_any_work(change, name):
  args = dict(step_sizes=[1e-3], nbetas=[10.0], gammas=[1.0], num_chains=2, num_draws=10,
              batch_size=10)
  with pytest.raises(errors.UserError, match=name) as info:
    sgld.calibrate(_never_called, jnp.zeros(3), {"x": jnp.zeros((20, 3))}, jax.random.key(0),
                   **dict(args, **change))
  assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("change,name", [
    (dict(step_size=0.0), "step_size"), (dict(step_size=float("nan")), "step_size"),
    (dict(nbeta=-1.0), "nbeta"), (dict(gamma=-0.5), "gamma"),
])
def test_build_kernel_rejects_bad_hyperparameters(change, name):
  with pytest.raises(errors.UserError, match=name):
    sgld.build_kernel(linear_loss, **dict(dict(step_size=1e-3, nbeta=10.0, gamma=1.0), **change))


def test_build_kernel_accepts_traced_hyperparameters():
  """A grid vmaps over ε: traced values are not checked (and the numbers are per-ε)."""
  w = jnp.ones(3)
  state = sgld.SGLDState(w, jnp.zeros(3), None, jnp.int32(0))
  loss = lambda p, b: 0.0 * jnp.sum(p)  # noqa: E731
  step = jax.vmap(lambda eps: sgld.build_kernel(loss, step_size=eps, nbeta=1.0, gamma=2.0,
                                                noise_level=0.0)(jax.random.key(0), state, None)[0])
  moved = step(jnp.array([0.1, 0.2])).params
  np.testing.assert_allclose(moved, [[0.9] * 3, [0.8] * 3], rtol=1e-6)


def _calibrate_script(tmp_path, *flags):
  script = os.path.join(os.path.dirname(__file__), "..", "scripts", "calibrate.py")
  proc = subprocess.run([sys.executable, script, "--workdir", str(tmp_path / "missing"), *flags],
                        capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stderr.strip().splitlines()


def test_calibrate_script_checks_its_flags_then_its_output_folder_first(tmp_path):
  # The workdir does not exist: a check that came after reading the run would say so instead.
  code, lines = _calibrate_script(tmp_path, "--step_sizes=-1")
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: ") and "step_size must be finite and > 0, got -1" in lines[0], lines
  assert not (tmp_path / "missing").exists()
  # The output folder is checked before the grid runs.
  blocker = tmp_path / "file"
  blocker.write_text("")
  code, lines = _calibrate_script(tmp_path, f"--out={blocker / 'calibration'}")
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: cannot write into") and "is not a directory" in lines[0]
  assert blocker.read_text() == ""


# calibrate.py's flag defaults, as check_calibration receives them from the command line.
_CALIBRATE_FLAGS = dict(step_sizes=["1e-4", "3e-4", "1e-3", "3e-3"], nbetas=["15.39", "66.67"],
                        gammas=["6.67", "100"], num_chains=4, num_draws=200, batch_size=64)


@pytest.mark.parametrize("flags,message", [
    ({"step_sizes": ["-1"]}, "step_size must be finite and > 0, got -1"),  # --step_sizes=-1
    ({"step_sizes": ["1e-3", "abc"]}, "step_sizes must be a list of numbers"),  # --step_sizes=1e-3,abc
    ({"nbetas": []}, "nbetas must hold at least one value"),  # --nbetas=
    ({"num_chains": 0}, "num_chains must be positive, got 0"),  # --chains=0
    ({"num_draws": 0}, "num_draws must be positive, got 0"),  # --draws=0
])
def test_calibrate_flags_are_checked_in_one_line(command_error, flags, message):
  line, _ = command_error(calibration_lib.check_calibration, **{**_CALIBRATE_FLAGS, **flags})
  assert message in line


def test_zero_noise_without_localization_is_gradient_descent():
  loss_fn, params, data = small_mlp()
  step_size, nbeta = 1e-3, 50.0
  kernel = jax.jit(sgld.build_kernel(loss_fn, step_size=step_size, nbeta=nbeta, gamma=0.0,
                                     noise_level=0.0))
  state = sgld.init(params)

  @jax.jit
  def descend(w):
    loss, grad = jax.value_and_grad(loss_fn)(w, data)
    return loss, jax.tree.map(lambda w, g: w - step_size * nbeta / 2 * g, w, grad)

  expected = params
  for t in range(5):
    state, info = kernel(jax.random.key(t), state, data)
    loss, expected = descend(expected)
    np.testing.assert_allclose(info.loss, loss, rtol=1e-6)
    assert float(info.noise_norm) == 0.0
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=1e-6, atol=1e-7)
  assert int(state.step) == 5


def test_localization_and_weight_decay_drift():
  w_star, w = jnp.array([1.0, -2.0]), jnp.array([1.5, -1.0])
  state = sgld.SGLDState(w, w_star, None, jnp.int32(0))
  kernel = sgld.build_kernel(lambda p, b: 0.0 * jnp.sum(p), step_size=0.01, nbeta=7.0,
                             gamma=3.0, weight_decay=0.5, noise_level=0.0)
  new, _ = kernel(jax.random.key(0), state, None)
  expected = w - 0.005 * (3.0 * (w - w_star) + 0.5 * w)
  np.testing.assert_allclose(new.params, expected, rtol=1e-6)


def test_kernel_preserves_structure_dtypes_and_vmaps():
  loss_fn, params, data = small_mlp(jnp.bfloat16)
  kernel = jax.jit(sgld.build_kernel(loss_fn, step_size=1e-3, nbeta=10.0, gamma=1.0,
                                     preconditioner="rmsprop"))
  state = sgld.init(params, preconditioner="rmsprop")
  new_state, info = kernel(jax.random.key(0), state, data)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
    assert a.shape == b.shape and a.dtype == b.dtype
  assert all(np.shape(x) == () for x in info)
  keys = jax.random.split(jax.random.key(1), 4)
  states, infos = jax.vmap(kernel, in_axes=(0, None, None))(keys, state, data)
  assert infos.loss.shape == (4,) and states.params["dense"]["w"].shape == (4, 3, 2)
  assert not np.allclose(states.params["dense"]["w"][0], states.params["dense"]["w"][1])


def test_mask_freezes_parameters_exactly():
  loss_fn, params, data = small_mlp()
  mask = {"dense": {"w": False, "b": True},
          "out": (jnp.array([True, False]), False)}
  kernel = jax.jit(sgld.build_kernel(loss_fn, step_size=1e-2, nbeta=10.0, gamma=1.0,
                                     weight_decay=0.1, mask=mask, preconditioner="rmsprop",
                                     bounding_box=1.0))
  state = sgld.init(params, preconditioner="rmsprop")
  for t in range(20):
    state, _ = kernel(jax.random.key(t), state, data)
  np.testing.assert_array_equal(state.params["dense"]["w"], params["dense"]["w"])
  np.testing.assert_array_equal(state.params["out"][0][1], params["out"][0][1])
  np.testing.assert_array_equal(state.params["out"][1], params["out"][1])
  assert not np.allclose(state.params["dense"]["b"], params["dense"]["b"])
  assert state.params["out"][0][0] != params["out"][0][0]


def test_fully_masked_chains_do_not_move_and_estimate_zero(regression):
  result = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(0),
                             mask=False, **SMALL)
  np.testing.assert_array_equal(result.diagnostics["distance"], 0.0)
  assert result.llc_mean == 0.0


def test_bounding_box_clips_around_center():
  w_star = jnp.array([0.3, -0.2, 1.0])
  kernel = sgld.build_kernel(lambda w, b: jnp.sum(w ** 2), step_size=0.5, nbeta=1.0,
                             gamma=0.0, bounding_box=0.01)
  state = sgld.init(w_star)
  for t in range(10):
    state, _ = kernel(jax.random.key(t), state, None)
    assert np.max(np.abs(np.asarray(state.params - w_star))) <= 0.01 + 1e-7
  assert np.max(np.abs(np.asarray(state.params - w_star))) > 0.009


def test_rmsprop_drift_and_noise_scaling():
  alpha, eps = 0.9, 0.1
  w_star = jnp.array([0.2, -0.4])
  w = jnp.array([0.5, 0.1])
  grad = 2.0 * w  # loss Σ w²
  state = sgld.SGLDState(w, w_star, jnp.zeros(2), jnp.int32(0))
  kernel = sgld.build_kernel(lambda p, b: jnp.sum(p ** 2), step_size=1e-2, nbeta=3.0,
                             gamma=2.0, noise_level=0.0,
                             preconditioner=sgld.RMSProp(alpha=alpha, eps=eps))
  new, _ = kernel(jax.random.key(0), state, None)
  v = (1 - alpha) * grad ** 2
  g = 1.0 / (jnp.sqrt(v) + eps)
  np.testing.assert_allclose(new.precond, v, rtol=1e-6)
  np.testing.assert_allclose(new.params, w - 0.005 * g * (3.0 * grad + 2.0 * (w - w_star)),
                             rtol=1e-6)
  # Zero gradient: V stays 0, G = 1/eps, the noise has variance ε/eps.
  flat = sgld.init(jnp.zeros(20_000), preconditioner="rmsprop")
  kernel = sgld.build_kernel(lambda p, b: 0.0 * jnp.sum(p), step_size=1e-4, nbeta=1.0,
                             gamma=0.0, preconditioner="rmsprop")
  moved, info = kernel(jax.random.key(1), flat, None)
  assert np.std(np.asarray(moved.params)) == pytest.approx(math.sqrt(1e-4 / 0.1), rel=0.03)
  assert float(info.noise_norm) == pytest.approx(np.linalg.norm(moved.params), rel=1e-5)
  # Running mean started at 1 (Hitchcock & Hoogland's convention): V₁ = α + (1−α)g².
  from_one = sgld.RMSProp(alpha=alpha, eps=eps, initial=1.0)
  start = sgld.init(w, preconditioner=from_one)
  np.testing.assert_array_equal(start.precond, np.ones(2))
  kernel = sgld.build_kernel(lambda p, b: jnp.sum(p ** 2), step_size=1e-2, nbeta=3.0,
                             gamma=0.0, noise_level=0.0, preconditioner=from_one)
  new, _ = kernel(jax.random.key(0), start._replace(center=w_star), None)
  v = alpha + (1 - alpha) * grad ** 2
  np.testing.assert_allclose(new.precond, v, rtol=1e-6)
  np.testing.assert_allclose(new.params, w - 0.005 * 3.0 * grad / (jnp.sqrt(v) + eps), rtol=1e-6)
  with pytest.raises(errors.ConfigError, match="initial must be finite and >= 0"):
    sgld.init(w, preconditioner=sgld.RMSProp(initial=-1.0))


def test_mala_formula_satisfies_detailed_balance():
  """a(x→y)·π(x)·q(y|x) = a(y→x)·π(y)·q(x|y) for π = exp(−U), q the Langevin proposal."""
  rng = np.random.default_rng(0)
  h = np.array([3.0, 0.5, 10.0])
  potential = lambda w: 0.5 * np.sum(h * w ** 2) + np.sum(w ** 4)
  force = lambda w: h * w + 4 * w ** 3
  step_size = 0.05

  def log_q(to, frm):  # log N(to; frm − (ε/2)∇U(frm), ε), constant dropped
    return -np.sum((to - frm + 0.5 * step_size * force(frm)) ** 2) / (2 * step_size)

  for _ in range(5):
    x, y = rng.normal(size=3) * 0.5, rng.normal(size=3) * 0.5
    args = lambda a, b: (jnp.asarray(a, jnp.float32), jnp.asarray(force(a), jnp.float32),
                         jnp.float32(potential(a)), jnp.asarray(b, jnp.float32),
                         jnp.asarray(force(b), jnp.float32), jnp.float32(potential(b)), step_size)
    forward = float(sgld.mala_acceptance_probability(*args(x, y)))
    backward = float(sgld.mala_acceptance_probability(*args(y, x)))
    assert 0.0 <= forward <= 1.0 and max(forward, backward) == pytest.approx(1.0)
    left = np.log(forward) - potential(x) + log_q(y, x)
    right = np.log(backward) - potential(y) + log_q(x, y)
    assert left == pytest.approx(right, abs=1e-3)


# ----------------------------------------------------------------------------- chains

# Tests that only need a few draws share this setting (and so one compiled program).
SMALL = dict(step_size=1e-4, gamma=1.0, num_chains=6, num_draws=2000, batch_size=100,
             warn=False)


def test_same_key_same_numbers(regression):
  first = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(5), **SMALL)
  second = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(5), **SMALL)
  other = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(6), **SMALL)
  np.testing.assert_array_equal(first.loss_trace, second.loss_trace)
  assert first.llc_mean == second.llc_mean
  assert not np.allclose(first.loss_trace, other.loss_trace)


def test_mala_pairings_agree_on_full_batch(regression):
  """With the full batch, "same_batch" at draw t is "consecutive" at draw t + 1 (same move)."""
  kwargs = dict(step_size=1e-3, nbeta=NBETA, gamma=1.0, num_draws=50, batch_size=N,
                mask=jnp.arange(10) < 7)
  keys = jax.random.split(jax.random.key(0), 2)
  run = lambda mode: jax.jit(lambda k: sgld.run_chains(
      linear_loss, jnp.zeros(10), regression, k, compute_mala=mode, **kwargs).mala)(keys)
  consecutive, same_batch = run(True), run("same_batch")
  assert np.all(np.isnan(consecutive[:, 0])) and np.all(np.isfinite(same_batch))
  np.testing.assert_allclose(same_batch[:, :-1], consecutive[:, 1:], rtol=2e-3)
  assert 0.5 < np.mean(same_batch) < 0.999  # ε·a/4 ≈ 0.3: the Euler bias shows


def test_batches_and_noise_depend_only_on_the_key():
  data = {"x": jnp.arange(N, dtype=jnp.float32)}
  loss_fn = lambda w, batch: jnp.mean(batch["x"]) + 0.0 * jnp.sum(w)
  keys = jax.random.split(jax.random.key(0), 4)
  run = jax.jit(lambda w: sgld.run_chains(loss_fn, w, data, keys, step_size=1e-3, nbeta=10.0,
                                          gamma=0.0, num_draws=30, batch_size=50))
  a, b = run(jnp.zeros(5)), run(jnp.full(5, 3.0))
  np.testing.assert_array_equal(a.loss, b.loss)  # the same minibatches
  np.testing.assert_allclose(a.distance, b.distance, rtol=1e-5)  # the same noise
  assert len(np.unique(np.asarray(a.loss))) > 100  # batches differ across chains and draws


@pytest.mark.parametrize("options", [
    dict(),
    dict(preconditioner="rmsprop", weight_decay=0.1, bounding_box=0.3, noise_level=0.5,
         mask={"dense": {"w": True, "b": False}, "out": (jnp.array([True, False]), True)}),
    dict(compute_mala="same_batch", preconditioner="rmsprop"),
])
def test_run_chains_is_the_public_kernel_stepped_by_hand(options):
  """Draw t: keys split(fold_in(chain key, t)), minibatch by bits % n, then one kernel step."""
  loss_fn, params, data = small_mlp()
  hyper = dict(step_size=3e-3, nbeta=20.0, gamma=5.0)
  kernel_options = {k: v for k, v in options.items() if k != "compute_mala"}
  keys = jax.random.split(jax.random.key(11), 2)
  trace = jax.jit(lambda k: sgld.run_chains(loss_fn, params, data, k, num_draws=6, batch_size=16,
                                            chain_map="map", **hyper, **options))(keys)
  kernel = jax.jit(sgld.build_kernel(loss_fn, **hyper, **kernel_options))
  for c, chain_key in enumerate(keys):
    state = sgld.init(params, preconditioner=kernel_options.get("preconditioner"))
    for t in range(6):
      batch_key, noise_key = jax.random.split(jax.random.fold_in(chain_key, t))
      index = jax.random.bits(batch_key, (16,), jnp.uint32) % 64
      batch = jax.tree.map(lambda x, index=index: x[np.asarray(index)], data)
      state, info = kernel(noise_key, state, batch)
      for name in sgld.SGLDInfo._fields:
        np.testing.assert_array_equal(getattr(trace, name)[c, t], getattr(info, name),
                                      err_msg=f"{name} at chain {c}, draw {t}")
  assert int(state.step) == 6
  assert (trace.mala is not None) == ("compute_mala" in options)


def test_run_chains_trace_is_bitwise_the_kernel_inside_one_scan(regression):
  """The same scan written by hand over the public kernel gives run_chains' numbers exactly."""
  hyper = dict(step_size=1e-3, nbeta=NBETA, gamma=1.0)
  keys = jax.random.split(jax.random.key(2), 3)
  kernel = sgld.build_kernel(linear_loss, **hyper)

  @jax.jit
  def by_hand(chain_keys):
    def one_chain(chain_key):
      def body(state, t):
        batch_key, noise_key = jax.random.split(jax.random.fold_in(chain_key, t))
        batch = chains_lib.minibatch(regression, batch_key, 100, N)
        return kernel(noise_key, state, batch)
      return jax.lax.scan(body, sgld.init(jnp.zeros(10)), jnp.arange(20))[1]
    return jax.vmap(one_chain)(chain_keys)

  trace = jax.jit(lambda k: sgld.run_chains(linear_loss, jnp.zeros(10), regression, k,
                                            num_draws=20, batch_size=100, **hyper))(keys)
  manual = by_hand(keys)
  for name in sgld.SGLDInfo._fields:
    np.testing.assert_array_equal(getattr(trace, name), getattr(manual, name), err_msg=name)


def test_run_chains_vmaps_over_params_and_chain_map_agrees(regression):
  keys = jax.random.split(jax.random.key(2), 3)
  kwargs = dict(step_size=1e-4, nbeta=NBETA, gamma=1.0, num_draws=40, batch_size=100)
  points = jnp.stack([jnp.zeros(10), jnp.full(10, 0.1)])

  @jax.jit
  def swept(points):
    return jax.vmap(lambda w: sgld.run_chains(linear_loss, w, regression, keys, **kwargs))(points)

  one_by_one = jax.jit(lambda w: sgld.run_chains(linear_loss, w, regression, keys,
                                                  chain_map="map", **kwargs))
  together = swept(points)
  assert together.loss.shape == (2, 3, 40)
  for i in range(2):
    alone = one_by_one(points[i])
    np.testing.assert_allclose(together.loss[i], alone.loss, rtol=1e-5)
    np.testing.assert_allclose(together.distance[i], alone.distance, rtol=1e-5, atol=1e-6)


def test_chains_sharded_over_devices_match_unsharded(regression):
  devices = np.array(jax.devices()[:8])
  assert len(devices) == 8
  mesh = Mesh(devices, ("chain",))
  keys = jax.random.split(jax.random.key(4), 8)
  run = jax.jit(lambda k: sgld.run_chains(linear_loss, jnp.zeros(10), regression, k,
                                          step_size=1e-4, nbeta=NBETA, gamma=1.0, num_draws=10,
                                          batch_size=100).loss)
  sharded = run(jax.device_put(keys, NamedSharding(mesh, PartitionSpec("chain"))))
  np.testing.assert_allclose(sharded, run(keys), rtol=1e-5)


def test_init_loss_whole_dataset_first_batches_and_vmap(regression):
  w = jnp.linspace(-1.0, 1.0, 10)
  per_example = np.asarray((regression["x"] @ w - regression["y"]) ** 2, np.float64)
  full = sgld.init_loss(linear_loss, w, regression, batch_size=300)  # 3 batches + 100
  np.testing.assert_allclose(full, per_example.mean(), rtol=1e-5)
  first = sgld.init_loss(linear_loss, w, regression, batch_size=300, num_batches=2)
  np.testing.assert_allclose(first, per_example[:600].mean(), rtol=1e-5)
  stacked = jax.vmap(lambda p: sgld.init_loss(linear_loss, p, regression, batch_size=300))(
      jnp.stack([w, 2 * w]))
  np.testing.assert_allclose(stacked[1], 4 * per_example.mean(), rtol=1e-5)


def test_loss_scale_invariance_is_exact(regression):
  double = lambda w, batch: 2.0 * linear_loss(w, batch)
  base = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(0),
                           nbeta=NBETA, **SMALL)
  scaled = sgld.estimate_llc(double, jnp.zeros(10), regression, jax.random.key(0),
                             nbeta=NBETA / 2, **SMALL)
  np.testing.assert_array_equal(scaled.loss_trace, 2.0 * base.loss_trace)
  np.testing.assert_array_equal(scaled.llc_per_chain, base.llc_per_chain)


def poisoned_loss(w, batch):
  """NaN loss (and so NaN weights after the step) once ‖w‖ passes a threshold given as data."""
  blown = jnp.sqrt(jnp.sum(w ** 2)) > batch["threshold"][0]
  return linear_loss(w, batch) * jnp.where(blown, jnp.nan, 1.0)


POISONED = dict(step_size=1e-4, gamma=1.0, num_chains=6, num_draws=200, batch_size=N,
                warn=False)


def test_nan_in_one_chain_leaves_the_others_unchanged(regression):
  # The threshold is data, not a constant of the program: both runs execute the same program.
  data = dict(regression, threshold=jnp.full(N, jnp.inf))
  clean = sgld.estimate_llc(poisoned_loss, jnp.zeros(10), data, jax.random.key(1), **POISONED)
  reach = clean.diagnostics["distance"].max(axis=1)
  threshold = float(np.median(reach))
  data = dict(regression, threshold=jnp.full(N, threshold))
  result = sgld.estimate_llc(poisoned_loss, jnp.zeros(10), data, jax.random.key(1), **POISONED)

  expected_failed = reach > threshold
  assert 0 < expected_failed.sum() < POISONED["num_chains"] and clean.num_failed == 0
  np.testing.assert_array_equal(result.failed_chains, expected_failed)
  first_over = np.argmax(clean.diagnostics["distance"] > threshold, axis=1)
  np.testing.assert_array_equal(result.failure_step[expected_failed], first_over[expected_failed])
  np.testing.assert_array_equal(result.loss_trace[~expected_failed],
                                clean.loss_trace[~expected_failed])
  assert result.llc_mean == pytest.approx(clean.llc_per_chain[~expected_failed].mean(), rel=1e-12)
  assert np.all(np.isnan(result.llc_per_chain[expected_failed]))
  assert "failed" in result.warnings[0]
  with pytest.warns(sgld.LLCWarning, match="failed"):
    sgld.estimate_llc(poisoned_loss, jnp.zeros(10), data, jax.random.key(1),
                      **dict(POISONED, warn=True))


def test_all_chains_failed_is_reported_without_raising(regression):
  data = dict(regression, threshold=jnp.full(N, -1.0))
  result = sgld.estimate_llc(poisoned_loss, jnp.zeros(10), data, jax.random.key(0), **POISONED)
  assert result.all_failed and result.num_failed == 6
  assert np.isnan(result.llc_mean) and np.isnan(result.llc_std)
  np.testing.assert_array_equal(result.failure_step, 0)
  assert result.warnings[0].startswith("all 6 chains failed")
  sgld.plot_trace(result)  # still plots
  assert result.to_dict()["llc_mean"] is None


# ----------------------------------------------------------------------------- summaries

def synthetic_trace(loss):
  loss = np.asarray(loss, np.float64)
  zeros = np.zeros_like(loss)
  return sgld.ChainTrace(loss, zeros, zeros, zeros, zeros)


def test_summarize_burnin_thinning_online_trace_and_ddof():
  rng = np.random.default_rng(0)
  loss = 1.0 + rng.random((4, 12))
  result = sgld.summarize(synthetic_trace(loss), 1.2, nbeta=3.0, num_burnin=2, thin=3)
  per_chain = 3.0 * (loss[:, 2::3].mean(axis=1) - 1.2)
  np.testing.assert_allclose(result.llc_per_chain, per_chain, rtol=1e-12)
  assert result.llc_mean == pytest.approx(per_chain.mean(), rel=1e-12)
  assert result.llc_std == pytest.approx(per_chain.std(ddof=1), rel=1e-12)
  assert result.llc_sem == pytest.approx(per_chain.std(ddof=1) / 2, rel=1e-12)
  assert np.all(np.isnan(result.llc_trace[:, :2]))
  np.testing.assert_allclose(result.llc_trace[:, -1], per_chain, rtol=1e-12)
  np.testing.assert_allclose(result.llc_trace[:, 5], 3.0 * (loss[:, [2, 5]].mean(axis=1) - 1.2))
  with pytest.raises(ValueError):
    sgld.summarize(synthetic_trace(loss), 1.2, nbeta=3.0, num_burnin=12)


def test_summarize_flags_escape_and_unsettled_chains():
  rng = np.random.default_rng(1)
  noise = 0.01 * rng.normal(size=(3, 400))
  steady = 1.0 + 0.1 + noise
  result = sgld.summarize(synthetic_trace(steady), 1.0, nbeta=10.0)
  assert result.settled and not result.escaped.any() and not result.warnings
  escaping = steady.copy()
  escaping[1, 100:] = 0.8 + noise[1, 100:]
  result = sgld.summarize(synthetic_trace(escaping), 1.0, nbeta=10.0)
  np.testing.assert_array_equal(result.escaped, [False, True, False])
  assert any("escaped" in w for w in result.warnings)
  rising = 1.0 + np.linspace(0.0, 0.5, 400) + noise
  result = sgld.summarize(synthetic_trace(rising), 1.0, nbeta=10.0)
  assert not result.settled and any("not settled" in w for w in result.warnings)


def test_escape_from_a_point_that_is_not_a_minimum_warns(regression):
  slope = lambda w, batch: jnp.mean(batch["x"][:, 0]) * 0.0 + w[0]
  with pytest.warns(sgld.LLCWarning, match="escaped"):
    result = sgld.estimate_llc(slope, jnp.zeros(10), regression, jax.random.key(0),
                               step_size=1e-3, gamma=0.0, num_chains=2, num_draws=200,
                               batch_size=100)
  assert result.escaped.all() and result.llc_mean < 0


def test_plot_trace_and_result_record(regression):
  result = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(0),
                             num_burnin=20, **SMALL)
  figure = sgld.plot_trace(result)
  assert len(figure.axes[0].lines) >= 7
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  assert buffer.getvalue()[:4] == b"\x89PNG"
  record = result.to_dict()
  assert record["num_chains"] == 6 and len(record["llc_per_chain"]) == 6
  assert "±" in str(result)


def test_calibration_grid_in_one_call_and_recommendation(regression):
  kwargs = dict(gamma=1.0, num_chains=4, num_draws=400, batch_size=N, num_burnin=100)
  calibration = sgld.calibrate(linear_loss, jnp.zeros(10), regression, jax.random.key(0),
                               step_sizes=[1e-4, 1e-3, 0.1], nbetas=[NBETA / 4, NBETA],
                               gammas=[1.0, 100.0], num_chains=4, num_draws=400, batch_size=N,
                               num_burnin=100)
  assert calibration.llc_mean.shape == (3, 2, 2)
  assert np.all(calibration.num_failed[2] == 4)  # ε = 0.1 diverges everywhere
  assert np.all(calibration.num_failed[:2] == 0)
  point = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(0),
                            step_size=1e-3, nbeta=NBETA, warn=False,
                            **{k: v for k, v in kwargs.items()})
  np.testing.assert_allclose(calibration.results[1, 1, 0].llc_per_chain, point.llc_per_chain,
                             rtol=1e-5)
  exact = exact_gaussian_llc(regression["x"], NBETA, 1.0, 1e-4)
  assert calibration.llc_mean[0, 1, 0] == pytest.approx(exact, rel=0.15)
  choice = calibration.recommend()
  assert (choice.step_size, choice.nbeta, choice.gamma) == (1e-3, pytest.approx(NBETA), 1.0)
  assert calibration.recommend(max_nbeta=NBETA / 2).nbeta == pytest.approx(NBETA / 4)
  assert len(calibration.table().splitlines()) == 1 + 12
  figure = calibration.figure()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  assert len(figure.axes) == 4


def _grid_point(llc, *, failed=0, escaped=False, settled=True):
  import types  # pylint: disable=import-outside-toplevel
  return types.SimpleNamespace(llc_mean=llc, llc_std=0.1, num_failed=failed,
                               escaped=np.array([escaped]), settled=settled, diagnostics={})


def _calibration(points):
  results = np.empty((len(points), 1, 1), dtype=object)
  for i, point in enumerate(points):
    results[i, 0, 0] = point
  return sgld.CalibrationResult(np.array([1e-4, 1e-3, 1e-2, 1e-1][:len(points)]), np.array([20.0]),
                           np.array([100.0]), results, init_loss=1.0, default_nbeta=None)


def test_recommendation_passes_over_small_unsettled_steps_but_stops_at_trouble():
  # The smallest ε is only slow (unsettled, healthy): passed over; the scan then stops at the
  # first failure, escape, jump or unsettled point after a usable one.
  slow = _grid_point(30.0, settled=False)
  assert _calibration([slow, _grid_point(60.0), _grid_point(70.0),
                       _grid_point(80.0, failed=1)]).recommend().step_size == 1e-2
  assert _calibration([slow, _grid_point(60.0), _grid_point(70.0, settled=False),
                       _grid_point(75.0)]).recommend().step_size == 1e-3
  assert _calibration([_grid_point(60.0), _grid_point(200.0)]).recommend().step_size == 1e-4
  assert _calibration([slow, _grid_point(60.0, escaped=True),
                       _grid_point(70.0)]).recommend() is None
  assert _calibration([_grid_point(-5.0, settled=False), _grid_point(60.0)]).recommend() is None


# ----------------------------------------------------------------------------- analytic answers

def test_regular_quadratic_gives_half_the_dimension(regression):
  step_size, gamma = 2e-4, 1.0
  result = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(0),
                             step_size=step_size, gamma=gamma, nbeta=NBETA, num_chains=16,
                             num_draws=6000, num_burnin=500, batch_size=N, compute_mala=True,
                             warn=False)
  exact = exact_gaussian_llc(regression["x"], NBETA, gamma, step_size)  # 5.04
  assert result.llc_mean == pytest.approx(exact, rel=0.04)
  assert result.llc_mean == pytest.approx(5.0, rel=0.06)
  assert result.settled and result.num_failed == 0
  mala = result.diagnostics["mala"]
  assert mala.shape == (16, 6000) and np.all(np.isnan(mala[:, 0]))
  assert 0.97 < result.diagnostics["mala_mean"] < 1.0  # ε·a/4 ≈ 0.06: small but visible


def test_regular_quadratic_with_minibatches(regression):
  result = sgld.estimate_llc(linear_loss, jnp.zeros(10), regression, jax.random.key(1),
                             nbeta=NBETA, num_burnin=500, **dict(SMALL, step_size=3e-4))
  assert result.llc_mean == pytest.approx(5.0, rel=0.1)


# (powers, step size, box) with 10 chains × 5,000 draws: the module docstring's table.
CROSSING_CASES = [
    ([0, 1], 5e-5, 1.0),  # λ = 1/2: the regular direction needs a small ε
    ([0, 2], 1e-3, 1.0),  # λ = 1/4
    ([0, 3], 1e-3, 1.0),  # λ = 1/6
    ([1, 2], 1e-3, 2.0),  # λ = 1/4 (target 0.241 at box 2)
    ([1, 1], 3e-4, 1.0),  # λ = 1/2, target 0.379 at box 1 (multiplicity 2)
    ([2, 2], 1e-3, 1.0),  # λ = 1/4, target 0.156 at box 1 (devinterp's 0.155)
]


@pytest.mark.parametrize("powers,step_size,box", CROSSING_CASES)
def test_normal_crossing(crossing_data, powers, step_size, box):
  result = sgld.estimate_llc(crossing_loss, jnp.zeros(2), with_powers(crossing_data, powers),
                             jax.random.key(0), step_size=step_size, gamma=0.0, nbeta=NBETA,
                             num_chains=10, num_draws=5000, batch_size=N, bounding_box=box,
                             warn=False)
  analytic = 0.5 / max(powers)
  target = crossing_target(powers, box, crossing_data)
  assert result.llc_mean == pytest.approx(target, rel=0.08)
  if abs(target / analytic - 1.0) < 0.05:
    assert result.llc_mean == pytest.approx(analytic, rel=0.1)


_LONG_RRR = dict(step_size=2e-4, gamma=0.3, num_chains=8, num_draws=40_000, rel=0.05)


@pytest.mark.parametrize("m,h,n,settings", [
    (5, 3, 5, dict(step_size=1e-3, gamma=1.0, num_chains=4, num_draws=4000, rel=0.1)),
    (4, 3, 8, dict(step_size=1e-3, gamma=1.0, num_chains=4, num_draws=4000, rel=0.1)),
    pytest.param(5, 3, 5, _LONG_RRR, marks=pytest.mark.slow, id="5-3-5-long"),
    pytest.param(4, 3, 8, _LONG_RRR, marks=pytest.mark.slow, id="4-3-8-long"),
    pytest.param(5, 4, 5, _LONG_RRR, marks=pytest.mark.slow, id="5-4-5-long"),
])
def test_reduced_rank_regression(m, h, n, settings):
  """A quarter of the draws is burn-in; long chains with a weak localization get within 5%."""
  settings = dict(settings)
  rel, num_draws = settings.pop("rel"), settings.pop("num_draws")
  loss_fn, data, params = rrr_problem(m, h, n)
  result = sgld.estimate_llc(loss_fn, params, data, jax.random.key(0), nbeta=NBETA,
                             num_draws=num_draws, num_burnin=num_draws // 4, batch_size=N,
                             warn=False, **settings)
  assert result.llc_mean == pytest.approx(aoyagi(m, h, n), rel=rel)


@pytest.mark.slow
@pytest.mark.parametrize("powers,step_size,box,num_draws", [
    ([2, 2], 1e-4, 5.0, 400_000),
    ([1, 1], 5e-5, 5.0, 400_000),
    ([1, 3], 3e-4, 2.0, 50_000),
    ([3, 3], 3e-4, 2.0, 50_000),
])
def test_normal_crossing_wide_box_long_chains(crossing_data, powers, step_size, box, num_draws):
  result = sgld.estimate_llc(crossing_loss, jnp.zeros(2), with_powers(crossing_data, powers),
                             jax.random.key(0), step_size=step_size, gamma=0.0, nbeta=NBETA,
                             num_chains=10, num_draws=num_draws, num_burnin=num_draws // 4,
                             batch_size=N, bounding_box=box, warn=False)
  assert result.llc_mean == pytest.approx(crossing_target(powers, box, crossing_data), rel=0.08)
