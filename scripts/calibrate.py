"""SGLD calibration at one checkpoint: the ε × nβ × γ grid in one call, a figure and a choice.

  python scripts/calibrate.py --workdir runs/quick --step 5000 \
      --step_sizes 1e-4,3e-4,1e-3 --nbetas 15,66.67 --gammas 6.67,100
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app  # noqa: E402
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
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from jaxdev import llc  # pylint: disable=import-outside-toplevel
  floats = lambda values: [float(v) for v in values]  # noqa: E731
  step, calibration = llc.calibrate_checkpoint(
      _WORKDIR.value, _STEP.value, step_sizes=floats(_STEP_SIZES.value),
      nbetas=floats(_NBETAS.value), gammas=floats(_GAMMAS.value), num_chains=_CHAINS.value,
      num_draws=_DRAWS.value, batch_size=_BATCH.value, num_sampling_examples=_EXAMPLES.value)
  out = _OUT.value or os.path.join(_WORKDIR.value, "calibration")
  os.makedirs(out, exist_ok=True)
  figure = calibration.figure()
  figure.savefig(os.path.join(out, f"calibration_step{step}.png"), dpi=120)
  print(calibration.table() if hasattr(calibration, "table") else calibration)
  choice = calibration.recommend(max_nbeta=_MAX_NBETA.value)
  if choice is not None:
    print(f"recommended at step {step}: ε {choice.step_size:g}, nβ {choice.nbeta:g}, "
          f"γ {choice.gamma:g} (λ̂ {choice.llc_mean:.4g} ± {choice.llc_std:.2g}; {choice.reason})")
  else:
    limit = _MAX_NBETA.value if _MAX_NBETA.value is not None else calibration.default_nbeta
    within = f" with nβ ≤ {limit:.4g}" if limit is not None else ""
    print(f"recommended at step {step}: none: no usable grid point{within} "
          "(raise --max_nbeta, or widen the grid / add draws)")
  with open(os.path.join(out, f"calibration_step{step}.json"), "w") as f:
    json.dump({"step": step, "recommendation": choice._asdict() if choice else None}, f,
              indent=2, default=float)


if __name__ == "__main__":
  sys.exit(cli.run(main))
