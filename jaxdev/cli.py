"""Small helpers shared by the command-line scripts in ``scripts/``.

Scripts stay thin: they parse flags, call one library function and print. A
:class:`jaxdev.errors.UserError` (bad config values, unusable directories, missing runs, damaged
files) becomes one line on stderr and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import errno
import logging as logging_std
import os
import re
import sys
import threading

from absl import app
from absl import flags
from absl import logging

from jaxdev.errors import UserError

_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0, "XLA devices the CPU is split into (0: one per core this process may use; "
    "ignored when XLA_FLAGS sets --xla_force_host_platform_device_count).", lower_bound=0)


def _parse_flags(argv):
  """absl's flag parsing, with a parse error reduced to its last (most specific) line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    print(f"error: {lines[-1] if lines else err}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as err:  # a config override naming a field the config lacks
    text = str(err).replace("\\", "")
    key = (re.findall(r"'(\w+)'", text) or ["?"])[0]
    names = [a.split("=")[0] for a in argv[1:] if a.startswith("--") and "." in a.split("=")[0]]
    named = [n for n in names if key in n.split(".")] or names
    guess = re.search(r'Did you mean "(\w+)"', text)
    print(f"error: {', '.join(named) or 'a --config flag'} names a field the config does not "
          f"have ({key!r}{'; did you mean ' + repr(guess.group(1)) if guess else ''})",
          file=sys.stderr)
    sys.exit(2)


def given(flag_holder) -> bool:
  """True when the flag of ``flag_holder`` (what ``flags.DEFINE_*`` returned) was on the command line."""
  return flags.FLAGS[flag_holder.name].present > 0


#: Errors of the machine, not of the program: a full disk, a quota, a read-only file system, a
#: file the user may not write. What they mean to the user.
_MACHINE_ERRORS = {errno.ENOSPC: "no space left on the device",
                   errno.EDQUOT: "the disk quota is exceeded",
                   errno.EROFS: "the file system is read-only",
                   errno.EACCES: "permission denied",
                   errno.EPERM: "operation not permitted"}
# How libraries that do not raise OSError (tensorstore under orbax) word the same errors.
_MACHINE_MESSAGES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                     "Read-only file system": errno.EROFS}


def machine_error(err: BaseException) -> str | None:
  """One line for ``err`` if it, or an exception it was raised from, is an error of the machine
  (:data:`_MACHINE_ERRORS`); None otherwise (a bug, whose traceback should show)."""
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    code = err.errno if isinstance(err, OSError) else None
    if code is None:
      code = next((c for text, c in _MACHINE_MESSAGES.items() if text in str(err)), None)
    if code in _MACHINE_ERRORS:
      where = f" ({err.filename})" if isinstance(err, OSError) and err.filename else ""
      return (f"{_MACHINE_ERRORS[code]}{where}; what was finished is kept: make room (or fix "
              "the permissions) and run the same command again")
    err = err.__cause__ or err.__context__
  return None


def _echo(text: str) -> bool:
  """True for a message that only echoes an error of the machine from a background thread
  (orbax's and tensorstore's writers report a full disk there too, and their event loops then
  fail as they shut down); the main thread reports it once, as one line."""
  return any(m in text for m in _MACHINE_MESSAGES) or "os_error_code=" in text or (
      "Event loop is closed" in text)


class _QuietEchoes(logging_std.Filter):
  """Drops log records that only echo an error of the machine (see :func:`_echo`)."""

  def filter(self, record) -> bool:
    try:
      text = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return True
    if record.exc_info and record.exc_info[1] is not None:
      text += f" {record.exc_info[1]!r}"
    return not _echo(text)


def _quiet_background_echoes() -> None:
  """Installs :class:`_QuietEchoes` on the log handlers and hooks that print what background
  threads raise, so that a full disk is one line on the command line, not hundreds."""
  quiet = _QuietEchoes()
  for handler in [logging.get_absl_handler(), *logging_std.getLogger().handlers]:
    handler.addFilter(quiet)
  for name in ("asyncio", "absl"):
    logging_std.getLogger(name).addFilter(quiet)
  hook, thread_hook = sys.excepthook, threading.excepthook

  def excepthook(kind, value, traceback):
    if not (value is not None and _echo(repr(value))):
      hook(kind, value, traceback)

  def thread_excepthook(args):
    if not (args.exc_value is not None and _echo(repr(args.exc_value))):
      thread_hook(args)

  sys.excepthook, threading.excepthook = excepthook, thread_excepthook


def cpu_device_count(requested: int, environ=None) -> int | None:
  """How many XLA devices the CPU platform should have: ``requested``, or with 0 one per core
  this process may run on; None when ``environ``'s XLA_FLAGS already set the number (the
  caller's choice, kept).

  One device per core is what lets the sweep's ("ckpt", "chain") mesh use every core: on the
  2-core development CPU the paper model's 4 chains at batch 64 ran 1.5-1.9x faster split over
  two devices than on one (docs/performance.md, "One device per core"). Accelerator backends
  are unaffected: their devices come first in ``jax.devices()``.
  """
  environ = os.environ if environ is None else environ
  if "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", ""):
    return None
  if requested:
    return int(requested)
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def use_cpu_devices(requested: int) -> None:
  """Splits the CPU platform into :func:`cpu_device_count` devices; call before JAX has started
  a backend (as :func:`run` does, before the script's ``main``)."""
  count = cpu_device_count(requested)
  if count is not None:
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_num_cpu_devices", count)


def call(main, argv) -> int | None:
  """``main(argv)`` as a script runs it: its return value (the exit status; None is 0), or 2
  after printing a UserError or an error of the machine (:func:`machine_error`: a full disk, a
  read-only file system) as one ``error: ...`` line on stderr, or 130 after Ctrl-C."""
  try:
    return main(argv)
  except KeyboardInterrupt:
    print("interrupted; run the same command again to resume", file=sys.stderr)
    return 130
  except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except Exception as err:  # pylint: disable=broad-except  (re-raised unless the machine's)
    line = machine_error(err)
    if line is None:
      raise
    print(f"error: {line}", file=sys.stderr)
    return 2


def run(main, *, distributed: bool = False, positional: bool = False) -> int:
  """Runs an absl ``main`` through :func:`call`; a UserError prints as ``error: ...`` and exits
  with status 2.

  Positional arguments are refused (scripts take flags only) unless ``positional`` (a script
  with subcommands checks them itself). The CPU platform is first split into ``--cpu_devices``
  devices (:func:`use_cpu_devices`; default one per core). With ``distributed``, the multi-host
  runtime is then started when the environment asks for it
  (:func:`jaxdev.distributed.maybe_initialize`).
  """

  def wrapped(argv):
    logging.set_verbosity(logging.WARNING)
    _quiet_background_echoes()
    if len(argv) > 1 and not positional:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    use_cpu_devices(_CPU_DEVICES.value)
    if distributed:
      from jaxdev import distributed as distributed_lib  # pylint: disable=import-outside-toplevel
      distributed_lib.maybe_initialize()
    return call(main, argv)

  try:
    app.run(wrapped, flags_parser=_parse_flags)
  except SystemExit as exit_:
    if exit_.code is None:
      return 0
    return exit_.code if isinstance(exit_.code, int) else 1
  return 0


def repo_path(script_file: str, *parts: str) -> str:
  """A path relative to the repository that holds ``script_file`` (a file in scripts/)."""
  return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(script_file)), "..", *parts))
