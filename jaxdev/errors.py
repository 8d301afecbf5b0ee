"""The errors a user's input can cause: one base class, caught once by the command-line wrapper.

A :class:`UserError` means the input is wrong (a config value, a path, a file on disk), not the
code: its message is one line that says what is wrong and, where it helps, what to do. The
scripts print it as ``error: MESSAGE`` and exit with status 2 (see :mod:`jaxdev.cli`); anything
else is a bug and keeps its traceback.

The subclasses keep the built-in base they had before (``ConfigError`` is a ``ValueError``, the
others ``RuntimeError``), so callers that catch those still catch them.
"""

from __future__ import annotations

import math


class UserError(Exception):
  """The user's input is wrong (clear, one-line message)."""


class ConfigError(UserError, ValueError):
  """A config or an argument asks for something impossible, or its data cannot serve it.

  Every bad setting of the sampler and of an LLC sweep is one of these, raised by the one set
  of checks (:mod:`jaxdev.sgld.checks`) that both use, before any work.
  """


class RunDirError(UserError, RuntimeError):
  """A run directory cannot be used as asked (missing, unwritable, damaged, another run's)."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint could not be read."""


class SweepError(UserError, RuntimeError):
  """A sweep cannot go on as asked in this run directory (no checkpoints, records started with
  other settings); settings that are wrong in themselves are a :class:`ConfigError`."""


class DivergenceError(UserError, FloatingPointError):
  """Training diverged: its loss became NaN or infinite (the checkpoints before are kept)."""


def require_positive(section: str, config, names) -> None:
  """Raises ConfigError unless every field ``names`` of ``config`` (a ConfigDict section
  called ``section``, e.g. "data") is a finite number > 0."""
  for name in names:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0):
      raise ConfigError(f"config.{section}.{name} must be positive and finite, got {value!r}")
