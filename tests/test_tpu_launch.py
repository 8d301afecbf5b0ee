"""Tests of tpu/launch.sh: printed gcloud commands, refusals, create retries, the worker-side shell.

No network and no Google Cloud account: ``--dry-run`` prints commands, and a fake ``gcloud`` placed
first on PATH stands in for the real one. The fake runs ``ssh --command`` lines with bash on this
machine, once per simulated worker (each with its own HOME), so the shell that `run`, `logs`,
`status` and `stop` send to the workers is executed, not only read.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "tpu" / "launch.sh"
SETUP = REPO / "tpu" / "setup.sh"
TPU_README = REPO / "tpu" / "README.md"

BASE = {"TPU_NAME": "jd-test", "ZONE": "us-central2-b"}
LOC = ["--zone=us-central2-b"]

FAKE_GCLOUD = textwrap.dedent("""\
    #!{python}
    # Stand-in for gcloud: logs its arguments, fails `create` a set number of times, reports
    # queued-resource states, and runs `ssh --command` with bash once per simulated worker.
    import json, os, shutil, subprocess, sys
    from pathlib import Path

    args = sys.argv[1:]
    root = Path(os.environ["FAKE_ROOT"])
    with open(root / "calls.jsonl", "a") as f:
        f.write(json.dumps(args) + "\\n")

    def bump(name):
        path = root / name
        count = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(count))
        return count

    def option(name, default=None):
        for arg in args:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
        return default

    def workers():
        worker = option("--worker", "0")
        count = int(os.environ.get("FAKE_WORKERS", "1"))
        return list(range(count)) if worker == "all" else [int(worker)]

    def home(w):
        path = root / f"worker{{w}}"
        path.mkdir(exist_ok=True)
        return path

    verb = " ".join(args[2:4])
    if args[3] == "create":
        if bump("create-count") <= int(os.environ.get("FAKE_FAIL_TIMES", "0")):
            sys.stderr.write(os.environ.get("FAKE_ERROR", "ERROR: (gcloud) There is no more "
                             "capacity in the zone; you can try in another zone") + "\\n")
            sys.exit(1)
        print("created")
    elif verb == "queued-resources describe":
        states = os.environ["FAKE_STATES"].split(",")
        print(states[min(bump("describe-count"), len(states)) - 1])
    elif verb == "tpu-vm scp":
        paths = [a for a in args[4:] if not a.startswith("-")]
        src, dest = paths
        if ":" in dest:  # upload to every worker
            for w in workers():
                shutil.copy(src, home(w) / dest.split(":", 1)[1])
        else:  # download from one worker
            remote = home(workers()[0]) / src.split(":", 1)[1]
            shutil.copytree(remote, Path(dest) / remote.name)
    elif verb == "tpu-vm ssh":
        command = option("--command")
        status = 0
        for w in workers():
            if "JAXDEV_READY" in command:
                report = os.environ.get("FAKE_READY", "1/1 tpu")
                done, total, backend = report.replace("/", " ").split()
                if w < int(done):
                    print(f"JAXDEV_READY process={{w}}/{{total}} local_devices=4 "
                          f"devices={{4 * int(total)}} backend={{backend}}")
                continue
            if "tpu/setup.sh" in command:
                print(f"worker{{w}}: jaxdev ready")
                continue
            env = dict(os.environ, HOME=str(home(w)), FAKE_WORKER=str(w),
                       PATH=str(root / "bin") + os.pathsep + os.environ["PATH"])
            status = subprocess.run(["bash", "-c", command], env=env).returncode or status
        sys.exit(status)
    """)

FAKE_CURL = '#!/bin/sh\necho "$FAKE_WORKER"\n'
FAKE_SLEEP = '#!/bin/sh\necho "$1" >> "$FAKE_ROOT/sleeps"\n'


def launch(*args, env=None, stdin=subprocess.DEVNULL, input=None, path=None, cwd=None,
           script=LAUNCH, timeout=60):
  """Runs launch.sh with a clean environment (plus `env`) and returns the CompletedProcess."""
  full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
              "LANG": "C.UTF-8"}
  if path is not None:
    full_env["PATH"] = f"{path}{os.pathsep}{full_env['PATH']}"
  full_env.update(env or {})
  if input is not None:
    stdin = None
  return subprocess.run(["bash", str(script), *args], env=full_env, cwd=cwd or REPO,
                        stdin=stdin, input=input, capture_output=True, text=True,
                        timeout=timeout)


def dry(*args, **env):
  result = launch("--dry-run", *args, env={**BASE, **env})
  assert result.returncode == 0, result.stderr
  return result


def printed(result):
  """The commands printed by --dry-run, each split back into its words."""
  return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]


def gcloud_lines(result):
  return [line for line in result.stdout.splitlines() if line.startswith("+ gcloud ")]


def line(*words):
  return "+ " + shlex.join(words)


@pytest.fixture
def fake(tmp_path):
  """A fake gcloud (plus curl and sleep) first on PATH; returns the folder it works in."""
  root = tmp_path / "fake"
  bin_dir = root / "bin"
  bin_dir.mkdir(parents=True)
  for name, text in [("gcloud", FAKE_GCLOUD.format(python=sys.executable)),
                     ("curl", FAKE_CURL), ("sleep", FAKE_SLEEP)]:
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  yield root
  # Jobs a failed test left running; only those whose environment names this fake's folder.
  for pid_file in root.glob("worker*/jaxdev-logs/*.pid"):
    pid = int(pid_file.read_text())
    try:
      environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
      continue
    if f"FAKE_ROOT={root}".encode() in environ:
      os.killpg(pid, signal.SIGKILL)


def run_fake(fake, *args, **env):
  return launch(*args, env={**BASE, "FAKE_ROOT": str(fake), **env}, path=fake / "bin")


def calls(fake):
  path = fake / "calls.jsonl"
  return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------------------------------------
# --dry-run: the exact gcloud command lines


def test_create_prints_tpu_vm_create_with_every_setting():
  result = dry("create", PROJECT="my-proj", ACCELERATOR="v4-32", SPOT="1")
  assert gcloud_lines(result) == [line(
      "gcloud", "compute", "tpus", "tpu-vm", "create", "jd-test", "--zone=us-central2-b",
      "--project=my-proj", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot")]


def test_create_without_spot_or_project_omits_those_flags_and_appends_create_flags():
  result = dry("create", ACCELERATOR="v4-8", RUNTIME_VERSION="tpu-vm-v4-base",
               CREATE_FLAGS="--reserved --network=my-net")
  assert gcloud_lines(result) == [line(
      "gcloud", "compute", "tpus", "tpu-vm", "create", "jd-test", *LOC,
      "--accelerator-type=v4-8", "--version=tpu-vm-v4-base", "--reserved", "--network=my-net")]


@pytest.mark.parametrize("accelerator, version", [
    ("v2-8", "tpu-ubuntu2204-base"), ("v4-32", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v5p-8", "v2-alpha-tpuv5"),
    ("v6e-8", "v2-alpha-tpuv6e")])
def test_create_default_runtime_version_per_family(accelerator, version):
  (words,) = [w for w in printed(dry("create", ACCELERATOR=accelerator)) if "create" in w]
  assert {f"--version={version}", f"--runtime-version={version}"} & set(words)


def test_create_v5e_spot_goes_through_a_queued_resource_and_waits_for_it():
  result = dry("create", ACCELERATOR="v5litepod-16", SPOT="1", PROJECT="p")
  assert gcloud_lines(result) == [
      line("gcloud", "compute", "tpus", "queued-resources", "create", "jd-test",
           "--node-id=jd-test", "--zone=us-central2-b", "--project=p",
           "--accelerator-type=v5litepod-16", "--runtime-version=v2-alpha-tpuv5-lite", "--spot"),
      line("gcloud", "compute", "tpus", "queued-resources", "describe", "jd-test",
           "--zone=us-central2-b", "--project=p", "--format=value(state.state)")]


def test_queued_can_be_forced_on_and_off():
  on = dry("create", "--queued", ACCELERATOR="v4-8")
  off = dry("create", "--no-queued", ACCELERATOR="v5litepod-8")
  assert "queued-resources create" in gcloud_lines(on)[0]
  assert "tpu-vm create" in gcloud_lines(off)[0] and len(gcloud_lines(off)) == 1


def test_options_override_environment():
  result = launch("create", "--dry-run", "--name=other", "--zone=europe-west4-a",
                  "--accelerator=v4-16", "--project=q", "--runtime-version=rv", "--spot",
                  env={**BASE, "ACCELERATOR": "v4-8", "SPOT": "0"})
  assert result.returncode == 0, result.stderr
  assert gcloud_lines(result) == [line(
      "gcloud", "compute", "tpus", "tpu-vm", "create", "other", "--zone=europe-west4-a",
      "--project=q", "--accelerator-type=v4-16", "--version=rv", "--spot")]


def test_setup_copies_the_tree_to_every_worker_installs_and_checks_every_worker():
  result = dry("setup", PROJECT="p")
  commands = printed(result)
  tar, scp, install, check = commands
  assert tar[:2] == ["tar", "-czf"] and "--exclude=./runs" in tar and "--exclude=./.git" in tar
  archive = tar[2]
  assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive,
                 "jd-test:jaxdev-src.tar.gz", "--zone=us-central2-b", "--project=p",
                 "--worker=all"]
  for ssh in (install, check):
    assert ssh[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jd-test",
                       "--zone=us-central2-b", "--project=p", "--worker=all"]
  assert install[-1].startswith("--command=")
  assert "tar -xzf $HOME/jaxdev-src.tar.gz -C $HOME/jaxdev" in install[-1]
  assert "ACCEL=tpu bash tpu/setup.sh" in install[-1]
  assert "JAXDEV_DISTRIBUTED=1" in check[-1] and "JAXDEV_READY" in check[-1]
  assert "$HOME/jaxdev-venv/bin/python" in check[-1]


def test_setup_from_a_git_ref_uses_git_archive(small_repo):
  result = launch("--dry-run", "setup", script=small_repo / "tpu" / "launch.sh",
                  env={**BASE, "GIT_REF": "HEAD", "JAX_SPEC": "jax[tpu]==0.7.2"})
  assert result.returncode == 0, result.stderr
  git, scp, install, _ = printed(result)
  assert git[:4] == ["git", "-C", str(small_repo), "archive"] and git[-1] == "HEAD"
  assert scp[5] == git[git.index("-o") + 1]
  assert "ACCEL=tpu JAX_SPEC='jax[tpu]==0.7.2' bash tpu/setup.sh" in install[-1]


def test_setup_refuses_an_unknown_git_ref(small_repo):
  result = launch("--dry-run", "setup", script=small_repo / "tpu" / "launch.sh",
                  env={**BASE, "GIT_REF": "no-such-ref-xyz"})
  assert result.returncode == 2 and "GIT_REF" in result.stderr
  assert gcloud_lines(result) == []


def test_run_starts_the_command_on_all_workers_under_nohup_with_the_distributed_switch():
  result = dry("run", "python", "scripts/train.py", "--config", "configs/regression.py:paper",
               "--workdir", "gs://b/runs/lr seed0", RUN_ID="20250101-000000", PROJECT="p")
  (words,) = printed(result)
  assert words[:10] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jd-test",
                        "--zone=us-central2-b", "--project=p", "--worker=all",
                        words[9]] and len(words) == 10
  command = words[9].removeprefix("--command=")
  assert ("JAXDEV_DISTRIBUTED=1 setsid nohup python scripts/train.py --config "
          "configs/regression.py:paper --workdir 'gs://b/runs/lr seed0' > \"$log\" 2>&1 "
          "< /dev/null &") in command
  assert "log=$HOME/jaxdev-logs/20250101-000000-worker$w.log" in command
  assert "agent-worker-number" in command
  assert ". $HOME/jaxdev-venv/bin/activate" in command and "cd $HOME/jaxdev" in command


def test_run_takes_its_own_options_before_the_command_and_needs_a_command():
  result = launch("run", "--dry-run", "--run-id=x1", "python", "-c", "print(1)", env=BASE)
  assert result.returncode == 0, result.stderr
  (words,) = printed(result)
  assert "nohup python -c 'print(1)' >" in words[-1]
  assert "log=$HOME/jaxdev-logs/x1-worker$w.log;" in words[-1]
  empty = launch("--dry-run", "run", env=BASE)
  assert empty.returncode == 2 and "needs a command" in empty.stderr


def ssh_words(worker):
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jd-test", *LOC, f"--worker={worker}"]


def test_status_describes_the_tpu_and_asks_every_worker():
  describe, ssh = printed(dry("status"))
  assert describe == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "jd-test", *LOC,
                      "--format=table(name.basename(),acceleratorType,state,health)"]
  assert ssh[:-1] == ssh_words("all") and "jaxdev-logs/*.pid" in ssh[-1]


def test_logs_tails_the_latest_log_of_one_worker():
  (logs,) = printed(dry("logs", "--worker=3", "--lines=20"))
  assert logs[:-1] == ssh_words(3)
  assert "ls -t $HOME/jaxdev-logs/*.log" in logs[-1] and 'tail -n 20 "$f"' in logs[-1]
  (follow,) = printed(dry("logs", "--follow", RUN_ID="r7"))
  assert follow[:-1] == ssh_words(0)
  assert "$HOME/jaxdev-logs/r7-worker*.log" in follow[-1] and "tail -n 100 -F" in follow[-1]


def test_stop_and_ssh():
  (stop,) = printed(dry("stop"))
  assert stop[:-1] == ssh_words("all") and "kill -TERM" in stop[-1]
  assert printed(dry("ssh", "--worker=1")) == [ssh_words(1)]


def test_fetch_copies_from_worker_0_relative_to_the_remote_tree():
  assert printed(dry("fetch", "runs/lr-seed0/")) == [
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", "jd-test:jaxdev/runs/lr-seed0",
       "runs", *LOC, "--worker=0"]]
  assert printed(dry("fetch", "/data/run", "out")) == [
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", "jd-test:/data/run", "out",
       *LOC, "--worker=0"]]


def test_delete_tpu_vm_or_queued_resource():
  assert printed(dry("delete", "--yes")) == [
      ["gcloud", "compute", "tpus", "tpu-vm", "delete", "jd-test", *LOC, "--quiet"]]
  assert printed(dry("delete", YES="1", ACCELERATOR="v5litepod-16")) == [
      ["gcloud", "compute", "tpus", "queued-resources", "delete", "jd-test", *LOC, "--force",
       "--quiet"]]


def test_status_of_a_queued_resource_shows_its_state_first():
  first = printed(dry("status", QUEUED="1"))[0]
  assert first == ["gcloud", "compute", "tpus", "queued-resources", "describe", "jd-test", *LOC,
                   "--format=value(state.state)"]


def test_ssh_flags_reach_every_ssh_and_scp():
  for sub in (["setup"], ["run", "true"], ["logs"], ["fetch", "runs/x"]):
    for words in printed(dry(*sub, SSH_FLAGS="--internal-ip")):
      if words[0] == "gcloud":
        assert "--internal-ip" in words, sub


def test_fetch_of_a_gcs_run_dir_points_at_gsutil_and_needs_no_tpu():
  result = launch("fetch", "gs://bucket/runs/lr-seed0", env={})
  assert result.returncode == 0, result.stderr
  assert "gsutil -m rsync -r gs://bucket/runs/lr-seed0 runs/lr-seed0" in result.stdout
  assert gcloud_lines(result) == []


# ------------------------------------------------------------------------------------------------
# Refusals


SUBCOMMANDS = [["create"], ["setup"], ["run", "python", "x.py"], ["status"], ["logs"], ["stop"],
               ["ssh"], ["fetch", "runs/x"], ["delete", "--yes"]]


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE"])
@pytest.mark.parametrize("sub", SUBCOMMANDS, ids=lambda s: s[0])
def test_missing_name_or_zone_is_one_clear_line_and_exit_2(sub, missing):
  env = {**BASE, "ACCELERATOR": "v4-8"}
  del env[missing]
  result = launch("--dry-run", *sub, env=env)
  assert result.returncode == 2
  assert result.stdout == ""
  assert len(result.stderr.splitlines()) == 1
  assert f"{missing} is not set" in result.stderr


def test_create_needs_an_accelerator():
  result = launch("--dry-run", "create", env=BASE)
  assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
  assert "ACCELERATOR is not set" in result.stderr


@pytest.mark.parametrize("args, message", [
    ([], "Usage"), (["launch"], "unknown subcommand"), (["--bogus", "status"], "unknown option"),
    (["status", "extra"], "takes no arguments"), (["fetch"], "fetch RUN_DIR"),
    (["logs", "--worker=x"], "--worker"), (["create", "--accelerator=v9-8"], "RUNTIME_VERSION")])
def test_usage_errors_exit_2(args, message):
  result = launch("--dry-run", *args, env=BASE)
  assert result.returncode == 2
  assert message in result.stderr
  assert gcloud_lines(result) == []


def test_create_refuses_non_numeric_retry_settings():
  result = launch("--dry-run", "create", env={**BASE, "ACCELERATOR": "v4-8",
                                               "CREATE_ATTEMPTS": "many"})
  assert result.returncode == 2 and "CREATE_ATTEMPTS" in result.stderr


def test_delete_without_yes_and_without_stdin_refuses():
  result = launch("--dry-run", "delete", env=BASE, stdin=subprocess.DEVNULL)
  assert result.returncode != 0
  assert gcloud_lines(result) == []
  assert "not confirmed" in result.stderr and "--yes" in result.stderr


@pytest.mark.parametrize("answer, deletes", [("y\n", True), ("yes\n", True), ("n\n", False),
                                             ("\n", False)])
def test_delete_asks_and_follows_the_answer(answer, deletes):
  result = launch("--dry-run", "delete", env=BASE, input=answer)
  assert (result.returncode == 0) == deletes
  assert len(gcloud_lines(result)) == int(deletes)
  assert "[y/N]" in result.stderr


# ------------------------------------------------------------------------------------------------
# create: retries on capacity errors (fake gcloud)


def test_create_retries_capacity_errors_then_succeeds(fake):
  result = run_fake(fake, "create", ACCELERATOR="v4-8", FAKE_FAIL_TIMES="2",
                    CREATE_ATTEMPTS="5", BACKOFF_SECONDS="0")
  assert result.returncode == 0, result.stderr
  creates = [c for c in calls(fake) if c[3] == "create"]
  assert len(creates) == 3
  assert all(c == creates[0] for c in creates)
  assert result.stderr.count("no more capacity") == 2  # gcloud's own message is shown
  assert "attempt 2 of 5" in result.stderr
  assert "created" in result.stdout


def test_create_gives_up_after_the_configured_attempts(fake):
  result = run_fake(fake, "create", ACCELERATOR="v4-8", FAKE_FAIL_TIMES="99",
                    CREATE_ATTEMPTS="3", BACKOFF_SECONDS="0")
  assert result.returncode == 1
  assert len([c for c in calls(fake) if c[3] == "create"]) == 3
  assert "after 3 attempts" in result.stderr.splitlines()[-1]


def test_create_backoff_doubles_up_to_the_cap(fake):
  result = run_fake(fake, "create", ACCELERATOR="v4-8", FAKE_FAIL_TIMES="4",
                    CREATE_ATTEMPTS="6", BACKOFF_SECONDS="30", BACKOFF_MAX_SECONDS="100")
  assert result.returncode == 0, result.stderr
  assert (fake / "sleeps").read_text().split() == ["30", "60", "100", "100"]


def test_create_does_not_retry_other_errors(fake):
  quota = ("ERROR: (gcloud.compute.tpus.tpu-vm.create) RESOURCE_EXHAUSTED: Quota limit "
           "'TPUV4sPerProjectPerZone' has been exceeded")
  result = run_fake(fake, "create", ACCELERATOR="v4-8", FAKE_FAIL_TIMES="1",
                    FAKE_ERROR=quota, BACKOFF_SECONDS="0")
  assert result.returncode == 1
  assert len(calls(fake)) == 1
  assert "not a capacity error" in result.stderr


def test_create_queued_waits_until_active(fake):
  result = run_fake(fake, "create", ACCELERATOR="v5litepod-16", QUEUE_POLL_SECONDS="0",
                    FAKE_STATES="WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE")
  assert result.returncode == 0, result.stderr
  assert [c[2:4] for c in calls(fake)] == [["queued-resources", "create"]] + [
      ["queued-resources", "describe"]] * 3
  assert "is ACTIVE" in result.stderr


def test_create_queued_fails_when_the_request_fails(fake):
  result = run_fake(fake, "create", ACCELERATOR="v6e-8", QUEUE_POLL_SECONDS="0",
                    FAKE_STATES="PROVISIONING,FAILED")
  assert result.returncode == 1 and "FAILED" in result.stderr


def test_status_of_a_waiting_queued_resource_stops_at_its_state(fake):
  result = run_fake(fake, "status", QUEUED="1", FAKE_STATES="WAITING_FOR_RESOURCES")
  assert result.returncode == 0, result.stderr
  assert "queued resource jd-test: WAITING_FOR_RESOURCES" in result.stdout
  assert [c[2:4] for c in calls(fake)] == [["queued-resources", "describe"]]


# ------------------------------------------------------------------------------------------------
# setup: what is copied, and the readiness check (fake gcloud)


@pytest.fixture
def small_repo(tmp_path):
  """launch.sh in a small git repository that also holds runs/, caches and an untracked file."""
  if shutil.which("git") is None:
    pytest.skip("git is not on PATH")
  repo = tmp_path / "repo"
  (repo / "tpu").mkdir(parents=True)
  shutil.copy(LAUNCH, repo / "tpu" / "launch.sh")
  (repo / "setup.cfg").write_text("[metadata]\n")
  git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
         "-c", "commit.gpgsign=false"]
  subprocess.run([*git, "init", "-q"], check=True)
  subprocess.run([*git, "add", "."], check=True)
  subprocess.run([*git, "commit", "-qm", "init"], check=True)
  (repo / "runs" / "big").mkdir(parents=True)
  (repo / "runs" / "big" / "ckpt").write_text("x")
  (repo / "notes.py").write_text("# uncommitted\n")
  (repo / "pkg" / "__pycache__").mkdir(parents=True)
  (repo / "pkg" / "__pycache__" / "m.pyc").write_text("x")
  return repo


def archive_members(fake, worker=0):
  with tarfile.open(fake / f"worker{worker}" / "jaxdev-src.tar.gz") as tar:
    return {m.name.removeprefix("./") for m in tar.getmembers()}


def setup_fake(fake, repo, **env):
  return launch("setup", script=repo / "tpu" / "launch.sh",
                env={**BASE, "FAKE_ROOT": str(fake), **env}, path=fake / "bin")


def test_setup_sends_the_working_tree_without_runs_git_or_caches(fake, small_repo):
  result = setup_fake(fake, small_repo, FAKE_WORKERS="2", FAKE_READY="2/2 tpu")
  assert result.returncode == 0, result.stderr
  for worker in (0, 1):
    members = archive_members(fake, worker)
    assert {"tpu/launch.sh", "setup.cfg", "notes.py"} <= members
    assert not any(m.startswith(("runs", ".git")) or "__pycache__" in m for m in members)
  assert "all 2 worker(s) ready" in result.stderr


def test_setup_with_git_ref_sends_only_committed_files(fake, small_repo):
  result = setup_fake(fake, small_repo, GIT_REF="HEAD")
  assert result.returncode == 0, result.stderr
  assert {m.rstrip("/") for m in archive_members(fake)} == {"tpu", "tpu/launch.sh", "setup.cfg"}


@pytest.mark.parametrize("report, message", [("1/2 tpu", "only 1 worker(s) reported ready"),
                                             ("0/2 tpu", "no worker reported ready"),
                                             ("2/2 cpu", "not tpu")])
def test_setup_fails_unless_every_worker_reports_a_tpu(fake, small_repo, report, message):
  result = setup_fake(fake, small_repo, FAKE_WORKERS="2", FAKE_READY=report)
  assert result.returncode == 1
  assert message in result.stderr


# ------------------------------------------------------------------------------------------------
# run / logs / status / stop / fetch: the worker-side shell, executed (fake gcloud)


def make_workers(fake, count):
  for w in range(count):
    home = fake / f"worker{w}"
    (home / "jaxdev").mkdir(parents=True)
    (home / "jaxdev-venv" / "bin").mkdir(parents=True)
    (home / "jaxdev-venv" / "bin" / "activate").write_text("export VIRTUAL_ENV_ACTIVE=yes\n")


def wait_for(predicate, timeout=10.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return True
    time.sleep(0.05)
  return False


def test_run_starts_one_job_per_worker_with_its_own_log(fake):
  make_workers(fake, 2)
  probe = ('echo "dist=$JAXDEV_DISTRIBUTED venv=$VIRTUAL_ENV_ACTIVE cwd=$(basename "$PWD") '
           'arg=$1"')
  result = run_fake(fake, "run", "bash", "-c", probe, "probe", "it's $HOME", RUN_ID="r1",
                    FAKE_WORKERS="2")
  assert result.returncode == 0, result.stderr
  for w in (0, 1):
    log = fake / f"worker{w}" / "jaxdev-logs" / f"r1-worker{w}.log"
    assert wait_for(lambda: log.exists() and log.read_text().endswith("\n"))
    assert log.read_text() == "dist=1 venv=yes cwd=jaxdev arg=it's $HOME\n"
    assert (log.parent / f"r1-worker{w}.pid").exists()
    assert f"worker {w} (" in result.stdout
  logs = run_fake(fake, "logs", "--worker=1", FAKE_WORKERS="2")
  assert logs.returncode == 0, logs.stderr
  assert logs.stdout.splitlines()[-2:] == [f"==> {fake}/worker1/jaxdev-logs/r1-worker1.log <==",
                                           "dist=1 venv=yes cwd=jaxdev arg=it's $HOME"]


def test_run_returns_at_once_and_status_and_stop_see_the_job(fake):
  make_workers(fake, 2)
  start = time.monotonic()
  result = run_fake(fake, "run", "bash", "-c", "echo started; exec /bin/sleep 60", RUN_ID="long",
                    FAKE_WORKERS="2")
  assert result.returncode == 0, result.stderr
  assert time.monotonic() - start < 10
  pids = [int((fake / f"worker{w}" / "jaxdev-logs" / f"long-worker{w}.pid").read_text())
          for w in (0, 1)]
  status = run_fake(fake, "status", FAKE_WORKERS="2")
  assert status.returncode == 0, status.stderr
  assert status.stdout.count("running long-worker") == 2
  stop = run_fake(fake, "stop", FAKE_WORKERS="2")
  assert stop.returncode == 0, stop.stderr
  assert stop.stdout.count("stopped long-worker") == 2

  def gone(pid):
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text(
        ).split()[2] == "Z"
  assert wait_for(lambda: all(gone(p) for p in pids))


def test_logs_says_when_a_worker_has_no_log(fake):
  make_workers(fake, 1)
  result = run_fake(fake, "logs")
  assert result.returncode != 0
  assert "no log matching" in result.stderr


def test_fetch_copies_the_run_directory_from_worker_0(fake, tmp_path):
  make_workers(fake, 1)
  run_dir = fake / "worker0" / "jaxdev" / "runs" / "lr-seed0"
  (run_dir / "llc").mkdir(parents=True)
  (run_dir / "llc" / "step_00000010.npz").write_text("data")
  here = tmp_path / "here"
  here.mkdir()
  result = launch("fetch", "runs/lr-seed0", cwd=here, path=fake / "bin",
                  env={**BASE, "FAKE_ROOT": str(fake)})
  assert result.returncode == 0, result.stderr
  assert (here / "runs" / "lr-seed0" / "llc" / "step_00000010.npz").read_text() == "data"


# ------------------------------------------------------------------------------------------------
# Help, README, shellcheck


VARIABLES = ["TPU_NAME", "ZONE", "PROJECT", "ACCELERATOR", "RUNTIME_VERSION", "SPOT", "QUEUED",
             "CREATE_FLAGS", "CREATE_ATTEMPTS", "BACKOFF_SECONDS", "BACKOFF_MAX_SECONDS",
             "QUEUE_WAIT_SECONDS", "QUEUE_POLL_SECONDS", "GIT_REF", "JAX_SPEC", "RUN_ID",
             "LOG_LINES", "SSH_FLAGS", "DRY_RUN", "YES"]
HELP_SUBCOMMANDS = ["create", "setup", "run", "status", "logs", "stop", "ssh", "fetch", "delete"]


def help_text():
  result = launch("--help", env={})
  assert result.returncode == 0 and result.stderr == ""
  return result.stdout


def test_help_documents_every_subcommand_and_variable():
  text = help_text()
  for sub in HELP_SUBCOMMANDS:
    assert re.search(rf"^  {sub}\b", text, re.M), sub
  script = LAUNCH.read_text()
  for name in VARIABLES:
    assert re.search(rf"^  {name}\b", text, re.M), name
    assert f"{name}=${{{name}-" in script, name  # every documented variable is read


def test_tpu_readme_uses_only_what_help_documents():
  readme = TPU_README.read_text()
  documented_options = set(re.findall(r"--[a-z][a-z-]*", help_text())) | {"-y", "-f"}
  used = re.findall(r"tpu/launch\.sh((?: [^\s`|;&#]+)*)", readme)
  subs = set()
  for match in used:
    words = match.split()
    position = next((i for i, w in enumerate(words) if not w.startswith("-")), len(words))
    # Our options come before the subcommand, and after it except for run (its command's own).
    ours = words[:position] + ([] if words[position:position + 1] == ["run"]
                               else words[position + 1:])
    for word in ours:
      if word.startswith("-"):
        assert word.split("=")[0] in documented_options, match
    if position < len(words):
      subs.add(words[position])
  assert {"create", "setup", "run", "status", "logs", "stop", "fetch", "delete"} <= subs
  assert subs <= set(HELP_SUBCOMMANDS) | {"SUBCOMMAND"}
  setup_doc = SETUP.read_text().split("set -euo pipefail")[0]
  for name in set(re.findall(r"\b([A-Z][A-Z_]{2,})=", readme)):
    if name not in {"BUCKET", "CUDA_VISIBLE_DEVICES", "JAXDEV_DISTRIBUTED"}:
      assert name in VARIABLES or re.search(rf"#   {name}\b", setup_doc), name


def test_shellcheck_passes():
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not on PATH (CI installs it: apt-get install -y shellcheck)")
  result = subprocess.run(["shellcheck", str(LAUNCH), str(SETUP)], capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
