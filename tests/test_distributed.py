"""Distributed start-up, meshes, and a two-process sweep that matches a one-process sweep."""

import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np

from configs import regression as regression_configs
from jaxdev import distributed
from jaxdev import llc
from jaxdev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = [sys.executable, os.path.join(REPO, "scripts", "llc_sweep.py"), "--notrain", "--noanalyze",
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


def test_two_processes_match_one(tmp_path):
  run = str(tmp_path / "run")
  train.train(regression_configs.get_config("tiny"), run, show_progress=False)
  single = str(tmp_path / "single")
  other = str(tmp_path / "other")  # process 1 reads an identical copy: it must write nothing
  shutil.copytree(run, single)
  shutil.copytree(run, other)

  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  subprocess.run(SWEEP + ["--workdir", single], check=True, capture_output=True, env=env)

  port = _free_port()
  procs = []
  for rank, workdir in enumerate([run, other]):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               JAXDEV_DISTRIBUTED="1", JAXDEV_COORDINATOR=f"127.0.0.1:{port}",
               JAXDEV_NUM_PROCESSES="2", JAXDEV_PROCESS_ID=str(rank))
    procs.append(subprocess.Popen(SWEEP + ["--workdir", workdir], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  try:
    outputs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], outputs
  assert "LLC sweep" in outputs[0] and "LLC sweep" not in outputs[1]
  assert not os.path.exists(os.path.join(other, "llc"))

  a = llc.load_results(os.path.join(single, "llc", "default"))
  b = llc.load_results(os.path.join(run, "llc", "default"))
  np.testing.assert_array_equal(a["step"], b["step"])
  assert len(a["step"]) == len(train.checkpoint_steps(60, 6, 4))
  np.testing.assert_allclose(b["llc_mean"], a["llc_mean"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(b["init_loss"], a["init_loss"], rtol=1e-6)
