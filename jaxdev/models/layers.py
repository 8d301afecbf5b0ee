"""Pieces shared by the models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdev import errors


def dense(x, w, matmul_dtype=None):
  """``x [..., n] @ w [n, m]`` as one rank-2 matmul, reshaped back to ``[..., m]``.

  The same product as ``x @ w``, written so that its weight gradient is one plain
  ``[n, rows] @ [rows, m]`` matmul: for a rank-3 ``x @ w`` XLA's CPU backend makes a three-axis
  transpose and runs that gradient several times slower. With ``matmul_dtype`` (e.g.
  ``jnp.bfloat16``) both operands are rounded to it and the products summed in float32
  (``preferred_element_type``); the result, like the parameters, stays float32.
  """
  rows = x.reshape(-1, x.shape[-1])
  if matmul_dtype is None or jnp.dtype(matmul_dtype) == jnp.float32:
    out = rows @ w
  else:
    out = jnp.matmul(rows.astype(matmul_dtype), w.astype(matmul_dtype),
                     preferred_element_type=jnp.float32)
  return out.reshape(*x.shape[:-1], w.shape[-1])


def check_layer(model_config, layer: int) -> None:
  """Raises ConfigError unless ``layer`` (0-based) is a layer of the model."""
  if not 0 <= layer < model_config.num_layers:
    raise errors.ConfigError(f"layer {layer} is out of range: the model has "
                             f"{model_config.num_layers} layer(s), 0 to "
                             f"{model_config.num_layers - 1}")


def leaf_masks(params, chosen: dict):
  """A mask like ``params``: ``chosen[path]`` at the paths (tuples of keys) it names, a scalar
  False at every other leaf."""
  def leaf(path, x):
    key = tuple(str(getattr(entry, "key", entry)) for entry in path)
    return chosen.pop(key) if key in chosen else np.bool_(False)
  out = jax.tree_util.tree_map_with_path(leaf, params)
  if chosen:
    raise errors.ConfigError(f"the parameters have no {'/'.join(next(iter(chosen)))}")
  return out
