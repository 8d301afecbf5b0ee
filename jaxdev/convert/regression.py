"""The authors' in-context regression transformer -> ``RegressionTransformer`` params.

Hoogland et al. train ``InContextRegressionTransformer`` (timaeus-research/icl,
``icl/regression/model.py``), whose ``token_sequence_transformer`` is their ``DTransformer``.
Its state dict (keys with or without the leading ``token_sequence_transformer.``; PyTorch
``Linear`` weights are ``[out, in]``, jaxdev kernels ``[in, out]``)::

  token_embedding.weight [C, D+1]              wte/kernel (transposed)
  postn_embedding.weight [C, T]                wpe [T, C] (transposed: a Linear on one-hot positions)
  blocks.{i}.layer_norms.0.weight / .bias      block_{i}/ln1/scale / bias
  blocks.{i}.attention.attention.weight [3C, C]  block_{i}/attn/qkv/kernel [C, 3C] (permuted, below)
  blocks.{i}.attention.output.weight [C, C]    block_{i}/attn/proj/kernel (transposed)
  blocks.{i}.layer_norms.1.weight / .bias      block_{i}/ln2/scale / bias
  blocks.{i}.compute.0.weight / .bias          block_{i}/fc/kernel / bias
  blocks.{i}.compute.2.weight / .bias          block_{i}/fc_out/kernel / bias
  unembedding.0.weight / .bias                 ln_f/scale / bias
  unembedding.1.weight / .bias                 head/kernel / bias

The fused qkv: their projection's output is viewed as ``(B, T, H, 3·c)`` and split on the last
axis, so output feature ``h·3c + s·c + i`` is component ``i`` of the query (s = 0), key (1) or
value (2) of head ``h``. jaxdev splits it as ``(B, T, 3, H, c)``: feature ``s·C + h·c + i``. The
kernel's columns are permuted accordingly. The causal-mask buffers are dropped.

Their ``DTransformer`` adds each block's output to the block's input (``x = x + block(x)``),
and the block's output already holds its input (``x + attn + mlp``): the stream entering the next
block is ``2x + attn + mlp``. The converted params are therefore for
``RegressionTransformer(double_residual=True)`` (``model.double_residual = True`` in a config,
which :func:`model_section` sets); with the standard residual they compute another function.

Their options ``layer_norm=False`` and ``include_output=False`` (the paper's runs use both
True) give models jaxdev's architecture does not have and are refused.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from jaxdev.convert.common import (ConversionError, check_no_extra, shape_of, strip_prefix,
                                   take)

PREFIX = "token_sequence_transformer."


def _num_blocks(state_dict) -> int:
  blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
  if not blocks or blocks != set(range(len(blocks))):
    raise ConversionError(f"state dict has blocks {sorted(blocks)}, not 0..num_layers-1")
  return len(blocks)


def model_config(state_dict: Mapping[str, Any], origin: str = "state dict") -> dict:
  """The sizes in the authors' regression state dict: num_layers, embed_dim, mlp_dim (fields of
  a ``configs/regression.py`` model section), num_tokens (2K) and token_dim (D + 1). The number
  of heads cannot be read from the fused weights and must come from the model's config."""
  state_dict = strip_prefix(state_dict, PREFIX)
  width, token_dim = shape_of(state_dict, "token_embedding.weight", 2, origin)
  num_tokens = shape_of(state_dict, "postn_embedding.weight", 2, origin)[1]
  mlp_dim = shape_of(state_dict, "blocks.0.compute.0.weight", 2, origin)[0]
  return dict(num_layers=_num_blocks(state_dict), embed_dim=width, mlp_dim=mlp_dim,
              num_tokens=num_tokens, token_dim=token_dim)


def model_section(state_dict: Mapping[str, Any], num_heads: int,
                  origin: str = "state dict") -> dict:
  """The ``configs/regression.py`` model section (num_layers, num_heads, embed_dim, mlp_dim,
  double_residual) of the jaxdev model that computes what the authors' state dict does."""
  sizes = model_config(state_dict, origin)
  return dict(num_layers=sizes["num_layers"], num_heads=int(num_heads),
              embed_dim=sizes["embed_dim"], mlp_dim=sizes["mlp_dim"], double_residual=True)


def fused_qkv_kernel(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """jaxdev's qkv kernel ``[C, 3C]`` ([q | k | v], heads inside each) from the authors' fused
  weight ``[3C, C]`` (per head [q | k | v])."""
  width = weight.shape[1]
  head_dim = width // num_heads
  kernel = weight.T.reshape(width, num_heads, 3, head_dim)  # (C, H, s, c): their feature order
  return np.ascontiguousarray(kernel.transpose(0, 2, 1, 3).reshape(width, 3 * width))  # (C, s, H, c)


def from_token_sequence_transformer(state_dict: Mapping[str, Any], num_heads: int,
                                    origin: str = "state dict") -> dict:
  """``RegressionTransformer`` params (float32 numpy) from the authors' regression state dict.

  Args:
    state_dict: ``InContextRegressionTransformer.state_dict()`` (or its
      ``token_sequence_transformer``'s), torch tensors or arrays.
    num_heads: attention heads per block (the model config's ``num_heads``).
    origin: how error messages name the state dict (e.g. its file).

  Raises:
    ConversionError: an entry is missing or misshapen, ``num_heads`` does not divide the width,
      or the model lacks the layer norms or the attention output projection.
  """
  state_dict = strip_prefix(state_dict, PREFIX)
  sizes = model_config(state_dict, origin)
  width, mlp_dim, token_dim = sizes["embed_dim"], sizes["mlp_dim"], sizes["token_dim"]
  if num_heads <= 0 or width % num_heads:
    raise ConversionError(f"{origin}: num_heads {num_heads} does not divide the width {width}")
  if "unembedding.1.weight" not in state_dict and "unembedding.weight" in state_dict:
    raise ConversionError(f"{origin} is a model without layer norms (layer_norm=False), which "
                          "jaxdev's RegressionTransformer does not have")
  if "blocks.0.attention.output.weight" not in state_dict:
    raise ConversionError(f"{origin} is a model without the attention output projection "
                          "(include_output=False), which jaxdev's RegressionTransformer has")
  used = set()

  def get(key, shape):
    used.add(key)
    return take(state_dict, key, shape, origin)

  def linear(key, fan_in, fan_out, bias=True):
    out = {"kernel": np.ascontiguousarray(get(key + ".weight", (fan_out, fan_in)).T)}
    if bias:
      out["bias"] = get(key + ".bias", (fan_out,))
    return out

  def layer_norm(key):
    return {"scale": get(key + ".weight", (width,)), "bias": get(key + ".bias", (width,))}

  params = {
      "wte": linear("token_embedding", token_dim, width, bias=False),
      "wpe": np.ascontiguousarray(get("postn_embedding.weight", (width, sizes["num_tokens"])).T),
  }
  for i in range(sizes["num_layers"]):
    prefix = f"blocks.{i}."
    qkv = get(prefix + "attention.attention.weight", (3 * width, width))
    params[f"block_{i}"] = {
        "ln1": layer_norm(prefix + "layer_norms.0"),
        "attn": {"qkv": {"kernel": fused_qkv_kernel(qkv, num_heads)},
                 "proj": linear(prefix + "attention.output", width, width, bias=False)},
        "ln2": layer_norm(prefix + "layer_norms.1"),
        "fc": linear(prefix + "compute.0", width, mlp_dim),
        "fc_out": linear(prefix + "compute.2", mlp_dim, width),
    }
  params["ln_f"] = layer_norm("unembedding.0")
  params["head"] = linear("unembedding.1", width, token_dim)
  check_no_extra(state_dict, used, (".causal_mask",), origin,
                 "the regression transformer of jaxdev")
  return params
