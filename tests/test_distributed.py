"""Distributed start-up, meshes, and a two-process sweep that matches a one-process sweep."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import language as language_configs
from configs import llc as llc_configs
from configs import regression as regression_configs
from jaxdev import checkpoints
from jaxdev import distributed
from jaxdev import job
from jaxdev import llc
from jaxdev import rundir
from jaxdev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(REPO, "scripts", "train.py"), "--noestimate",
         "--config", os.path.join(REPO, "configs", "regression.py:tiny")]
SWEEP = [sys.executable, os.path.join(REPO, "scripts", "llc_sweep.py"), "--notrain", "--noanalyze", "--noestimate",
         "--config", os.path.join(REPO, "configs", "llc.py:tiny"), "--config.sgld.num_chains=4"]


def test_maybe_initialize_is_off_unless_asked():
  assert distributed.maybe_initialize({}) is False
  assert distributed.maybe_initialize({"JAXDEV_DISTRIBUTED": "0"}) is False


def test_sweep_mesh_shapes():
  assert dict(distributed.sweep_mesh(4).shape) == {"ckpt": 2, "chain": 4}
  assert dict(distributed.sweep_mesh(10).shape) == {"ckpt": 4, "chain": 2}
  assert dict(distributed.sweep_mesh(3).shape) == {"ckpt": 8, "chain": 1}
  assert dict(distributed.sweep_mesh(4, jax.devices()[:1]).shape) == {"ckpt": 1, "chain": 1}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_processes(commands, timeout=900, returncodes=(0, 0)) -> list[str]:
  """Runs commands[i] as process i of a two-process runtime (4 CPU devices each); outputs.

  ``timeout`` only guards against a hang: alone on the 2-core development CPU the slowest pair
  takes about 2 minutes, and a loaded or slower host several times that.
  """
  port = _free_port()
  procs = []
  for rank, command in enumerate(commands):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               JAXDEV_DISTRIBUTED="1", JAXDEV_COORDINATOR=f"127.0.0.1:{port}",
               JAXDEV_NUM_PROCESSES="2", JAXDEV_PROCESS_ID=str(rank))
    procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  try:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == list(returncodes), outputs
  return outputs


def _final_params(workdir, config):
  abstract = jax.eval_shape(train.tasks_lib.make_task(config).init, jax.random.key(0))
  with checkpoints.ParamsReader(os.path.join(workdir, "checkpoints"), abstract) as reader:
    return jax.tree.map(np.asarray, reader.read(config.optim.num_steps))


def _assert_trees_close(a, b, **tolerance):
  """Leaves equal within tolerance, except attention key biases.

  A key bias shifts every score of a query by the same amount, which softmax ignores: its exact
  gradient is zero, so its value is float rounding noise amplified by Adam's normalisation and
  differs with the reduction order. It has no effect on the model (the outputs are compared too).
  """
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree.flatten_with_path(a)[0], jax.tree.leaves(b)):
    if "b_K" not in jax.tree_util.keystr(path):
      np.testing.assert_allclose(x, y, err_msg=jax.tree_util.keystr(path), **tolerance)


def _assert_same_function(one, other, rtol):
  """The final evaluation metrics and ED probe of two runs agree within ``rtol``."""
  final = lambda w: [r for r in rundir.read_jsonl(os.path.join(w, "metrics.jsonl"))
                     if r["split"] == "eval"][-1]
  np.testing.assert_allclose(final(one)["loss"], final(other)["loss"], rtol=rtol)
  probe = lambda w: np.load(os.path.join(w, "ed_outputs", "outputs.npy"))[-1]
  np.testing.assert_allclose(probe(one), probe(other), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("task", ["regression", "language"])
def test_data_parallel_training_matches_one_device(tmp_path, text_data_dir, tiny_run,
                                                   tiny_language_run, task):
  if task == "regression":
    config, eight = regression_configs.get_config("tiny"), tiny_run  # trained on every device
  else:
    config, eight = language_configs.get_config("tiny"), tiny_language_run
    config.data.data_dir = text_data_dir
  assert jax.device_count() == 8
  one = str(tmp_path / "one")
  train.train(config, one, show_progress=False, devices=jax.devices()[:1])
  assert dict(train.data_mesh(config.optim.batch_size).shape) == {"data": 8}
  a, b = _final_params(one, config), _final_params(eight, config)
  _assert_trees_close(a, b, rtol=1e-4, atol=1e-5)
  _assert_same_function(one, eight, rtol=1e-4)
  # Same batches: the step-0 training loss (before any update) agrees to float precision.
  loss = lambda w: [r["loss"] for r in rundir.read_jsonl(os.path.join(w, "metrics.jsonl"))
                    if r["split"] == "train"]
  np.testing.assert_allclose(loss(one)[0], loss(eight)[0], rtol=1e-6)
  np.testing.assert_allclose(loss(one), loss(eight), rtol=1e-3)


def test_two_process_training_matches_one_process(tmp_path, tiny_run):
  config = regression_configs.get_config("tiny")
  single = tiny_run  # one process, eight devices
  shared = str(tmp_path / "shared")  # both processes train into one directory, as on a shared disk
  outputs = _run_two_processes([TRAIN + ["--workdir", shared]] * 2)
  assert "finished 60 steps" in outputs[0] and "finished" not in outputs[1]
  _assert_trees_close(_final_params(single, config), _final_params(shared, config),
                      rtol=1e-4, atol=1e-5)
  records = rundir.read_jsonl(os.path.join(shared, "metrics.jsonl"))
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == sorted(set(train_steps))  # written once, by process 0 only
  assert checkpoints.list_steps(os.path.join(shared, "checkpoints")) == \
      [int(s) for s in train.checkpoint_steps(60, 6, 4)]


def test_two_process_training_refuses_a_workdir_the_hosts_do_not_share(tmp_path):
  first, second = str(tmp_path / "host0"), str(tmp_path / "host1")
  outputs = _run_two_processes([TRAIN + ["--workdir", first], TRAIN + ["--workdir", second]],
                               returncodes=(2, 2))
  for output in outputs:
    assert "is not shared by all 2 processes (hosts [1] do not see it)" in output
  assert not os.path.exists(os.path.join(first, "checkpoints"))


def test_two_processes_match_one(tiny_run, run_copy):
  run = run_copy(tiny_run, "run")
  single = run_copy(tiny_run, "single")
  other = run_copy(tiny_run, "other")  # process 1 reads an identical copy: it must write nothing

  # One process with eight devices (this one) runs what the same command runs.
  assert jax.device_count() == 8
  sweep_config = llc_configs.get_config("tiny")
  sweep_config.sgld.num_chains = 4
  job.main_job(regression_configs.get_config("quick"), sweep_config, single, train=False,
               analyze=False, estimate=False, verbose=False)

  outputs = _run_two_processes([SWEEP + ["--workdir", workdir] for workdir in (run, other)])
  assert "LLC sweep" in outputs[0] and "LLC sweep" not in outputs[1]
  assert not os.path.exists(os.path.join(other, "llc"))

  a = llc.load_results(os.path.join(single, "llc", "default"))
  b = llc.load_results(os.path.join(run, "llc", "default"))
  np.testing.assert_array_equal(a["step"], b["step"])
  assert len(a["step"]) == len(train.checkpoint_steps(60, 6, 4))
  np.testing.assert_allclose(b["llc_mean"], a["llc_mean"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(b["init_loss"], a["init_loss"], rtol=1e-6)


def test_scripts_split_the_cpu_into_one_device_per_core(tmp_path):
  """XLA_FLAGS keeps its own count; otherwise --cpu_devices, and 0 is one device per core; the
  training script then runs on that many CPU devices (its estimate names them)."""
  from jaxdev import cli  # pylint: disable=import-outside-toplevel
  assert cli.cpu_device_count(3, {}) == 3
  assert cli.cpu_device_count(0, {}) == len(os.sched_getaffinity(0))
  assert cli.cpu_device_count(3, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}) is None
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  for count in (1, 2):
    proc = subprocess.run([a for a in TRAIN if a != "--noestimate"]
                          + ["--estimate_only", f"--cpu_devices={count}",
                                   "--workdir", str(tmp_path / f"run{count}")],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"on {count} × cpu" in proc.stdout, proc.stdout
