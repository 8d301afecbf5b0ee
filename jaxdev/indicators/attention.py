"""Attention-pattern and weight-based head indicators (paper appendices C.3.2–C.3.4, D.3.5–D.3.6).

Patterns are causal softmax attention weights ``[B, H, T, T]`` (batch, heads, query, key), each
row summing to 1 over keys 0..query. Positions are 0-based: the query at position k sees k + 1
keys. All functions are pure and jit / vmap.
"""

from __future__ import annotations

import jax.numpy as jnp


def normalized_entropy(patterns) -> jnp.ndarray:
  """Attention entropy of each query divided by its maximum log(k + 1), mean over the batch.

  H_k = −Σ_{j≤k} a_kj log a_kj / log(k + 1) ∈ [0, 1] (0 = hard attention on one key, 1 = uniform).
  The first query has one key and no choice: its value is defined as 0.

  Args:
    patterns: [B, H, T, T].

  Returns:
    [H, T].
  """
  length = patterns.shape[-1]
  plogp = jnp.where(patterns > 0, patterns * jnp.log(jnp.where(patterns > 0, patterns, 1.0)), 0.0)
  entropy = -plogp.sum(-1)  # (B, H, T)
  max_entropy = jnp.log(jnp.arange(1, length + 1, dtype=patterns.dtype))  # (T,): log(k+1)
  normalized = jnp.where(max_entropy > 0, entropy / jnp.where(max_entropy > 0, max_entropy, 1.0), 0.0)
  return normalized.mean(0)


def variability(patterns) -> jnp.ndarray:
  """Attention variability Σ_j |a_kj − ā_kj| / (2 Σ_j ā_kj) (Vig & Belinkov 2019), ā the batch
  mean, averaged over the batch: 0 = the same pattern for every input, at most 1. [H, T]."""
  mean = patterns.mean(0, keepdims=True)  # (1, H, T, T)
  deviation = jnp.abs(patterns - mean).sum(-1)  # (B, H, T)
  return (deviation / (2.0 * mean.sum(-1))).mean(0)


def offset_attention(patterns, offset: int) -> jnp.ndarray:
  """Mean attention from query k to key k − offset ([H, T]; 0 where k < offset).

  ``offset=0`` is self-attention, ``offset=1`` previous-token attention."""
  diagonal = jnp.diagonal(patterns, offset=-offset, axis1=-2, axis2=-1)  # (B, H, T - offset)
  padded = jnp.pad(diagonal, [(0, 0), (0, 0), (offset, 0)])
  return padded.mean(0)


def key_set_attention(patterns, key_mask) -> jnp.ndarray:
  """Mean total attention from each query to the keys where ``key_mask`` [T] is true. [H, T]."""
  return (patterns * key_mask.astype(patterns.dtype)).sum(-1).mean(0)


def attention_at(patterns, query_positions, key_positions) -> jnp.ndarray:
  """Mean over the batch of a[b, h, q_b, k_b] for per-sequence positions [B]: shape [H]."""
  rows = jnp.take_along_axis(patterns, query_positions[:, None, None, None], axis=2)[:, :, 0]
  return jnp.take_along_axis(rows, key_positions[:, None, None], axis=2)[:, :, 0].mean(0)


def composition_scores(w_ov_1, w_qk_2, w_ov_2) -> dict:
  """Q-, K- and V-composition between every layer-1 head and every layer-2 head.

  Row-vector convention (TransformerLens): W_OV = W_V W_O and W_QK = W_Q W_Kᵀ, both [D, D], a
  head reading ``x W``. score(A, B) = ‖A B‖_F / (‖A‖_F ‖B‖_F) with A = W_OV¹ and B = W_QK² (Q),
  W_QK²ᵀ (K) or W_OV² (V) (Elhage et al. 2021). It is 0 when what head 1 writes is orthogonal to
  what head 2 reads, 1 for identical rank-one maps, 1/√r for identical rank-r projections.

  Args:
    w_ov_1: [H1, D, D]. w_qk_2, w_ov_2: [H2, D, D].

  Returns:
    {"q_composition", "k_composition", "v_composition"}: each [H1, H2].
  """
  norm = lambda m: jnp.sqrt((m ** 2).sum((-2, -1)))

  def score(left, right):
    product = jnp.einsum("aij,bjk->abik", left, right)  # (H1, H2, D, D)
    return norm(product) / (norm(left)[:, None] * norm(right)[None, :])

  return {"q_composition": score(w_ov_1, w_qk_2),
          "k_composition": score(w_ov_1, jnp.swapaxes(w_qk_2, -1, -2)),
          "v_composition": score(w_ov_1, w_ov_2)}
