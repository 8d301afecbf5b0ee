"""Small helpers shared by the command-line scripts in ``scripts/``.

Scripts stay thin: they parse flags, call one library function and print. Expected failures
(bad config values, unusable directories, missing runs) become one line on stderr and exit
status 2 instead of a traceback.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

def _expected_errors() -> tuple:
  from jaxdev import checkpoints, rundir, train  # imported lazily: keeps --help fast
  errors = [train.ConfigError, rundir.RunDirError, checkpoints.CheckpointError]
  try:
    from jaxdev import llc
    errors.append(llc.SweepError)
  except ImportError:
    pass
  return tuple(errors)


def _parse_flags(argv):
  """absl's flag parsing, with a parse error reduced to its last (most specific) line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    print(f"error: {lines[-1] if lines else err}", file=sys.stderr)
    sys.exit(2)


def run(main) -> int:
  """Runs an absl ``main``; expected errors print as ``error: ...`` and exit with status 2."""

  def wrapped(argv):
    logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except KeyboardInterrupt:
      print("interrupted; run the same command again to resume", file=sys.stderr)
      sys.exit(130)
    except Exception as err:  # pylint: disable=broad-except
      if isinstance(err, _expected_errors()):
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
      raise

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
