"""Device-hour estimates: their arithmetic, and that they come from the job's own program."""

import jax
import pytest

from configs import llc as llc_configs
from configs import regression as regression_configs
from jaxdev.measure import costs
from jaxdev import distributed
from jaxdev import llc
from jaxdev import train


def test_training_estimate_scales_the_timed_step():
  config = regression_configs.get_config("tiny")
  record = costs.training_estimate(config, warmup_steps=3)
  assert record["num_devices"] == 8  # the data mesh of the run: 32 rows over 8 devices
  assert record["seconds_per_step"] > 0
  assert record["wall_hours"] == pytest.approx(record["seconds_per_step"] * 60 / 3600)
  assert record["device_hours"] == pytest.approx(8 * record["wall_hours"])
  one = costs.training_estimate(config, devices=jax.devices()[:1], warmup_steps=3, num_steps=25)
  assert one["num_devices"] == 1
  assert one["device_hours"] == pytest.approx(one["wall_hours"])
  assert one["num_steps"] == 25  # a resumed run counts only the steps still to run
  assert one["wall_hours"] == pytest.approx(one["seconds_per_step"] * 25 / 3600)
  text = costs.format_estimate(record)
  assert text.startswith("estimate (train): ") and "(60 steps at" in text


def test_a_training_step_s_flops_count_every_device():
  """XLA counts one device's share of a partitioned program: the step's flops on the 8-device
  data mesh, summed over its devices, are those of the same step on one device plus what every
  device repeats (the optimizer update of the replicated parameters, the gradient all-reduce):
  9 % more on this tiny model, not a factor of 8 less."""
  config = regression_configs.get_config("tiny")
  task = train.make_task(config)
  eight = costs.training_call(task, config, num_steps=1)
  one = costs.training_call(task, config, num_steps=1, devices=jax.devices()[:1])
  assert eight.mesh.size == 8 and one.mesh.size == 1
  assert one.step_flops() < eight.step_flops() < 1.15 * one.step_flops()


def test_sweep_estimate_counts_groups_and_draws():
  train_config = regression_configs.get_config("tiny")
  settings = llc.SweepSettings.from_config(llc_configs.get_config("tiny").sgld)
  settings = settings.__class__(**{**settings.__dict__, "num_chains": 4})
  mesh = distributed.sweep_mesh(4)  # 8 devices: 2 checkpoints × 4 chains
  # 13 checkpoints in three sweeps (a main one and two restrictions), each padding its last group.
  record = costs.sweep_estimate(train_config, settings, num_checkpoints=[9, 2, 2],
                                checkpoints_per_batch=3, mesh=mesh, warmup_draws=2, repeats=1)
  # 3 rounded up to 2·2; ⌈9/4⌉ + 1 + 1 (not ⌈13/4⌉ = 4)
  assert record["group_size"] == 4 and record["num_groups"] == 5
  assert record["wall_hours"] == pytest.approx(
      record["seconds_per_group_draw"] * settings.num_draws * 5 / 3600)
  assert record["device_hours"] == pytest.approx(8 * record["wall_hours"])
  assert "13 checkpoints in 5 groups of 4, 4 chains" in costs.format_estimate(record)


def test_bad_training_config_is_refused_before_any_timing():
  config = regression_configs.get_config("tiny")
  config.optim.batch_size = 0
  with pytest.raises(train.ConfigError, match="batch_size"):
    costs.training_estimate(config)


def test_peak_measures_and_fractions(monkeypatch):
  from jaxdev.measure import peak  # pylint: disable=import-outside-toplevel
  for dtype in peak.DTYPES:
    assert 0.01 < peak.matmul_gflops(64, 32, 48, dtype, repeats=1) < 1e6
  assert 0.01 < peak.memory_gbytes_per_s(1 << 16, repeats=1) < 1e5
  monkeypatch.setattr(peak, "reference_peak", lambda dtype="float32": {"float32": 200.0,
                                                                       "bfloat16": 800.0}[dtype])
  record = peak.with_fraction({"gflops_per_s": 50.0, "x": 1})
  assert record == {"gflops_per_s": 50.0, "x": 1, "peak_gflops_per_s": 200.0,
                    "fraction_of_peak": 0.25}
  mixed = peak.with_fraction({"gflops_per_s": 50.0, "matmul_dtype": "bfloat16"})
  assert mixed["peak_gflops_per_s"] == 800.0 and mixed["fraction_of_peak"] == 50.0 / 800.0
  assert {name for name, *_ in peak.SHAPES} >= {"square_1024", "regression_qkv"}


def test_the_sgld_step_profile_takes_the_step_apart():
  """Each part of the SGLD step is timed on its own and the parts add up to the whole step (the
  differences of the module's docstring)."""
  from jaxdev.measure import profile  # pylint: disable=import-outside-toplevel
  config = regression_configs.get_config("tiny")
  record = profile.sgld_step_profile(config, batch_size=8, num_chains=2, num_draws=3, repeats=1)
  ms, parts = record["ms_per_chain_step"], record["parts_ms"]
  assert set(ms) == {"gather", "forward", "forward_backward", "noise", "step"}
  assert all(value > 0 for value in ms.values())
  assert sum(parts.values()) == pytest.approx(ms["step"])
  assert parts["backward"] == pytest.approx(ms["forward_backward"] - ms["forward"])
  assert sum(record["parts_share"].values()) == pytest.approx(1.0)
