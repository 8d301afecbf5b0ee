"""Test set-up: eight host CPU devices, one persistent XLA compilation cache for the session, the
tiny runs trained once, and helpers for command-line errors and interrupted computations.

The environment must be set before jax is imported anywhere in the test process. The scripts
that tests run as subprocesses inherit it, so the same small programs are compiled once per
session rather than once per process. A cache entry is the compiled program itself: results do
not change, only the time to the first step. A JAX_COMPILATION_CACHE_DIR already set is used as
is; pytest-xdist workers inherit the controller's, so they share one cache.

Eight devices make every sweep, indicator evaluation and training run of the tests a sharded
one (a "ckpt" × "chain" sweep mesh, an eight-way data mesh), as on an accelerator slice, and
the device-equivalence tests compare them with one device. On a 2-core CPU they cost little
more CPU time than one device: XLA runs the eight virtual devices on the same cores.

Shared runs: ``tiny_run`` and ``tiny_language_run`` are trained once per session (per xdist
worker) and must not be changed; ``run_copy`` gives a test its own copy.

Command-line errors: the scripts are thin (flags → one library call), and ``jaxdev.cli.call``
turns a UserError into one ``error:`` line and exit status 2. Tests check bad input in-process
with ``command_error`` on the library call a script makes; each script keeps one subprocess
test of its own command line.

Interruptions: ``crash_at_checkpoint`` and ``crash_after_records`` stop training, a sweep or an
indicator evaluation at a chosen point, as a kill would; one test kills a training script with
a real SIGKILL at whatever moment it lands (``tests/test_train.py``).
"""

import atexit
import os
import shutil
import tempfile

_EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"
if not os.environ.get("XLA_FLAGS", "").endswith(_EIGHT_DEVICES):  # xdist workers inherit it
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _EIGHT_DEVICES).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="jaxdev-tests-xla-cache-")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small programs too
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


import pytest  # noqa: E402  (after the environment is set)

from jaxdev import cli  # noqa: E402
from jaxdev import rundir  # noqa: E402


@pytest.fixture(scope="session")
def text_data_dir(tmp_path_factory):
  """One TFDS data directory for the whole session: the tokenized demo corpus is built once."""
  return str(tmp_path_factory.mktemp("tfds"))


def _snapshot(directory):
  """{relative path: bytes} of every file under ``directory``."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """The finished run of ``configs/regression.py:tiny`` (60 steps, every device), trained once.

  Shared by every test of the session: read it, or copy it (``run_copy``) to change it. A test
  that writes into it fails the session at teardown.
  """
  from jaxdev import train  # pylint: disable=import-outside-toplevel
  from jaxdev.configs import regression  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path_factory.mktemp("session-runs") / "tiny")
  train.train(regression.get_config("tiny"), workdir, show_progress=False)
  before = _snapshot(workdir)
  yield workdir
  assert _snapshot(workdir) == before, f"a test changed the shared run {workdir}; copy it first"


@pytest.fixture(scope="session")
def tiny_language_run(tmp_path_factory, text_data_dir):
  """The finished run of ``configs/language.py:tiny`` (40 steps, every device) on the session's
  text data, trained once; shared like ``tiny_run``."""
  from jaxdev import train  # pylint: disable=import-outside-toplevel
  from jaxdev.configs import language  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path_factory.mktemp("session-runs") / "tiny-language")
  config = language.get_config("tiny")
  config.data.data_dir = text_data_dir
  train.train(config, workdir, show_progress=False)
  before = _snapshot(workdir)
  yield workdir
  assert _snapshot(workdir) == before, f"a test changed the shared run {workdir}; copy it first"


@pytest.fixture
def run_copy(tmp_path):
  """``run_copy(source, name="run", ignore=())``: a copy of the run directory ``source`` at
  ``tmp_path / name`` (without the top-level entries named in ``ignore``); returns its path."""

  def copy(source, name="run", ignore=()):
    dest = str(tmp_path / name)
    shutil.copytree(source, dest,
                    ignore=lambda d, names: [n for n in names if d == source and n in ignore])
    return dest

  return copy


@pytest.fixture
def run_main(capsys):
  """``run_main(fn, *args, **kwargs)`` calls ``fn`` as a script's ``main`` runs under
  :func:`jaxdev.cli.call`; returns ``(status, out, err)``: the exit status the script would
  have and what it printed on stdout and stderr. An exception other than a UserError (a bug: a
  traceback on the command line) propagates."""

  def run(fn, *args, **kwargs):
    capsys.readouterr()
    status = cli.call(lambda argv: fn(*args, **kwargs), [])
    captured = capsys.readouterr()
    return status or 0, captured.out, captured.err

  return run


@pytest.fixture
def command_error(run_main):
  """``command_error(fn, *args, **kwargs)``: ``run_main`` that must fail as a script fails on bad
  input, with exit status 2 and exactly one ``error: ...`` line on stderr; returns ``(line,
  out)``, that line and what was printed on stdout. ``scripts/*.py`` have one subprocess test
  each for the command line itself."""

  def run(fn, *args, **kwargs):
    status, out, err = run_main(fn, *args, **kwargs)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), (status, err[-3000:])
    return lines[0], out

  return run


class Crash(BaseException):
  """Stops a computation where a test chose, as a kill would: not an ``Exception``, so no
  ``except Exception`` of the code under test handles it."""


@pytest.fixture
def crash_after_records(monkeypatch):
  """``crash_after_records(n)``: in this test, the ``n + 1``-th record written by any
  :class:`jaxdev.rundir.RecordDir` (an LLC or indicator record) raises :class:`Crash` instead of
  being written, once; the records before it and after the crash are written. Returns the Crash
  class, for ``pytest.raises``."""

  def arm(n):
    write = rundir.RecordDir.write
    count = [0]

    def write_or_crash(self, step, arrays, provenance=None):
      count[0] += 1
      if count[0] == n + 1:
        raise Crash(f"crash before writing the record of step {step}")
      return write(self, step, arrays, provenance)

    monkeypatch.setattr(rundir.RecordDir, "write", write_or_crash)
    return Crash

  return arm


@pytest.fixture
def crash_at_checkpoint(monkeypatch):
  """``crash_at_checkpoint(step)``: in this test, training raises :class:`Crash` the first time it
  is about to save the checkpoint of ``step``, once the saves before it are complete on disk.
  The metrics, evaluation and probe rows of the steps after the last saved checkpoint are
  written by then, as a kill between two checkpoints leaves them. Returns the Crash class."""
  from jaxdev import checkpoints  # pylint: disable=import-outside-toplevel

  def arm(crash_step):
    save = checkpoints.save
    fired = [False]

    def save_or_crash(manager, step, *args, **kwargs):
      if step == crash_step and not fired[0]:
        fired[0] = True
        manager.wait_until_finished()
        raise Crash(f"crash before saving the checkpoint of step {step}")
      return save(manager, step, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "save", save_or_crash)
    return Crash

  return arm
