"""Weight masks from descriptions: which parameters the chains sample, named by parameter path.

A mask spec describes the coordinates a chain moves; every other coordinate stays at w* (the
weight-restricted LLC of :func:`jaxdev.sgld.build_kernel`). It is a string or a sequence of
strings, each a *selector*; a string may hold several selectors separated by commas. A
coordinate is sampled when any selector selects it. A selector is

- ``PATTERN`` (or ``glob:PATTERN``): every parameter whose path matches the shell-style pattern
  (:func:`fnmatch.fnmatchcase`; ``*`` also crosses ``/``). A path is the parameter's keys joined
  by ``/``, e.g. ``block_0/attn/qkv/kernel``; ``*attn*`` selects every attention weight.
- ``KIND:ARGUMENT``: a selector of another kind, looked up in the ``selectors`` mapping given to
  :func:`resolve_mask`. A kind is a function ``(argument, params) -> mask`` that may select parts
  of a parameter (for example one attention head of one layer, which only the model knows how
  to find), returning a pytree like ``params`` of boolean arrays broadcastable to each leaf.
  The settings' models give ``head:L.H`` (head H of layer L, 0-based) and ``layer:L`` (every
  attention weight of layer L) as ``jaxdev.tasks.model_for(config).mask_selectors``.

Every selector must select something (a typo should not silently sample nothing). Example::

  mask = sgld.resolve_mask("*attn*,head/*", params)  # a pytree of numpy bools, like params
  result = sgld.estimate_llc(loss_fn, params, data, key, mask=mask, ...)
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Mapping, Optional, Sequence, Union

import jax
import numpy as np

from jaxdev.errors import ConfigError

PyTree = object
MaskSpec = Union[None, str, Sequence[str]]
Selector = Callable[[str, PyTree], PyTree]


def parameter_path(key_path) -> str:
  """The ``/``-joined path of a ``jax.tree_util`` key path (dict keys, attributes, indices)."""
  parts = []
  for entry in key_path:
    for attribute in ("key", "name", "idx"):
      if hasattr(entry, attribute):
        parts.append(str(getattr(entry, attribute)))
        break
    else:
      parts.append(str(entry))
  return "/".join(parts)


def parameter_paths(params: PyTree) -> list:
  """The path of every leaf of ``params``, in leaf order."""
  return [parameter_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def parse_mask(spec: MaskSpec) -> Optional[tuple]:
  """A mask spec in its canonical form: a tuple of selectors, or None for "every weight".

  ``None``, ``""`` and an empty sequence mean every weight; commas separate selectors within a
  string; surrounding spaces are dropped.

  Raises:
    ConfigError: the spec is not a string or a sequence of strings.
  """
  if spec is None:
    return None
  items = [spec] if isinstance(spec, str) else spec
  try:
    items = list(items)
  except TypeError:
    raise ConfigError(f"mask must be a string or a list of strings, got {spec!r}") from None
  selectors = []
  for item in items:
    if not isinstance(item, str):
      raise ConfigError(f"mask must be a string or a list of strings, got {spec!r}")
    selectors += [part.strip() for part in item.split(",") if part.strip()]
  return tuple(selectors) or None


def glob_selector(pattern: str, params: PyTree) -> PyTree:
  """The parameters whose path matches ``pattern`` (a pytree of boolean scalars)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  return jax.tree_util.tree_unflatten(
      treedef, [np.bool_(fnmatch.fnmatchcase(parameter_path(p), pattern)) for p, _ in flat])


SELECTORS: Mapping[str, Selector] = {"glob": glob_selector}


def index_argument(argument: str, names: Sequence[str]) -> tuple:
  """The non-negative integers of a selector argument written ``I.J...``, one per name.

  For example ``index_argument("1.0", ("LAYER", "HEAD")) == (1, 0)`` (the argument of
  ``head:1.0``). Whether the indices exist is for the selector kind to check.

  Raises:
    ConfigError: not exactly ``len(names)`` non-negative integers separated by dots.
  """
  parts = argument.strip().split(".")
  if len(parts) != len(names) or not all(part.isascii() and part.isdigit() for part in parts):
    raise ConfigError(f"expected {'.'.join(names)} (non-negative integers separated by dots), "
                      f"got {argument!r}")
  return tuple(int(part) for part in parts)


def resolve_mask(spec: MaskSpec, params: PyTree,
                 selectors: Optional[Mapping[str, Selector]] = None) -> Optional[PyTree]:
  """The boolean mask a spec describes, for the parameters ``params``.

  Args:
    spec: a mask spec (see the module docstring); None or empty for every weight.
    params: the parameters, or their structure (anything with ``.shape`` leaves, e.g.
      ``jax.eval_shape`` of the model's init).
    selectors: extra selector kinds, ``{kind: fn(argument, params) -> boolean pytree}``, added
      to ``glob``.

  Returns:
    None (every weight) or a pytree like ``params`` of numpy boolean arrays, each broadcastable
    to its parameter: True where the chains move, the ``mask`` argument of the sampler.

  Raises:
    ConfigError: an unknown selector kind, a selector its kind refuses (e.g. a head the model
      does not have), or a selector that selects nothing (every message starts with "mask").
  """
  selectors_ = parse_mask(spec)
  if selectors_ is None:
    return None
  kinds = {**SELECTORS, **(selectors or {})}
  shapes = [tuple(np.shape(x)) for x in jax.tree.leaves(params)]
  treedef = jax.tree.structure(params)
  union = [np.zeros((), bool) for _ in shapes]
  for selector in selectors_:
    kind, sep, argument = selector.partition(":")
    if not sep:
      kind, argument = "glob", selector
    if kind not in kinds:
      raise ConfigError(f"mask selector {selector!r}: unknown kind {kind!r} (known: "
                        f"{', '.join(sorted(kinds))})")
    try:
      chosen = kinds[kind](argument, params)
    except ConfigError as err:  # e.g. a head the model does not have
      raise ConfigError(f"mask selector {selector!r}: {err}") from None
    try:
      leaves = treedef.flatten_up_to(chosen)
    except (ValueError, TypeError):
      raise ConfigError(f"mask selector {selector!r} did not give a mask like the parameters") \
          from None
    leaves = [np.asarray(m, bool) for m in leaves]
    if not any(m.any() for m in leaves):
      paths = parameter_paths(params)
      raise ConfigError(f"mask selector {selector!r} selects no parameter (paths are like "
                        f"{', '.join(paths[:3])})")
    union = [np.logical_or(u, m) for u, m in zip(union, leaves)]
  for mask, shape in zip(union, shapes):
    try:
      np.broadcast_to(mask, shape)
    except ValueError:
      raise ConfigError(f"mask of shape {mask.shape} does not fit a parameter of shape "
                        f"{shape}") from None
  return jax.tree.unflatten(treedef, union)


def num_selected(mask: Optional[PyTree], params: PyTree) -> int:
  """How many coordinates of ``params`` a resolved mask samples (all of them for None)."""
  if mask is None:
    return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(params)))
  return int(sum(np.broadcast_to(m, np.shape(x)).sum()
                 for m, x in zip(jax.tree.leaves(mask), jax.tree.leaves(params))))
