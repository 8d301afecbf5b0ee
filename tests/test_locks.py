"""One writer per output: training holds its run's write lock, a per-checkpoint computation (a
sweep, an indicator set, an import's evaluation) its record directory's; a second writer gets one
line naming the first, and a lock left by a killed process is taken."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from jaxdev import rundir
from jaxdev import train
from jaxdev.configs import regression as regression_configs


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
  first = rundir.WriteLock(str(tmp_path / "out"), "records 'x'").acquire()
  assert first.held
  holder = json.loads(open(first.path, encoding="utf-8").read())
  assert holder["pid"] == os.getpid() and holder["host"] and holder["since"]
  with pytest.raises(rundir.LockedError) as err:
    rundir.WriteLock(str(tmp_path / "out"), "records 'x'").acquire()
  message = str(err.value)
  assert "\n" not in message and f"pid {os.getpid()}" in message
  assert message.startswith(f"records 'x' in {tmp_path / 'out'} is being written by")
  first.release()
  assert not os.path.exists(first.path)  # removed on release
  with rundir.WriteLock(str(tmp_path / "out"), "records 'x'") as again:
    assert again.held
  assert not again.held and not os.path.exists(again.path)
  assert not rundir.WriteLock(str(tmp_path / "off"), "x", enabled=False).acquire().held


def test_a_lock_left_by_a_killed_process_is_taken(tmp_path):
  directory = str(tmp_path / "out")
  holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
      import sys, time
      from jaxdev import rundir
      lock = rundir.WriteLock({directory!r}, "x").acquire()
      print("held", flush=True)
      time.sleep(600)
  """)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(rundir.LockedError, match=f"pid {holder.pid} "):
      rundir.WriteLock(directory, "x").acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert os.path.exists(os.path.join(directory, rundir.LOCK))  # left behind, and free
  lock = rundir.WriteLock(directory, "x").acquire()
  assert json.loads(open(lock.path, encoding="utf-8").read())["pid"] == os.getpid()
  lock.release()


def test_training_is_refused_while_another_process_trains(tmp_path):
  config = regression_configs.get_config("tiny")
  workdir = str(tmp_path / "run")
  run = rundir.RunDir(workdir)
  run.prepare(json.loads(config.to_json()))
  with run.write_lock():
    with pytest.raises(rundir.LockedError, match="the training run .* is being written by pid"):
      train.train(config, workdir, show_progress=False)
    assert not os.path.exists(run.checkpoints) and not os.path.exists(run.metrics_path)
  result = train.train(config, workdir, show_progress=False)
  assert result.status == "finished" and run.is_complete
