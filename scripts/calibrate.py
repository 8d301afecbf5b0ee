"""SGLD calibration at one checkpoint: the ε × nβ × γ grid in one call, a figure and a choice.

  python scripts/calibrate.py --workdir runs/quick --step 5000 \
      --step_sizes 1e-4,3e-4,1e-3 --nbetas 15,66.67 --gammas 6.67,100
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "runs/quick", "Run directory.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the last).")
_STEP_SIZES = flags.DEFINE_list("step_sizes", ["1e-4", "3e-4", "1e-3", "3e-3"], "ε values.")
_NBETAS = flags.DEFINE_list("nbetas", ["15.39", "66.67"], "nβ values.")
_GAMMAS = flags.DEFINE_list("gammas", ["6.67", "100"], "γ values.")
_CHAINS = flags.DEFINE_integer("chains", 4, "Chains per grid point.")
_DRAWS = flags.DEFINE_integer("draws", 200, "Draws per chain.")
_BATCH = flags.DEFINE_integer("batch", 64, "SGLD batch size.")
_EXAMPLES = flags.DEFINE_integer("examples", 2 ** 14, "Size of the sampling dataset.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/calibration).")
_MAX_NBETA = flags.DEFINE_float("max_nbeta", None,
                                "Largest nβ the recommendation may pick (default: m / ln m).")


def main(argv):
  del argv  # cli.run refuses positional arguments
  # pylint: disable=import-outside-toplevel
  from jaxdev import llc, rundir
  from jaxdev.sgld import calibration as calibration_lib
  step_sizes, nbetas, gammas = calibration_lib.check_calibration(
      step_sizes=_STEP_SIZES.value, nbetas=_NBETAS.value, gammas=_GAMMAS.value,
      num_chains=_CHAINS.value, num_draws=_DRAWS.value, batch_size=_BATCH.value)
  out = _OUT.value or rundir.RunDir(_WORKDIR.value).calibration
  rundir.check_writable(out)
  step, calibration = llc.calibrate_checkpoint(
      _WORKDIR.value, _STEP.value, step_sizes=step_sizes, nbetas=nbetas, gammas=gammas,
      num_chains=_CHAINS.value, num_draws=_DRAWS.value, batch_size=_BATCH.value,
      num_sampling_examples=_EXAMPLES.value)
  print(calibration.write_report(out, step, max_nbeta=_MAX_NBETA.value))


if __name__ == "__main__":
  sys.exit(cli.run(main))
