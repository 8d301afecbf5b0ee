"""Small helpers shared by the command-line scripts in ``scripts/``.

Scripts stay thin: they parse flags, call one library function and print. A
:class:`jaxdev.errors.UserError` (bad config values, unusable directories, missing runs, damaged
files) becomes one line on stderr and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

from jaxdev.errors import UserError


def _parse_flags(argv):
  """absl's flag parsing, with a parse error reduced to its last (most specific) line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    print(f"error: {lines[-1] if lines else err}", file=sys.stderr)
    sys.exit(2)


def given(flag_holder) -> bool:
  """True when the flag of ``flag_holder`` (what ``flags.DEFINE_*`` returned) was on the command line."""
  return flags.FLAGS[flag_holder.name].present > 0


def call(main, argv) -> int | None:
  """``main(argv)`` as a script runs it: its return value (the exit status; None is 0), or 2
  after printing a UserError as one ``error: ...`` line on stderr, or 130 after Ctrl-C."""
  try:
    return main(argv)
  except KeyboardInterrupt:
    print("interrupted; run the same command again to resume", file=sys.stderr)
    return 130
  except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2


def run(main, *, distributed: bool = False, positional: bool = False) -> int:
  """Runs an absl ``main`` through :func:`call`; a UserError prints as ``error: ...`` and exits
  with status 2.

  Positional arguments are refused (scripts take flags only) unless ``positional`` (a script
  with subcommands checks them itself). With ``distributed``, the multi-host runtime is started
  first when the environment asks for it (:func:`jaxdev.distributed.maybe_initialize`).
  """

  def wrapped(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1 and not positional:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
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
