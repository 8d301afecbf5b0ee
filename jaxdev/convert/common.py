"""Shared pieces of the PyTorch converters: tensors to numpy, reading checkpoint files, errors."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from jaxdev.errors import UserError

#: State-dict entries that hold a model nested inside a training checkpoint, tried in order.
NESTED_KEYS = ("model", "state_dict", "model_state_dict")


class ConversionError(UserError, ValueError):
  """A state dict, checkpoint file or model config does not describe a model jaxdev can load."""


def to_numpy(value) -> np.ndarray:
  """A tensor (torch or array-like) as a numpy array; floating tensors become float32."""
  if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    value = value.numpy()
  array = np.asarray(value)
  return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def model_state_dict(checkpoint: Mapping[str, Any], origin: str = "state dict") -> Mapping[str, Any]:
  """The model's state dict inside ``checkpoint``: the checkpoint itself, or the entry
  ``model`` / ``state_dict`` / ``model_state_dict`` of a training checkpoint that holds one.

  Raises:
    ConversionError: ``checkpoint`` is not a mapping of names to tensors.
  """
  if not isinstance(checkpoint, Mapping):
    raise ConversionError(f"{origin} holds a {type(checkpoint).__name__}, not a state dict")
  for key in NESTED_KEYS:
    if isinstance(checkpoint.get(key), Mapping):
      checkpoint = checkpoint[key]
      break
  if not checkpoint or not all(isinstance(k, str) and hasattr(v, "shape")
                               for k, v in checkpoint.items()):
    raise ConversionError(f"{origin} is not a state dict (a mapping of names to tensors)")
  return checkpoint


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict:
  """``state_dict`` without ``prefix`` on its keys, if every key carries it."""
  if state_dict and all(k.startswith(prefix) for k in state_dict):
    return {k[len(prefix):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def take(state_dict: Mapping[str, Any], key: str, shape: tuple, origin: str) -> np.ndarray:
  """Entry ``key`` as a float32 array of ``shape``.

  Raises:
    ConversionError: the entry is missing or has another shape.
  """
  if key not in state_dict:
    raise ConversionError(f"{origin} has no entry {key!r}")
  array = to_numpy(state_dict[key])
  if tuple(array.shape) != tuple(shape):
    raise ConversionError(f"{origin}: {key!r} has shape {tuple(array.shape)}, expected {tuple(shape)}")
  return array


def shape_of(state_dict: Mapping[str, Any], key: str, ndim: int, origin: str) -> tuple:
  """The shape of entry ``key``, which must exist and have ``ndim`` axes."""
  if key not in state_dict:
    raise ConversionError(f"{origin} has no entry {key!r}")
  shape = tuple(int(n) for n in state_dict[key].shape)
  if len(shape) != ndim:
    raise ConversionError(f"{origin}: {key!r} has shape {shape}, expected {ndim} axes")
  return shape


def check_no_extra(state_dict: Mapping[str, Any], used: set, ignored_suffixes: tuple,
                   origin: str, what: str) -> None:
  """Raises ConversionError if ``state_dict`` holds parameters beyond ``used`` (entries ending
  in one of ``ignored_suffixes`` are buffers and are ignored)."""
  extra = sorted(k for k in state_dict if k not in used and not k.endswith(ignored_suffixes))
  if extra:
    shown = ", ".join(repr(k) for k in extra[:4]) + (", ..." if len(extra) > 4 else "")
    raise ConversionError(f"{origin} has entries {what} does not have: {shown}")


def load_torch_file(path: str):
  """The object saved in a PyTorch checkpoint file (``torch.save`` or safetensors), on the CPU.

  Only tensors and plain containers are unpickled (``weights_only=True``): a checkpoint cannot
  run code when it is read.

  Raises:
    ConversionError: the file is missing or cannot be read; the message names it.
  """
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  try:
    if path.endswith(".safetensors"):
      from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
      return load_file(path)
    import torch  # pylint: disable=import-outside-toplevel
    return torch.load(path, map_location="cpu", weights_only=True)
  except ImportError as err:
    raise ConversionError(f"reading {path} needs PyTorch: pip install 'jaxdev[torch]' ({err})") from None
  except Exception as err:  # torch raises many types for damaged or foreign files
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise ConversionError(f"{path} is not a readable PyTorch checkpoint ({message})") from None
