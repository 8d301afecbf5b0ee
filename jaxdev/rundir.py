"""Files of a run directory, written so that a kill at any moment leaves them consistent.

Layout (see README "Run directory")::

  config.json              the training config
  checkpoints/             orbax checkpoints (see jaxdev.checkpoints)
  ed_outputs/steps.npy     int64 [T]: scheduled ED probe steps
  ed_outputs/outputs.npy   float32 [T, *probe_shape]; only the first ``num_written`` rows are valid
  ed_outputs/progress.json {"num_written": n}
  metrics.jsonl            one JSON object per line, each with "step" and "split"
  baselines.json           reference losses on the evaluation set
  done                     written when training has finished
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterable

import numpy as np


class RunDirError(RuntimeError):
  """A run directory cannot be used as asked (clear, one-line message)."""


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def _atomic_file(path: str, mode: str, suffix: str):
  """Yields a temporary file beside ``path`` and renames it onto ``path`` once fully written."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` via a temporary file and rename: readers see old or new, never half."""
  with _atomic_file(path, "w", os.path.basename(path)) as f:
    f.write(text)


def atomic_save_npz(path: str, **arrays) -> None:
  """Saves arrays as an .npz via a temporary file and rename."""
  with _atomic_file(path, "wb", ".npz") as f:
    np.savez(f, **arrays)


def _diff(a, b, prefix="") -> list[str]:
  """Paths at which two JSON-like dicts differ."""
  out = []
  for key in sorted(set(a) | set(b)):
    name = f"{prefix}{key}"
    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
      out += _diff(a[key], b[key], name + ".")
    elif a.get(key) != b.get(key):
      out.append(f"{name}: {a.get(key)!r} vs {b.get(key)!r}")
  return out


def prepare(workdir: str, config_dict: dict) -> bool:
  """Creates ``workdir`` or checks it belongs to this config. Returns True if it already existed.

  Raises:
    RunDirError: the directory cannot be created or written, or holds a run of another config.
  """
  if "://" in workdir:
    raise RunDirError(f"workdir {workdir} is a URL; give a local or mounted path (mount a "
                      "bucket with gcsfuse to keep runs on Cloud Storage)")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as err:
    raise RunDirError(f"cannot create workdir {workdir}: {err.strerror}") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise RunDirError(f"workdir {workdir} is not writable")
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      existing = json.load(f)
    differences = _diff(existing, config_dict)
    if differences:
      raise RunDirError(
          f"workdir {workdir} holds a run with a different config ({'; '.join(differences[:3])}); "
          "use another --workdir")
    return True
  atomic_write_text(path, json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
  return False


def read_jsonl(path: str) -> list[dict]:
  """All complete JSON lines of ``path`` ([] if missing). A torn last line is ignored."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      if not line.endswith("\n"):
        break
      records.append(json.loads(line))
  return records


def truncate_jsonl(path: str, before_step: int) -> None:
  """Keeps only the records with step < ``before_step`` (atomically)."""
  kept = [r for r in read_jsonl(path) if r["step"] < before_step]
  atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class JsonlWriter:
  """Appends one JSON object per line and flushes each line."""

  def __init__(self, path: str, enabled: bool = True):
    self._file = open(path, "a") if enabled else None

  def write(self, record: dict) -> None:
    if self._file is not None:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


class ProbeStore:
  """The ED probe: row i of ``outputs.npy`` holds the probe at ``steps[i]``.

  The array is a preallocated .npy memory map; ``progress.json`` says how many leading rows are
  valid. Rows are only counted as written after they are flushed, so a killed run that resumes
  from an earlier checkpoint rewrites (bitwise identically) what it had not counted.
  """

  def __init__(self, directory: str, steps: Iterable[int], row_shape: tuple, enabled: bool = True):
    self.directory = directory
    self.steps = np.asarray(list(steps), dtype=np.int64)
    self.enabled = enabled
    self._index = {int(s): i for i, s in enumerate(self.steps)}
    self._array = None
    if not enabled:
      return
    os.makedirs(directory, exist_ok=True)
    outputs = os.path.join(directory, "outputs.npy")
    shape = (len(self.steps),) + tuple(row_shape)
    if os.path.exists(outputs):
      self._array = np.lib.format.open_memmap(outputs, mode="r+")
      if self._array.shape != shape:
        raise RunDirError(f"{outputs} has shape {self._array.shape}, expected {shape}")
    else:
      np.save(os.path.join(directory, "steps.npy"), self.steps)
      tmp = os.path.join(directory, ".tmp-outputs.npy")
      array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
      array.flush()
      del array
      os.replace(tmp, outputs)
      self._array = np.lib.format.open_memmap(outputs, mode="r+")
      self._write_progress(0)

  def wants(self, step: int) -> bool:
    return int(step) in self._index

  def write(self, step: int, row) -> None:
    if self.enabled:
      self._array[self._index[int(step)]] = np.asarray(row, dtype=np.float32)

  def commit(self, step: int) -> None:
    """Flushes and marks every row with probe step <= ``step`` as valid."""
    if self.enabled:
      self._array.flush()
      self._write_progress(int(np.searchsorted(self.steps, step, side="right")))

  def _write_progress(self, num_written: int) -> None:
    atomic_write_text(os.path.join(self.directory, "progress.json"),
                      json.dumps({"num_written": num_written}) + "\n")
