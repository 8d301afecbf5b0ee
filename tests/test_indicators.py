"""Known answers for every indicator: closed-form Hessians, hand-built heads, exact baselines."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.sparse

from jaxdev.data import regression as regression_data
from jaxdev.indicators import attention as attention_lib
from jaxdev.indicators import hessian
from jaxdev.indicators import language
from jaxdev.indicators import regression
from jaxdev.models import attention as attention_model


def _regression_config(num_tasks=0, **model):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(dim=4, num_examples=8, noise_variance=0.125,
                                               num_tasks=num_tasks))
  config.model = ml_collections.ConfigDict(dict(num_layers=2, num_heads=4, embed_dim=16,
                                                mlp_dim=16, **model))
  return config


# ----------------------------------------------------------------------------- curvature


def _linear_regression(n=200, d=12, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d)) * np.linspace(0.3, 2.0, d)
  y = rng.standard_normal(n)
  loss_fn = lambda params, batch: jnp.mean((batch[0] @ params["w"] + params["b"] - batch[1]) ** 2)
  design = np.concatenate([x, np.ones((n, 1))], axis=1)  # ravel order: b then w
  design = np.concatenate([design[:, -1:], design[:, :-1]], axis=1)
  exact = 2.0 * design.T @ design / n  # Hessian of the mean squared error
  params = {"w": jnp.zeros(d), "b": jnp.zeros(())}
  return loss_fn, params, (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)), exact


def test_hvp_is_the_linear_regression_hessian():
  loss_fn, params, batch, exact = _linear_regression()
  v = np.random.default_rng(1).standard_normal(exact.shape[0]).astype(np.float32)
  np.testing.assert_allclose(hessian.hvp(loss_fn, params, batch, jnp.asarray(v)), exact @ v,
                             rtol=1e-4, atol=1e-4)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
  diagonal = jnp.linspace(-1.0, 5.0, 30)
  loss_fn = lambda params, batch: 0.5 * jnp.sum(batch * params ** 2)
  samples = hessian.hutchinson_samples(loss_fn, jnp.ones(30), diagonal, jax.random.PRNGKey(0), 5)
  np.testing.assert_allclose(samples, float(diagonal.sum()), rtol=1e-5)
  assert hessian.summarize_trace(samples)[1] == pytest.approx(0.0, abs=1e-5)


def test_hutchinson_trace_and_its_standard_error_on_linear_regression():
  loss_fn, params, batch, exact = _linear_regression()
  samples = np.asarray(hessian.jitted_hutchinson_samples(loss_fn, params, batch,
                                                         jax.random.PRNGKey(3), 4000))
  trace, sem = hessian.summarize_trace(samples)
  off = exact - np.diag(np.diag(exact))
  expected_sem = np.sqrt(2 * (off ** 2).sum() / samples.size)  # Var vᵀHv = 2 Σ_{i≠j} H_ij²
  assert sem == pytest.approx(expected_sem, rel=0.1)
  assert abs(trace - np.trace(exact)) < 4 * sem


def test_lanczos_top_eigenvalues_of_linear_regression():
  loss_fn, params, batch, exact = _linear_regression()
  values = hessian.top_eigenvalues(loss_fn, params, batch, 3)
  np.testing.assert_allclose(values, np.linalg.eigvalsh(exact)[::-1][:3], rtol=1e-4)


def test_lanczos_on_a_random_symmetric_matrix():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((60, 60))
  a = (a + a.T) / 2
  loss_fn = lambda params, batch: 0.5 * params @ batch @ params
  values = hessian.top_eigenvalues(loss_fn, jnp.zeros(60), jnp.asarray(a, jnp.float32), 4)
  np.testing.assert_allclose(values, np.linalg.eigvalsh(a)[::-1][:4], rtol=1e-4, atol=1e-4)


def test_curvature_record_names_match_the_authors_columns():
  loss_fn, params, batch, exact = _linear_regression(d=6)
  result = hessian.curvature(loss_fn, params, batch, jax.random.PRNGKey(0), num_probes=8)
  record = hessian.curvature_record(result)
  assert {"hessian_trace", "hessian_trace_sem", "eig_1", "eig_2", "eig_3"} <= set(record)
  assert record["eig_1"] >= record["eig_2"] >= record["eig_3"]
  np.testing.assert_allclose(record["eig_1"], np.linalg.eigvalsh(exact)[-1], rtol=1e-4)


# ----------------------------------------------------------------------------- attention


def _previous_token_patterns(batch, heads, length):
  eye = np.eye(length, k=-1)
  eye[0, 0] = 1.0
  return jnp.broadcast_to(jnp.asarray(eye, jnp.float32), (batch, heads, length, length))


def test_entropy_variability_and_token_type_attention():
  length = 6
  uniform = np.tril(np.ones((length, length)))
  uniform /= uniform.sum(1, keepdims=True)
  uniform = jnp.asarray(uniform[None, None], jnp.float32)
  np.testing.assert_allclose(attention_lib.normalized_entropy(uniform)[0, 1:], 1.0, rtol=1e-6)
  assert float(attention_lib.normalized_entropy(uniform)[0, 0]) == 0.0
  hard = _previous_token_patterns(1, 1, length)
  np.testing.assert_allclose(attention_lib.normalized_entropy(hard), 0.0, atol=1e-7)
  np.testing.assert_allclose(attention_lib.variability(jnp.concatenate([hard, hard])), 0.0)
  # Two inputs attending to different single keys: ā = ½ on each, variability ½.
  other = jnp.asarray(np.eye(length)[None, None], jnp.float32)
  np.testing.assert_allclose(attention_lib.variability(jnp.concatenate([hard, other]))[0, 1:], 0.5)
  np.testing.assert_allclose(attention_lib.offset_attention(hard, 1)[0, 1:], 1.0)
  np.testing.assert_allclose(attention_lib.offset_attention(other, 0), 1.0)
  x_keys = jnp.arange(length) % 2 == 0
  expected = [np.ceil((k + 1) / 2) / (k + 1) for k in range(length)]
  np.testing.assert_allclose(attention_lib.key_set_attention(uniform, x_keys)[0], expected, rtol=1e-6)


def _previous_token_model(context=64, vocab=16):
  """A one-layer model whose only head attends to the previous position (hand-built)."""
  model = attention_model.AttnOnlyTransformer(num_layers=1, d_model=context, num_heads=1,
                                              head_dim=context, n_ctx=context, vocab_size=vocab)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  params = jax.tree.map(jnp.zeros_like, params)
  params["ln1_0"]["scale"] = jnp.ones(context)
  params["ln_final"]["scale"] = jnp.ones(context)
  params["W_pos"] = jnp.eye(context)  # the residual stream is 0, so q and k read positions only
  shift = 400.0 * np.eye(context, k=-1)  # e_i -> e_{i-1}: query i matches key i - 1
  params["attn_0"]["W_Q"] = jnp.asarray(shift[None], jnp.float32)
  params["attn_0"]["W_K"] = jnp.eye(context)[None]
  return model, params


def _synthetic_inputs(context=64, vocab=16, num=64):
  rng = np.random.default_rng(0)
  prev = language.previous_token_sequences(rng, num, vocab, vocab - 1, 16, min(64, context))
  prefix = language.prefix_matching_sequences(rng, num, vocab, vocab - 1, context)
  return prev, prefix


def test_hand_built_previous_token_head_scores_one_and_no_prefix_matching():
  model, params = _previous_token_model()
  (tokens, lengths), (ptokens, query, key) = _synthetic_inputs()
  _, patterns = model.apply({"params": params}, jnp.asarray(tokens), return_attention=True)
  previous = attention_lib.attention_at(patterns[0], jnp.asarray(lengths - 1), jnp.asarray(lengths - 2))
  np.testing.assert_allclose(previous, 1.0, atol=1e-5)
  _, patterns = model.apply({"params": params}, jnp.asarray(ptokens), return_attention=True)
  prefix = attention_lib.attention_at(patterns[0], jnp.asarray(query), jnp.asarray(key))
  np.testing.assert_allclose(prefix, 0.0, atol=1e-5)


def _induction_patterns(tokens):
  """Attention to the token after the latest earlier occurrence of the current token (BOS
  when there is none): the pattern of an ideal induction head."""
  batch, length = tokens.shape
  patterns = np.zeros((batch, 1, length, length), np.float32)
  for b in range(batch):
    for i in range(length):
      matches = [j + 1 for j in range(i - 1) if tokens[b, j] == tokens[b, i]]
      patterns[b, 0, i, matches[-1] if matches else 0] = 1.0
  return jnp.asarray(patterns)


def test_hand_built_induction_head_scores_one_on_prefix_matching_and_not_previous_token():
  (tokens, lengths), (ptokens, query, key) = _synthetic_inputs(context=64, vocab=4000)
  prefix = attention_lib.attention_at(_induction_patterns(ptokens), jnp.asarray(query), jnp.asarray(key))
  np.testing.assert_allclose(prefix, 1.0)
  previous = attention_lib.attention_at(_induction_patterns(tokens), jnp.asarray(lengths - 1),
                                        jnp.asarray(lengths - 2))
  assert float(previous[0]) < 0.05  # only an accidental repeat right before the last token counts


def test_prefix_sequences_follow_the_paper_layout():
  rng = np.random.default_rng(1)
  tokens, query, key = language.prefix_matching_sequences(rng, 200, 50, 49, 128)
  assert (tokens[:, 0] == 49).all() and (tokens[:, 1:] != 49).all()
  first = key - 1
  assert (first < 64).all() and (query >= 64).all() and (query >= key + 2).all()
  a = tokens[np.arange(200), first]
  assert (tokens[np.arange(200), query] == a).all()
  assert all((tokens[s] == a[s]).sum() == 2 for s in range(200))  # A occurs exactly twice


def test_composition_scores_orthogonal_identical_and_projection():
  d = 8
  e = np.eye(d, dtype=np.float32)
  u, w = np.outer(e[0], e[0]), np.outer(e[1], e[1])
  proj = np.diag([1, 1, 1, 0, 0, 0, 0, 0]).astype(np.float32)
  left = jnp.asarray(np.stack([u, u, proj]))
  right = jnp.asarray(np.stack([w, u, proj]))
  scores = attention_lib.composition_scores(left, right, right)
  np.testing.assert_allclose(scores["q_composition"][0, 0], 0.0, atol=1e-7)  # orthogonal
  np.testing.assert_allclose(scores["q_composition"][1, 1], 1.0, rtol=1e-6)  # identical rank 1
  np.testing.assert_allclose(scores["v_composition"][2, 2], 1 / np.sqrt(3), rtol=1e-6)
  # K-composition reads through W_QKᵀ: an asymmetric map composes one way only.
  swap = jnp.asarray(np.outer(e[1], e[0])[None])
  k = attention_lib.composition_scores(jnp.asarray(u[None]), swap, swap)
  assert float(k["q_composition"][0, 0]) == 0.0 and float(k["k_composition"][0, 0]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- language


def test_exact_bigram_model_scores_the_bigram_entropy():
  vocab = 12
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.full(vocab, 0.3), size=vocab)
  rows = np.zeros((40, 33), np.int64)
  for r in range(40):
    for i in range(1, 33):
      rows[r, i] = rng.choice(vocab, p=probs[rows[r, i - 1]])
  counts = scipy.sparse.coo_matrix((np.ones(40 * 32), (rows[:, :-1].ravel(), rows[:, 1:].ravel())),
                                   shape=(vocab, vocab)).tocsr()
  position, nxt, prob, covered = language.bigram_entries(rows, language.row_normalised(counts))
  inputs = language.LanguageInputs(jnp.asarray(rows), jnp.asarray(position), jnp.asarray(nxt),
                                   jnp.asarray(prob), jnp.asarray(covered), {}, None, None, None,
                                   None, None)
  empirical = np.asarray(language.row_normalised(counts).todense())
  with np.errstate(divide="ignore"):
    exact = jnp.asarray(np.log(empirical[rows[:, :-1]]), jnp.float32)  # (N, T, V)
  entropy = language.bigram_entropy(prob, position, covered)
  assert float(language.bigram_score(exact, inputs)) == pytest.approx(entropy, rel=1e-5)
  uniform = jnp.full(exact.shape, -np.log(vocab))
  assert float(language.bigram_score(uniform, inputs)) == pytest.approx(np.log(vocab), rel=1e-6)
  assert entropy < np.log(vocab)


def test_common_ngrams_follow_the_gpt2_merge_order():
  tokenizers = pytest.importorskip("jaxdev.data.tokenizer")
  full, truncated = tokenizers.gpt2_tokenizer(None), tokenizers.gpt2_tokenizer(5000)
  grams = language.common_ngrams(truncated, full, 2, 5)
  # GPT-2 id 4999 " confirmed" is the first merge the 5,000-id vocabulary lacks.
  assert full.decode([4999]) == " confirmed" and truncated.decode(grams[0]) == " confirmed"
  texts = [truncated.decode(g) for g in grams]
  ids = [full.encode(t).tolist() for t in texts]
  assert all(len(i) == 1 and i[0] >= 4999 for i in ids) and ids == sorted(ids)  # merge order
  assert grams.shape == (5, 2)
  three = language.common_ngrams(truncated, full, 3, 3)
  assert three.shape == (3, 3) and all(len(truncated.encode(truncated.decode(g))) == 3 for g in three)


def test_loss_indicators_of_a_uniform_model():
  vocab, context = 16, 64
  model, params = _previous_token_model(context, vocab)  # zero unembedding: uniform predictions
  rows = np.random.default_rng(0).integers(0, vocab - 1, size=(4, 65))
  rows[:, 0] = vocab - 1
  counts = scipy.sparse.coo_matrix((np.ones(4 * 64), (rows[:, :-1].ravel(), rows[:, 1:].ravel())),
                                   shape=(vocab, vocab)).tocsr()
  position, nxt, prob, covered = language.bigram_entries(rows, language.row_normalised(counts))
  (tokens, lengths), (ptokens, query, key) = _synthetic_inputs(context, vocab, 8)
  ngrams = {2: np.array([[vocab - 1, 3, 4]]), 3: np.array([[vocab - 1, 3, 4, 5]])}
  inputs = jax.tree.map(jnp.asarray, language.LanguageInputs(
      rows, position, nxt, prob, covered, ngrams, tokens, lengths, ptokens, query, key))
  out = jax.jit(lambda p: language.indicators(model, p, inputs))(params)
  np.testing.assert_allclose(out["loss_per_position"], np.log(vocab), rtol=1e-6)
  np.testing.assert_allclose(out["loss_per_position_pos_ablated"], np.log(vocab), rtol=1e-6)
  assert float(out["icl_score"]) == pytest.approx(0.0, abs=1e-6)
  assert float(out["ngram_score_2"]) == pytest.approx(1.0) and float(out["ngram_score_3"]) == pytest.approx(1.0)
  assert float(out["bigram_score"]) == pytest.approx(np.log(vocab), rel=1e-6)
  assert float(out["previous_token_score_B1H1"]) == pytest.approx(1.0, abs=1e-5)
  assert "loss_at_63" in out and "loss_at_64" not in out  # 1000/1024 of a 65-token row -> 63
  assert language.scaled_position(500, 1024) == 500 and language.scaled_position(50, 129) == 6


def test_language_indicators_vmap_and_layernorms_of_a_fresh_model():
  model = attention_model.AttnOnlyTransformer(num_layers=2, d_model=16, num_heads=2, head_dim=8,
                                              n_ctx=32, vocab_size=20)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  stacked = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 4), jnp.int32))["params"])(keys)
  stats = jax.vmap(regression.layernorm_statistics)(stacked)
  assert set(n.split("_weight")[0].split("_bias")[0] for n in stats) == {
      "layernorm_block0_ln1", "layernorm_block1_ln1", "layernorm_ln_final"}
  first = jax.tree.map(lambda x: x[0], stacked)
  heads = language.head_indicators(model, first, jax.tree.map(jnp.asarray, language.LanguageInputs(
      None, None, None, None, None, {}, *language.previous_token_sequences(
          np.random.default_rng(0), 4, 20, 19, 8, 16), *language.prefix_matching_sequences(
          np.random.default_rng(0), 4, 20, 19, 32))))
  assert heads["k_composition"].shape == (2, 2)
  assert np.all((np.asarray(heads["k_composition"]) > 0) & (np.asarray(heads["k_composition"]) < 1))


# ----------------------------------------------------------------------------- regression


def test_fresh_model_layernorm_statistics_are_exact():
  config = _regression_config()
  stats = regression.layernorm_statistics(regression.init(config, jax.random.PRNGKey(0)))
  names = {"block0_ln1", "block0_ln2", "block1_ln1", "block1_ln2", "ln_final"}
  assert {n[len("layernorm_"):].rsplit("_", 2)[0] for n in stats if n.endswith("_weight_mean")} == names
  for name in names:
    p = f"layernorm_{name}"
    values = [stats[f"{p}_weight_{s}"] for s in ("mean", "std", "min", "max", "norm")]
    assert [float(v) for v in values] == [1.0, 0.0, 1.0, 1.0, 4.0]  # width 16: ‖1‖ = 4
    assert all(float(stats[f"{p}_bias_{s}"]) == 0.0 for s in ("mean", "std", "min", "max", "norm"))
    assert float(stats[f"{p}_weight_frac_small"]) == 0.0


def test_layernorm_std_uses_ddof_one():
  params = {"ln_f": {"scale": jnp.array([1.0, 2.0, 3.0, 4.0]), "bias": jnp.zeros(4)}}
  stats = regression.layernorm_statistics(params)
  assert float(stats["layernorm_ln_final_weight_std"]) == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
  assert float(stats["layernorm_ln_final_weight_frac_small"]) == 0.0


def test_ridge_and_dmmse_predictors_score_zero_distance_to_themselves():
  config = _regression_config(num_tasks=4)
  inputs = regression.regression_inputs(regression_data.distribution(config), num_sequences=64,
                                        num_attention_sequences=4)
  for name in ("ridge", "dmmse", "ols", "task_prior"):
    out = regression.prediction_metrics(inputs.baselines[name], inputs.ys, inputs.baselines)
    assert float(out[f"mse_to_{name}"]) == 0.0
  ridge = regression.prediction_metrics(inputs.baselines["ridge"], inputs.ys, inputs.baselines)
  np.testing.assert_allclose(
      [ridge[f"loss_position_{k + 1}"] for k in range(8)],
      regression_data.per_position_mse(inputs.baselines["ridge"], inputs.ys), rtol=1e-6)
  # At k = 1 ridge predicts 0: its loss is E[y²]; it is the Bayes predictor, so it beats OLS.
  assert float(ridge["loss_position_1"]) == pytest.approx(float(jnp.mean(inputs.ys[:, 0] ** 2)))
  assert float(ridge["icl_1_4"]) < 0


def test_ood_at_gain_one_is_the_in_distribution_loss():
  config = _regression_config()
  model = regression.build_model(config)
  params = regression.init(config, jax.random.PRNGKey(1))
  inputs = regression.regression_inputs(regression_data.distribution(config), num_sequences=128,
                                        num_attention_sequences=4, gains=(1, 3))
  out = regression.behaviour(model, params, inputs)
  assert float(out["ood_inputs_x1"]) == pytest.approx(float(out["loss"]), rel=1e-6)
  assert float(out["ood_tasks_x1"]) == float(out["ood_inputs_x1"])
  assert float(out["ood_inputs_x3_normalized"]) == pytest.approx(float(out["ood_inputs_x3"]) / 9)


def test_embedding_subspace_cosines():
  e = np.eye(8, dtype=np.float32)
  assert np.allclose(regression.subspace_cosines(jnp.asarray(e[:2]), jnp.asarray(e[2:6])), 0.0)
  rotated = jnp.asarray(np.array([[1, 1, 0, 0, 0, 0, 0, 0], [1, -1, 0, 0, 0, 0, 0, 0]], np.float32))
  np.testing.assert_allclose(regression.subspace_cosines(jnp.asarray(e[:2]), 3 * rotated), 1.0, rtol=1e-6)


def test_effective_unembedding_reproduces_the_readout():
  config = _regression_config()
  params = regression.init(config, jax.random.PRNGKey(2))
  key = jax.random.split(jax.random.PRNGKey(3), 3)
  params["ln_f"] = {"scale": jax.random.normal(key[0], (16,)), "bias": jax.random.normal(key[1], (16,))}
  resid = jax.random.normal(key[2], (16,))
  normed = (resid - resid.mean()) / jnp.sqrt(resid.var() + 1e-5)
  direct = (normed * params["ln_f"]["scale"] + params["ln_f"]["bias"]) @ params["head"]["kernel"][:, 0]
  direct = direct + params["head"]["bias"][0]
  eff = regression.effective_unembedding(params)
  assert float(eff["unembed_effective_weight"] @ normed + eff["unembed_effective_bias"]) == pytest.approx(float(direct), rel=1e-5)


def test_regression_indicators_jit_and_vmap():
  config = _regression_config()
  model = regression.build_model(config)
  inputs = regression.regression_inputs(regression_data.distribution(config), num_sequences=32,
                                        num_attention_sequences=8)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  stacked = jax.vmap(lambda k: regression.init(config, k))(keys)
  batched = jax.jit(jax.vmap(lambda p: regression.indicators(model, p, inputs)))(stacked)
  single = regression.indicators(model, jax.tree.map(lambda x: x[1], stacked), inputs)
  for name in ("loss", "mse_to_ridge", "attention_entropy", "token_embedding_sv", "embedding_overlap"):
    np.testing.assert_allclose(batched[name][1], single[name], rtol=2e-5, atol=1e-6)
  assert batched["attention_entropy"].shape == (2, 2, 4, 16)
  # Every query attends with total weight one, split between x- and y-tokens.
  np.testing.assert_allclose(batched["attention_x"] + batched["attention_y"], 1.0, rtol=1e-5)


def test_paper_model_curvature_benchmark_runs_at_a_tiny_size():
  from jaxdev.measure import curvature  # pylint: disable=import-outside-toplevel
  out = curvature.paper_regression_curvature(num_sequences=4, num_probes=2)
  assert out["model_params"] == out["num_params"] == 51_717
  assert out["num_examples"] == 4 and len(out["eigenvalues"]) == 3
  assert out["seconds_per_paper_run"] == pytest.approx(190 * out["seconds_per_checkpoint"])


def test_uniform_attention_scores_one_over_the_number_of_keys():
  """A head attending uniformly to the k + 1 keys of query k gives the key of the prefix-matching
  score 1/(q + 1) and the previous token 1/length: the scores' chance levels."""
  (tokens, lengths), (ptokens, query, key) = _synthetic_inputs(context=64, vocab=4000)
  length = ptokens.shape[1]
  uniform = np.tril(np.ones((length, length), np.float32))
  uniform = jnp.asarray(np.broadcast_to(uniform / uniform.sum(1, keepdims=True),
                                        (len(ptokens), 1, length, length)))
  prefix = attention_lib.attention_at(uniform, jnp.asarray(query), jnp.asarray(key))
  np.testing.assert_allclose(prefix, np.mean(1.0 / (query + 1)), rtol=1e-6)
  previous = attention_lib.attention_at(uniform[: len(tokens)], jnp.asarray(lengths - 1),
                                        jnp.asarray(lengths - 2))
  np.testing.assert_allclose(previous, np.mean(1.0 / lengths), rtol=1e-6)


def test_icl_score_is_late_window_minus_early_window():
  # 128 inputs: early = positions 5..6 (4 %..6 %), late = 56..68 (44 %..54 %).
  early, late = attention_model.icl_windows(128)
  assert (early.start, early.stop, late.start, late.stop) == (5, 7, 56, 69)
  ramp = jnp.arange(128, dtype=jnp.float32)  # loss = position: late − early = 62 − 5.5
  assert float(attention_model.icl_score(ramp)) == pytest.approx(62.0 - 5.5)
  assert float(attention_model.icl_score(jnp.full(128, 3.0))) == 0.0
  # The paper's 1,024-token rows: windows around tokens 50 and 500.
  early, late = attention_model.icl_windows(1023)
  assert early.start <= 49 < early.stop and late.start <= 499 < late.stop


def test_synthetic_sequences_draw_from_the_given_tokens():
  rng = np.random.default_rng(0)
  pool = np.array([3, 5, 7, 11, 13])
  tokens, lengths = language.previous_token_sequences(rng, 50, 300, 0, 8, 16, pool)
  assert set(np.unique(tokens[:, 1:])) <= set(pool.tolist()) and np.all(tokens[:, 0] == 0)
  tokens, query, key = language.prefix_matching_sequences(rng, 50, 300, 0, 32, pool)
  assert set(np.unique(tokens[:, 1:])) <= set(pool.tolist()) and np.all(tokens[:, 0] == 0)
  rows = np.arange(50)
  np.testing.assert_array_equal(tokens[rows, query], tokens[rows, key - 1])  # A … A



def test_induction_score_is_one_for_an_induction_head_and_chance_for_uniform_attention():
  tokens = language.repeated_sequences(np.random.default_rng(0), 40, 4000, 3999, 65)
  assert tokens.shape == (40, 65) and np.all(tokens[:, 1:33] == tokens[:, 33:])
  distinct = tokens[[len(np.unique(t[1:33])) == 32 for t in tokens]]  # no repeat inside a block
  assert len(distinct) >= 20
  np.testing.assert_allclose(language.induction_score(_induction_patterns(distinct)), 1.0)
  length = tokens.shape[1]
  uniform = np.tril(np.ones((length, length), np.float32))
  uniform = jnp.asarray((uniform / uniform.sum(1, keepdims=True))[None, None])
  queries = np.arange(33, 64)  # the second copy, but its last token (no next token after it)
  np.testing.assert_allclose(language.induction_score(uniform), np.mean(1.0 / (queries + 1)),
                             rtol=1e-6)
  previous = np.eye(length, k=-1, dtype=np.float32)
  previous[0, 0] = 1.0
  assert float(language.induction_score(jnp.asarray(previous[None, None]))[0]) == 0.0
