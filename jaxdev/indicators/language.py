"""Indicators of the attention-only language model (docs/methods.md, "Indicators"; paper
appendix C).

``language_inputs(...)`` builds the fixed inputs once on the host (evaluation rows, the sparse
empirical bigram distribution at their positions, common n-grams, the synthetic sequences of the
previous-token and prefix-matching scores); ``indicators(model, params, inputs)`` is a pure
function of (params, inputs) that jits and vmaps over stacked parameters.

Conventions (nats; positions 0-based unless said): ``loss_per_position[i]`` is the loss of
predicting row token i + 1 from tokens 0..i (row token 0 is BOS), so "the loss at token k"
(1-based, as the paper counts) is ``loss_per_position[k - 1]``. The paper's positions belong to
1,024-token rows; for a shorter row of L tokens they are scaled by L / 1,024 and rounded
(``scaled_position``). ``icl_score`` is the loss over a window of positions around the paper's
token 500 minus that around its token 50 (:func:`jaxdev.models.attention.icl_score`, the same
number training logs); ``icl_score_tokens`` is the paper's single-position difference at the
scaled tokens, whose noise on a few hundred short rows is as large as the effect.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdev.indicators import attention as attention_lib
from jaxdev.indicators import regression as regression_indicators
from jaxdev.models import attention as attention_model

PAPER_ROW_LENGTH = 1_024
PAPER_LOSS_POSITIONS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000)  # paper C.3.1
NGRAM_ORDERS = (2, 3, 4)


def scaled_position(token: int, row_length: int) -> int:
  """The 1-based token position ``token`` of a 1,024-token row, scaled to ``row_length`` tokens
  (clipped to [1, row_length - 1])."""
  scaled = int(round(token * row_length / PAPER_ROW_LENGTH)) if row_length != PAPER_ROW_LENGTH else token
  return int(min(max(scaled, 1), row_length - 1))


class LanguageInputs(NamedTuple):
  """Fixed inputs of the language indicators.

  Attributes:
    rows: evaluation rows [N, L] (BOS first).
    bigram_position: [E] flat index (row · (L − 1) + i) of the input position whose next-token
      distribution each entry belongs to.
    bigram_next: [E] the next token v of the entry; bigram_prob: [E] p̂(v | rows[i]), the empirical
      bigram probability from the training data. Positions whose token never occurs as a
      predecessor in the training data are left out.
    bigram_num_positions: [P] flat indices of the positions that have entries (for the mean).
    ngrams: {n: [1000, n + 1]} BOS followed by a common n-gram.
    previous_tokens, previous_lengths: [S, Tp] synthetic sequences and their lengths [S].
    prefix_tokens: [S, Tq]; prefix_query, prefix_key: [S] positions of the second A and of the
      B that follows the first A.
    repeated_tokens: [S, 1 + 2h] BOS and a random block of h tokens repeated twice (the
      induction score), or None.
  """

  rows: jax.Array
  bigram_position: jax.Array
  bigram_next: jax.Array
  bigram_prob: jax.Array
  bigram_num_positions: jax.Array
  ngrams: dict
  previous_tokens: jax.Array
  previous_lengths: jax.Array
  prefix_tokens: jax.Array
  prefix_query: jax.Array
  prefix_key: jax.Array
  repeated_tokens: jax.Array | None = None


# ----------------------------------------------------------------------------- fixed inputs


def bigram_entries(rows: np.ndarray, conditional) -> tuple:
  """Sparse empirical next-token distributions at every input position of ``rows``.

  Args:
    rows: [N, L] int token rows.
    conditional: a scipy sparse [V, V] row-normalised matrix, p̂(b | a) at [a, b].

  Returns:
    (position [E], next [E], prob [E], positions_with_entries [P]) as numpy arrays.
  """
  inputs = np.asarray(rows)[:, :-1].ravel()
  sub = conditional[inputs].tocoo()  # row r of sub = distribution after token inputs[r]
  covered = np.unique(sub.row)
  return (sub.row.astype(np.int32), sub.col.astype(np.int32), sub.data.astype(np.float32),
          covered.astype(np.int32))


def row_normalised(counts):
  """A sparse count matrix divided by its row sums (rows without counts stay empty)."""
  import scipy.sparse  # pylint: disable=import-outside-toplevel
  counts = scipy.sparse.csr_matrix(counts, dtype=np.float64)
  totals = np.asarray(counts.sum(axis=1)).ravel()
  inverse = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
  return scipy.sparse.diags(inverse) @ counts


def bigram_entropy(prob: np.ndarray, position: np.ndarray, covered: np.ndarray) -> float:
  """Mean over the covered positions of H(p̂(· | token)): the best achievable bigram score."""
  prob = np.asarray(prob, np.float64)
  per_position = np.zeros(int(position.max()) + 1 if position.size else 0)
  np.add.at(per_position, position, -prob * np.log(prob))
  return float(per_position[covered].mean()) if covered.size else float("nan")


def common_ngrams(tokenizer, reference, n: int, count: int = 1_000) -> np.ndarray:
  """The first ``count`` distinct n-grams of ``tokenizer`` in the merge order of ``reference``.

  Every token of the reference vocabulary (GPT-2's, built by merging the most frequent pairs
  first) is decoded to text in id order and re-encoded with ``tokenizer`` (the truncated one);
  those that take exactly n tokens are kept in that order (paper C.2.2). Reference tokens that
  are not whole UTF-8 text on their own (single bytes of a multi-byte character) are skipped.
  Returns [≤count, n].
  """
  bos = reference.bos_id
  texts = [reference.decode([i]) for i in range(reference.vocab_size) if i != bos]
  texts = [t for t in texts if "\ufffd" not in t]
  encoded = tokenizer.encode_batch(texts)
  seen, out = set(), []
  for tokens in encoded:
    key = tuple(int(t) for t in tokens)
    if len(key) == n and key not in seen and tokenizer.bos_id not in key:
      seen.add(key)
      out.append(key)
      if len(out) == count:
        break
  return np.asarray(out, np.int32).reshape(-1, n)


def _others(vocab_size: int, bos_id: int, tokens) -> np.ndarray:
  pool = np.arange(vocab_size) if tokens is None else np.asarray(tokens)
  return np.setdiff1d(pool, [bos_id])


def previous_token_sequences(rng: np.random.Generator, num: int, vocab_size: int, bos_id: int,
                             min_length: int = 16, max_length: int = 64, tokens=None) -> tuple:
  """Paper C.3.3: BOS then uniform tokens other than BOS (from ``tokens`` when given, else the
  whole vocabulary), lengths uniform in [min_length, max_length]; right-padded (causal attention
  never sees the padding). Returns (tokens [num, max_length], lengths [num])."""
  others = _others(vocab_size, bos_id, tokens)
  tokens = rng.choice(others, size=(num, max_length))
  tokens[:, 0] = bos_id
  lengths = rng.integers(min_length, max_length + 1, size=num)
  return tokens.astype(np.int32), lengths.astype(np.int32)


def prefix_matching_sequences(rng: np.random.Generator, num: int, vocab_size: int, bos_id: int,
                              length: int = 128, tokens=None) -> tuple:
  """Paper C.3.4: BOS, random tokens other than A, B and BOS, one A in the first half with B right
  after it, a second A in the second half. The second A is kept at least two places after B, so
  the token before it is never B. Returns (tokens [num, length], query [num], key [num]) with
  query = position of the second A and key = position of B. ``tokens``: the pool the tokens are
  drawn from (default the whole vocabulary)."""
  others = _others(vocab_size, bos_id, tokens)
  half = length // 2
  tokens = np.empty((num, length), np.int32)
  query = np.empty(num, np.int32)
  key = np.empty(num, np.int32)
  for s in range(num):
    a, b = rng.choice(others, size=2, replace=False)
    pool = np.setdiff1d(others, [a, b])
    tokens[s] = rng.choice(pool, size=length)
    tokens[s, 0] = bos_id
    first = rng.integers(1, half - 1)
    second = rng.integers(max(half, first + 3), length)
    tokens[s, first], tokens[s, first + 1], tokens[s, second] = a, b, a
    query[s], key[s] = second, first + 1
  return tokens, query, key


def repeated_sequences(rng: np.random.Generator, num: int, vocab_size: int, bos_id: int,
                       length: int = 128, tokens=None) -> np.ndarray:
  """BOS and a block of h = (length − 1) // 2 uniform tokens other than BOS (from ``tokens`` when
  given) repeated twice: the sequences of the induction score (Olsson et al. 2022; TransformerLens'
  ``induction_score``). Returns [num, 1 + 2h]."""
  half = (length - 1) // 2
  block = rng.choice(_others(vocab_size, bos_id, tokens), size=(num, half))
  return np.concatenate([np.full((num, 1), bos_id), block, block], axis=1).astype(np.int32)


def induction_score(patterns) -> jax.Array:
  """Mean attention of each head from a token of the second copy to the token after that
  token's first occurrence, on :func:`repeated_sequences` ([B, H, T, T] patterns, T = 1 + 2h):
  the query at position h + p (p = 1 .. h − 1) and the key at p + 1, offset h − 1. 1 for an ideal
  induction head; [H]."""
  half = (patterns.shape[-1] - 1) // 2
  diagonal = attention_lib.offset_attention(patterns, half - 1)  # (H, T)
  return diagonal[:, half + 1:2 * half].mean(-1)


def language_inputs(rows: np.ndarray, bigram_counts, tokenizer, reference_tokenizer, *,
                    context_length: int, num_synthetic: int = 2_000, ngram_count: int = 1_000,
                    seed: int = 6_000, synthetic_tokens=None) -> tuple[LanguageInputs, dict]:
  """Fixed inputs from host data; returns (inputs, constants) where constants holds the
  reference values (``bigram_entropy``) that do not depend on the parameters.

  Args:
    rows: evaluation rows [N, L] (test split).
    bigram_counts: sparse [V, V] next-token counts of the training rows.
    tokenizer: the run's tokenizer (``vocab_size``, ``bos_id``, ``encode_batch``).
    reference_tokenizer: the tokenizer whose merge order defines common n-grams (full GPT-2).
    context_length: the model's n_ctx (synthetic sequences are shortened to fit).
    num_synthetic: sequences per synthetic set (the paper used 10k).
    ngram_count: common n-grams per n.
    seed: seed of the synthetic sequences.
    synthetic_tokens: the token ids the synthetic sequences draw from (default every id). A
      corpus that leaves ids unused (bytes a text never holds) should pass the ids it uses: an
      unused id has an untrained embedding, and attention to it says nothing about a head.
  """
  rows = np.asarray(rows, np.int32)
  position, nxt, prob, covered = bigram_entries(rows, row_normalised(bigram_counts))
  rng = np.random.default_rng(seed)
  vocab, bos = tokenizer.vocab_size, tokenizer.bos_id
  max_length = min(64, context_length)
  previous = previous_token_sequences(rng, num_synthetic, vocab, bos, min(16, max_length // 2),
                                      max_length, synthetic_tokens)
  prefix = prefix_matching_sequences(rng, num_synthetic, vocab, bos, min(128, context_length),
                                     synthetic_tokens)
  repeated = repeated_sequences(rng, num_synthetic, vocab, bos, min(128, context_length),
                                synthetic_tokens)
  ngrams = {}
  for n in NGRAM_ORDERS:
    grams = common_ngrams(tokenizer, reference_tokenizer, n, ngram_count)
    if len(grams) and n < rows.shape[1]:
      ngrams[n] = np.concatenate([np.full((len(grams), 1), bos, np.int32), grams], axis=1)
  inputs = LanguageInputs(rows, position, nxt, prob, covered, ngrams, *previous, *prefix,
                          repeated)
  constants = {"bigram_entropy": bigram_entropy(prob, position, covered)}
  return jax.tree.map(jnp.asarray, inputs), constants


# ----------------------------------------------------------------------------- indicators


def bigram_score(logprobs, inputs: LanguageInputs) -> jax.Array:
  """Mean over covered positions of −Σ_v p̂(v | token) log q(v | context) (paper eqs. 31–32).

  ``logprobs``: [N, L − 1, V] the model's next-token log-probabilities on ``inputs.rows``.
  """
  flat = logprobs.reshape(-1, logprobs.shape[-1])
  terms = -inputs.bigram_prob * flat[inputs.bigram_position, inputs.bigram_next]
  per_position = jax.ops.segment_sum(terms, inputs.bigram_position, num_segments=flat.shape[0])
  return per_position[inputs.bigram_num_positions].mean()


def _losses(model, params, tokens):
  logits = model.apply({"params": params}, tokens[:, :-1])
  return attention_model.next_token_losses(logits, tokens[:, 1:])  # (B, T)


def loss_indicators(model, params, inputs: LanguageInputs) -> dict:
  """Loss by position (with and without positional embedding), ICL score, bigram and n-gram
  scores."""
  logits = model.apply({"params": params}, inputs.rows[:, :-1])  # (N, T, V)
  logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  per_position = -jnp.take_along_axis(logprobs, inputs.rows[:, 1:, None], axis=-1)[..., 0].mean(0)
  ablated_params = {**params, "W_pos": jnp.zeros_like(params["W_pos"])}
  ablated = _losses(model, ablated_params, inputs.rows).mean(0)  # (T,)
  row_length = inputs.rows.shape[1]
  num_inputs = row_length - 1
  late, early = scaled_position(500, row_length), scaled_position(50, row_length)
  out = {"loss": per_position.mean(), "loss_per_position": per_position,
         "loss_per_position_pos_ablated": ablated, "loss_pos_ablated": ablated.mean(),
         "icl_score": attention_model.icl_score(per_position),
         "icl_score_tokens": per_position[late - 1] - per_position[early - 1],
         "bigram_score": bigram_score(logprobs, inputs)}
  for k in sorted({scaled_position(k, row_length) for k in PAPER_LOSS_POSITIONS}):
    if k <= num_inputs:
      out[f"loss_at_{k}"] = per_position[k - 1]
      out[f"loss_at_{k}_pos_ablated"] = ablated[k - 1]
  for n, grams in inputs.ngrams.items():
    ngram_loss = _losses(model, params, grams)[:, -1].mean()  # final token of each n-gram
    out[f"ngram_loss_{n}"] = ngram_loss
    out[f"ngram_score_{n}"] = per_position[n - 1] / ngram_loss
  return out


def head_indicators(model, params, inputs: LanguageInputs) -> dict:
  """Per head ([layers, heads] arrays and ``..._B{l}H{h}`` scalars, 1-based): previous-token score
  (attention from the last token to the one before, synthetic sequences of C.3.3), prefix-matching
  score (from the second A to the B after the first A, C.3.4), the induction score on a repeated
  random block (:func:`induction_score`, when the inputs hold one), and for two or more layers the Q/K/V
  composition of each layer-1 head with each layer-2 head (``k_composition_B1H{i}_B2H{j}``)."""
  _, patterns = model.apply({"params": params}, inputs.previous_tokens, return_attention=True)
  lengths = inputs.previous_lengths
  previous = jax.vmap(lambda p: attention_lib.attention_at(p, lengths - 1, lengths - 2))(patterns)
  _, patterns = model.apply({"params": params}, inputs.prefix_tokens, return_attention=True)
  prefix = jax.vmap(lambda p: attention_lib.attention_at(p, inputs.prefix_query,
                                                         inputs.prefix_key))(patterns)
  out = {"previous_token_score": previous, "prefix_matching_score": prefix}
  if inputs.repeated_tokens is not None:
    _, patterns = model.apply({"params": params}, inputs.repeated_tokens, return_attention=True)
    out["induction_score"] = jax.vmap(induction_score)(patterns)
  num_layers, num_heads = previous.shape
  for l in range(num_layers):
    for h in range(num_heads):
      for name in ("previous_token_score", "prefix_matching_score", "induction_score"):
        if name in out:
          out[f"{name}_B{l + 1}H{h + 1}"] = out[name][l, h]
  if num_layers >= 2:
    first, second = params["attn_0"], params["attn_1"]
    w_ov_1 = jnp.einsum("hdk,hke->hde", first["W_V"], first["W_O"])  # (H, D, D)
    w_ov_2 = jnp.einsum("hdk,hke->hde", second["W_V"], second["W_O"])
    w_qk_2 = jnp.einsum("hdk,hek->hde", second["W_Q"], second["W_K"])
    for name, scores in attention_lib.composition_scores(w_ov_1, w_qk_2, w_ov_2).items():
      out[name] = scores
      for i in range(num_heads):
        for j in range(num_heads):
          out[f"{name}_B1H{i + 1}_B2H{j + 1}"] = scores[i, j]
  return out


def indicators(model, params, inputs: LanguageInputs) -> dict:
  """All language indicators (the cheap set: forward passes and weight products only)."""
  return {**loss_indicators(model, params, inputs), **head_indicators(model, params, inputs),
          **regression_indicators.layernorm_statistics(params)}
