"""The one module that talks to orbax.

A run's ``checkpoints/`` directory is an orbax ``CheckpointManager`` directory with one step
directory per saved step, each holding two items: ``params`` (the model parameters, a flax
pytree) and ``opt_state`` (the optimizer state). Only finalised steps are listed, so a save that
was interrupted is never seen. Paths may be local or ``gs://`` (orbax uses tensorstore).
"""

from __future__ import annotations

import contextlib
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxdev.errors import CheckpointError


def _path(directory) -> epath.Path:
  path = epath.Path(directory)
  if "://" not in str(directory):
    path = path.absolute()
  return path


def open_manager(directory, *, create: bool = True, async_save: bool = True,
                 independent: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over ``directory`` that keeps every step it is asked to save.

  Args:
    directory: local path or ``gs://`` URL.
    create: create the directory if missing.
    async_save: save in a background thread.
    independent: this process reads on its own, without synchronising with other processes
      of a multi-host runtime (each host reads the same files; used by the LLC sweep).
  """
  multiprocessing = ocp.options.MultiprocessingOptions()
  if independent and jax.process_count() > 1:
    index = jax.process_index()
    multiprocessing = ocp.options.MultiprocessingOptions(
        primary_host=index, active_processes={index}, barrier_sync_key_prefix=f"reader{index}")
  options = ocp.CheckpointManagerOptions(
      create=create, max_to_keep=None, enable_async_checkpointing=async_save,
      multiprocessing_options=multiprocessing)
  return ocp.CheckpointManager(_path(directory), options=options, item_names=("params", "opt_state"))


@contextlib.contextmanager
def finishing(manager: ocp.CheckpointManager):
  """Closes ``manager`` when the block ends, after its saves in flight are durable. When the block
  raises (a full disk, an interrupt), the saves in flight are still waited for (their own errors
  dropped: the block's is the one raised), so that no writer thread outlives the manager."""
  try:
    yield manager
  except BaseException:
    with contextlib.suppress(Exception):
      manager.wait_until_finished()
    with contextlib.suppress(Exception):
      manager.close()
    raise
  manager.wait_until_finished()
  manager.close()


#: Room a save asks for beyond twice its arrays: orbax's metadata files of one step.
SAVE_MARGIN_BYTES = 1 << 20


def check_room(directory, step: int, tree) -> None:
  """Raises CheckpointError unless the local file system of ``directory`` has room for a save of
  ``tree`` at ``step`` (twice its arrays' bytes plus :data:`SAVE_MARGIN_BYTES`): a full disk is
  then one error before the writers start, not one inside orbax's threads. URLs are not
  checked."""
  if "://" in str(directory):
    return
  needed = 2 * sum(int(x.nbytes) for x in jax.tree.leaves(tree)) + SAVE_MARGIN_BYTES
  free = shutil.disk_usage(str(directory)).free
  if free < needed:
    raise CheckpointError(
        f"no room for the checkpoint at step {step} in {directory}: it needs about "
        f"{needed / 1e6:.1f} MB, {free / 1e6:.1f} MB are free; make room and run the same "
        "command again (what was finished is kept)")


def save(manager: ocp.CheckpointManager, step: int, params, opt_state) -> None:
  """Saves (possibly asynchronously) params and optimizer state at ``step``.

  Raises:
    CheckpointError: no room for it (:func:`check_room`); nothing is written then.
  """
  check_room(manager.directory, step, (params, opt_state))
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state)), force=True)


def abstract_like(tree, sharding):
  """``jax.ShapeDtypeStruct`` leaves of ``tree``, all placed with ``sharding`` (a restore target)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore(manager: ocp.CheckpointManager, step: int, abstract_params, abstract_opt_state):
  """Restores (params, opt_state) at ``step`` into the structure of the abstract targets."""
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract_params),
      opt_state=ocp.args.StandardRestore(abstract_opt_state)))
  return restored["params"], restored["opt_state"]


def restore_newest(manager: ocp.CheckpointManager, abstract_params, abstract_opt_state, *,
                   damaged_dir: str):
  """Restores the newest step that reads back; damaged newer steps are moved out of the way.

  A step that fails to restore (orbax raises many types for missing or corrupt files) is moved
  to ``damaged_dir/STEP`` (never deleted), so that training can write that step again.

  Args:
    manager: the run's CheckpointManager.
    abstract_params, abstract_opt_state: restore targets (see :func:`abstract_like`).
    damaged_dir: where damaged step directories go.

  Returns:
    (step, params, opt_state, skipped): step is None (and params, opt_state None) when no
    step reads back; skipped lists (step, reason) of the damaged steps, newest first.

  Raises:
    CheckpointError: a step is damaged in a multi-process runtime (where moving it is not safe);
      the message names the directory to remove.
  """
  skipped = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      params, opt_state = restore(manager, step, abstract_params, abstract_opt_state)
    except Exception as err:  # pylint: disable=broad-except
      path = _path(manager.directory) / str(step)
      reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
      if jax.process_count() > 1:
        raise CheckpointError(f"checkpoint {path} could not be read ({reason}); remove that "
                              "directory to resume from the previous checkpoint") from None
      target = _path(damaged_dir) / str(step)
      target.parent.mkdir(parents=True, exist_ok=True)
      if target.exists():
        target = _path(damaged_dir) / f"{step}-{len(list(target.parent.iterdir()))}"
      path.rename(target)
      skipped.append((int(step), f"{reason} (moved to {target})"))
      continue
    if skipped:
      manager.reload()
    return int(step), params, opt_state, skipped
  if skipped:
    manager.reload()
  return None, None, None, skipped


def list_steps(directory) -> list[int]:
  """Sorted steps with a complete checkpoint under ``directory`` ([] if none or missing)."""
  path = _path(directory)
  if not path.exists():
    return []
  with open_manager(path, create=False, async_save=False, independent=True) as manager:
    return sorted(int(s) for s in manager.all_steps())


class ParamsReader:
  """Reads the parameters of individual steps of one run.

  Args:
    directory: the run's ``checkpoints/`` directory.
    abstract_params: a pytree of ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``) giving
      the structure to restore into; leaves come back as host-local arrays.
  """

  def __init__(self, directory, abstract_params: Any):
    self._manager = open_manager(directory, create=False, async_save=False, independent=True)
    # Restore onto this process's first device: without a sharding orbax would reuse the saved
    # one, which names devices of the process that wrote the checkpoint.
    self._abstract = abstract_like(
        abstract_params, jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))

  def steps(self) -> list[int]:
    return sorted(int(s) for s in self._manager.all_steps())

  def read(self, step: int):
    """Parameters at ``step``; raises CheckpointError naming the step if it cannot be read."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(self._abstract)))
    except Exception as err:  # orbax raises many types for missing/corrupt files
      raise CheckpointError(f"checkpoint at step {step} could not be read: {err}") from err
    return restored["params"]

  def close(self):
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
