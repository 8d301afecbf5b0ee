"""The per-checkpoint engine: planning, groups and padding, records, resumption, failures.

The run here is a directory of orbax checkpoints of a small known pytree (no training), and the
mapped function is a known function of it, so every record can be checked number by number.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxdev import checkpoints
from jaxdev import distributed
from jaxdev import engine
from jaxdev import errors
from jaxdev import rundir

STEPS = [0, 1, 3, 7, 12, 20]
SETTINGS = {"scale": 2.0, "name": "test", "sizes": (1, 2)}


def _params(step):
  return {"w": (step + 0.5 * np.arange(4)).astype(np.float32), "b": np.float32(-step / 3)}


ABSTRACT = jax.eval_shape(lambda: jax.tree.map(jnp.asarray, _params(0)))


def _expected(step):
  p = _params(step)
  return {"total": np.float64(np.sum(p["w"], dtype=np.float32) + p["b"]),
          "w2": (2 * p["w"]).astype(np.float64)}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("engine") / "run")
  manager = checkpoints.open_manager(rundir.RunDir(workdir).checkpoints, async_save=False)
  for step in STEPS:
    checkpoints.save(manager, step, _params(step), {"count": np.int32(step)})
  manager.close()
  return workdir


@pytest.fixture
def run(saved_run, tmp_path):
  dest = str(tmp_path / "run")
  shutil.copytree(saved_run, dest)
  return rundir.RunDir(dest)


def _local(params):  # params: this device's [G_local, ...] block
  return {"total": jnp.sum(params["w"], axis=-1) + params["b"], "w2": 2 * params["w"]}


def _builder(mesh, calls):
  """A build() whose function records the stacked groups it is called with."""
  def build():
    mapped = jax.jit(jax.shard_map(_local, mesh=mesh, in_specs=P("ckpt"), out_specs=P("ckpt")))

    def fn(stacked):
      calls.append(jax.tree.map(np.asarray, jax.device_get(stacked)))
      return mapped(stacked)
    return fn
  return build


def _one_axis_mesh(num_devices):
  return Mesh(np.array(jax.devices()[:num_devices]), ("ckpt",))


def _map(run, records, steps=None, *, mesh=None, per_batch=4, calls=None, **kwargs):
  mesh = mesh or _one_axis_mesh(4)
  plan = engine.plan(run, records, settings_record=SETTINGS, steps=steps)
  return engine.map_checkpoints(plan, _builder(mesh, [] if calls is None else calls),
                                abstract_params=ABSTRACT, mesh=mesh,
                                checkpoints_per_batch=per_batch, show_progress=False, **kwargs)


def _records(records):
  return {s: records.read(s) for s in records.steps()}


def _assert_same(a, b):
  assert sorted(a) == sorted(b)
  for step in a:
    assert sorted(a[step]) == sorted(b[step])
    for key in a[step]:
      np.testing.assert_array_equal(a[step][key], b[step][key], err_msg=f"{step} {key}")
      assert a[step][key].dtype == b[step][key].dtype


def test_group_size_is_rounded_up_to_the_ckpt_axis():
  mesh = distributed.sweep_mesh(2)  # 8 devices: ckpt 4 × chain 2
  assert dict(mesh.shape) == {"ckpt": 4, "chain": 2}
  assert [engine.group_size(n, mesh) for n in (0, 1, 3, 4, 5, 9)] == [4, 4, 4, 4, 8, 12]
  assert engine.group_size(3, _one_axis_mesh(1)) == 3


def test_each_record_is_its_checkpoints_output_and_padding_writes_nothing(run):
  records = run.indicators("fake")
  calls = []
  result = _map(run, records, steps=[1, 3, 7], calls=calls)  # a group of 3 on group size 4
  assert result.done == [1, 3, 7] and result.skipped == [] and not result.failed
  assert records.steps() == [1, 3, 7]
  assert len(calls) == 1 and calls[0]["w"].shape == (4, 4)
  np.testing.assert_array_equal(calls[0]["w"][3], _params(7)["w"])  # padded with the last one
  for step, record in _records(records).items():
    assert int(record["step"]) == step and sorted(record) == ["step", "total", "w2"]
    assert record["total"].dtype == np.float64 and record["w2"].shape == (4,)
    expected = _expected(step)
    np.testing.assert_allclose(record["total"], expected["total"], rtol=1e-6)
    np.testing.assert_array_equal(record["w2"], expected["w2"])
  assert records.settings() == json.loads(json.dumps(SETTINGS))
  assert not os.path.exists(records.failed_path)


def test_groups_are_split_in_order(run):
  calls = []
  result = _map(run, run.indicators("fake"), per_batch=3, calls=calls)  # group size 4
  assert result.done == STEPS
  assert [c["w"].shape[0] for c in calls] == [4, 4]
  np.testing.assert_array_equal(calls[1]["b"], [_params(s)["b"] for s in (12, 20, 20, 20)])


def test_one_device_equals_eight(run):
  one, eight = run.indicators("one"), run.indicators("eight")
  _map(run, one, mesh=_one_axis_mesh(1), per_batch=2)
  _map(run, eight, mesh=_one_axis_mesh(8), per_batch=1)  # one group of 8, padded
  _assert_same(_records(one), _records(eight))


def test_host_driven_mode_maps_one_checkpoint_at_a_time(run):
  seen = []

  def build():
    def fn(params):
      seen.append(jax.tree.map(np.shape, params))
      return {"total": jnp.sum(params["w"]) + params["b"], "w2": 2 * params["w"]}
    return fn

  plan = engine.plan(run, run.indicators("host"), settings_record=SETTINGS)
  result = engine.map_checkpoints(plan, build, abstract_params=ABSTRACT, host_driven=True,
                                  show_progress=False)
  assert result.done == STEPS and seen == [{"w": (4,), "b": ()}] * len(STEPS)
  grouped = run.indicators("grouped")
  _map(run, grouped)
  host, grouped = _records(run.indicators("host")), _records(grouped)
  for step in STEPS:
    assert sorted(host[step]) == sorted(grouped[step])
    np.testing.assert_array_equal(host[step]["w2"], grouped[step]["w2"])
    np.testing.assert_allclose(host[step]["total"], grouped[step]["total"], rtol=1e-6)


class _Killed(Exception):
  pass


def test_an_interrupted_computation_resumes_to_the_same_records(run):
  one = _one_axis_mesh(1)
  straight = run.indicators("straight")
  _map(run, straight, mesh=one, per_batch=1)
  killed = run.indicators("killed")
  written = []

  def dies_on_the_fourth(step, output):
    if len(written) == 3:
      raise _Killed
    written.append(step)
    return engine.dict_record(step, output)

  with pytest.raises(_Killed):
    _map(run, killed, mesh=one, per_batch=1, to_record=dies_on_the_fourth)
  assert killed.steps() == STEPS[:3]
  calls = []
  result = _map(run, killed, mesh=one, per_batch=1, calls=calls)
  assert result.skipped == STEPS[:3] and result.done == STEPS[3:]
  assert len(calls) == 3  # one checkpoint per call: only the missing steps are computed
  _assert_same(_records(killed), _records(straight))

  def never():
    raise AssertionError("nothing to compute: the function is not built")
  plan = engine.plan(run, killed, settings_record=SETTINGS)
  again = engine.map_checkpoints(plan, never, abstract_params=ABSTRACT, show_progress=False)
  assert again.done == [] and again.skipped == STEPS


def test_a_damaged_record_is_reported_and_computed_again(run, capsys):
  records = run.indicators("fake")
  _map(run, records)
  good = _records(records)
  path = records.record_path(7)
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])
  plan = engine.plan(run, records, settings_record=SETTINGS)
  assert plan.todo == [7] and list(plan.damaged) == [7] and path in plan.damaged[7]
  result = engine.map_checkpoints(plan, _builder(_one_axis_mesh(4), []), abstract_params=ABSTRACT,
                                  mesh=_one_axis_mesh(4), show_progress=False)
  assert result.done == [7] and list(result.damaged) == [7]
  assert result.skipped == [s for s in STEPS if s != 7]
  out = capsys.readouterr()
  assert f"warning: {path} is damaged" in out.out + out.err
  _assert_same(_records(records), good)


def test_a_record_without_a_required_member_is_damaged(run):
  records = run.indicators("fake")
  _map(run, records, steps=[0, 1])
  records.write(1, {"step": np.int64(1)})  # no "total"
  plan = engine.plan(run, records, settings_record=SETTINGS, steps=[0, 1],
                     required=("step", "total"))
  assert plan.todo == [1] and plan.skipped == [0] and list(plan.damaged) == [1]


def test_missing_and_unreadable_checkpoints_are_reported_failed(run):
  for root, _, files in os.walk(os.path.join(run.checkpoints, "3", "params")):
    for name in files:
      open(os.path.join(root, name), "wb").write(b"garbage")
  records = run.indicators("fake")
  result = _map(run, records, steps=[0, 3, 5, 7], per_batch=2)
  assert result.done == [0, 7] and records.steps() == [0, 7]
  assert sorted(result.failed) == [3, 5]
  assert result.failed[5] == "no checkpoint at this step"
  assert "step 3" in result.failed[3]
  assert json.load(open(records.failed_path)) == {str(s): r for s, r in result.failed.items()}
  np.testing.assert_allclose(records.read(7)["total"], _expected(7)["total"], rtol=1e-6)


def test_other_settings_are_one_error_that_keeps_the_records(run):
  records = run.indicators("fake")
  _map(run, records, steps=[0])
  with pytest.raises(engine.SettingsConflictError) as info:
    engine.plan(run, records, settings_record={**SETTINGS, "scale": 3.0}, what="SGLD settings",
                rename_hint="pass a new name")
  message = str(info.value)
  assert isinstance(info.value, errors.SweepError) and isinstance(info.value, errors.UserError)
  assert "other SGLD settings (scale differ)" in message and records.settings_path in message
  assert message.endswith("or pass a new name") and "remove" not in message
  assert records.steps() == [0] and records.settings()["scale"] == 2.0
  # A setting added after the directory was started reads as its default there.
  engine.plan(run, records, settings_record={**SETTINGS, "new": 1}, settings_defaults={"new": 1})
  with pytest.raises(engine.SettingsConflictError, match="new differ"):
    engine.plan(run, records, settings_record={**SETTINGS, "new": 2}, settings_defaults={"new": 1})


def test_records_carry_their_run_and_settings_whatever_settings_json_says(run):
  rundir.atomic_write_json(run.config_path, {"model": {"width": 4}})
  records = run.indicators("fake")
  _map(run, records, steps=[0, 1])
  made = records.provenance(0)
  assert made["run_id"] == run.identity()["run_id"]
  assert made["settings"] == json.loads(json.dumps(SETTINGS))
  assert "_run_id" not in records.read(0)  # readers see the measurement only
  # settings.json edited to other settings, or removed: the records still say what made them.
  rundir.atomic_write_json(records.settings_path, {**SETTINGS, "scale": 3.0})
  with pytest.raises(engine.SettingsConflictError,
                     match=r"step_00000000.npz was made with other settings \(scale differ\)"):
    engine.plan(run, records, settings_record={**SETTINGS, "scale": 3.0})
  os.remove(records.settings_path)
  with pytest.raises(engine.SettingsConflictError, match=r"\(scale differ\)"):
    engine.plan(run, records, settings_record={**SETTINGS, "scale": 3.0})
  assert not os.path.exists(records.settings_path)  # a refused plan writes no settings
  # The settings that made them: believed, and the settings file is written again.
  assert _map(run, records, steps=[0, 1]).skipped == [0, 1]
  assert records.settings() == json.loads(json.dumps(SETTINGS))
  # The run made again in this directory (a new identity): its old records are not its own.
  rundir.atomic_write_json(run.identity_path, {
      "run_id": "another", "config_sha256": run.identity()["config_sha256"], "origin": "trained",
      "created": None})
  with pytest.raises(engine.SettingsConflictError, match="was made from another run"):
    engine.plan(run, records, settings_record=SETTINGS)
  # config.json edited after the run was created: the checkpoints are the first config's.
  rundir.atomic_write_json(run.config_path, {"model": {"width": 8}})
  with pytest.raises(errors.RunDirError, match="was changed after the run was created"):
    engine.plan(run, run.indicators("new"), settings_record=SETTINGS)


def test_a_run_without_checkpoints_is_one_error(tmp_path):
  empty = rundir.RunDir(str(tmp_path / "empty"))
  with pytest.raises(errors.SweepError, match="holds no checkpoints"):
    engine.plan(empty, empty.indicators("fake"), settings_record=SETTINGS)
  assert not os.path.exists(empty.indicators("fake").path)


def test_one_writer_per_record_directory(run):
  records = run.indicators("fake")
  plan = engine.plan(run, records, settings_record=SETTINGS)
  with pytest.raises(rundir.LockedError, match="records 'fake' .* is being written by pid"):
    engine.plan(run, records, settings_record={**SETTINGS, "scale": 3.0})
  assert records.settings() == json.loads(json.dumps(SETTINGS))  # the refused writer wrote nothing
  engine.plan(run, run.indicators("other"), settings_record=SETTINGS).release()  # another output
  mesh = _one_axis_mesh(4)
  result = engine.map_checkpoints(plan, _builder(mesh, []), abstract_params=ABSTRACT, mesh=mesh,
                                  show_progress=False)
  assert result.done == STEPS
  assert _map(run, records).skipped == STEPS  # released when the mapping returned
