"""The paper's configs: one definition in ``jaxdev.configs``, reachable from the installed package
and, unchanged, as the command-line files ``configs/*.py``."""

from __future__ import annotations

import os
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from jaxdev.configs import language, llc, regression

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "regression": (regression, ["paper", "quick", "tiny"]),
    "language": (language, ["paper", "quick", "cpu", "cpu_random", "cpu_ci", "cpu_random_ci",
                            "tiny"]),
    "llc": (llc, ["paper", "paper_cpu", "paper_cpu_long", "paper_cpu_5k", "paper_positions",
                  "paper_check", "quick", "quick_positions", "tiny", "language", "language_quick",
                  "language_cpu", "language_cpu_random", "language_cpu_ci",
                  "language_cpu_random_ci", "language_heads", "language_tiny"]),
}


def _from_command_line(name, variant):
  """The config an absl script gets for ``--config configs/NAME.py:VARIANT``."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=flag_values)
  flag_values(["prog", f"--config={os.path.join(REPO, 'configs', name + '.py')}:{variant}"])
  return flag_values.config


@pytest.mark.parametrize("name,variant", [(n, v) for n, (_, vs) in VARIANTS.items() for v in vs])
def test_command_line_file_gives_the_package_config(name, variant):
  module = VARIANTS[name][0]
  from_file = _from_command_line(name, variant)
  assert from_file.to_json_best_effort(sort_keys=True) == (
      module.get_config(variant).to_json_best_effort(sort_keys=True))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_unknown_variant_is_refused(name):
  with pytest.raises(ValueError, match="unknown config variant"):
    VARIANTS[name][0].get_config("nonsense")


@pytest.mark.parametrize("name", ["regression", "language"])
def test_configs_are_checked_for_their_shape(name):
  import json  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jaxdev import errors, tasks  # pylint: disable=import-outside-toplevel
  module, variants = VARIANTS[name]
  for variant in variants:  # every variant has the shape of its task's configs
    tasks.check_config(module.get_config(variant))

  def saved(edit):  # a config as config.json holds it, edited
    record = json.loads(module.get_config("tiny").to_json())
    edit(record)
    return ml_collections.ConfigDict(record)

  cases = [
      (lambda c: c.pop("optim"), "config has no section 'optim'"),
      (lambda c: c["model"].update(num_layers="two"), "config.model.num_layers must be an "
                                                      "integer, got 'two'"),
      (lambda c: c["optim"].update(num_steps=60.0), "config.optim.num_steps must be an integer"),
      (lambda c: c["optim"].update(peak_lr=True), "config.optim.peak_lr must be a number"),
      (lambda c: c["data"].update(colour=1), f"config.data.colour is not a field of a {name}"),
      (lambda c: c.update(model=3), "config.model must be a section, got 3"),
  ]
  for edit, message in cases:
    with pytest.raises(errors.ConfigError, match=message):
      tasks.check_config(saved(edit), complete=True)
  tasks.check_config(saved(lambda c: c.pop("optim")))  # the model and data make a task
  tasks.check_config(saved(lambda c: c["optim"].update(peak_lr=1)))  # an int for a float is fine
  tasks.check_config(saved(lambda c: c["ed"].pop("seed")))  # a field added after it was saved


def test_paper_variants_are_the_spec():
  lr = regression.get_config("paper")
  assert (lr.data.dim, lr.data.num_examples, lr.data.noise_variance, lr.data.num_tasks) == (4, 8, 0.125, 0)
  assert (lr.model.num_layers, lr.model.num_heads, lr.model.embed_dim, lr.model.mlp_dim) == (2, 4, 64, 64)
  assert (lr.optim.batch_size, lr.optim.num_steps, lr.optim.peak_lr) == (256, 500_000, 3e-3)
  assert (lr.optim.div_factor, lr.optim.final_div_factor, lr.optim.warmup_fraction) == (249_999.0, 249_999.0, 0.5)
  assert (lr.checkpoint.num_log, lr.checkpoint.num_linear, lr.ed.every) == (100, 100, 100)
  lm = language.get_config("paper")
  assert (lm.model.num_layers, lm.model.embed_dim, lm.model.num_heads, lm.model.head_dim) == (2, 256, 8, 32)
  assert (lm.model.context_length, lm.model.vocab_size, lm.data.vocab_size) == (1_024, 5_000, 5_000)
  assert (lm.optim.batch_size, lm.optim.num_steps, lm.optim.peak_lr, lm.optim.weight_decay) == (100, 50_000, 1e-3, 0.05)
  assert (lm.optim.div_factor, lm.optim.final_div_factor, lm.checkpoint.num_linear) == (1.0, 1.0, 501)
  heads = llc.get_config("language_heads")  # the follow-up paper's per-head settings
  assert (heads.sgld.step_size, heads.sgld.gamma, heads.sgld.nbeta) == (1e-3, 200.0, 30.0)
  assert (heads.sgld.num_chains, heads.sgld.num_draws, heads.sgld.batch_size) == (4, 200, 32)
  assert heads.sweep.restrictions == "heads"
  sweep = llc.get_config("paper").sgld
  assert (sweep.step_size, sweep.nbeta, sweep.gamma) == (3e-4, 66.67, 6.67)
  assert (sweep.num_chains, sweep.num_draws, sweep.num_burnin, sweep.batch_size) == (10, 5_000, 0, 1024)
  assert (sweep.num_sampling_examples, sweep.num_init_loss_batches) == (2 ** 20, 0)
  cpu = llc.get_config("paper_cpu").sgld  # the paper's posterior, fewer and cheaper draws
  assert (cpu.step_size, cpu.nbeta, cpu.gamma, cpu.num_sampling_examples) == (3e-4, 66.67, 6.67, 2 ** 20)
  assert (cpu.num_chains, cpu.num_draws, cpu.batch_size, cpu.num_burnin) == (4, 500, 64, 0)
  long = llc.get_config("paper_cpu_long")  # paper_cpu's chains, continued: only the length differs
  differing = {k for k, v in long.sgld.items() if cpu[k] != v}
  assert differing == {"num_draws"} and long.sgld.num_draws == 2_000
  assert long.sweep.name == "paper_cpu_long"
  full = llc.get_config("paper_cpu_5k")  # the same chains to the paper's 5,000 draws
  assert {k for k, v in full.sgld.items() if cpu[k] != v} == {"num_draws"}
  assert full.sgld.num_draws == 5_000 and full.sweep.name == "paper_cpu_5k"
  check = llc.get_config("paper_check")  # the reference for paper_cpu: the paper's batch
  assert (check.sgld.step_size, check.sgld.nbeta, check.sgld.gamma) == (3e-4, 66.67, 6.67)
  assert (check.sgld.num_chains, check.sgld.num_draws, check.sgld.batch_size) == (4, 2_000, 1024)
  assert check.sgld.num_sampling_examples == 2 ** 20 and check.sweep.name == "paper_check"
  lm_sweep = llc.get_config("language").sgld
  assert (lm_sweep.num_chains, lm_sweep.num_draws, lm_sweep.batch_size, lm_sweep.nbeta) == (20, 200, 100, 0)


def test_configs_import_from_outside_the_checkout(tmp_path):
  """From any working directory, as after ``pip install`` of the package."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  code = ("from jaxdev.configs import llc, regression, language\n"
          "print(regression.get_config('quick').optim.num_steps, llc.get_config('quick').sgld.num_draws)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["5000", "160"]
