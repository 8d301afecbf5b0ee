"""Benchmarks; each prints JSON lines (forms: one per detector and null model). A result with a
GFLOP/s figure also gives it as fraction_of_peak of this machine's float32 matmul peak.

  python scripts/benchmark.py peak   # matmul GFLOP/s (float32, bfloat16) and memory bandwidth

  python scripts/benchmark.py train [--config configs/regression.py:paper]
  python scripts/benchmark.py sgld --batch 128 --chains 4 --draws 200
  python scripts/benchmark.py profile --batch 1024 --chains 4 --draws 50  # the SGLD and training steps taken apart
  python scripts/benchmark.py sweep --checkpoints 8 --chains 4 --draws 100 --batch 1024
  python scripts/benchmark.py restrictions --restrictions heads --checkpoints 4 --chains 4 --draws 100
  python scripts/benchmark.py ed --num_steps 5000 --dim 20000
  python scripts/benchmark.py hessian --sequences 1024 --probes 100  # trace + top-3 eigenvalues
  python scripts/benchmark.py devinterp --batch 128 --chains 4 --draws 200   # needs torch, devinterp
  python scripts/benchmark.py compare --batch 128 --chains 4 --draws 200     # both, one after the other
  python scripts/benchmark.py forms --num_nulls 100  # form detectors: null paths, planted turns
  python scripts/benchmark.py groundtruth --max_params 1000000 --budget 80000  # DLN ladder vs exact λ
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
_RESTRICTIONS = flags.DEFINE_string(
    "restrictions", "heads", "Weight restrictions (restrictions): heads, layers or masks split by ';'.")
_RESTRICTION_MAP = flags.DEFINE_enum(
    "restriction_map", "map", ["vmap", "map"], "How restrictions are batched (restrictions).")
_CHAIN_MAP = flags.DEFINE_enum("chain_map", "vmap", ["vmap", "map"], "How chains are batched (sgld).")
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", 16, "Optimizer steps per timed call (train; rounded down as training chunks them).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (the median is reported).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 5000, "ED probe rows (ed).")
_DIM = flags.DEFINE_integer("dim", 20000, "ED probe width (ed).")
_SEQUENCES = flags.DEFINE_integer("sequences", 1024, "Sequences in the Hessian batch (hessian).")
_PROBES = flags.DEFINE_integer("probes", 100, "Hutchinson probes (hessian).")
_NUM_NULLS = flags.DEFINE_integer("num_nulls", 20, "Null paths per model, planted turns per index.")
_MAX_PARAMS = flags.DEFINE_integer("max_params", 1_000_000, "Largest model of the ladder (groundtruth).")
_MIN_PARAMS = flags.DEFINE_integer("min_params", 0, "Smallest model of the ladder (groundtruth).")
_BUDGET = flags.DEFINE_integer(
    "budget", 80_000, "Gradient evaluations of the procedure and the first estimate (groundtruth).")
_MAX_BUDGET = flags.DEFINE_integer(
    "max_budget", 0, "Ceiling when unsettled chains are doubled in length; 0: 16 × budget (groundtruth).")
_MATMUL_DTYPE = flags.DEFINE_enum("matmul_dtype", "float32", ["float32", "bfloat16"],
                                  "Precision of the dense products' inputs (sgld, compare).")
_PRECONDITIONER = flags.DEFINE_enum(
    "preconditioner", "none", ["none", "rmsprop", "rmsprop_from_one"],
    "The procedure's sampler (groundtruth): plain SGLD, RMSProp-SGLD with V starting at 0 "
    "(devinterp's) or at 1.")
_ED_SCORES = flags.DEFINE_string(
    "ed_scores", cli.repo_path(__file__, "docs", "reproduction", "lr-seed0", "ed_scores.csv"),
    "A run's published PC scores: T, the speed profile and the noise level (forms).")


def main(argv):
  from jaxdev.measure import benchmarks  # pylint: disable=import-outside-toplevel
  if len(argv) != 2 or argv[1] not in benchmarks.COMMANDS:
    raise app.UsageError(f"usage: benchmark.py {{{'|'.join(benchmarks.COMMANDS)}}} [flags]")
  result = benchmarks.run(
      argv[1], _CONFIG.value, batch_size=_BATCH.value, num_chains=_CHAINS.value,
      num_draws=_DRAWS.value, num_checkpoints=_CHECKPOINTS.value, chain_map=_CHAIN_MAP.value,
      train_steps=_TRAIN_STEPS.value, repeats=_REPEATS.value, ed_steps=_NUM_STEPS.value,
      ed_dim=_DIM.value, hessian_sequences=_SEQUENCES.value, hessian_probes=_PROBES.value,
      num_nulls=_NUM_NULLS.value, ed_scores=_ED_SCORES.value, restrictions=_RESTRICTIONS.value,
      restriction_map=_RESTRICTION_MAP.value, max_params=_MAX_PARAMS.value, budget=_BUDGET.value,
      max_budget=_MAX_BUDGET.value, min_params=_MIN_PARAMS.value,
      preconditioner=_PRECONDITIONER.value, matmul_dtype=_MATMUL_DTYPE.value)
  for line in [result] if isinstance(result, dict) else result:
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
  sys.exit(cli.run(main, positional=True))
