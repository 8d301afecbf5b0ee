"""The run directory: the one place that knows its layout, and writes that survive a kill.

``RunDir(workdir)`` names every file of a run and reads each one validated: a damaged file is a
:class:`RunDirError` naming it (and the line, for ``metrics.jsonl``), never a traceback or a
silently different number. Layout (see docs/run-directory.md)::

  config.json                      the training config
  identity.json                    the run's identity: run_id, config_sha256, origin, created
  checkpoints/                     orbax checkpoints (see jaxdev.checkpoints)
  damaged-checkpoints/STEP/        checkpoints that no longer read back, moved aside on resume
  metrics.jsonl                    one JSON object per line, each with "step" and "split"
  metrics.jsonl.damaged            lines of metrics.jsonl that did not read back, set aside
  ed_outputs/steps.npy             int64 [T]: scheduled ED probe steps
  ed_outputs/outputs.npy           float32 [T, *probe_shape]; the first ``num_written`` rows are valid
  ed_outputs/progress.json         {"num_written": n}
  baselines.json                   reference losses on the evaluation set
  done                             {"num_steps": n}, written when training has finished
  llc/NAME/settings.json           the SGLD settings of sweep NAME
  llc/NAME/step_XXXXXXXX.npz       the LLC estimate at one checkpoint (see jaxdev.llc)
  llc/NAME/failed.json             checkpoints the sweep could not read, with the reason
  indicators/NAME/settings.json    the settings of indicator set NAME
  indicators/NAME/step_XXXXXXXX.npz  the indicators at one checkpoint
  indicators/summary.{csv,json}    the indicators of every checkpoint, one row per step
  evaluations/step_XXXXXXXX.npz    an imported run's evaluation and ED probe row at one checkpoint
  stages.json                      stages detected from the LLC curve
  forms.json                       forms found in the essential dynamics
  figures/*.png                    figures of the analysis
  calibration/                     SGLD calibration grids and figures
  .lock, llc/NAME/.lock, ...       who is writing: training holds the run's, a sweep or indicator
                                   set its record directory's (see WriteLock)

Every file is written whole (temporary file + rename), so a kill leaves the old or the new
version, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import uuid
import zipfile
from typing import Iterable

import numpy as np

from jaxdev.errors import RunDirError

CONFIG = "config.json"
IDENTITY = "identity.json"
CHECKPOINTS = "checkpoints"
DAMAGED_CHECKPOINTS = "damaged-checkpoints"
METRICS = "metrics.jsonl"
ED_PROBE = "ed_outputs"
BASELINES = "baselines.json"
DONE = "done"
LLC = "llc"
INDICATORS = "indicators"
EVALUATIONS = "evaluations"
STAGES = "stages.json"
FORMS = "forms.json"
FIGURES = "figures"
CALIBRATION = "calibration"
SETTINGS = "settings.json"
FAILED = "failed.json"
SHARED_CHECK = ".shared-check"
LOCK = ".lock"
DAMAGED_SUFFIX = ".damaged"
_PROBE_STEPS, _PROBE_OUTPUTS, _PROBE_PROGRESS = "steps.npy", "outputs.npy", "progress.json"
_RECORD_PREFIX, _RECORD_SUFFIX = "step_", ".npz"

#: Every name above: no other module of the package spells them.
FILE_NAMES = (CONFIG, IDENTITY, METRICS, ED_PROBE, BASELINES, STAGES, FORMS, SETTINGS, FAILED,
              SHARED_CHECK, LOCK, _PROBE_STEPS, _PROBE_OUTPUTS, _PROBE_PROGRESS)


class LockedError(RunDirError):
  """Another process is writing the same output (the message names it)."""


class WriteLock:
  """One writer per output: an advisory ``fcntl.flock`` on ``DIRECTORY/.lock``.

  The file holds the holder's pid, host, command and start time, so that a second writer is
  refused with one line naming the first; it is removed on release. The operating system drops
  the lock when its holder exits, killed or not: a lock file left behind by a killed process is
  simply taken by the next writer. Where the file system has no ``flock`` (some network mounts),
  writing goes on unlocked.

  Use as a context manager, or :meth:`acquire` / :meth:`release`. ``enabled=False`` (a process
  that writes nothing, e.g. not process 0) makes it do nothing.

  Raises (from :meth:`acquire`):
    LockedError: another process holds the lock.
    RunDirError: the lock file cannot be created.
  """

  def __init__(self, directory: str, what: str, enabled: bool = True):
    self.directory = os.fspath(directory)
    self.path = os.path.join(self.directory, LOCK)
    self.what = what
    self.enabled = enabled
    self._file = None

  def acquire(self) -> "WriteLock":
    if not self.enabled or self._file is not None:
      return self
    makedirs(self.directory)
    while True:
      try:
        handle = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
      except OSError as err:
        raise RunDirError(f"cannot create the lock {self.path}: {err.strerror}") from None
      try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        try:
          info = json.loads(holder)
          who = (f"pid {info['pid']} on {info['host']} since {info['since']}: "
                 f"{info['command']}")
        except (ValueError, KeyError, TypeError):
          who = "another process"
        raise LockedError(f"{self.what} in {self.directory} is being written by {who}; wait for "
                          "it to finish or stop it") from None
      except OSError:  # no flock here (e.g. some network file systems): go on unlocked
        handle.close()
        return self
      try:
        same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      handle.close()  # the holder released and removed it while we opened it: try again
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(),
        "since": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) or "python"}) + "\n")
    handle.flush()
    self._file = handle
    return self

  def release(self) -> None:
    """Removes the lock file and releases the lock (a no-op when not held)."""
    if self._file is not None:
      with contextlib.suppress(OSError):
        os.unlink(self.path)
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  @property
  def held(self) -> bool:
    return self._file is not None

  def __enter__(self) -> "WriteLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

  def __del__(self):
    try:
      self.release()
    except Exception:  # pylint: disable=broad-except  (interpreter shutdown; the OS releases it)
      pass


def umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def _atomic_file(path: str, mode: str, suffix: str):
  """Yields a temporary file beside ``path`` and renames it onto ``path`` once fully written.

  Raises:
    RunDirError: the file cannot be written (read-only place, full disk); ``path`` is unchanged.
  """
  directory = os.path.dirname(os.path.abspath(path))
  try:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
  except OSError as err:
    raise RunDirError(f"cannot write {path}: {err.strerror}") from None
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files; give the usual permissions
    os.replace(tmp, path)
  except OSError as err:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise RunDirError(f"cannot write {path}: {err.strerror}") from None
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` via a temporary file and rename: readers see old or new, never half."""
  with _atomic_file(path, "w", os.path.basename(path)) as f:
    f.write(text)


def atomic_write_json(path: str, record) -> None:
  """Writes a JSON-serialisable ``record`` (indented, one trailing newline) atomically."""
  atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def atomic_save_figure(figure, path: str, **savefig_kwargs) -> None:
  """Saves a matplotlib figure as ``path`` (its format from the suffix) atomically: a failure
  (a full disk) leaves the old file, never a truncated one."""
  fmt = os.path.splitext(path)[1].lstrip(".") or "png"
  with _atomic_file(path, "wb", os.path.basename(path)) as f:
    figure.savefig(f, format=fmt, **savefig_kwargs)


def atomic_save_npz(path: str, **arrays) -> None:
  """Saves arrays as an .npz via a temporary file and rename."""
  with _atomic_file(path, "wb", ".npz") as f:
    np.savez(f, **arrays)


def read_json(path: str, what: str = "file", advice: str = "restore or remove it"):
  """The JSON value in ``path``; a file that does not parse is a RunDirError naming it (and
  saying what to do: ``advice``)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as err:
    raise RunDirError(f"{what} {path} is damaged (not JSON: {err}); {advice}") from None
  except OSError as err:
    raise RunDirError(f"cannot read {path}: {err.strerror}") from None


def makedirs(path: str) -> None:
  """``os.makedirs(path, exist_ok=True)``; failure is a RunDirError naming the path."""
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as err:
    raise RunDirError(f"cannot create directory {path}: {err.strerror or err}") from None


def check_writable(path: str) -> None:
  """Raises RunDirError unless files can be created in directory ``path`` (or in the nearest
  existing directory above it, which the writer will create it from)."""
  probe = os.path.abspath(path)
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise RunDirError(f"cannot write into {path}: {probe} is not a directory")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise RunDirError(f"cannot write into {path}: {probe} is not writable")


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


def read_jsonl(path: str) -> list[dict]:
  """All complete JSON lines of ``path`` ([] if missing). A torn last line (no newline, as a
  kill leaves it) is ignored.

  Raises:
    RunDirError: a complete line is not a JSON object with a "step"; names file and line.
  """
  if not os.path.exists(path):
    return []
  if not os.path.isfile(path):  # a pipe or a device would block or never end
    raise RunDirError(f"{path} is not a regular file")
  records = []
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      if not raw.endswith(b"\n"):
        break
      record = _parse_line(raw)
      if not _is_record(record):
        raise RunDirError(f"{path} line {number} is damaged (not a JSON record with a step); "
                          f"analysing the run (scripts/analyze.py) or resuming its training "
                          f"moves such lines to {os.path.basename(path)}{DAMAGED_SUFFIX}, "
                          "deleting nothing")
      records.append(record)
  return records


def _is_number(value) -> bool:
  return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_record(record) -> bool:
  """A metrics record: an int "step", a string "split" and numbers (or lists of numbers, or
  null) for everything else."""
  return (isinstance(record, dict) and isinstance(record.get("step"), int)
          and not isinstance(record["step"], bool)
          and isinstance(record.get("split", ""), str)
          and all(_is_number(v) or (isinstance(v, list) and all(map(_is_number, v)))
                  for k, v in record.items() if k not in ("step", "split")))


def _parse_line(raw: bytes):
  try:
    return json.loads(raw.decode("utf-8"))
  except (ValueError, UnicodeDecodeError):
    return None


def set_aside_damaged_lines(path: str) -> int:
  """Moves the complete lines of the JSONL file ``path`` that are not JSON records with a step to
  ``path + ".damaged"`` (appended, byte for byte) and rewrites ``path`` without them, both
  atomically; a torn last line stays. Returns how many lines were moved (0: nothing written)."""
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    lines = f.readlines()
  kept, damaged = [], []
  for raw in lines:
    complete = raw.endswith(b"\n")
    (kept if not complete or _is_record(_parse_line(raw)) else damaged).append(raw)
  if damaged:
    side = path + DAMAGED_SUFFIX
    previous = open(side, "rb").read() if os.path.exists(side) else b""
    with _atomic_file(side, "wb", os.path.basename(side)) as f:
      f.write(previous + b"".join(damaged))
    with _atomic_file(path, "wb", os.path.basename(path)) as f:
      f.write(b"".join(kept))
  return len(damaged)


def truncate_jsonl(path: str, before_step: int) -> None:
  """Keeps only the records with step < ``before_step`` (atomically)."""
  kept = [r for r in read_jsonl(path) if r["step"] < before_step]
  atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class JsonlWriter:
  """Appends one JSON object per line and flushes each line."""

  def __init__(self, path: str, enabled: bool = True):
    try:
      self._file = open(path, "a") if enabled else None
    except OSError as err:
      raise RunDirError(f"cannot write {path}: {err.strerror}") from None

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
    makedirs(directory)
    outputs = os.path.join(directory, _PROBE_OUTPUTS)
    shape = (len(self.steps),) + tuple(row_shape)
    if os.path.exists(outputs):
      try:
        np.lib.format.open_memmap(outputs, mode="r")  # "r+" would silently zero-extend a short file
        self._array = np.lib.format.open_memmap(outputs, mode="r+")
      except (ValueError, OSError) as err:
        raise RunDirError(f"ED probe {outputs} is damaged ({err}); remove {directory} and the "
                          "run's checkpoints to train again") from None
      if self._array.shape != shape:
        raise RunDirError(f"{outputs} has shape {self._array.shape}, expected {shape}")
    else:
      np.save(os.path.join(directory, _PROBE_STEPS), self.steps)
      tmp = os.path.join(directory, ".tmp-" + _PROBE_OUTPUTS)
      array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
      array.flush()
      del array
      allocate(tmp)
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
    atomic_write_text(os.path.join(self.directory, _PROBE_PROGRESS),
                      json.dumps({"num_written": num_written}) + "\n")


def allocate(path: str) -> None:
  """Gives the file ``path`` its disk blocks now, so that writing into it later (through a memory
  map, where a full disk is a SIGBUS, not an error) cannot run out of space.

  Raises:
    OSError: ENOSPC (or another error of the file system) now, instead.
  """
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    if hasattr(os, "posix_fallocate") and size:
      try:
        os.posix_fallocate(f.fileno(), 0, size)
        return
      except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
          raise
    # No fallocate here: write back what is there (zeros), which allocates the blocks.
    chunk = 1 << 20
    for start in range(0, size, chunk):
      data = f.read(min(chunk, size - start))
      f.seek(start)
      f.write(data)
    f.flush()
    os.fsync(f.fileno())


def sha256_of(record) -> str:
  """The SHA-256 (hex) of a JSON-serialisable record, keys sorted: the same for a record and
  its JSON round trip."""
  text = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True)
  return hashlib.sha256(text.encode()).hexdigest()


#: Members of a record that say what made it (:meth:`RecordDir.write` adds them from
#: ``provenance``; :meth:`RecordDir.read` leaves them out, :meth:`RecordDir.provenance` reads them).
PROVENANCE = ("_run_id", "_settings_sha256", "_settings")


class RecordDir:
  """A directory of per-checkpoint records, ``step_XXXXXXXX.npz``, next to ``settings.json``.

  Used for LLC sweeps (``llc/NAME``), indicator sets (``indicators/NAME``) and an imported run's
  evaluations (``evaluations``). Each record is
  written atomically; reading one reads and checks every member, so a damaged file is found
  when read (and :meth:`damaged` lists those a resumed computation should redo).
  """

  def __init__(self, path: str):
    self.path = os.fspath(path)
    self.settings_path = os.path.join(self.path, SETTINGS)
    self.failed_path = os.path.join(self.path, FAILED)

  def record_path(self, step: int) -> str:
    return os.path.join(self.path, f"{_RECORD_PREFIX}{int(step):08d}{_RECORD_SUFFIX}")

  def steps(self) -> list[int]:
    """Sorted steps that have a record file (damaged or not)."""
    if not os.path.isdir(self.path):
      return []
    steps = []
    for name in os.listdir(self.path):
      stem = name[len(_RECORD_PREFIX):-len(_RECORD_SUFFIX)]
      if name.startswith(_RECORD_PREFIX) and name.endswith(_RECORD_SUFFIX) and stem.isdigit():
        steps.append(int(stem))
    return sorted(steps)

  def has(self, step: int) -> bool:
    return os.path.exists(self.record_path(step))

  def read(self, step: int, required: Iterable[str] = ("step",)) -> dict:
    """Every array of the record at ``step``, all read and checked.

    Raises:
      RunDirError: the file is damaged (not a readable .npz, a member missing or unreadable, or
        the step inside differs from the name); the message names the file.
    """
    path = self.record_path(step)
    try:
      with np.load(path, allow_pickle=False) as data:
        record = {name: np.asarray(data[name]) for name in data.files}
      provenance = {name: record.pop(name) for name in PROVENANCE if name in record}
      if provenance and (set(provenance) != set(PROVENANCE) or not isinstance(
          json.loads(str(provenance["_settings"])), dict)):
        raise ValueError("its provenance members are incomplete")
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
      raise RunDirError(f"{path} is damaged ({type(err).__name__}: {err}); run the same "
                        "command again to recompute it") from None
    missing = [name for name in required if name not in record]
    if missing:
      raise RunDirError(f"{path} is damaged (no {', '.join(missing)}); run the same command "
                        "again to recompute it")
    if "step" in record and int(record["step"]) != int(step):
      raise RunDirError(f"{path} holds step {int(record['step'])}, not {step}; remove it")
    return record

  def damaged(self, steps: Iterable[int], required: Iterable[str] = ("step",)) -> dict:
    """{step: message} for the records among ``steps`` that exist but do not read back."""
    out = {}
    for step in steps:
      if self.has(step):
        try:
          self.read(step, required)
        except RunDirError as err:
          out[int(step)] = str(err)
    return out

  def write(self, step: int, arrays: dict, provenance: dict | None = None) -> None:
    """Writes the record of ``step`` (a dict of arrays) atomically, with ``provenance``
    ({"run_id", "settings"}: the run and the settings that made it) as members of its own."""
    makedirs(self.path)
    extra = {}
    if provenance is not None:
      extra = {"_run_id": np.str_(provenance["run_id"]),
               "_settings_sha256": np.str_(sha256_of(provenance["settings"])),
               "_settings": np.str_(json.dumps(provenance["settings"], sort_keys=True))}
    atomic_save_npz(self.record_path(step), **arrays, **extra)

  def provenance(self, step: int) -> dict | None:
    """{"run_id", "settings_sha256", "settings"} of the record at ``step`` (None for a record
    written without them).

    Raises:
      RunDirError: the file or its provenance members do not read back.
    """
    path = self.record_path(step)
    try:
      with np.load(path, allow_pickle=False) as data:
        if "_run_id" not in data.files:
          return None
        out = {"run_id": str(data["_run_id"]), "settings_sha256": str(data["_settings_sha256"]),
               "settings": json.loads(str(data["_settings"]))}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
      raise RunDirError(f"{path} is damaged ({type(err).__name__}: {err}); run the same "
                        "command again to recompute it") from None
    return out

  def load(self, keys: Iterable[str]) -> dict:
    """{key: array over records} for ``keys``, sorted by step ({} if there are none)."""
    keys = tuple(keys)
    records = [self.read(step, keys) for step in self.steps()]
    if not records:
      return {}
    return {k: np.array([r[k] for r in records]) for k in keys}

  def settings(self) -> dict | None:
    """The recorded settings (None if none were written)."""
    if not os.path.exists(self.settings_path):
      return None
    record = read_json(self.settings_path, "settings")
    if not isinstance(record, dict):
      raise RunDirError(f"settings {self.settings_path} is damaged (not a JSON object); "
                        "restore or remove it")
    return record

  def write_settings(self, record: dict) -> None:
    makedirs(self.path)
    atomic_write_json(self.settings_path, record)

  def write_lock(self, what: str, enabled: bool = True) -> WriteLock:
    """The :class:`WriteLock` of this directory (not yet acquired)."""
    return WriteLock(self.path, what, enabled)

  def write_failed(self, failed: dict) -> None:
    """Records ``{step: reason}`` of the checkpoints that could not be used."""
    atomic_write_text(self.failed_path,
                      json.dumps({str(k): v for k, v in sorted(failed.items())}, indent=2) + "\n")


class RunDir:
  """One run directory (layout in the module docstring). Paths are attributes; readers check.

  Args:
    workdir: the directory's path (it need not exist yet).
  """

  def __init__(self, workdir):
    self.path = os.fspath(workdir)
    join = lambda *parts: os.path.join(self.path, *parts)  # noqa: E731
    self.config_path = join(CONFIG)
    self.identity_path = join(IDENTITY)
    self.checkpoints = join(CHECKPOINTS)
    self.damaged_checkpoints = join(DAMAGED_CHECKPOINTS)
    self.metrics_path = join(METRICS)
    self.ed_probe_dir = join(ED_PROBE)
    self.baselines_path = join(BASELINES)
    self.done_path = join(DONE)
    self.stages_path = join(STAGES)
    self.forms_path = join(FORMS)
    self.figures = join(FIGURES)
    self.calibration = join(CALIBRATION)
    self.llc_root = join(LLC)
    self.indicators_root = join(INDICATORS)
    self.shared_check_path = join(SHARED_CHECK)

  def __repr__(self) -> str:
    return f"RunDir({self.path!r})"

  # ---------------------------------------------------------------- what is there

  @property
  def exists(self) -> bool:
    return os.path.isdir(self.path)

  @property
  def is_run(self) -> bool:
    """True when the directory holds a run (its config)."""
    return os.path.exists(self.config_path)

  @property
  def is_complete(self) -> bool:
    """True when training of the run has finished."""
    return os.path.exists(self.done_path)

  def require_run(self) -> None:
    """Raises RunDirError unless the directory exists and holds a run."""
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise RunDirError(f"run directory {self.path} is a file, not a directory")
    if not self.exists:
      raise RunDirError(f"run directory {self.path} does not exist")
    if not self.is_run:
      raise RunDirError(f"{self.path} is not a run directory (no {CONFIG})")

  def figure(self, name: str) -> str:
    """The path of figure ``name`` (e.g. "llc.png")."""
    return os.path.join(self.figures, name)

  def llc(self, name: str = "default") -> RecordDir:
    """The per-checkpoint records of LLC sweep ``name``."""
    return RecordDir(os.path.join(self.path, LLC, name))

  def indicators(self, name: str = "default") -> RecordDir:
    """The per-checkpoint records of indicator set ``name``."""
    return RecordDir(os.path.join(self.path, INDICATORS, name))

  def evaluations(self) -> RecordDir:
    """The per-checkpoint evaluation records of an imported run (:mod:`jaxdev.convert.run`),
    from which its ``metrics.jsonl`` and ED probe are written."""
    return RecordDir(os.path.join(self.path, EVALUATIONS))

  def indicator_summary_path(self, suffix: str) -> str:
    """``indicators/summary.{suffix}`` ("csv" or "json"): every indicator set, one row per step."""
    return os.path.join(self.indicators_root, f"summary.{suffix}")

  # ---------------------------------------------------------------- readers

  def config_dict(self) -> dict:
    """The training config as saved (a JSON dict)."""
    self.require_run()
    record = read_json(self.config_path, "config",
                       "restore it: the checkpoints can be read only with the config they were "
                       "made with")
    if not isinstance(record, dict):
      raise RunDirError(f"config {self.config_path} is damaged (not a JSON object); restore it")
    return record

  @property
  def config(self):
    """The training config saved in the run, as an ``ml_collections.ConfigDict``."""
    import ml_collections  # pylint: disable=import-outside-toplevel
    return ml_collections.ConfigDict(self.config_dict())

  def identity(self) -> dict:
    """The run's identity: {"run_id", "config_sha256", "origin", "created"} (origin "trained",
    or where an imported run came from). A run saved without ``identity.json`` gets one derived
    from its config (run_id ``config-<hash>``, origin and created None).

    Raises:
      RunDirError: no run here, a damaged ``identity.json``, or a ``config.json`` changed after
        the run was created.
    """
    sha = sha256_of(self.config_dict())
    if not os.path.exists(self.identity_path):
      return {"run_id": f"config-{sha[:16]}", "config_sha256": sha, "origin": None,
              "created": None}
    record = read_json(self.identity_path, "identity", "restore it")
    if not (isinstance(record, dict) and isinstance(record.get("run_id"), str)
            and isinstance(record.get("config_sha256"), str)):
      raise RunDirError(f"identity {self.identity_path} is damaged (no run_id or config_sha256); "
                        "restore it")
    if record["config_sha256"] != sha:
      raise RunDirError(
          f"config {self.config_path} was changed after the run was created (it no longer "
          f"matches {self.identity_path}); restore it: the checkpoints were made with the first")
    return record

  def metrics(self, split: str | None = None) -> list[dict]:
    """The records of ``metrics.jsonl`` (only those of ``split``, e.g. "eval", if given)."""
    records = read_jsonl(self.metrics_path)
    return records if split is None else [r for r in records if r.get("split") == split]

  def set_aside_damaged_metrics(self) -> int:
    """Moves damaged lines of ``metrics.jsonl`` to ``metrics.jsonl.damaged`` (nothing is
    deleted); returns their count (:func:`set_aside_damaged_lines`)."""
    return set_aside_damaged_lines(self.metrics_path)

  def num_steps_done(self) -> int | None:
    """The number of steps of the finished run (None while unfinished)."""
    if not self.is_complete:
      return None
    record = read_json(self.done_path, "marker")
    if not isinstance(record, dict) or not isinstance(record.get("num_steps"), int):
      raise RunDirError(f"marker {self.done_path} is damaged; remove it and run again to finish")
    return record["num_steps"]

  def baselines(self) -> dict | None:
    return read_json(self.baselines_path, "baselines") if os.path.exists(self.baselines_path) else None

  def ed_probe(self):
    """(steps [T], outputs [T, D]) of the valid rows of the ED probe, or (None, None).

    Raises:
      RunDirError: a probe file is damaged or shorter than its progress record says.
    """
    progress = os.path.join(self.ed_probe_dir, _PROBE_PROGRESS)
    if not os.path.exists(progress):
      return None, None
    record = read_json(progress, "ED probe progress")
    if not isinstance(record, dict) or not isinstance(record.get("num_written"), int):
      raise RunDirError(f"ED probe progress {progress} is damaged; restore or remove it")
    n = record["num_written"]
    steps_path = os.path.join(self.ed_probe_dir, _PROBE_STEPS)
    outputs_path = os.path.join(self.ed_probe_dir, _PROBE_OUTPUTS)
    try:
      steps = np.load(steps_path)
      outputs = np.load(outputs_path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as err:
      raise RunDirError(f"ED probe {self.ed_probe_dir} is damaged ({err}); the probe has to be "
                        "recomputed by training again") from None
    if not 0 <= n <= len(steps) == len(outputs):
      raise RunDirError(f"ED probe {self.ed_probe_dir} is damaged ({len(steps)} steps, "
                        f"{len(outputs)} rows, {n} written)")
    return steps[:n], np.asarray(outputs[:n], np.float32).reshape(n, -1)

  def stages(self) -> dict | None:
    """The record of ``write_stages`` (None before the analysis has run)."""
    return read_json(self.stages_path, "stages") if os.path.exists(self.stages_path) else None

  def forms(self) -> dict | None:
    """The record of ``write_forms`` (None before the analysis has run)."""
    return read_json(self.forms_path, "forms") if os.path.exists(self.forms_path) else None

  # ---------------------------------------------------------------- writers

  def require_config(self, config_dict: dict) -> None:
    """Raises RunDirError unless the run saved here has the training config ``config_dict``
    (a JSON dict, as ``config.to_json()`` gives it); the message names the first differences."""
    differences = _diff(self.config_dict(), config_dict)
    if differences:
      raise RunDirError(
          f"workdir {self.path} holds a run with a different config "
          f"({'; '.join(differences[:3])}); use another --workdir")

  def prepare(self, config_dict: dict, origin: str = "trained") -> bool:
    """Creates the directory or checks it belongs to this config. Returns True if it existed.

    A new run gets its ``config.json`` and its identity (``origin``: "trained", or e.g.
    "imported from DIR"); an existing one must have the same config and origin.

    Raises:
      RunDirError: the directory cannot be created or written, holds a run of another config
        or origin, or holds checkpoints without a config.
    """
    workdir = self.path
    if "://" in workdir:
      raise RunDirError(f"workdir {workdir} is a URL; give a local or mounted path (mount a "
                        "bucket with gcsfuse to keep runs on Cloud Storage)")
    try:
      os.makedirs(workdir, exist_ok=True)
    except OSError as err:
      raise RunDirError(f"cannot create workdir {workdir}: {err.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
      raise RunDirError(f"workdir {workdir} is not writable")
    if self.is_run:
      self.require_config(config_dict)
      known = self.identity()["origin"]
      if known is not None and known != origin:
        raise RunDirError(f"workdir {workdir} holds a run of another origin ({known}, not "
                          f"{origin}); use another --workdir")
      return True
    if os.path.exists(self.identity_path) or (
        os.path.isdir(self.checkpoints) and os.listdir(self.checkpoints)):
      raise RunDirError(f"workdir {workdir} holds checkpoints but no {CONFIG}: restore it (which "
                        "model the checkpoints hold is known only from it), or use another "
                        "--workdir")
    atomic_write_json(self.config_path, config_dict)
    atomic_write_json(self.identity_path, {
        "run_id": uuid.uuid4().hex, "config_sha256": sha256_of(config_dict), "origin": origin,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    return False

  def write_lock(self, enabled: bool = True) -> WriteLock:
    """The :class:`WriteLock` training holds on the run (not yet acquired)."""
    return WriteLock(self.path, "the training run", enabled)

  def probe_store(self, steps: Iterable[int], row_shape: tuple, enabled: bool = True) -> ProbeStore:
    return ProbeStore(self.ed_probe_dir, steps, row_shape, enabled=enabled)

  def metrics_writer(self, enabled: bool = True) -> JsonlWriter:
    return JsonlWriter(self.metrics_path, enabled=enabled)

  def write_baselines(self, baselines: dict) -> None:
    atomic_write_text(self.baselines_path, json.dumps(baselines, indent=2) + "\n")

  def mark_done(self, num_steps: int, origin: str | None = None) -> None:
    """Writes the ``done`` marker; ``origin`` says where a run that was not trained here came from
    (e.g. the directory of imported checkpoints)."""
    record = {"num_steps": int(num_steps)}
    if origin is not None:
      record["origin"] = origin
    atomic_write_text(self.done_path, json.dumps(record) + "\n")

  def origin(self) -> str | None:
    """Where a finished run that was not trained here came from (None: trained here, or
    unfinished)."""
    if not self.is_complete:
      return None
    record = read_json(self.done_path, "marker")
    return record.get("origin") if isinstance(record, dict) else None

  def write_stages(self, record: dict) -> None:
    atomic_write_text(self.stages_path, json.dumps(record, indent=2))

  def write_forms(self, record: dict) -> None:
    atomic_write_text(self.forms_path, json.dumps(record, indent=2))
