"""Restricted LLCs as axes of one program: R weight restrictions sampled together, the LLC split
over observables (per-position LLCs) on the same draws, and the susceptibilities."""

import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdev import checkpoints
from jaxdev import engine
from jaxdev import llc
from jaxdev import sgld
from jaxdev import tasks

SETTINGS = llc.SweepSettings(step_size=1e-3, gamma=10.0, nbeta=None, num_chains=3, num_draws=25,
                             batch_size=16, num_sampling_examples=256, sampling_seed=5, seed=3)
RESTRICTED = [("head0.1", "head:0.1"), ("layer0", "layer:0"), ("wpe", "*wpe*")]


def _copy(tiny_run, tmp_path, name="run"):
  out = str(tmp_path / name)
  shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("llc", "indicators"))
  return out


def _records(out_dir, steps):
  return {s: dict(np.load(llc.result_path(out_dir, s))) for s in steps}


# ----------------------------------------------------------------------------- sgld level


def _mlp():
  """A two-leaf model whose first leaf in ravel order (``a``) is the one sampled below."""
  key_x, key_w = jax.random.split(jax.random.key(0))
  xs = jax.random.normal(key_x, (64, 3))
  ys = jnp.sin(xs @ jnp.array([1.0, -2.0, 0.5]))
  params = {"a": 0.3 * jax.random.normal(key_w, (3, 4)), "b": jnp.linspace(-1.0, 1.0, 4)}

  def loss_fn(p, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ p["a"]) @ p["b"] - y) ** 2)
  return loss_fn, params, (xs, ys)


def test_a_weight_restricted_estimate_is_the_estimate_of_the_model_with_frozen_weights():
  # The noise is one normal vector over the parameters in ravel order; sampling the leading
  # leaf "a" draws the same numbers for it as a model whose only parameter is "a".
  loss_fn, params, data = _mlp()
  options = dict(step_size=1e-3, gamma=5.0, nbeta=20.0, num_chains=3, num_draws=40,
                 batch_size=16, warn=False)
  key = jax.random.key(7)
  restricted = sgld.estimate_llc(loss_fn, params, data, key, mask={"a": True, "b": False},
                                 **options)
  frozen_b = params["b"]
  reduced = sgld.estimate_llc(lambda a, batch: loss_fn({"a": a, "b": frozen_b}, batch),
                              params["a"], data, key, **options)
  np.testing.assert_allclose(restricted.loss_trace, reduced.loss_trace, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(restricted.llc_per_chain, reduced.llc_per_chain, rtol=1e-5)
  np.testing.assert_allclose(restricted.diagnostics["distance"], reduced.diagnostics["distance"],
                             rtol=1e-5, atol=1e-7)
  # ... and differs from the unrestricted chains.
  full = sgld.estimate_llc(loss_fn, params, data, key, **options)
  assert np.abs(full.loss_trace[:, 1:] - restricted.loss_trace[:, 1:]).max() > 1e-4


def test_observables_split_the_llc_exactly_and_their_susceptibility_is_a_covariance():
  loss_fn, params, data = _mlp()

  def residuals(p, batch):  # the mean squared residual of each half of the batch
    x, y = batch
    r2 = (jnp.tanh(x @ p["a"]) @ p["b"] - y) ** 2
    return jnp.stack([r2[:8].mean(), r2[8:].mean()])

  result = sgld.estimate_llc(loss_fn, params, data, jax.random.key(1), step_size=1e-3,
                             gamma=5.0, nbeta=20.0, num_chains=4, num_draws=60, batch_size=16,
                             num_burnin=10, warn=False, observables=residuals)
  obs = result.observables
  assert obs["trace"].shape == (4, 60, 2)
  # Batches of 16: the mean of the two halves is the loss, at every draw and at w*.
  np.testing.assert_allclose(obs["trace"].mean(-1), result.loss_trace, rtol=1e-5)
  np.testing.assert_allclose(obs["init"].mean(), result.init_loss, rtol=1e-5)
  np.testing.assert_allclose(obs["llc"].mean(), result.llc_mean, rtol=1e-4)
  np.testing.assert_allclose(obs["llc_per_chain"].mean(-1), result.llc_per_chain, rtol=1e-4)
  kept_phi = obs["trace"][:, 10:].reshape(-1, 2)
  kept_loss = result.loss_trace[:, 10:].reshape(-1)
  for o in range(2):
    expected = -20.0 * np.cov(kept_phi[:, o], kept_loss, ddof=1)[0, 1]
    np.testing.assert_allclose(obs["susceptibility"][o], expected, rtol=1e-6)
  # The loss's own susceptibility is −nβ·Var(L), whatever the split: χ summed over the halves
  # of a mean is twice the mean's.
  np.testing.assert_allclose(obs["susceptibility"].sum() / 2,
                             -20.0 * np.var(kept_loss, ddof=1), rtol=1e-5)


# ----------------------------------------------------------------------------- the sweep


def test_a_restriction_to_every_weight_is_the_unrestricted_sweep_bitwise(tiny_run, tmp_path):
  run = _copy(tiny_run, tmp_path)
  steps = [0, 20, 60]
  plain = llc.sweep(run, SETTINGS, steps=steps, checkpoints_per_batch=2, show_progress=False)
  every = llc.sweep(run, dataclasses.replace(SETTINGS, mask="*"), steps=steps,
                    checkpoints_per_batch=2, name="every", show_progress=False)
  for step in steps:
    a, b = _records(plain.out_dir, [step])[step], _records(every.out_dir, [step])[step]
    for key in ("llc_per_chain", "loss_trace", "init_loss", "distance_trace"):
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("restriction_map", ["vmap", "map"])
def test_a_sweep_over_restrictions_equals_one_sweep_per_restriction(tiny_run, tmp_path,
                                                                    restriction_map):
  run = _copy(tiny_run, tmp_path)
  steps = [0, 20, 60]
  together = llc.sweep_restricted(run, SETTINGS, RESTRICTED, steps=steps, checkpoints_per_batch=2,
                                  restriction_map=restriction_map, show_progress=False)
  assert list(together) == [f"default-{s}" for s, _ in RESTRICTED]
  for (suffix, mask), (name, result) in zip(RESTRICTED, together.items()):
    assert result.steps_done == steps and not result.failed
    single = llc.sweep(run, dataclasses.replace(SETTINGS, mask=mask), steps=steps,
                       checkpoints_per_batch=2, name=f"single-{suffix}", show_progress=False)
    # The same settings file as the single sweep: a later sweep of that name finds it done.
    with open(os.path.join(result.out_dir, "settings.json")) as f1, \
        open(os.path.join(single.out_dir, "settings.json")) as f2:
      assert f1.read() == f2.read()
    again = llc.sweep(run, dataclasses.replace(SETTINGS, mask=mask), steps=steps, name=name,
                      show_progress=False)
    assert again.steps_done == [] and again.steps_skipped == steps
    ours, theirs = _records(result.out_dir, steps), _records(single.out_dir, steps)
    for step in steps:
      for key in ("llc_per_chain", "loss_trace", "init_loss", "distance_trace"):
        # One program compiles differently from another: equal to float32 rounding.
        np.testing.assert_allclose(ours[step][key], theirs[step][key], rtol=2e-5, atol=1e-6,
                                   err_msg=key)
  # The restrictions differ from each other (each mask reached its chains).
  traces = [_records(r.out_dir, [60])[60]["loss_trace"] for r in together.values()]
  assert min(np.abs(traces[i] - traces[j]).max() for i in range(3) for j in range(i)) > 1e-6


def test_a_killed_restricted_sweep_resumes_where_each_restriction_stopped(tiny_run, tmp_path):
  run = _copy(tiny_run, tmp_path)
  first = llc.sweep_restricted(run, SETTINGS, RESTRICTED[:2], steps=[0, 20],
                               checkpoints_per_batch=1, show_progress=False)
  assert all(r.steps_done == [0, 20] for r in first.values())
  # Restriction 2 is new and restriction 0 lost a record: both are computed, nothing else.
  os.remove(llc.result_path(first["default-head0.1"].out_dir, 20))
  second = llc.sweep_restricted(run, SETTINGS, RESTRICTED, steps=[0, 20, 60],
                                checkpoints_per_batch=1, show_progress=False)
  assert second["default-head0.1"].steps_done == [20, 60]
  assert second["default-layer0"].steps_done == [60]
  assert second["default-layer0"].steps_skipped == [0, 20]
  assert second["default-wpe"].steps_done == [0, 20, 60]
  fresh = llc.sweep_restricted(_copy(tiny_run, tmp_path, "fresh"), SETTINGS, RESTRICTED,
                               steps=[0, 20, 60], checkpoints_per_batch=2, show_progress=False)
  for name in fresh:
    a = _records(second[name].out_dir, [0, 20, 60])
    b = _records(fresh[name].out_dir, [0, 20, 60])
    for step in (0, 20, 60):
      np.testing.assert_allclose(a[step]["llc_per_chain"], b[step]["llc_per_chain"], rtol=2e-5)


def test_per_position_llcs_average_to_the_llc_on_shared_draws(tiny_run, tmp_path):
  run = _copy(tiny_run, tmp_path)
  settings = dataclasses.replace(SETTINGS, observables="positions", num_burnin=5)
  result = llc.sweep(run, settings, steps=[0, 60], checkpoints_per_batch=2, show_progress=False)
  plain = llc.sweep(run, dataclasses.replace(settings, observables=""), steps=[0, 60],
                    name="plain", show_progress=False)
  config = llc.load_run_config(run)
  for step, record in _records(result.out_dir, [0, 60]).items():
    per_position = record["observable_llc"]
    assert per_position.shape == (config.data.num_examples,)
    np.testing.assert_allclose(per_position.mean(), record["llc_mean"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(record["observable_init"].mean(), record["init_loss"], rtol=1e-5)
    # Recording observables does not change the chains.
    other = _records(plain.out_dir, [step])[step]
    np.testing.assert_array_equal(record["loss_trace"], other["loss_trace"])
    assert record["susceptibility"].shape == per_position.shape
    assert np.all(np.isfinite(record["susceptibility"]))
  # The positions differ: later positions have more context to use and other losses.
  assert np.ptp(_records(result.out_dir, [60])[60]["observable_init"]) > 1e-3


def test_per_position_losses_of_both_models_average_to_their_loss(tiny_run, tiny_language_run):
  for run in (tiny_run, tiny_language_run):
    config = llc.load_run_config(run)
    task = tasks.make_task(config)
    params = task.init(jax.random.key(2))
    batch = task.sampling_data(1, 8)
    positions = task.model.observables["positions"](params, batch)
    expected = (config.data.num_examples if config.task == "regression"
                else config.data.row_length - 1)
    assert positions.shape == (expected,)
    np.testing.assert_allclose(positions.mean(), task.loss_fn(params, batch), rtol=1e-6)


def test_an_unknown_observable_is_one_config_error_before_any_file(tiny_run, tmp_path):
  run = _copy(tiny_run, tmp_path)
  with pytest.raises(llc.ConfigError, match="no observable 'heads'"):
    llc.sweep(run, dataclasses.replace(SETTINGS, observables="heads"), show_progress=False)
  assert not os.path.exists(os.path.join(run, "llc"))


def test_combined_plans_write_only_where_a_record_is_missing(tiny_run, tmp_path):
  run = _copy(tiny_run, tmp_path)
  from jaxdev import rundir
  rd = rundir.RunDir(run)
  a = engine.plan(rd, rd.llc("a"), settings_record={"x": 1}, steps=[0, 20])
  b = engine.plan(rd, rd.llc("b"), settings_record={"x": 2}, steps=[0, 20])
  rd.llc("a").write(0, {"step": np.int64(0), "v": np.float64(-1.0)})
  a.release()  # a plan holds its directory's write lock until mapped or released
  a = engine.plan(rd, rd.llc("a"), settings_record={"x": 1}, steps=[0, 20])
  both = engine.combine([a, b])
  assert both.todo == [0, 20] and both.skipped == []
  abstract = jax.eval_shape(tasks.make_task(llc.load_run_config(run)).init, jax.random.key(0))
  result = engine.map_checkpoints(
      both, lambda: (lambda params: {"n": jax.tree.leaves(params)[0].sum(axis=tuple(
          range(1, jax.tree.leaves(params)[0].ndim)))}),
      abstract_params=abstract, show_progress=False,
      to_record=lambda step, out: [{"step": np.int64(step), "v": np.float64(1.0)},
                                   {"step": np.int64(step), "v": np.float64(2.0)}])
  assert result.done == [0, 20] and result.out_dir == [rd.llc("a").path, rd.llc("b").path]
  assert float(np.load(llc.result_path(rd.llc("a").path, 0))["v"]) == -1.0  # kept
  assert float(np.load(llc.result_path(rd.llc("a").path, 20))["v"]) == 1.0
  assert [float(np.load(llc.result_path(rd.llc("b").path, s))["v"]) for s in (0, 20)] == [2, 2]


def test_the_analysis_draws_restricted_and_per_position_curves_labelled_by_their_masks(
    tiny_run, tmp_path):
  from jaxdev.analysis import run as analysis_run
  run = _copy(tiny_run, tmp_path)
  settings = dataclasses.replace(SETTINGS, observables="positions")
  llc.sweep(run, settings, show_progress=False)
  llc.sweep_restricted(run, settings, RESTRICTED[:2], steps=[0, 20, 60], show_progress=False)
  summary = analysis_run.analyze_run(run, restricted=("default-head0.1", "default-layer0"))
  figures = {os.path.basename(p) for p in summary["figures"]}
  assert {"llc_restricted.png", "llc_positions.png"} <= figures
  assert analysis_run.restriction_mask(run, "default-head0.1") == "head:0.1"
  observed = analysis_run.load_observables(run)
  assert observed["name"] == "positions" and observed["observable_llc"].shape[1] == 8
  np.testing.assert_allclose(observed["observable_llc"].mean(axis=1), observed["llc_mean"],
                             rtol=1e-4, atol=1e-4)
  assert analysis_run.load_observables(run, "default-head0.1")["observable_llc"].shape[1] == 8


@pytest.mark.parametrize("task", ["regression", "language"])
def test_the_restrictions_benchmark_times_both_programs_on_the_same_work(task):
  from jaxdev.configs import language, regression
  from jaxdev.measure import benchmarks
  config = (regression if task == "regression" else language).get_config("tiny")
  result = benchmarks.run("restrictions", config, batch_size=4, num_chains=2, num_draws=3,
                          num_checkpoints=2, chain_map="vmap", train_steps=1, repeats=1,
                          ed_steps=0, ed_dim=0, restrictions="layers")
  assert result["num_restrictions"] == config.model.num_layers
  assert len(result["separate_sweep_s_each"]) == config.model.num_layers
  assert result["one_program_s"] > 0 and result["separate_sweeps_s"] > 0
  np.testing.assert_allclose(result["speedup"],
                             result["separate_sweeps_s"] / result["one_program_s"])


def test_per_position_llcs_are_published_and_set_beside_a_reference(tiny_run, tmp_path):
  from jaxdev.report import artifacts, compare, files
  run = _copy(tiny_run, tmp_path)
  settings = dataclasses.replace(SETTINGS, observables="positions")
  llc.sweep(run, settings, steps=[20, 60], name="positions", show_progress=False)
  out = str(tmp_path / "published")
  path = artifacts.export_check(run, out, "positions")
  table = files.read_csv(path)
  records = _records(rundir_llc(run, "positions"), [20, 60])
  np.testing.assert_array_equal(table["llc_position_3"],
                                [records[s]["observable_llc"][2] for s in (20, 60)])
  reference = tmp_path / "reference"
  reference.mkdir()
  files.write_csv(str(reference / "llc.csv"), {
      "step": np.array([19, 59]), "llc_mean": np.array([1.0, 2.0]),
      "llc_chain_std": np.array([0.1, 0.1]),
      **{f"llc_position_{k}": np.array([float(k), 10.0 * k]) for k in range(1, 9)}})
  markdown = compare.position_llc_table(out, str(reference), "positions")
  lines = markdown.splitlines()
  assert len(lines) == 2 + 2 * 8
  ours = table["llc_position_8"][1]
  assert f"{ours - 80.0:,.1f}" in lines[-1] and "80.0 (step 59)" in lines[-1]


def rundir_llc(run, name):
  from jaxdev import rundir
  return rundir.RunDir(run).llc(name).path


def test_restricted_figure_puts_heads_and_layers_on_panels_of_their_own():
  from jaxdev.analysis import plots
  steps = np.array([0, 10, 100])
  curve = (steps, np.array([0.1, 0.5, 2.0]), np.array([0.05, 0.1, 0.1]))
  layer = (steps, np.array([1.0, 20.0, 50.0]), np.array([0.2, 0.3, 0.4]))
  fig = plots.plot_restricted({"head:1.0": curve, "head:1.1": curve, "layer:0": layer},
                              full=(steps, np.array([5.0, 60.0, 200.0])))
  heads_ax, others_ax, twin = fig.axes
  assert [line.get_label() for line in heads_ax.get_lines()] == ["head:1.0", "head:1.1"]
  assert [line.get_label() for line in others_ax.get_lines()] == ["layer:0"]
  assert twin.get_lines()[0].get_label() == "all weights"
  assert len(plots.plot_restricted({"head:0.0": curve}).axes) == 1
