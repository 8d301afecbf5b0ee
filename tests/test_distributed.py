"""Distributed start-up switch and meshes."""

import jax

from jaxdev import distributed


def test_maybe_initialize_is_off_unless_asked():
  assert distributed.maybe_initialize({}) is False
  assert distributed.maybe_initialize({"JAXDEV_DISTRIBUTED": "0"}) is False


def test_sweep_mesh_shapes():
  assert dict(distributed.sweep_mesh(4).shape) == {"ckpt": 2, "chain": 4}
  assert dict(distributed.sweep_mesh(10).shape) == {"ckpt": 4, "chain": 2}
  assert dict(distributed.sweep_mesh(3).shape) == {"ckpt": 8, "chain": 1}
  assert dict(distributed.sweep_mesh(4, jax.devices()[:1]).shape) == {"ckpt": 1, "chain": 1}
