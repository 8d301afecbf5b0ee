"""The regression setting: tokens, read-out, model size and initialisation, baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdev.data import regression as data
from jaxdev.models import regression as model_lib


def test_paper_model_has_51717_parameters():
  model = model_lib.RegressionTransformer()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 5)))["params"]
  assert model_lib.count_params(params) == 51_717


def test_initialisation_is_pytorch_default_uniform():
  model = model_lib.RegressionTransformer()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 5)))["params"]
  qkv = params["block_0"]["attn"]["qkv"]["kernel"]  # fan_in 64 -> bound 1/8
  assert np.abs(qkv).max() <= 1 / 8 and np.abs(qkv).max() > 0.95 / 8
  np.testing.assert_allclose(np.std(qkv), (1 / 8) / np.sqrt(3), rtol=0.03)
  wte = params["wte"]["kernel"]  # fan_in 5
  assert np.abs(wte).max() <= 1 / np.sqrt(5)
  wpe = params["wpe"]  # one-hot Linear(16 -> 64): fan_in 16
  assert np.abs(wpe).max() <= 0.25 and np.abs(wpe).max() > 0.24
  np.testing.assert_array_equal(params["ln_f"]["scale"], 1.0)
  np.testing.assert_array_equal(params["ln_f"]["bias"], 0.0)


def test_model_is_causal():
  model = model_lib.RegressionTransformer()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 5)))["params"]
  tokens = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 5))
  changed = tokens.at[:, 9:].set(7.0)
  a = model.apply({"params": params}, tokens)
  b = model.apply({"params": params}, changed)
  np.testing.assert_allclose(a[:, :9], b[:, :9], atol=1e-6)
  assert not np.allclose(a[:, 9:], b[:, 9:])


def _plain_attention(q, k, v, stride):
  """Causal attention written directly, differentiated by JAX's own autodiff."""
  length = k.shape[-2]
  scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
  causal = jnp.arange(length)[None, :] <= jnp.arange(0, length, stride)[:, None]
  weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
  return weights @ v, weights


@pytest.mark.parametrize("stride", [1, 2])
def test_attention_gradient_equals_autodiff(stride):
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  k, v = (jax.random.normal(key, (3, 2, 4, 16, 8)) for key in keys[:2])  # [chains, B, nh, T, hs]
  q = jax.random.normal(keys[2], (3, 2, 4, 16, 8))[..., ::stride, :]
  out_w, weights_w = (jax.random.normal(key, shape) for key, shape in
                      zip(keys[3:], [(2, 4, 16 // stride, 8), (2, 4, 16 // stride, 16)]))

  def loss(attention):
    # Both outputs carry a cotangent, as when the sown weights are used; vmapped over chains.
    def one(q, k, v):
      out, weights = attention(q, k, v, stride)
      return jnp.sum(out * out_w) + jnp.sum(jnp.sin(weights) * weights_w)
    return jax.jit(jax.vmap(jax.value_and_grad(one, argnums=(0, 1, 2))))

  value, grads = loss(model_lib.causal_attention)(q, k, v)
  want_value, want_grads = loss(_plain_attention)(q, k, v)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want).max() > 0.1  # a real gradient, not zeros on both sides


def test_tokenize_and_readout_hand_worked():
  xs = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])  # B=1, K=2, D=2
  ys = jnp.array([[10.0, 20.0]])
  tokens = data.tokenize(xs, ys)
  expected = np.array([[[0, 1, 2], [10, 0, 0], [0, 3, 4], [20, 0, 0]]], dtype=np.float32)
  np.testing.assert_array_equal(tokens, expected)
  outputs = jnp.arange(12.0).reshape(1, 4, 3)
  np.testing.assert_array_equal(data.readout(outputs), [[0.0, 6.0]])


def test_sampled_data_has_the_stated_distribution():
  batch = data.sample_batch(jax.random.PRNGKey(0), 20_000)
  assert batch.xs.shape == (20_000, 8, 4) and batch.ys.shape == (20_000, 8)
  # y = t·x + ε with t, x standard normal in 4 dims: Var y = 4 + 0.125.
  np.testing.assert_allclose(np.var(batch.ys), 4.125, rtol=0.03)
  pool = data.task_pool(jax.random.PRNGKey(1), 3)
  pooled = data.sample_batch(jax.random.PRNGKey(2), 50, tasks=pool)
  # Each sequence's task is one of the pool: noise-free fit recovers it up to σ.
  w = np.linalg.lstsq(np.asarray(pooled.xs[0]), np.asarray(pooled.ys[0]), rcond=None)[0]
  assert np.min(np.linalg.norm(np.asarray(pool) - w, axis=1)) < 0.6


def test_ridge_is_the_closed_form_posterior_mean():
  batch = data.sample_batch(jax.random.PRNGKey(3), 5)
  pred = np.asarray(data.ridge_predictions(batch.xs, batch.ys))
  xs, ys = np.asarray(batch.xs, np.float64), np.asarray(batch.ys, np.float64)
  for b in range(5):
    assert pred[b, 0] == 0.0
    for k in range(1, 8):
      x, y = xs[b, :k], ys[b, :k]
      # Posterior of t ~ N(0, I) given y = Xt + N(0, σ²): mean = (XᵀX/σ² + I)⁻¹ Xᵀy/σ².
      mean = np.linalg.solve(x.T @ x / 0.125 + np.eye(4), x.T @ y / 0.125)
      np.testing.assert_allclose(pred[b, k], xs[b, k] @ mean, rtol=1e-4, atol=1e-5)


def test_ridge_beats_ols_on_noisy_data():
  batch = data.sample_batch(jax.random.PRNGKey(4), 20_000)
  ridge = data.per_position_mse(data.ridge_predictions(batch.xs, batch.ys), batch.ys)
  ols = data.per_position_mse(data.ols_predictions(batch.xs, batch.ys), batch.ys)
  assert np.all(ridge <= ols + 1e-3)
  assert ridge[3] < 0.8 * ols[3]  # k = 4: 3 examples for 4 unknowns, OLS is far off
  # With all 7 examples, ridge is close to the noise floor plus the posterior variance.
  assert ridge[-1] < 0.8


@pytest.mark.parametrize("num_tasks", [1, 4])
def test_dmmse_is_exact_for_a_small_pool(num_tasks):
  pool = data.task_pool(jax.random.PRNGKey(5), num_tasks)
  batch = data.sample_batch(jax.random.PRNGKey(6), 4000, tasks=pool)
  dmmse = data.per_position_mse(data.dmmse_predictions(batch.xs, batch.ys, pool), batch.ys)
  ridge = data.per_position_mse(data.ridge_predictions(batch.xs, batch.ys), batch.ys)
  assert dmmse[-1] < 0.2 and dmmse[-1] < ridge[-1]  # identifying the task is enough


def test_dmmse_approaches_ridge_as_the_pool_grows():
  batch = data.sample_batch(jax.random.PRNGKey(7), 256)
  ridge = data.ridge_predictions(batch.xs, batch.ys)
  gaps = []
  for num_tasks in (16, 256, 65_536):
    pool = data.task_pool(jax.random.PRNGKey(8), num_tasks)
    gaps.append(float(jnp.mean((data.dmmse_predictions(batch.xs, batch.ys, pool) - ridge) ** 2)))
  assert gaps[0] > gaps[1] > gaps[2]
  assert gaps[2] < 0.05


def test_fixed_dataset_is_reproducible_and_chunk_independent_of_size():
  a = data.fixed_dataset(3, 100, chunk=64)
  b = data.fixed_dataset(3, 100, chunk=64)
  np.testing.assert_array_equal(a.xs, b.xs)
  c = data.fixed_dataset(3, 64, chunk=64)
  np.testing.assert_array_equal(a.xs[:64], c.xs)
