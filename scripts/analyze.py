"""Stages, essential dynamics and figures from the files of a run.

  python scripts/analyze.py --workdir runs/quick [--sweep default]
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "runs/quick", "Run directory.")
_SWEEP = flags.DEFINE_string("sweep", "default", "LLC sweep name (WORKDIR/llc/SWEEP).")
_SIGMA = flags.DEFINE_enum("sigma_schedule", "scaled", ["scaled", "paper", "lm"],
                           "ED smoothing schedule.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from jaxdev.analysis import run  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(_WORKDIR.value):
    print(f"error: run directory {_WORKDIR.value} does not exist", file=sys.stderr)
    return 2
  summary = run.analyze_run(_WORKDIR.value, sweep=_SWEEP.value, sigma_schedule=_SIGMA.value)
  print(run.format_summary(summary))
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
