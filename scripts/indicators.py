"""Indicators of behaviour, structure (and with --which all, curvature) at every checkpoint.

  python scripts/indicators.py --workdir runs/quick [--which cheap|all]

Writes WORKDIR/indicators/ (one record per checkpoint, summary.csv, summary.json) and
WORKDIR/figures/indicators.png; killed at any moment, the same command resumes.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "runs/quick", "Run directory.")
_WHICH = flags.DEFINE_enum("which", "cheap", ["cheap", "all"],
                           "cheap: behaviour and structure; all: also the Hessian trace and "
                           "top eigenvalues.")
_NUM_PROBES = flags.DEFINE_integer("num_probes", 100, "Hutchinson probes per checkpoint.")
_HESSIAN_SEQUENCES = flags.DEFINE_integer("hessian_sequences", 1024,
                                          "Examples in the fixed Hessian batch.")
_STEPS = flags.DEFINE_list("steps", None, "Only these checkpoint steps (default: all).")
_PLOT = flags.DEFINE_bool("plot", True, "Draw WORKDIR/figures/indicators.png.")


def main(_):
  from jaxdev.indicators import run  # pylint: disable=import-outside-toplevel
  settings = run.IndicatorSettings(num_probes=_NUM_PROBES.value,
                                   hessian_sequences=_HESSIAN_SEQUENCES.value)
  run.evaluate_run(_WORKDIR.value, which=_WHICH.value, settings=settings, steps=_STEPS.value,
                   plot=_PLOT.value, verbose=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main, distributed=True))
