"""The main job: LLC at every checkpoint of a run, then stages and figures (jaxdev.job.main_job).

With no arguments it trains the quick regression run into runs/quick (or resumes it), sweeps it
with configs/llc.py:quick, and writes runs/quick/figures/ and a summary table:

  python scripts/llc_sweep.py
  python scripts/llc_sweep.py --train_config configs/regression.py:paper \
      --config configs/llc.py:paper_cpu --workdir runs/lr-seed0
  python scripts/llc_sweep.py --workdir runs/lr --seeds 0,1,2,3,4 \
      --train_config configs/regression.py:paper --config configs/llc.py:paper

With --seeds, each seed is a run of its own in WORKDIR/seedN. A new run is trained only in the
default workdir, with --train, or with --train_config given; otherwise a missing --workdir is an
error. The estimated device-hours are printed first (--estimate_only prints them and stops).
Killed at any moment, the same command continues where it stopped.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", cli.repo_path(__file__, "configs", "llc.py:quick"),
    "LLC sweep config (file.py:variant); override fields with --config.sgld.FIELD=VALUE.")
_TRAIN_CONFIG = config_flags.DEFINE_config_file(
    "train_config", cli.repo_path(__file__, "configs", "regression.py:quick"),
    "Training config of a new run; a run already in --workdir is resumed with its own saved "
    "config (given explicitly, this must equal it).")
_WORKDIR = flags.DEFINE_string("workdir", os.path.join("runs", "quick"),
                               "Run directory holding (or to hold) the run.")
_TRAIN = flags.DEFINE_bool("train", None, "Train (or resume) the run first if it is unfinished "
                           "(default: resume; a new run only in the default workdir or with "
                           "--train_config); --notrain never trains.")
_STEPS = flags.DEFINE_list("steps", None, "Only these checkpoint steps (default: all).")
_ANALYZE = flags.DEFINE_bool("analyze", True, "Detect stages and draw figures at the end.")
_INDICATORS = flags.DEFINE_bool("indicators", True, "With --analyze, also evaluate the cheap "
                                 "indicators at every checkpoint and draw their panels.")
_SEEDS = flags.DEFINE_list("seeds", None, "Train and sweep one run per seed in WORKDIR/seedN.")
_ESTIMATE = flags.DEFINE_bool("estimate", True, "Print estimated device-hours before starting.")
_ESTIMATE_ONLY = flags.DEFINE_bool("estimate_only", False, "Print the estimate and stop.")


def main(_):
  from jaxdev import job  # pylint: disable=import-outside-toplevel
  return job.main_job(
      _TRAIN_CONFIG.value, _CONFIG.value, _WORKDIR.value, seeds=_SEEDS.value, steps=_STEPS.value,
      train=_TRAIN.value, train_config_chosen=cli.given(_TRAIN_CONFIG), analyze=_ANALYZE.value,
      indicators=_INDICATORS.value, estimate=_ESTIMATE.value,
      estimate_only=_ESTIMATE_ONLY.value).exit_status


if __name__ == "__main__":
  sys.exit(cli.run(main, distributed=True))
