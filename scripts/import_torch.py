"""Import a directory of per-step PyTorch checkpoints as a jaxdev run.

  python scripts/import_torch.py --checkpoints DIR --workdir runs/NAME \
      --train_config configs/regression.py:paper [--model_config DIR/config.json]
  python scripts/llc_sweep.py --workdir runs/NAME --config configs/llc.py:paper --notrain

DIR holds one checkpoint file per step (the step is the last number in the file name) and the
model's JSON config: a TransformerLens HookedTransformerConfig (attention-only, LN, shortformer;
use a language --train_config) or the authors' regression task config. See jaxdev.convert.run.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_CHECKPOINTS = flags.DEFINE_string("checkpoints", None, "Directory of per-step PyTorch checkpoints.",
                                   required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to write.", required=True)
_TRAIN_CONFIG = config_flags.DEFINE_config_file(
    "train_config", cli.repo_path(__file__, "configs", "regression.py:paper"),
    "Training config of the task (data, evaluation, probe); its model section is replaced.")
_MODEL_CONFIG = flags.DEFINE_string("model_config", None,
                                    "The model's JSON config (default: CHECKPOINTS/config.json).")
_EVALUATE = flags.DEFINE_bool("evaluate", True,
                              "Evaluate every checkpoint and compute the ED probe.")


def main(_):
  from jaxdev.convert import run  # pylint: disable=import-outside-toplevel
  result = run.import_run(_CHECKPOINTS.value, _WORKDIR.value, _TRAIN_CONFIG.value,
                          model_config=_MODEL_CONFIG.value, evaluate=_EVALUATE.value)
  print(f"{result.workdir}: imported {len(result.steps)} {result.kind} checkpoints "
        f"({len(result.steps_skipped)} already there), steps {result.steps[:1] + result.steps[-1:]}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
