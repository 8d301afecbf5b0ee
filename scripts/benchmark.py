"""Throughput benchmarks; each prints one JSON line.

  python scripts/benchmark.py train [--config configs/regression.py:paper]
  python scripts/benchmark.py sgld --batch 128 --chains 4 --draws 200
  python scripts/benchmark.py sweep --checkpoints 8 --chains 4 --draws 100 --batch 1024
  python scripts/benchmark.py ed --num_steps 5000 --dim 20000
  python scripts/benchmark.py devinterp --batch 128 --chains 4 --draws 200   # needs torch, devinterp
  python scripts/benchmark.py compare --batch 128 --chains 4 --draws 200     # both, one after the other
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", cli.repo_path(__file__, "configs", "regression.py:paper"), "Training config (model, batch).")
_BATCH = flags.DEFINE_integer("batch", 128, "SGLD batch size (sgld, sweep).")
_CHAINS = flags.DEFINE_integer("chains", 4, "Chains (sgld, sweep).")
_DRAWS = flags.DEFINE_integer("draws", 200, "Draws per chain (sgld, sweep).")
_CHECKPOINTS = flags.DEFINE_integer("checkpoints", 8, "Checkpoints sampled together (sweep).")
_CHAIN_MAP = flags.DEFINE_enum("chain_map", "vmap", ["vmap", "map"], "How chains are batched (sgld).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 20, "Optimizer steps per timed call (train).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (the median is reported).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 5000, "ED probe rows (ed).")
_DIM = flags.DEFINE_integer("dim", 20000, "ED probe width (ed).")

COMMANDS = ("train", "sgld", "sweep", "ed", "devinterp", "compare")


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: benchmark.py {{{'|'.join(COMMANDS)}}} [flags]")
  # pylint: disable=import-outside-toplevel
  from jaxdev import benchmarks
  command = argv[1]
  if command == "train":
    result = benchmarks.train_throughput(_CONFIG.value, num_steps=_TRAIN_STEPS.value,
                                         repeats=_REPEATS.value)
  elif command == "sgld":
    result = benchmarks.sgld_throughput(_CONFIG.value, batch_size=_BATCH.value,
                                        num_chains=_CHAINS.value, num_draws=_DRAWS.value,
                                        chain_map=_CHAIN_MAP.value, repeats=_REPEATS.value)
  elif command == "sweep":
    result = benchmarks.sweep_throughput(_CONFIG.value, num_checkpoints=_CHECKPOINTS.value,
                                         batch_size=_BATCH.value, num_chains=_CHAINS.value,
                                         num_draws=_DRAWS.value, repeats=_REPEATS.value)
  elif command == "compare":
    from jaxdev import torch_reference
    reference = torch_reference.devinterp_throughput(
        batch_size=_BATCH.value, num_chains=_CHAINS.value, num_draws=_DRAWS.value)
    ours = benchmarks.sgld_throughput(_CONFIG.value, batch_size=_BATCH.value,
                                      num_chains=_CHAINS.value, num_draws=_DRAWS.value,
                                      chain_map=_CHAIN_MAP.value, repeats=_REPEATS.value)
    result = {"benchmark": "compare", "batch_size": _BATCH.value, "num_chains": _CHAINS.value,
              "num_draws": _DRAWS.value,
              "devinterp_chain_steps_per_s": reference["chain_steps_per_s"],
              "jaxdev_chain_steps_per_s": ours["chain_steps_per_s"],
              "jaxdev_gflops_per_s": ours["gflops_per_s"],
              "speedup": ours["chain_steps_per_s"] / reference["chain_steps_per_s"],
              "torch": reference["torch"], **benchmarks.machine()}
  elif command == "devinterp":
    from jaxdev import torch_reference
    result = torch_reference.devinterp_throughput(
        batch_size=_BATCH.value, num_chains=_CHAINS.value, num_draws=_DRAWS.value)
  else:
    from jaxdev.analysis import ed
    result = ed.benchmark_ed(num_steps=_NUM_STEPS.value, dim=_DIM.value)
  print(json.dumps(result))


if __name__ == "__main__":
  sys.exit(cli.run(main))
