"""Throughput measurements behind ``scripts/benchmark.py`` (each returns a JSON-able dict).

Every benchmark times a program the jobs run, reached through its public function: training
through :func:`jaxdev.measure.costs.training_call` (:func:`jaxdev.train.build_update`), the
sampler through :func:`jaxdev.sgld.run_chains`, the sweep through
:func:`jaxdev.measure.costs.sweep_call` (:func:`jaxdev.llc.build_estimator`). Timings exclude
compilation: each program compiles, runs one warm-up call, then ``repeats`` timed calls
(:func:`jaxdev.measure.timing.median_seconds`). GFLOP/s uses XLA's own cost analysis of the
compiled program, so it counts what the program does, not a formula.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxdev.measure import costs
from jaxdev.measure import peak as peak_lib
from jaxdev.measure import profile
from jaxdev.measure import timing
from jaxdev.measure.timing import machine
from jaxdev.measure.timing import time_compiled

COMMANDS = ("train", "sgld", "sweep", "restrictions", "ed", "hessian", "devinterp", "compare",
            "forms", "groundtruth", "peak", "profile")


def _language_task(config):
  """A language task on random token rows of the configured shape: no corpus is needed, since
  the model's cost does not depend on the token values."""
  from jaxdev import tasks  # pylint: disable=import-outside-toplevel
  model = tasks.model_for(config)
  rows = np.asarray(jax.random.randint(jax.random.key(1), (config.optim.batch_size,
                                                            config.data.row_length), 0,
                                       config.data.vocab_size, dtype=np.int32))
  return tasks.Task(init=model.init, train_batch=None, loss_fn=model.loss_fn, evaluate=None,
                    probe=None, probe_shape=(), sampling_data=None, baselines={},
                    host_batch=lambda step: rows, model=model)


def train_throughput(config, *, num_steps: int = 16, repeats: int = 5, devices=None) -> dict:
  """Training steps/s (and tokens/s for a language config) of the training program of ``config``.

  The program is the run's own (:func:`jaxdev.train.build_update` on its data mesh over
  ``devices``, default all), one call of ``num_steps`` steps rounded down as training chunks
  them; regression batches are drawn inside the step as in training, a language config runs on
  random token rows.
  """
  from jaxdev import train  # pylint: disable=import-outside-toplevel
  train.validate_config(config)
  task = _language_task(config) if config.task == "language" else train.make_task(config)
  program = costs.training_call(task, config, num_steps=num_steps, devices=devices)
  seconds = timing.median_seconds(program.call, repeats)
  steps = program.length
  flops = steps * program.step_flops()
  result = {"benchmark": "train", "task": config.task, "batch_size": config.optim.batch_size,
            "num_params": int(sum(x.size for x in jax.tree.leaves(program.params))),
            "num_steps": steps, "steps_per_s": steps / seconds,
            "ms_per_step": 1e3 * seconds / steps,
            "gflops_per_s": flops / seconds / 1e9, **machine(), "num_devices": program.mesh.size}
  if config.task == "language":
    tokens = config.optim.batch_size * (config.data.row_length - 1)  # predicted tokens per step
    result["tokens_per_step"] = tokens
    result["tokens_per_s"] = tokens * steps / seconds
    result["hours_for_run"] = config.optim.num_steps * seconds / steps / 3600
  return result


def gradient_costs(task, params, data, batch_size: int) -> tuple[float, float]:
  """(flops, bytes accessed) of one loss-and-gradient evaluation on a minibatch (one
  chain-step's work), from XLA's cost analysis of one compilation (see
  :func:`jaxdev.measure.timing.compiled_flops`)."""
  batch = jax.tree.map(lambda x: x[:batch_size], data)
  compiled = jax.jit(jax.value_and_grad(task.loss_fn)).lower(params, batch).compile()
  return timing.compiled_flops(compiled), timing.compiled_flops(compiled, "bytes accessed")


def sgld_throughput(config, *, batch_size: int, num_chains: int, num_draws: int,
                    chain_map: str = "vmap", repeats: int = 3,
                    matmul_dtype: str = "float32") -> dict:
  """Chain-steps/s of :func:`jaxdev.sgld.run_chains` on the model of ``config`` (its dense
  products in ``matmul_dtype``, :func:`jaxdev.tasks.make_task`)."""
  from jaxdev import sgld  # pylint: disable=import-outside-toplevel
  task, params, data = profile.regression_sampling(config, max(8 * batch_size, 8192), matmul_dtype)
  keys = jax.random.split(jax.random.key(1), num_chains)
  kwargs = dict(step_size=3e-4, nbeta=66.67, gamma=6.67, batch_size=batch_size,
                chain_map=chain_map)

  def run(params, data, keys):
    return sgld.run_chains(task.loss_fn, params, data, keys, num_draws=num_draws, **kwargs).loss

  seconds, _ = time_compiled(run, (params, data, keys), repeats)
  step_flops, step_bytes = gradient_costs(task, params, data, batch_size)
  flops = num_chains * num_draws * step_flops
  return {"benchmark": "sgld", "batch_size": batch_size, "num_chains": num_chains,
          "mflops_per_chain_step": step_flops / 1e6,
          "mbytes_accessed_per_chain_step": step_bytes / 1e6,
          "arithmetic_intensity": step_flops / step_bytes,
          "num_draws": num_draws, "chain_map": chain_map, "matmul_dtype": matmul_dtype,
          "chain_steps_per_s": num_chains * num_draws / seconds,
          "ms_per_chain_step": 1e3 * seconds / (num_chains * num_draws),
          "gflops_per_s": flops / seconds / 1e9, **machine()}


def sweep_throughput(config, *, num_checkpoints: int, batch_size: int, num_chains: int,
                     num_draws: int, repeats: int = 3) -> dict:
  """Chain-steps/s of the sweep's sharded program for K checkpoints × C chains on all devices."""
  from jaxdev import distributed, engine, llc  # pylint: disable=import-outside-toplevel
  task, params, data = profile.regression_sampling(config, max(8 * batch_size, 8192))
  settings = llc.SweepSettings(step_size=3e-4, nbeta=66.67, gamma=6.67, num_chains=num_chains,
                               num_draws=num_draws, batch_size=batch_size,
                               num_sampling_examples=max(8 * batch_size, 8192), sampling_seed=0,
                               num_init_loss_batches=1).resolved()
  mesh = distributed.sweep_mesh(num_chains)
  group = engine.group_size(num_checkpoints, mesh)
  call = costs.sweep_call(task, settings, mesh, num_checkpoints=group,
                          num_examples=settings.num_sampling_examples, params=params)
  seconds = timing.median_seconds(call, repeats)
  chain_steps = group * num_chains * num_draws
  flops = chain_steps * gradient_costs(task, params, data, batch_size)[0]
  return {"benchmark": "sweep", "num_checkpoints": group, "num_chains": num_chains,
          "num_draws": num_draws, "batch_size": batch_size, "mesh": dict(mesh.shape),
          "chain_steps_per_s": chain_steps / seconds,
          "ms_per_step_all_chains": 1e3 * seconds / num_draws,
          "gflops_per_s": flops / seconds / 1e9, **machine()}


def restrictions_throughput(config, *, num_checkpoints: int, batch_size: int, num_chains: int,
                            num_draws: int, restrictions: str = "heads",
                            restriction_map: str = "map", repeats: int = 3) -> dict:
  """R weight restrictions × C chains × K checkpoints as one program
  (:func:`jaxdev.llc.sweep_restricted`'s) against R calls of the single-restriction sweep
  program (what R separate sweeps run; one compiled program, since the mask is an argument).

  ``restrictions`` is a spec of :func:`jaxdev.llc.restrictions` ("heads", "layers", masks
  separated by ';') for the model of ``config``; a regression config samples its own
  distribution, a language config random token rows of its shape. Checkpoint reads are left out
  of both (the separate sweeps would read every checkpoint R times).
  """
  from jaxdev import distributed, engine, llc  # pylint: disable=import-outside-toplevel
  num_examples = max(8 * batch_size, 1024 if config.task == "language" else 8192)
  if config.task == "language":
    task = _language_task(config)
    rows = np.asarray(jax.random.randint(jax.random.key(2), (num_examples, config.data.row_length),
                                         0, config.data.vocab_size, dtype=np.int32))
    task = task._replace(sampling_data=lambda seed, n: rows[:n])
  else:
    task, _, _ = profile.regression_sampling(config, num_examples)
  masks = [mask for _, mask in llc.restrictions(restrictions, config.model)]
  settings = llc.SweepSettings(step_size=1e-4, nbeta=None, gamma=100.0, num_chains=num_chains,
                               num_draws=num_draws, batch_size=batch_size,
                               num_sampling_examples=num_examples, sampling_seed=0,
                               num_init_loss_batches=1).resolved()
  mesh = distributed.sweep_mesh(num_chains)
  group = engine.group_size(num_checkpoints, mesh)
  sizes = dict(num_checkpoints=group, num_examples=num_examples)
  together = timing.median_seconds(
      costs.sweep_call(task, settings, mesh, masks=masks, restriction_map=restriction_map,
                       **sizes), repeats)
  separate = [timing.median_seconds(costs.sweep_call(
      task, dataclasses.replace(settings, mask=mask).resolved(), mesh, **sizes),
      repeats) for mask in masks]
  chain_steps = len(masks) * group * num_chains * num_draws
  return {"benchmark": "restrictions", "task": config.task, "restrictions": restrictions,
          "num_restrictions": len(masks), "num_checkpoints": group, "num_chains": num_chains,
          "num_draws": num_draws, "batch_size": batch_size, "restriction_map": restriction_map,
          "one_program_s": together, "separate_sweeps_s": float(np.sum(separate)),
          "separate_sweep_s_each": [float(x) for x in separate],
          "speedup": float(np.sum(separate)) / together,
          "one_program_chain_steps_per_s": chain_steps / together,
          "separate_chain_steps_per_s": chain_steps / float(np.sum(separate)),
          "mesh": dict(mesh.shape), **machine()}


def compare_with_devinterp(config, *, batch_size: int, num_chains: int, num_draws: int,
                           num_checkpoints: int = 2, chain_map: str = "vmap", repeats: int = 3,
                           matmul_dtype: str = "float32") -> dict:
  """devinterp's (float32) and jaxdev's SGLD throughput on the same model, one after the other
  (jaxdev's dense products in ``matmul_dtype``).

  jaxdev is timed twice: ``jaxdev.sgld.run_chains`` on one device (``speedup``, what
  ``sgld.estimate_llc`` runs), and, in float32, the sweep's sharded program over every device of
  this process with ``num_checkpoints`` checkpoints per call (``sweep_speedup``, what
  ``scripts/llc_sweep.py`` runs; the CPU is one device per core in the scripts).
  """
  from jaxdev.measure import torch_reference  # pylint: disable=import-outside-toplevel
  sizes = dict(batch_size=batch_size, num_chains=num_chains, num_draws=num_draws)
  reference = torch_reference.devinterp_throughput(**sizes)
  ours = sgld_throughput(config, chain_map=chain_map, repeats=repeats,
                         matmul_dtype=matmul_dtype, **sizes)
  swept = sweep_throughput(config, num_checkpoints=num_checkpoints, repeats=repeats, **sizes)
  devinterp = reference["chain_steps_per_s"]
  return {"benchmark": "compare", **sizes, "matmul_dtype": matmul_dtype,
          "devinterp_chain_steps_per_s": devinterp,
          "jaxdev_chain_steps_per_s": ours["chain_steps_per_s"],
          "jaxdev_gflops_per_s": ours["gflops_per_s"],
          "speedup": ours["chain_steps_per_s"] / devinterp,
          "jaxdev_sweep_chain_steps_per_s": swept["chain_steps_per_s"],
          "sweep_num_checkpoints": swept["num_checkpoints"], "sweep_mesh": swept["mesh"],
          "sweep_speedup": swept["chain_steps_per_s"] / devinterp,
          "torch": reference["torch"], **machine()}


def run(command: str, config, *, batch_size: int, num_chains: int, num_draws: int,
        num_checkpoints: int, chain_map: str, train_steps: int, repeats: int,
        ed_steps: int, ed_dim: int, hessian_sequences: int = 1024, hessian_probes: int = 100,
        num_nulls: int = 20, ed_scores: str | None = None, restrictions: str = "heads",
        restriction_map: str = "map", max_params: int = 1_000_000, budget: int = 80_000,
        max_budget: int = 0, min_params: int = 0,
        preconditioner: str = "none", matmul_dtype: str = "float32"):
  """The benchmark ``command`` (one of :data:`COMMANDS`) with the command line's sizes (a dict;
  for "forms", a list of them; for "groundtruth", a generator of them, one per model). A result
  with a GFLOP/s figure also has it as ``fraction_of_peak`` of this machine's matmul peak in
  its ``matmul_dtype`` (:func:`jaxdev.measure.peak.with_fraction`)."""
  result = _run(command, config, batch_size=batch_size, num_chains=num_chains,
                num_draws=num_draws, num_checkpoints=num_checkpoints, chain_map=chain_map,
                train_steps=train_steps, repeats=repeats, ed_steps=ed_steps, ed_dim=ed_dim,
                hessian_sequences=hessian_sequences, hessian_probes=hessian_probes,
                num_nulls=num_nulls, ed_scores=ed_scores, restrictions=restrictions,
                restriction_map=restriction_map, max_params=max_params, budget=budget,
                max_budget=max_budget, min_params=min_params,
                preconditioner=preconditioner, matmul_dtype=matmul_dtype)
  if isinstance(result, dict):
    for key in ("gflops_per_s", "jaxdev_gflops_per_s"):
      if key in result:
        return peak_lib.with_fraction(result, key)
  return result


def _run(command, config, *, batch_size, num_chains, num_draws, num_checkpoints, chain_map,
         train_steps, repeats, ed_steps, ed_dim, hessian_sequences, hessian_probes, num_nulls,
         ed_scores, restrictions, restriction_map, max_params, budget, max_budget, min_params,
         preconditioner, matmul_dtype):
  if command == "peak":
    return peak_lib.peak(repeats=repeats)
  if command == "forms":
    return forms_benchmark(config, ed_scores, num_nulls=num_nulls)
  if command == "groundtruth":
    return groundtruth_benchmark(max_params=max_params, budget=budget, max_budget=max_budget,
                                 min_params=min_params, preconditioner=preconditioner)
  sizes = dict(batch_size=batch_size, num_chains=num_chains, num_draws=num_draws)
  if command == "profile":
    return [profile.sgld_step_profile(config, **sizes, repeats=repeats, matmul_dtype=matmul_dtype),
            profile.train_step_profile(config, num_steps=train_steps, repeats=repeats)]
  if command == "train":
    return train_throughput(config, num_steps=train_steps, repeats=repeats)
  if command == "sgld":
    return sgld_throughput(config, chain_map=chain_map, repeats=repeats,
                           matmul_dtype=matmul_dtype, **sizes)
  if command == "sweep":
    return sweep_throughput(config, num_checkpoints=num_checkpoints, repeats=repeats, **sizes)
  if command == "restrictions":
    return restrictions_throughput(config, num_checkpoints=num_checkpoints, repeats=repeats,
                                   restrictions=restrictions, restriction_map=restriction_map,
                                   **sizes)
  if command == "compare":
    return compare_with_devinterp(config, chain_map=chain_map, repeats=repeats,
                                  num_checkpoints=num_checkpoints, matmul_dtype=matmul_dtype,
                                  **sizes)
  if command == "devinterp":
    from jaxdev.measure import torch_reference  # pylint: disable=import-outside-toplevel
    return torch_reference.devinterp_throughput(**sizes)
  if command == "hessian":
    from jaxdev.measure import curvature  # pylint: disable=import-outside-toplevel
    return {**curvature.paper_regression_curvature(num_sequences=hessian_sequences,
                                                   num_probes=hessian_probes), **machine()}
  from jaxdev.analysis import ed  # pylint: disable=import-outside-toplevel
  return ed.benchmark_ed(num_steps=ed_steps, dim=ed_dim)


def groundtruth_benchmark(*, max_params: int, budget: int, max_budget: int = 0,
                          min_params: int = 0, preconditioner: str = "none"):
  """The deep-linear-network ladder (:mod:`jaxdev.groundtruth.ladder`) from ``min_params`` to
  ``max_params`` parameters: one dict per model as it finishes, with the machine.
  ``max_budget`` 0: 16 × ``budget``; ``preconditioner`` a name of
  :data:`jaxdev.groundtruth.ladder.PRECONDITIONERS`."""
  from jaxdev.groundtruth import ladder  # pylint: disable=import-outside-toplevel
  info = machine()
  for record in ladder.run_ladder(min_params=min_params, max_params=max_params, budget=budget,
                                  max_budget=max_budget or None,
                                  preconditioner=preconditioner):
    yield {"benchmark": "groundtruth", **record, **info}


PAPER_FORM_INDICES = (25, 345, 1061, 1689)  # the paper's LR forms (steps 2.5k … 168.9k)


def forms_benchmark(config, scores_path: str, *, num_nulls: int, num_trials: int | None = None,
                    turn_degs=(90.0, 120.0), max_step: int = 200_000, seed: int = 0) -> list:
  """False-positive rate and recall of the form detectors at a run's T and its probe's D.

  From a run's published PC scores (``ed_scores.csv``: step, pc_1 … pc_k) and its training
  ``config`` (the probe's D = ed.num_sequences × 2K × (D_in + 1) for regression), for each
  detector (the calibrated one on all PC planes, on (PC1, PCj) planes, and the authors'
  procedure, all up to ``max_step``) and each null model of :mod:`jaxdev.analysis.nulls`:
  ``num_nulls`` null paths (the same paths for every detector), the fraction with a form and its
  95% upper bound; and ``num_trials`` planted hairpins turning by each of ``turn_degs`` in every
  PC plane (the run's speed, a Brownian background at the run's noise level) at each of
  :data:`PAPER_FORM_INDICES`, the fraction found within ±2σ of the index (and the number of
  trials with a form elsewhere). For the calibrated detectors, the ROC over the turn threshold
  (null paths against the first of ``turn_degs``). Returns one dict per (detector, null model).
  """
  # pylint: disable=import-outside-toplevel
  import time
  from scipy import stats
  from jaxdev import tasks
  from jaxdev.analysis import ed, nulls, turns
  from jaxdev.report import files
  table = files.read_csv(scores_path)
  names = sorted((n for n in table if n.startswith("pc_")), key=lambda n: int(n[3:]))
  scores = np.stack([table[n].astype(np.float64) for n in names], axis=1)
  steps = np.asarray(table["step"])
  num_steps, k = scores.shape
  dim = tasks.probe_width(config)
  num_trials = num_nulls if num_trials is None else num_trials
  smooth_sigma = (ed.smooth_paper_sigma_schedule(num_steps) if num_steps >= 1000
                  else ed.smooth_scaled_sigma_schedule(num_steps))
  paper_sigma = (ed.paper_sigma_schedule(num_steps) if num_steps >= 1000
                 else ed.scaled_sigma_schedule(num_steps))
  max_index = int(np.searchsorted(steps, max_step, "right"))
  speed = nulls.speed_profile(ed.smooth(scores, smooth_sigma))
  noise = nulls.noise_steps(scores, smooth_sigma)
  detectors = {
      "turns": nulls.turn_detector(smooth_sigma, max_index=max_index, min_turn_deg=0.0),
      "turns_pc1": nulls.turn_detector(smooth_sigma, max_index=max_index, min_turn_deg=0.0,
                                       construction="pc1"),
      "authors": nulls.authors_detector(paper_sigma, max_index=max_index)}
  thresholds = {"turns": turns.MIN_TURN_DEG, "turns_pc1": turns.MIN_TURN_DEG}
  recall = {name: {} for name in detectors}
  elsewhere = {name: 0 for name in detectors}
  planted = {name: [] for name in detectors}
  trial_seconds = dict.fromkeys(detectors, 0.0)
  for turn in turn_degs:
    for index in PAPER_FORM_INDICES:
      if index >= max_index:
        continue
      within = max(1.0, 2 * smooth_sigma[index])
      for name, detect in detectors.items():
        start = time.perf_counter()
        report = nulls.planted_recall(detect, num_steps, index, num_trials, turn_deg=turn,
                                      speed=speed, noise=noise, sigma=smooth_sigma, seed=seed,
                                      num_components=k, within=within,
                                      threshold=thresholds.get(name))
        trial_seconds[name] += time.perf_counter() - start
        recall[name].setdefault(f"{turn:g}", {})[str(index)] = report.recall
        elsewhere[name] += report.elsewhere
        if turn == turn_degs[0]:
          planted[name].extend(report.strengths)
  lines = []
  for kind in nulls.NULL_KINDS:
    model = nulls.null_model(kind, num_steps, dim, speed=speed, num_components=k)
    reports = nulls.run_nulls(detectors, model, num_nulls, seed=seed, kind=kind)
    for name, report in reports.items():
      line = {"benchmark": "forms", "detector": name, "null": kind, "num_steps": num_steps,
              "dim": dim, "max_index": max_index, "num_paths": num_nulls}
      if name in thresholds:
        hits = int(np.sum(report.strengths >= thresholds[name]))
        line.update(threshold_deg=thresholds[name], num_with_form=hits,
                    false_positive_rate=hits / max(num_nulls, 1),
                    roc=nulls.roc(report.strengths, planted[name], [30, 45, 60, 75, 90, 120]))
      else:
        hits = report.num_with_form
        line.update(num_with_form=hits, false_positive_rate=report.false_positive_rate)
      line["false_positive_rate_upper_95"] = (
          1.0 if hits >= num_nulls else float(stats.beta.ppf(0.95, hits + 1, num_nulls - hits)))
      line.update(num_trials=num_trials, recall=recall[name],
                  planted_with_form_elsewhere=elsewhere[name], null_seconds=report.seconds,
                  trial_seconds=trial_seconds[name], **machine())
      lines.append(line)
  return lines
