"""Preconditioners of the SGLD step as init/update pairs, in the optax manner.

A preconditioner turns the minibatch-loss gradient into an elementwise scale G of the step:
drift (ε/2)·G·∇U and noise √(ε·G)·ξ. ``init(params) -> state`` starts its state and
``update(grad, state) -> (scale, state)`` returns G (None means G ≡ 1) and the new state; the
state lives in :attr:`jaxdev.sgld.SGLDState.precond`.

Example::

  preconditioner = precondition.build("rmsprop")
  state = preconditioner.init(params)                  # V = V₀ (0 unless RMSProp.initial says)
  scale, state = preconditioner.update(grad, state)    # G = 1/(√V + eps), V updated
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxdev.errors import ConfigError
from jaxdev.sgld import checks

PyTree = Any


class RMSProp(NamedTuple):
  """Settings of the RMSProp preconditioner (defaults of devinterp's ``rmsprop_sgld``).

  Two conventions for where the running mean starts are in use: devinterp's ``rmsprop_sgld``
  starts V at 0, so the first steps have G near 1/eps (the largest steps the chain will take);
  Hitchcock & Hoogland ("From global to local", 2025) start it at 1. ``initial`` is V₀.

  Attributes:
    alpha: decay of the running mean of squared minibatch-loss gradients V.
    eps: added to √V; G = 1/(√V + eps) is at most 1/eps.
    initial: V₀ ≥ 0, every coordinate's running mean before the first step (0: devinterp's;
      1: Hitchcock & Hoogland's).
  """
  alpha: float = 0.99
  eps: float = 0.1
  initial: float = 0.0


class Preconditioner(NamedTuple):
  """A preconditioner as a pair of pure functions.

  Attributes:
    init: ``init(params) -> state`` (None for the identity).
    update: ``update(grad, state) -> (scale, state)``: G as a pytree like ``grad`` (None for
      G ≡ 1) and the new state.
  """
  init: Callable[[PyTree], Optional[PyTree]]
  update: Callable[[PyTree, Optional[PyTree]], tuple]


def resolve_preconditioner(preconditioner) -> Optional[RMSProp]:
  """Normalises a preconditioner argument.

  Args:
    preconditioner: None, ``"none"`` or ``"identity"`` (plain SGLD), ``"rmsprop"`` (default
      settings) or an :class:`RMSProp` (0 ≤ alpha < 1, eps > 0, initial ≥ 0).

  Returns:
    None or an :class:`RMSProp` (hashable: usable as a static jit argument).

  Raises:
    ConfigError: any other value, or RMSProp settings out of range.
  """
  if preconditioner is None or (isinstance(preconditioner, str)
                                and preconditioner in ("none", "identity")):
    return None
  if isinstance(preconditioner, str) and preconditioner == "rmsprop":
    return RMSProp()
  if not isinstance(preconditioner, RMSProp):
    raise ConfigError(f"preconditioner must be 'none', 'rmsprop' or an RMSProp(...), got "
                      f"{preconditioner!r}")
  return RMSProp(*checks.check_rmsprop(preconditioner.alpha, preconditioner.eps,
                                       initial=preconditioner.initial))


def identity() -> Preconditioner:
  """Plain SGLD: no state, G ≡ 1."""
  return Preconditioner(init=lambda params: None, update=lambda grad, state: (None, state))


def rmsprop(alpha: float = 0.99, eps: float = 0.1, initial: float = 0.0) -> Preconditioner:
  """RMSProp-SGLD: V ← αV + (1−α)(∇L_m)², G = 1/(√V + eps), elementwise; V starts at
  ``initial``."""

  def init(params):
    return jax.tree.map(lambda x: jnp.full_like(x, initial), params)

  def update(grad, state):
    state = jax.tree.map(lambda v, g: (alpha * v + (1.0 - alpha) * jnp.square(g)).astype(v.dtype),
                         state, grad)
    return jax.tree.map(lambda v: 1.0 / (jnp.sqrt(v) + eps), state), state

  return Preconditioner(init=init, update=update)


def build(preconditioner) -> Preconditioner:
  """The :class:`Preconditioner` for a preconditioner argument (:func:`resolve_preconditioner`)."""
  settings = resolve_preconditioner(preconditioner)
  return identity() if settings is None else rmsprop(*settings)
