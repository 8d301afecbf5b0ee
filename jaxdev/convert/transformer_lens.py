"""TransformerLens ``HookedTransformer`` (attention-only) state dicts <-> ``AttnOnlyTransformer``.

The architecture is the one of the paper's language models: ``HookedTransformerConfig(
attn_only=True, normalization_type="LN", positional_embedding_type="shortformer")``, any
``n_layers``, ``d_model``, ``n_heads``, ``d_head``, ``n_ctx`` and ``d_vocab``. Parameters map one
to one, with the same shapes (:mod:`jaxdev.models.attention` keeps TransformerLens' layout)::

  embed.W_E [V, D]                    W_E
  pos_embed.W_pos [n_ctx, D]          W_pos
  blocks.{l}.ln1.w / .b [D]           ln1_{l}/scale / bias
  blocks.{l}.attn.W_{Q,K,V} [H, D, dh]  attn_{l}/W_{Q,K,V}
  blocks.{l}.attn.b_{Q,K,V} [H, dh]   attn_{l}/b_{Q,K,V}
  blocks.{l}.attn.W_O [H, dh, D]      attn_{l}/W_O
  blocks.{l}.attn.b_O [D]             attn_{l}/b_O
  ln_final.w / .b [D]                 ln_final/scale / bias
  unembed.W_U [D, V], unembed.b_U [V] W_U, b_U

The attention buffers (``blocks.{l}.attn.mask``, ``blocks.{l}.attn.IGNORE``) are not parameters
and are dropped; :func:`to_hooked_transformer` returns the parameters only, so load its result
with ``model.load_state_dict(state_dict, strict=False)`` (the buffers a model builds itself).
Shortformer positions cannot be seen in a state dict: check the model's config with
:func:`check_config`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from jaxdev.convert.common import (ConversionError, check_no_extra, shape_of, strip_prefix,
                                   take)

_BUFFERS = (".mask", ".IGNORE")
_ATTN_WEIGHTS = ("W_Q", "W_K", "W_V")
_ATTN_BIASES = ("b_Q", "b_K", "b_V")


def num_layers(state_dict: Mapping[str, Any]) -> int:
  """The number of blocks ``blocks.{l}.`` in a state dict."""
  layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
  if layers != set(range(len(layers))):
    raise ConversionError(f"state dict has blocks {sorted(layers)}, not 0..n_layers-1")
  return len(layers)


def model_config(state_dict: Mapping[str, Any], origin: str = "state dict") -> dict:
  """The sizes of the model in a HookedTransformer state dict, as the fields of a
  ``configs/language.py`` model section (num_layers, embed_dim, num_heads, head_dim,
  context_length, vocab_size)."""
  state_dict = strip_prefix(state_dict, "model.")
  vocab, width = shape_of(state_dict, "embed.W_E", 2, origin)
  heads, _, head_dim = shape_of(state_dict, "blocks.0.attn.W_Q", 3, origin)
  context = shape_of(state_dict, "pos_embed.W_pos", 2, origin)[0]
  return dict(num_layers=num_layers(state_dict), embed_dim=width, num_heads=heads,
              head_dim=head_dim, context_length=context, vocab_size=vocab)


def from_hooked_transformer(state_dict: Mapping[str, Any], origin: str = "state dict") -> dict:
  """``AttnOnlyTransformer`` params (float32 numpy) from a HookedTransformer state dict.

  Args:
    state_dict: ``HookedTransformer.state_dict()`` (torch tensors or arrays) of an attention-only
      model with LayerNorm; keys may carry a leading ``model.``.
    origin: how error messages name the state dict (e.g. its file).

  Raises:
    ConversionError: an entry is missing or has the wrong shape, or the model has parts
      ``AttnOnlyTransformer`` lacks (MLPs, other normalisations, a separate output vocabulary).
  """
  state_dict = strip_prefix(state_dict, "model.")
  sizes = model_config(state_dict, origin)
  width, heads, head_dim = sizes["embed_dim"], sizes["num_heads"], sizes["head_dim"]
  vocab, context = sizes["vocab_size"], sizes["context_length"]
  used = set()

  def get(key, shape):
    used.add(key)
    return take(state_dict, key, shape, origin)

  params = {"W_E": get("embed.W_E", (vocab, width)),
            "W_pos": get("pos_embed.W_pos", (context, width))}
  for layer in range(sizes["num_layers"]):
    prefix = f"blocks.{layer}."
    params[f"ln1_{layer}"] = {"scale": get(prefix + "ln1.w", (width,)),
                              "bias": get(prefix + "ln1.b", (width,))}
    attn = {name: get(prefix + "attn." + name, (heads, width, head_dim)) for name in _ATTN_WEIGHTS}
    attn.update({name: get(prefix + "attn." + name, (heads, head_dim)) for name in _ATTN_BIASES})
    attn["W_O"] = get(prefix + "attn.W_O", (heads, head_dim, width))
    attn["b_O"] = get(prefix + "attn.b_O", (width,))
    params[f"attn_{layer}"] = attn
  params["ln_final"] = {"scale": get("ln_final.w", (width,)), "bias": get("ln_final.b", (width,))}
  params["W_U"] = get("unembed.W_U", (width, vocab))
  params["b_U"] = get("unembed.b_U", (vocab,))
  check_no_extra(state_dict, used, _BUFFERS, origin,
                 "an attention-only HookedTransformer with LayerNorm")
  return params


def to_hooked_transformer(params: Mapping[str, Any]) -> dict:
  """The HookedTransformer parameters (a state dict of float32 ``torch.Tensor``) of
  ``AttnOnlyTransformer`` params; the inverse of :func:`from_hooked_transformer`, bitwise."""
  import torch  # pylint: disable=import-outside-toplevel

  tensor = lambda x: torch.from_numpy(np.array(x, dtype=np.float32))  # noqa: E731  (a copy)
  layers = sorted(int(k.split("_")[1]) for k in params if k.startswith("attn_"))
  state_dict = {"embed.W_E": tensor(params["W_E"]), "pos_embed.W_pos": tensor(params["W_pos"])}
  for layer in layers:
    prefix = f"blocks.{layer}."
    state_dict[prefix + "ln1.w"] = tensor(params[f"ln1_{layer}"]["scale"])
    state_dict[prefix + "ln1.b"] = tensor(params[f"ln1_{layer}"]["bias"])
    for name in _ATTN_WEIGHTS + ("W_O",) + _ATTN_BIASES + ("b_O",):
      state_dict[prefix + "attn." + name] = tensor(params[f"attn_{layer}"][name])
  state_dict["ln_final.w"] = tensor(params["ln_final"]["scale"])
  state_dict["ln_final.b"] = tensor(params["ln_final"]["bias"])
  state_dict["unembed.W_U"] = tensor(params["W_U"])
  state_dict["unembed.b_U"] = tensor(params["b_U"])
  return state_dict


def check_config(config: Mapping[str, Any], origin: str = "model config") -> None:
  """Raises ConversionError unless a HookedTransformerConfig (as a dict, e.g. ``cfg.to_dict()``
  or a checkpoint's ``config.json``) is the architecture ``AttnOnlyTransformer`` implements."""
  required = {"attn_only": True, "normalization_type": "LN",
              "positional_embedding_type": "shortformer"}
  for key, value in required.items():
    if key in config and config[key] != value:
      raise ConversionError(f"{origin}: {key} is {config[key]!r}; jaxdev's AttnOnlyTransformer "
                            f"needs {value!r}")
  if "positional_embedding_type" not in config:
    raise ConversionError(f"{origin} does not say positional_embedding_type; jaxdev's "
                          "AttnOnlyTransformer needs 'shortformer'")
  for key, expected in (("d_vocab_out", config.get("d_vocab")), ("eps", 1e-5),
                        ("use_attn_scale", True), ("attn_scale", None), ("n_key_value_heads", None),
                        ("rotary_dim", None), ("use_local_attn", False), ("final_rms", False),
                        ("attention_dir", "causal"), ("parallel_attn_mlp", False)):
    value = config.get(key, expected)
    if key == "d_vocab_out" and value in (-1, None):
      continue
    if key == "attn_scale" and value not in (None, -1.0):
      head_dim = config.get("d_head")
      if head_dim is not None and abs(float(value) - float(head_dim) ** 0.5) < 1e-9:
        continue
    if value != expected:
      raise ConversionError(f"{origin}: {key} is {value!r}; jaxdev's AttnOnlyTransformer needs "
                            f"{expected!r}")
