"""The in-context linear regression transformer (docs/methods.md, "The settings").

A NanoGPT-style pre-LayerNorm transformer without dropout. The defaults are the paper's model:
2 blocks, 4 heads of size 16, width 64, 16 positions, 5-wide tokens — exactly 51,717 parameters.

Initialisation follows PyTorch's defaults for the reference implementation: every Linear weight
and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); LayerNorm scale 1 and bias 0. The learned position
embedding is the reference's ``Linear(16 -> 64, bias=False)`` applied to one-hot positions, i.e. a
[16, 64] table initialised with fan_in = 16.

Tokenisation and read-out (which turn (x, y) sequences into model inputs and model outputs into
predictions) live in :mod:`jaxdev.data.regression`.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdev import errors
from jaxdev.models.layers import check_layer, dense, leaf_masks


def torch_uniform(fan_in: int):
  """Initializer U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for nn.Linear."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Linear(nn.Module):
  """A dense layer with PyTorch-default initialisation. Kernel shape [in, out]; the product in
  ``matmul_dtype`` (None: float32) with float32 sums (:func:`jaxdev.models.layers.dense`)."""

  features: int
  use_bias: bool = True
  matmul_dtype: str | None = None

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param("kernel", torch_uniform(fan_in), (fan_in, self.features))
    y = dense(x, kernel, self.matmul_dtype)
    if self.use_bias:
      y = y + self.param("bias", torch_uniform(fan_in), (self.features,))
    return y


def _attention(q, k, v, query_stride):
  length = k.shape[-2]
  scores = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])  # (..., Tq, T)
  query_pos = jnp.arange(0, length, query_stride)[:, None]  # (Tq, 1)
  causal = jnp.arange(length)[None, :] <= query_pos  # (Tq, T)
  weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
  return weights @ v, weights


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def causal_attention(q, k, v, query_stride: int = 1):
  """Causal softmax attention; returns (output [..., Tq, hs], weights [..., Tq, T]).

  q: [..., Tq, hs], the queries at positions 0, s, 2s, ... (s = query_stride); k, v: [..., T, hs].
  Query i attends to keys 0..i·s. The gradient is written out so that every product in it is
  a plain batched matmul (contracting the last axis of its left operand): XLA's CPU backend runs
  the transposed-operand products autodiff would produce several times slower.
  """
  return _attention(q, k, v, query_stride)


def _attention_fwd(q, k, v, query_stride):
  out, weights = _attention(q, k, v, query_stride)
  return (out, weights), (q, k, v, weights)


def _transposed(x):
  # Materialized, so that XLA does not fold the transpose back into the next product.
  return jax.lax.optimization_barrier(x.swapaxes(-1, -2))


def _attention_bwd(query_stride, residuals, cotangents):
  del query_stride  # masked weights are exactly 0, so the mask needs no second application
  q, k, v, weights = residuals
  d_out, d_weights = cotangents
  d_weights = d_out @ v.swapaxes(-1, -2) + d_weights  # (..., Tq, T)
  d_v = _transposed(weights) @ d_out
  d_scores = weights * (d_weights - (d_weights * weights).sum(-1, keepdims=True))
  d_scores = d_scores / math.sqrt(q.shape[-1])
  return d_scores @ k, _transposed(d_scores) @ q, d_v


causal_attention.defvjp(_attention_fwd, _attention_bwd)


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention with a fused qkv projection and no biases."""

  num_heads: int
  matmul_dtype: str | None = None

  @nn.compact
  def __call__(self, x, query_stride: int = 1):
    batch, length, width = x.shape  # (B, T, C)
    head_dim = width // self.num_heads
    qkv = Linear(3 * width, use_bias=False, matmul_dtype=self.matmul_dtype, name="qkv")(x)
    # Heads to a leading batch axis once, so both products are plain batched matmuls.
    qkv = qkv.reshape(batch, length, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0][:, :, ::query_stride], qkv[1], qkv[2]  # (B, nh, Tq, hs), (B, nh, T, hs)
    out, weights = causal_attention(q, k, v, query_stride)  # (B, nh, Tq, hs), (B, nh, Tq, T)
    self.sow("intermediates", "attention", weights)
    out = out.transpose(0, 2, 1, 3)  # (B, Tq, nh, hs)
    out = out.reshape(batch, out.shape[1], width)  # (B, Tq, C)
    return Linear(width, use_bias=False, matmul_dtype=self.matmul_dtype, name="proj")(out)


class Block(nn.Module):
  """Pre-LayerNorm transformer block: x += Attn(LN(x)); x += MLP(LN(x))."""

  num_heads: int
  mlp_dim: int
  matmul_dtype: str | None = None

  @nn.compact
  def __call__(self, x, query_stride: int = 1):
    width = x.shape[-1]
    x = x[:, ::query_stride] + CausalSelfAttention(
        self.num_heads, self.matmul_dtype, name="attn")(
            nn.LayerNorm(epsilon=1e-5, name="ln1")(x), query_stride)
    h = nn.LayerNorm(epsilon=1e-5, name="ln2")(x)
    h = Linear(self.mlp_dim, matmul_dtype=self.matmul_dtype, name="fc")(h)
    h = nn.relu(h)
    h = Linear(width, matmul_dtype=self.matmul_dtype, name="fc_out")(h)
    return x + h


class RegressionTransformer(nn.Module):
  """The paper's in-context regression transformer.

  Attributes:
    num_layers: number of transformer blocks.
    num_heads: attention heads per block.
    embed_dim: residual-stream width.
    mlp_dim: hidden width of each block's MLP.
    max_len: number of positions (2K tokens for K examples).
    token_dim: width of input and output tokens (D + 1).
    double_residual: add each block's output, which already holds its input, to its input once
      more (``x <- x + block(x)``, so the stream entering block l+1 is 2x + attn + mlp), as the
      authors' ``DTransformer`` does; False (the default) is the standard ``x <- block(x)``.
      Only needed to load their checkpoints (:mod:`jaxdev.convert.regression`).
    matmul_dtype: the precision of the inputs of every dense layer's product: "float32" (None)
      or "bfloat16" (mixed precision: operands rounded to bfloat16, products summed in float32;
      parameters, LayerNorm, attention and every output stay float32).

  Call with tokens of shape [B, T, token_dim] (T <= max_len); returns outputs of the same shape.
  With ``output_stride=s`` only the outputs at positions 0, s, 2s, ... are computed
  ([B, ceil(T/s), token_dim]): the last block then forms queries, MLP and head only there, which
  is exact (causal attention) and saves work when only those positions are read out (s = 2 for
  the x-positions of regression). Attention patterns are sown into the "intermediates"
  collection as [B, heads, Tq, T] per block.
  """

  num_layers: int = 2
  num_heads: int = 4
  embed_dim: int = 64
  mlp_dim: int = 64
  max_len: int = 16
  token_dim: int = 5
  double_residual: bool = False
  matmul_dtype: str | None = None

  @nn.compact
  def __call__(self, tokens, output_stride: int = 1):
    length = tokens.shape[-2]
    x = Linear(self.embed_dim, use_bias=False, matmul_dtype=self.matmul_dtype,
               name="wte")(tokens)  # (B, T, C)
    wpe = self.param("wpe", torch_uniform(self.max_len), (self.max_len, self.embed_dim))
    x = x + wpe[:length]  # (B, T, C)
    for i in range(self.num_layers):
      stride = output_stride if i == self.num_layers - 1 else 1
      out = Block(self.num_heads, self.mlp_dim, self.matmul_dtype,
                  name=f"block_{i}")(x, stride)  # (B, T or Tq, C)
      x = x[:, ::stride] + out if self.double_residual else out
    x = nn.LayerNorm(epsilon=1e-5, name="ln_f")(x)
    return Linear(self.token_dim, matmul_dtype=self.matmul_dtype,
                  name="head")(x)  # (B, T or Tq, token_dim)


#: The matmul input precisions the model offers (sums and parameters stay float32).
MATMUL_DTYPES = ("float32", "bfloat16")


def check_config(model_config) -> None:
  """Raises ConfigError unless a ``model`` section (num_layers, num_heads, embed_dim, mlp_dim)
  describes a model that can be built."""
  errors.require_positive("model", model_config, ("num_layers", "embed_dim", "num_heads", "mlp_dim"))
  if model_config.embed_dim % model_config.num_heads:
    raise errors.ConfigError("config.model.embed_dim must be divisible by config.model.num_heads")


def build_model(model_config, *, max_len: int = 16, token_dim: int = 5,
                matmul_dtype: str = "float32") -> RegressionTransformer:
  """A model from a config section with fields num_layers, num_heads, embed_dim, mlp_dim (and
  ``matmul_dtype``, one of :data:`MATMUL_DTYPES`: see :class:`RegressionTransformer`).

  Raises:
    ConfigError: an unknown ``matmul_dtype``.
  """
  if matmul_dtype not in MATMUL_DTYPES:
    raise errors.ConfigError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {matmul_dtype!r}")
  return RegressionTransformer(
      num_layers=model_config.num_layers,
      num_heads=model_config.num_heads,
      embed_dim=model_config.embed_dim,
      mlp_dim=model_config.mlp_dim,
      max_len=max_len,
      token_dim=token_dim,
      double_residual=bool(model_config.get("double_residual", False)),
      matmul_dtype=None if matmul_dtype == "float32" else matmul_dtype,
  )


def head_mask(model_config, params, layer: int, head: int):
  """The weights of attention head ``head`` of block ``layer`` (both 0-based), as a mask.

  The fused ``block_l/attn/qkv/kernel`` [C, 3C] gives head h the columns ``s·C + h·d_h + j``
  (s = 0, 1, 2 for its query, key and value; j < d_h = C / num_heads), and
  ``block_l/attn/proj/kernel`` [C, C] reads head h's output from the rows ``h·d_h + j``: 4·C·d_h
  weights in all (the model has no attention biases).

  Args:
    model_config: the model section the model was built from (num_layers, num_heads).
    params: the parameters, or their structure (``jax.eval_shape`` of the init).
    layer, head: the block and the head.

  Returns:
    A pytree like ``params``: boolean arrays of the two kernels' shapes, scalar False elsewhere
    (the ``mask`` of :func:`jaxdev.sgld.estimate_llc`).

  Raises:
    ConfigError: no such layer or head.
  """
  check_layer(model_config, layer)
  num_heads = model_config.num_heads
  if not 0 <= head < num_heads:
    raise errors.ConfigError(f"head {head} is out of range: each layer has {num_heads} "
                             f"head(s), 0 to {num_heads - 1}")
  width = model_config.embed_dim
  head_dim = width // num_heads
  owner = lambda index: (index % width) // head_dim == head  # noqa: E731  # index -> its head
  qkv = np.broadcast_to(owner(np.arange(3 * width))[None, :], (width, 3 * width)).copy()
  proj = np.broadcast_to(owner(np.arange(width))[:, None], (width, width)).copy()
  return leaf_masks(params, {(f"block_{layer}", "attn", "qkv", "kernel"): qkv,
                              (f"block_{layer}", "attn", "proj", "kernel"): proj})


def layer_mask(model_config, params, layer: int):
  """Every attention weight of block ``layer`` (its qkv and proj kernels), as a mask like
  :func:`head_mask`'s: the union of the masks of its heads.

  Raises:
    ConfigError: no such layer.
  """
  check_layer(model_config, layer)
  return leaf_masks(params, {(f"block_{layer}", "attn", "qkv", "kernel"): np.bool_(True),
                              (f"block_{layer}", "attn", "proj", "kernel"): np.bool_(True)})


def count_params(params) -> int:
  """Total number of scalar parameters in a pytree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))
