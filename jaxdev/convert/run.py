"""A directory of per-step PyTorch checkpoints -> a jaxdev run directory.

``import_run(checkpoint_dir, workdir, train_config)`` reads one PyTorch checkpoint file per
training step (``.pt``, ``.pth``, ``.bin``, ``.ckpt`` or ``.safetensors``; the step is the last
number in the file name, e.g. ``checkpoint_0001000.pt`` or ``step-1000.pth``; each file a state
dict, or a training checkpoint holding one under ``model`` / ``state_dict`` /
``model_state_dict``) and the model's config (a JSON file, by default ``config.json`` in the same
directory), converts every state dict and writes a run directory (:class:`jaxdev.rundir.RunDir`)
that the LLC sweep, the indicators and the analysis read as they read a run jaxdev trained:

- ``config.json``: ``train_config`` (which supplies the data the sweep samples from and the
  evaluation and probe sets) with the model section, and for regression the data sizes, taken
  from the imported model's config; ``optim.num_steps`` is the last imported step;
- ``checkpoints/STEP``: the converted params at each step. The PyTorch optimizer state is not
  converted: the ``opt_state`` item holds the config's optimizer freshly initialised, and the run
  is marked finished, so training never resumes from it;
- ``metrics.jsonl`` (evaluation at every imported step), ``baselines.json`` and the ED probe at
  the imported steps, unless ``evaluate=False``.

Model configs understood:

- TransformerLens: a ``HookedTransformerConfig`` as a dict (``cfg.to_dict()``, the JSON next to
  TransformerLens checkpoints) of an attention-only model with LayerNorm and shortformer
  positions (:mod:`jaxdev.convert.transformer_lens`); the training config must be a language
  config.
- The authors' regression runs: their ``task_config`` (``task_size``, ``max_examples``,
  ``num_heads``, ``noise_variance``, ``num_tasks``; a dict holding ``task_config`` is also
  accepted) (:mod:`jaxdev.convert.regression`); the training config must be a regression one.

Importing again into the same directory skips the steps already saved and evaluated (the
evaluation of each checkpoint is a per-checkpoint record in ``evaluations/``, made by
:func:`jaxdev.engine.map_checkpoints` from the checkpoint as saved) and rewrites the metrics and
the probe from those records, so an interrupted import is finished by running it again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import jax
import ml_collections

from jaxdev import checkpoints
from jaxdev import rundir
from jaxdev.convert import regression as convert_regression
from jaxdev.convert import transformer_lens as convert_tl
from jaxdev.convert.common import ConversionError, load_torch_file, model_state_dict

SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
MODEL_CONFIG = "config.json"


_METRIC = "eval."  # record members holding the evaluation's metrics (the probe row is "probe")


def evaluate_run(run: rundir.RunDir, config, steps: list, abstract_params) -> None:
  """Evaluates the checkpoints of ``run`` at ``steps`` and writes ``metrics.jsonl``,
  ``baselines.json`` and the ED probe from them, as training writes them.

  The evaluation and probe row of each checkpoint are a per-checkpoint measurement
  (:func:`jaxdev.engine.map_checkpoints`, one record per step in ``run.evaluations()``, kept
  across an interrupted import); the metrics and the probe are then rewritten whole from the
  records, in step order.
  """
  # pylint: disable=import-outside-toplevel
  from jaxdev import engine
  from jaxdev import tasks as tasks_lib
  from jaxdev import train

  task = tasks_lib.make_task(config)
  records = run.evaluations()
  plan = engine.plan(run, records, settings_record={"config": json.loads(config.to_json())},
                     steps=steps, required=("step", "probe"), what="training config",
                     rename_hint="import into another workdir")
  if plan.missing:
    raise ConversionError(f"{run.path}: no checkpoint at steps {sorted(plan.missing)[:5]}")

  def build():
    evaluate_fn, probe_fn = jax.jit(task.evaluate), jax.jit(task.probe)
    return lambda params: {"values": evaluate_fn(params), "probe": probe_fn(params)}

  def to_record(step, output):
    values = {_METRIC + name: value for name, value in output["values"].items()}
    return engine.dict_record(step, {**values, "probe": output["probe"]})

  result = engine.map_checkpoints(plan, build, abstract_params=abstract_params,
                                  to_record=to_record, host_driven=True, desc="evaluate")
  if result.failed:
    raise ConversionError(f"{run.path}: checkpoints at steps {sorted(result.failed)[:5]} could "
                          "not be read back")
  run.write_baselines(task.baselines)
  rundir.truncate_jsonl(run.metrics_path, 0)
  metrics = run.metrics_writer()
  probe = run.probe_store(steps, task.probe_shape)
  try:
    for step in steps:
      record = records.read(step, ("step", "probe"))
      values = {name[len(_METRIC):]: value for name, value in record.items()
                if name.startswith(_METRIC)}
      train.write_step(step, metrics=metrics, probe_store=probe, values=values,
                       probe_row=record["probe"])
      probe.commit(step)
  finally:
    metrics.close()


@dataclasses.dataclass
class ImportResult:
  """What ``import_run`` did: the run directory, the kind of model, the steps imported."""

  workdir: str
  kind: str
  steps: list
  steps_skipped: list


def checkpoint_files(checkpoint_dir: str) -> dict:
  """{step: path} of the checkpoint files in ``checkpoint_dir``.

  Raises:
    ConversionError: no such directory, no checkpoint files, a file name without a step number,
      or two files of one step.
  """
  if not os.path.isdir(checkpoint_dir):
    raise ConversionError(f"{checkpoint_dir}: no such checkpoint directory")
  files = {}
  for name in sorted(os.listdir(checkpoint_dir)):
    path = os.path.join(checkpoint_dir, name)
    if not name.endswith(SUFFIXES) or not os.path.isfile(path):
      continue
    numbers = re.findall(r"\d+", name[:name.rindex(".")])
    if not numbers:
      raise ConversionError(f"{path}: no step number in the file name")
    step = int(numbers[-1])
    if step in files:
      raise ConversionError(f"{path} and {files[step]} are both step {step}")
    files[step] = path
  if not files:
    raise ConversionError(f"{checkpoint_dir} holds no checkpoint files ({', '.join(SUFFIXES)})")
  return dict(sorted(files.items()))


def read_model_config(path: str) -> dict:
  """The model config in the JSON file ``path`` (a dict holding ``task_config`` gives that)."""
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no model config (pass its JSON file)")
  try:
    with open(path) as f:
      config = json.load(f)
  except (ValueError, UnicodeDecodeError) as err:
    raise ConversionError(f"{path} is not a JSON model config ({err})") from None
  if isinstance(config, dict) and isinstance(config.get("task_config"), dict):
    config = config["task_config"]
  if not isinstance(config, dict):
    raise ConversionError(f"{path} is not a JSON object")
  return config


def model_kind(model_config: dict, origin: str) -> str:
  """"language" for a HookedTransformerConfig, "regression" for the authors' task config."""
  if "n_layers" in model_config or "d_model" in model_config:
    return "language"
  if "task_size" in model_config or "max_examples" in model_config:
    return "regression"
  raise ConversionError(f"{origin} is neither a HookedTransformerConfig (n_layers, d_model, ...) "
                        "nor a regression task config (task_size, max_examples, num_heads, ...)")


def _check_equal(origin, pairs):
  for name, from_config, from_weights in pairs:
    if from_config is not None and int(from_config) != int(from_weights):
      raise ConversionError(f"{origin}: {name} is {from_config}, but the checkpoint has "
                            f"{from_weights}")


def run_config(train_config, model_config: dict, state_dict, last_step: int, origin: str,
               first_file: str) -> ml_collections.ConfigDict:
  """The training config of the imported run (see the module docstring)."""
  kind = model_kind(model_config, origin)
  config = ml_collections.ConfigDict(json.loads(train_config.to_json()))
  if config.get("task", "regression") != kind:
    raise ConversionError(f"the checkpoints are a {kind} model but the training config is a "
                          f"{config.get('task', 'regression')} config")
  if kind == "language":
    convert_tl.check_config(model_config, origin)
    sizes = convert_tl.model_config(state_dict, first_file)
    _check_equal(origin, [("n_layers", model_config.get("n_layers"), sizes["num_layers"]),
                          ("d_model", model_config.get("d_model"), sizes["embed_dim"]),
                          ("n_heads", model_config.get("n_heads"), sizes["num_heads"]),
                          ("d_head", model_config.get("d_head"), sizes["head_dim"]),
                          ("n_ctx", model_config.get("n_ctx"), sizes["context_length"]),
                          ("d_vocab", model_config.get("d_vocab"), sizes["vocab_size"])])
    config.model.update(sizes)
    config.data.vocab_size = sizes["vocab_size"]
  else:
    if "num_heads" not in model_config:
      raise ConversionError(f"{origin} does not give num_heads (the fused qkv weights cannot)")
    if model_config.get("layer_norm", True) is not True or (
        model_config.get("include_output", True) is not True):
      raise ConversionError(f"{origin}: layer_norm and include_output must be true for jaxdev's "
                            "RegressionTransformer")
    section = convert_regression.model_section(state_dict, model_config["num_heads"], first_file)
    sizes = convert_regression.model_config(state_dict, first_file)
    _check_equal(origin, [("task_size + 1", model_config.get("task_size", sizes["token_dim"] - 1) + 1,
                           sizes["token_dim"]),
                          ("2 * max_examples", 2 * model_config.get("max_examples", sizes["num_tokens"] // 2),
                           sizes["num_tokens"]),
                          ("num_layers", model_config.get("num_layers"), section["num_layers"]),
                          ("embed_size", model_config.get("embed_size"), section["embed_dim"]),
                          ("mlp_size", model_config.get("mlp_size"), section["mlp_dim"])])
    if sizes["num_tokens"] % 2:
      raise ConversionError(f"{first_file} has {sizes['num_tokens']} positions, not 2K")
    config.model.update(section)
    config.data.dim = sizes["token_dim"] - 1
    config.data.num_examples = sizes["num_tokens"] // 2
    if model_config.get("noise_variance") is not None:
      config.data.noise_variance = float(model_config["noise_variance"])
    tasks = model_config.get("num_tasks")
    if tasks is not None:
      infinite = isinstance(tasks, str) and tasks.lower() in ("inf", "infinity")
      if not infinite and isinstance(tasks, float) and math.isinf(tasks):
        infinite = True
      config.data.num_tasks = 0 if infinite else int(tasks)
  config.optim.num_steps = max(int(last_step), 1)
  from jaxdev import train  # pylint: disable=import-outside-toplevel
  train.validate_config(config)
  return config


def convert_state_dict(kind: str, state_dict, config, origin: str) -> dict:
  """The jaxdev params of one state dict of a model of ``kind``."""
  if kind == "language":
    return convert_tl.from_hooked_transformer(state_dict, origin)
  return convert_regression.from_token_sequence_transformer(state_dict, config.model.num_heads, origin)


def _check_like(params, abstract, origin):
  shapes = jax.tree_util.tree_map(lambda x: tuple(x.shape), params)
  expected = jax.tree_util.tree_map(lambda x: tuple(x.shape), abstract)
  if shapes != expected:
    raise ConversionError(f"{origin} has other sizes than the first checkpoint")


def import_run(checkpoint_dir: str, workdir: str, train_config, *, model_config: str | None = None,
               evaluate: bool = True) -> ImportResult:
  """Turns a directory of per-step PyTorch checkpoints into the jaxdev run ``workdir``.

  Args:
    checkpoint_dir: the directory of checkpoint files (see the module docstring).
    workdir: the run directory to write (created if missing).
    train_config: a training ConfigDict of the right task (``jaxdev.configs.regression`` or
      ``jaxdev.configs.language``); the imported model's sizes replace its model section.
    model_config: the model's JSON config file (default ``CHECKPOINT_DIR/config.json``).
    evaluate: evaluate each checkpoint into ``metrics.jsonl`` and compute the ED probe
      (needs the task's data; False writes checkpoints, config and the done marker only).

  Returns:
    An ImportResult.

  Raises:
    ConversionError: a missing or unreadable file, or a model jaxdev cannot represent (the
      message names the file).
    jaxdev.errors.RunDirError: ``workdir`` holds another run or cannot be written.
  """
  # pylint: disable=import-outside-toplevel
  from jaxdev import tasks as tasks_lib
  from jaxdev import train

  files = checkpoint_files(checkpoint_dir)
  config_path = model_config or os.path.join(checkpoint_dir, MODEL_CONFIG)
  model_cfg = read_model_config(config_path)
  kind = model_kind(model_cfg, config_path)
  steps = list(files)
  first = model_state_dict(load_torch_file(files[steps[0]]), files[steps[0]])
  config = run_config(train_config, model_cfg, first, steps[-1], config_path, files[steps[0]])
  run = rundir.RunDir(workdir)
  rundir.check_writable(workdir)
  origin = f"imported from {os.path.abspath(checkpoint_dir)}"
  run.prepare(json.loads(config.to_json()), origin=origin)

  abstract = jax.eval_shape(tasks_lib.model_for(config).init, jax.random.PRNGKey(0))
  optimizer = train.make_optimizer(config.optim)
  saved = set(checkpoints.list_steps(run.checkpoints))
  manager = checkpoints.open_manager(run.checkpoints, async_save=False)
  try:
    for step, path in files.items():
      if step in saved:
        continue
      state_dict = first if step == steps[0] else model_state_dict(load_torch_file(path), path)
      params = convert_state_dict(kind, state_dict, config, path)
      _check_like(params, abstract, path)
      checkpoints.save(manager, step, params, optimizer.init(params))
    manager.wait_until_finished()
  finally:
    manager.close()
  if evaluate:
    evaluate_run(run, config, steps, abstract)
  run.mark_done(config.optim.num_steps, origin=origin)
  return ImportResult(workdir, kind, [s for s in steps if s not in saved], sorted(saved & set(steps)))
