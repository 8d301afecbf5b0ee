"""The attention-only language model (docs/methods.md, "The settings"), with TransformerLens
conventions.

``AttnOnlyTransformer`` is TransformerLens' ``HookedTransformer`` with ``attn_only=True``,
``normalization_type="LN"`` and ``positional_embedding_type="shortformer"``:

    resid_0 = W_E[tokens]                                  (no positional term in the stream)
    resid_{l+1} = resid_l + Attn_l(q_in = LN_l(resid_l) + W_pos,
                                   k_in = LN_l(resid_l) + W_pos,
                                   v_in = LN_l(resid_l))
    logits = LN_final(resid_L) @ W_U + b_U

The learned positional embedding enters the query and key inputs of every layer (after that
layer's LayerNorm) and nothing else: values, the residual stream and the unembedding never see
position. Each head has Q/K/V biases, each layer an output bias; attention is causal with scale
1/sqrt(d_head); LayerNorm eps is 1e-5. With the defaults (d_model 256, 8 heads of 32, n_ctx 1024,
vocabulary 5,000) the model has exactly 3,355,016 parameters with 2 layers and 3,091,336 with 1:
embedding 1.28 M + positions 262 k + unembedding (with bias) 1.285 M + final LN 512, and per layer
4·256² weights + 4·256 biases + 512 for its LN = 263,680.

Parameter names and shapes follow TransformerLens, so that weight-based indicators (composition
scores, OV / QK circuits) read naturally and TransformerLens checkpoints map one to one
(``blocks.{l}.attn.W_Q`` -> ``attn_{l}/W_Q``, ``blocks.{l}.ln1.w`` -> ``ln1_{l}/scale``, ...):
``W_E [V, D]``, ``W_pos [n_ctx, D]``, ``ln1_{l}/{scale,bias} [D]``,
``attn_{l}/W_{Q,K,V} [H, D, d_head]``, ``attn_{l}/b_{Q,K,V} [H, d_head]``,
``attn_{l}/W_O [H, d_head, D]``, ``attn_{l}/b_O [D]``, ``ln_final/{scale,bias} [D]``,
``W_U [D, V]``, ``b_U [V]``.

Initialisation is TransformerLens' ``init_mode="gpt2"``: every weight matrix (W_E, W_pos, W_Q,
W_K, W_V, W_O, W_U) ~ N(0, initializer_range²) with the default initializer_range =
0.8 / sqrt(d_model) (0.05 for d_model 256); biases 0; LayerNorm scale 1 and bias 0.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdev import errors
from jaxdev.models.layers import check_layer, dense, leaf_masks


class Attention(nn.Module):
  """Causal multi-head attention whose queries and keys may read different inputs from values.

  Attributes:
    num_heads: number of heads H.
    head_dim: width of each head d_head.
    init_std: standard deviation of the weight initialisation.
    dtype: computation dtype (parameters stay float32; softmax runs in float32).
  """

  num_heads: int
  head_dim: int
  init_std: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, qk_input, v_input, return_pattern: bool = False):
    """Returns the attention output [B, T, D] and, if asked, the pattern [B, H, T, T]."""
    width = v_input.shape[-1]
    shape_in = (self.num_heads, width, self.head_dim)
    init = nn.initializers.normal(self.init_std)
    w_q = self.param("W_Q", init, shape_in)  # (H, D, dh)
    w_k = self.param("W_K", init, shape_in)  # (H, D, dh)
    w_v = self.param("W_V", init, shape_in)  # (H, D, dh)
    w_o = self.param("W_O", init, (self.num_heads, self.head_dim, width))  # (H, dh, D)
    zeros = nn.initializers.zeros
    b_q = self.param("b_Q", zeros, (self.num_heads, self.head_dim))  # (H, dh)
    b_k = self.param("b_K", zeros, (self.num_heads, self.head_dim))  # (H, dh)
    b_v = self.param("b_V", zeros, (self.num_heads, self.head_dim))  # (H, dh)
    b_o = self.param("b_O", zeros, (width,))  # (D,)

    cast = lambda x: x.astype(self.dtype)
    qk_input, v_input = cast(qk_input), cast(v_input)
    heads = lambda w: cast(w).transpose(1, 0, 2).reshape(width, -1)  # (H, D, dh) -> (D, H·dh)
    split = lambda x: x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)
    q = split(dense(qk_input, heads(w_q))) + cast(b_q)  # (B, T, H, dh)
    k = split(dense(qk_input, heads(w_k))) + cast(b_k)  # (B, T, H, dh)
    v = split(dense(v_input, heads(w_v))) + cast(b_v)  # (B, T, H, dh)
    if return_pattern:
      scores = jnp.einsum("bqhk,bshk->bhqs", q, k).astype(jnp.float32)  # (B, H, T, T)
      scores = scores / math.sqrt(self.head_dim)
      length = scores.shape[-1]
      causal = jnp.tril(jnp.ones((length, length), dtype=bool))  # (T, T): query >= key
      scores = jnp.where(causal, scores, -jnp.inf)
      pattern = jax.nn.softmax(scores, axis=-1)  # (B, H, T, T)
      z = jnp.einsum("bhqs,bshk->bqhk", pattern.astype(self.dtype), v)  # (B, T, H, dh)
    else:
      # The same computation without materialising the pattern (a fused kernel where the
      # backend has one).
      pattern = None
      z = jax.nn.dot_product_attention(q, k, v, is_causal=True)  # (B, T, H, dh)
    z = z.reshape(*z.shape[:-2], -1)  # (B, T, H·dh)
    out = dense(z, cast(w_o).reshape(-1, width)) + cast(b_o)  # (B, T, D)
    return out, pattern


class AttnOnlyTransformer(nn.Module):
  """Attention-only transformer with shortformer positions (see the module docstring).

  Attributes:
    num_layers: attention layers (1 or 2 in the paper).
    d_model: residual-stream width.
    num_heads: heads per layer.
    head_dim: width of each head.
    n_ctx: number of learned positions (the longest input).
    vocab_size: tokens in the vocabulary (input and output).
    init_std: weight initialisation std; ``None`` = 0.8 / sqrt(d_model) as in TransformerLens.
    dtype: computation dtype, e.g. ``jnp.bfloat16`` on accelerators; logits are float32.
    normalization: ``"LN"`` (the paper's: a LayerNorm before each layer and the unembedding) or
      ``"none"`` (no LayerNorm parameters; each LN above is the identity).

  Call with int tokens ``[B, T]`` (T <= n_ctx). Returns logits ``[B, T, vocab_size]``; with
  ``return_attention=True`` returns ``(logits, patterns)`` with patterns
  ``[num_layers, B, num_heads, T, T]`` from the same forward pass.
  """

  num_layers: int = 2
  d_model: int = 256
  num_heads: int = 8
  head_dim: int = 32
  n_ctx: int = 1024
  vocab_size: int = 5000
  init_std: float | None = None
  dtype: jnp.dtype = jnp.float32
  normalization: str = "LN"

  @nn.compact
  def __call__(self, tokens, return_attention: bool = False):
    length = tokens.shape[-1]
    if length > self.n_ctx:
      raise ValueError(f"sequence length {length} exceeds n_ctx={self.n_ctx}")
    std = self.init_std if self.init_std is not None else 0.8 / math.sqrt(self.d_model)
    init = nn.initializers.normal(std)
    w_e = self.param("W_E", init, (self.vocab_size, self.d_model))  # (V, D)
    w_pos = self.param("W_pos", init, (self.n_ctx, self.d_model))  # (n_ctx, D)
    resid = jnp.take(w_e, tokens, axis=0)  # (B, T, D)
    pos = w_pos[:length]  # (T, D), broadcast over the batch
    patterns = []
    norm = lambda name: ((lambda x: x) if self.normalization == "none"
                         else nn.LayerNorm(epsilon=1e-5, name=name))
    for layer in range(self.num_layers):
      normed = norm(f"ln1_{layer}")(resid)  # (B, T, D)
      attn = Attention(self.num_heads, self.head_dim, std, self.dtype, name=f"attn_{layer}")
      out, pattern = attn(normed + pos, normed, return_pattern=return_attention)  # (B, T, D)
      resid = resid + out.astype(resid.dtype)  # (B, T, D)
      patterns.append(pattern)
    normed = norm("ln_final")(resid)  # (B, T, D)
    w_u = self.param("W_U", init, (self.d_model, self.vocab_size))  # (D, V)
    b_u = self.param("b_U", nn.initializers.zeros, (self.vocab_size,))  # (V,)
    logits = dense(normed.astype(self.dtype), w_u.astype(self.dtype))  # (B, T, V)
    logits = logits.astype(jnp.float32) + b_u  # (B, T, V)
    if return_attention:
      return logits, jnp.stack(patterns)  # (L, B, H, T, T)
    return logits


def check_config(model_config) -> None:
  """Raises ConfigError unless a ``model`` section (num_layers, num_heads, head_dim, embed_dim,
  context_length, vocab_size) describes a model that can be built."""
  errors.require_positive("model", model_config, ("num_layers", "embed_dim", "num_heads",
                                                  "head_dim", "context_length", "vocab_size"))
  if model_config.get("normalization", "LN") not in ("LN", "none"):
    raise errors.ConfigError(f"model.normalization must be 'LN' or 'none', got "
                             f"{model_config.normalization!r}")


def build_model(model_config) -> AttnOnlyTransformer:
  """A model from a ``configs/language.py`` model section (num_layers, num_heads, head_dim,
  embed_dim, context_length, vocab_size, init_std, dtype)."""
  return AttnOnlyTransformer(
      num_layers=model_config.num_layers,
      d_model=model_config.embed_dim,
      num_heads=model_config.num_heads,
      head_dim=model_config.head_dim,
      n_ctx=model_config.context_length,
      vocab_size=model_config.vocab_size,
      init_std=model_config.get("init_std", None),
      dtype=jnp.dtype(model_config.get("dtype", "float32")),
      normalization=model_config.get("normalization", "LN"),
  )


def next_token_losses(logits, targets):
  """Per-position cross-entropy ``-log p(target)`` [B, T] in nats (float32)."""
  logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (B, T, V)
  return -jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]  # (B, T)


#: The paper's ICL score compares the loss at token 500 with the loss at token 50 of 1,024-token
#: rows, at 48.8 % and 4.9 % of the row. Here each is the mean over a window of positions around
#: that fraction of the row (the input positions in [44 %, 54 %) and [4 %, 6 %) of the row, at
#: least one each): at one position a CPU run's few hundred test rows leave a standard error of
#: ~0.15 nats per position (per-token losses have a std of ~2.5 nats), as large as the effect.
ICL_EARLY = (0.04, 0.06)
ICL_LATE = (0.44, 0.54)


def icl_windows(num_inputs: int) -> tuple[slice, slice]:
  """(early, late) input-position slices of the ICL score for rows of ``num_inputs`` predictions."""
  def window(low, high):
    start = int(low * num_inputs)
    return slice(start, max(int(high * num_inputs), start + 1))
  return window(*ICL_EARLY), window(*ICL_LATE)


def icl_score(loss_per_position):
  """In-context-learning score: mean loss over the late window minus mean loss over the early one
  (nats; negative when later tokens are predicted better). ``loss_per_position`` [T]: the loss at
  each input position, averaged over rows."""
  early, late = icl_windows(loss_per_position.shape[-1])
  return loss_per_position[..., late].mean(-1) - loss_per_position[..., early].mean(-1)


def next_token_loss(params, model: AttnOnlyTransformer, rows):
  """Mean next-token loss of token rows ``[B, L]``: inputs ``rows[:, :-1]``, targets ``rows[:, 1:]``."""
  logits = model.apply({"params": params}, rows[:, :-1])  # (B, L-1, V)
  return next_token_losses(logits, rows[:, 1:]).mean()


def true_next_token_logits(params, model: AttnOnlyTransformer, rows, positions):
  """The essential-dynamics functional proxy for the LM (docs/methods.md, "Essential dynamics").

  Args:
    params: model parameters.
    model: the model.
    rows: token rows ``[N, L]`` (BOS first).
    positions: ``[N]`` input positions in ``[0, L - 2]``, one per row.

  Returns:
    ``[N]``: at each row's position, the logit the model gives to the token that follows there.
  """
  logits = model.apply({"params": params}, rows[:, :-1])  # (N, L-1, V)
  at_position = jnp.take_along_axis(logits, positions[:, None, None], axis=1)[:, 0]  # (N, V)
  targets = jnp.take_along_axis(rows, positions[:, None] + 1, axis=1)  # (N, 1)
  return jnp.take_along_axis(at_position, targets, axis=1)[:, 0]  # (N,)


def head_mask(model_config, params, layer: int, head: int):
  """The weights of attention head ``head`` of layer ``layer`` (both 0-based), as a mask.

  Head h owns the slices ``[h]`` of ``attn_l/W_Q``, ``W_K``, ``W_V`` [H, D, d_head], ``W_O``
  [H, d_head, D] and ``b_Q``, ``b_K``, ``b_V`` [H, d_head]: 4·D·d_head weights and 3·d_head
  biases. The output bias ``b_O`` [D] is shared by the layer's heads and belongs to none.

  Args:
    model_config: the model section the model was built from (num_layers, num_heads,
      embed_dim, head_dim).
    params: the parameters, or their structure (``jax.eval_shape`` of the init).
    layer, head: the layer and the head.

  Returns:
    A pytree like ``params``: boolean arrays of the seven parameters' shapes, scalar False
    elsewhere (the ``mask`` of :func:`jaxdev.sgld.estimate_llc`).

  Raises:
    ConfigError: no such layer or head.
  """
  check_layer(model_config, layer)
  num_heads, width, head_dim = model_config.num_heads, model_config.embed_dim, model_config.head_dim
  if not 0 <= head < num_heads:
    raise errors.ConfigError(f"head {head} is out of range: each layer has {num_heads} "
                             f"head(s), 0 to {num_heads - 1}")
  ours = np.arange(num_heads) == head  # (H,)
  shapes = {"W_Q": (width, head_dim), "W_K": (width, head_dim), "W_V": (width, head_dim),
            "W_O": (head_dim, width), "b_Q": (head_dim,), "b_K": (head_dim,), "b_V": (head_dim,)}
  return leaf_masks(params, {
      (f"attn_{layer}", name): np.broadcast_to(ours.reshape(-1, *[1] * len(shape)),
                                               (num_heads, *shape)).copy()
      for name, shape in shapes.items()})


def layer_mask(model_config, params, layer: int):
  """Every attention weight of layer ``layer``: the parameters of its heads (:func:`head_mask`)
  and its output bias ``b_O``, as a mask like ``params``.

  Raises:
    ConfigError: no such layer.
  """
  check_layer(model_config, layer)
  names = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
  return leaf_masks(params, {(f"attn_{layer}", name): np.bool_(True) for name in names})


def count_params(params) -> int:
  """Total number of scalar parameters in a pytree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))
