"""Stages, essential dynamics, the cheap indicators and figures from the files of a run.

  python scripts/analyze.py --workdir runs/quick [--sweep default] [--noindicators]
  python scripts/analyze.py --workdir runs/lr-seed1 --form_detector turns --form_nulls 100
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", os.path.join("runs", "quick"), "Run directory.")
_SWEEP = flags.DEFINE_string("sweep", "default", "LLC sweep name (the run's llc/SWEEP).")
_SIGMA = flags.DEFINE_enum("sigma_schedule", "auto", ["auto", "scaled", "paper", "lm"],
                           "ED smoothing (auto: from the run's task and probe length).")
_ED_MAX_STEP = flags.DEFINE_string("ed_max_step", "auto", "Last step searched for ED forms: "
                                   "auto (200000 for regression runs past it), none, or a step.")
_FORMS = flags.DEFINE_enum("form_construction", "all", ["all", "pc1", "authors"],
                           "Forms must hold in all PC planes, in (PC1, PCj), or 'authors': the "
                           "authors' procedure (with --form_detector vertices).")
_DETECTOR = flags.DEFINE_enum("form_detector", "vertices", ["vertices", "turns"],
                              "vertices: curvature extrema whose circles coincide; turns: sharp "
                              "turns judged against the curve's noise, calibrated on null paths.")
_NULLS = flags.DEFINE_integer("form_nulls", 0, "With turns: null paths per null model for the "
                              "forms' p-values (about 3 s each at 5,001 probe rows).")
_INDICATORS = flags.DEFINE_bool("indicators", True, "Also evaluate and draw the cheap indicators.")


def main(_):
  from jaxdev import job  # pylint: disable=import-outside-toplevel
  job.run_analysis(_WORKDIR.value, sweep=_SWEEP.value, indicators=_INDICATORS.value,
                   sigma_schedule=_SIGMA.value, ed_max_step=_ED_MAX_STEP.value,
                   form_construction=_FORMS.value, form_detector=_DETECTOR.value,
                   form_nulls=_NULLS.value)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
