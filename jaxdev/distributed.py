"""Multi-host start-up and device meshes.

On a multi-host TPU slice every host runs the same command; ``maybe_initialize`` joins them into
one JAX runtime. It acts only when asked through the environment (the single switch below), so a
single-host run never calls ``jax.distributed.initialize``. On Cloud TPU the coordinator, process
count and id are discovered automatically; elsewhere (e.g. several processes on one machine) they
come from the variables below.

Environment variables (read only by :func:`maybe_initialize`):
  JAXDEV_DISTRIBUTED=1        initialise the distributed runtime.
  JAXDEV_COORDINATOR=host:port, JAXDEV_NUM_PROCESSES=N, JAXDEV_PROCESS_ID=i
                              optional explicit cluster description.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

DISTRIBUTED_ENV = "JAXDEV_DISTRIBUTED"
_initialized = False


def maybe_initialize(environ: Mapping[str, str] | None = None) -> bool:
  """Calls ``jax.distributed.initialize()`` once if ``JAXDEV_DISTRIBUTED`` is set to 1/true.

  Args:
    environ: the environment to read (defaults to ``os.environ``).

  Returns:
    True if this process is (now) part of a multi-process runtime.
  """
  global _initialized
  environ = os.environ if environ is None else environ
  if environ.get(DISTRIBUTED_ENV, "").lower() not in ("1", "true", "yes"):
    return False
  if not _initialized:
    kwargs = {}
    if "JAXDEV_COORDINATOR" in environ:
      kwargs = dict(coordinator_address=environ["JAXDEV_COORDINATOR"],
                    num_processes=int(environ["JAXDEV_NUM_PROCESSES"]),
                    process_id=int(environ["JAXDEV_PROCESS_ID"]))
    jax.distributed.initialize(**kwargs)
    _initialized = True
  return True


def is_main_process() -> bool:
  """True on the process that writes results (process 0)."""
  return jax.process_index() == 0


def global_array(host_array, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global jax.Array with ``sharding`` from a host array that every process holds identically
  (each process places the pieces its own devices hold)."""
  host_array = np.asarray(host_array)
  return jax.make_array_from_callback(host_array.shape, sharding, lambda index: host_array[index])


def sweep_mesh(num_chains: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ("ckpt", "chain") mesh over ``devices`` (default: every device of every host).

  The chain axis gets the largest share of devices that divides ``num_chains``; the rest go to
  the checkpoint axis. One device gives a 1 × 1 mesh.
  """
  devices = list(jax.devices() if devices is None else devices)
  num_devices = len(devices)
  chain_size = math.gcd(num_devices, num_chains)
  grid = np.asarray(devices, dtype=object).reshape(num_devices // chain_size, chain_size)
  return Mesh(grid, ("ckpt", "chain"))


def main_process_raises(error: Exception | None, what: str) -> None:
  """Raises process 0's ``error`` (None: nothing went wrong) on every process.

  Process 0 raises its own error; the others raise a :class:`jaxdev.errors.UserError` pointing to
  it, instead of waiting for process 0 in a later collective. Collective in a multi-process
  runtime (every process must call it).
  """
  failed = error is not None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    failed = bool(multihost_utils.broadcast_one_to_all(np.int32(failed)))
  if error is not None:
    raise error
  if failed:
    from jaxdev import errors  # pylint: disable=import-outside-toplevel
    raise errors.UserError(f"process 0 could not {what} (its error line says why)")
