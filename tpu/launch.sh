#!/usr/bin/env bash
# Cloud TPU launcher for jaxdev: create a TPU VM (one host or a multi-host slice), install the
# working tree on every worker, run a command on all workers at once, follow it, fetch results,
# tear down. `tpu/launch.sh --help` documents every subcommand and variable.
set -euo pipefail

readonly PROG=${0##*/}
# Paths on the workers; $HOME is expanded there.
readonly REMOTE_TREE_NAME=jaxdev
readonly REMOTE_TREE="\$HOME/$REMOTE_TREE_NAME"
readonly REMOTE_VENV="\$HOME/jaxdev-venv"
readonly REMOTE_LOGS="\$HOME/jaxdev-logs"
readonly REMOTE_ARCHIVE=jaxdev-src.tar.gz
readonly WORKER_NUMBER_URL=http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number

usage() {
  cat <<EOF
Usage: tpu/launch.sh [OPTIONS] SUBCOMMAND [ARGS]

Runs jaxdev on a Cloud TPU VM or multi-host TPU slice through gcloud. Settings come from
environment variables; each has an --option=VALUE form that takes precedence. Options may
come before or after the subcommand (for run: before the command).

Subcommands:
  create            Create the TPU (tpu-vm create, or a queued resource, see QUEUED). Retries
                    on capacity errors with exponential back-off (CREATE_ATTEMPTS,
                    BACKOFF_SECONDS, BACKOFF_MAX_SECONDS). Needs ACCELERATOR.
  setup             Copy the source tree (the working tree, or GIT_REF) to ~/jaxdev on every
                    worker, run tpu/setup.sh there (venv ~/jaxdev-venv, pip install -e '.[dev]'
                    and jax[tpu]; log in ~/jaxdev-setup.log), then check that every worker
                    imports jaxdev and joins one JAX runtime. Idempotent: re-run after edits.
  run CMD...        Start CMD in ~/jaxdev on all workers at once under nohup, with the venv
                    active and JAXDEV_DISTRIBUTED=1 set; one log per host,
                    ~/jaxdev-logs/RUN_ID-workerN.log. Returns at once. Quote shell syntax:
                      tpu/launch.sh run bash -c 'for s in 0 1; do python scripts/train.py ...; done'
  status            State of the TPU (and queued resource), the jobs running on each worker
                    and the last line of each worker's latest log.
  logs              Print the last LOG_LINES lines of the latest log of one worker (--worker=N,
                    default 0; RUN_ID picks a run); --follow keeps printing until Ctrl-C.
  stop              Stop the jobs started by run on all workers (SIGTERM to each job's group).
  ssh               Open a shell on one worker (--worker=N, default 0).
  fetch RUN_DIR [DEST]
                    Copy RUN_DIR (relative to ~/jaxdev, or absolute) from worker 0 to DEST
                    (default: ./runs, so runs/NAME lands in ./runs/NAME). For a gs:// RUN_DIR
                    nothing is copied; it prints the gsutil -m rsync command to use.
  delete            Delete the TPU (and its queued resource). Asks first unless --yes.

Variables (option form in brackets):
  TPU_NAME          [--name=] name of the TPU VM (and of its queued resource). Required.
  ZONE              [--zone=] e.g. us-central2-b. Required.
  PROJECT           [--project=] Google Cloud project (default: gcloud's configured project).
  ACCELERATOR       [--accelerator=] accelerator type, e.g. v4-8, v4-32, v5litepod-16, v5p-8,
                    v6e-8. Required by create.
  RUNTIME_VERSION   [--runtime-version=] TPU software version. Default by family:
                    v2/v3/v4: tpu-ubuntu2204-base, v5litepod/v5e: v2-alpha-tpuv5-lite,
                    v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e.
  SPOT              [--spot] 1 to create a spot TPU (cheaper, can be preempted). Default 0.
  QUEUED            [--queued | --no-queued] auto (default), 1 or 0. 1 creates the TPU with
                    'gcloud compute tpus queued-resources create' (node id = TPU_NAME) and waits
                    until it is ACTIVE; delete then removes the queued resource with its node.
                    auto = 1 for v5litepod/v5e, v5p and v6e, which Cloud TPU provisions through
                    queued resources, 0 for v2-v4; without ACCELERATOR, delete and status look
                    the queued resource up.
  CREATE_FLAGS      extra words for the create command, e.g. '--reserved' or
                    '--network=NET --subnetwork=SUB' or '--service-account=SA'.
  CREATE_ATTEMPTS   create attempts on capacity errors before giving up. Default 8.
  BACKOFF_SECONDS   first pause between attempts, doubled each time. Default 60.
  BACKOFF_MAX_SECONDS  longest pause. Default 1800.
  QUEUE_WAIT_SECONDS   how long create waits for a queued resource to become ACTIVE; 0 returns
                    right after the request. Default 7200.
  QUEUE_POLL_SECONDS   pause between state checks while waiting. Default 60.
  GIT_REF           [--git-ref=] setup copies 'git archive GIT_REF' (e.g. HEAD, a tag) instead
                    of the working tree. Default: the working tree, without .git, runs/,
                    caches, *.egg-info and virtual environments.
  JAX_SPEC          pip requirement for JAX used by setup (default 'jax[tpu]'; e.g.
                    'jax[tpu]==0.7.2').
  RUN_ID            [--run-id=] name of run's logs (default: the UTC time, YYYYmmdd-HHMMSS);
                    logs shows this run instead of the latest.
  LOG_LINES         [--lines=] lines shown by logs. Default 100.
  SSH_FLAGS         extra words for every gcloud ssh/scp, e.g. '--internal-ip'.
  DRY_RUN           [--dry-run] 1 prints each command (gcloud, and the local tar or git archive)
                    on stdout, one per line, shell-quoted after '+ ', and runs none of them.
  YES               [--yes | -y] 1 skips delete's question.

Other options: --worker=N (logs, ssh, fetch), --follow | -f (logs), -h | --help.

Executed commands are echoed on stderr after '+ '. Exit status: 0 success, 1 a command or
check failed, 2 usage error or missing variable.

Example (one v4-32 slice, four hosts):
  export TPU_NAME=jaxdev-v4 ZONE=us-central2-b ACCELERATOR=v4-32 PROJECT=my-project
  tpu/launch.sh create && tpu/launch.sh setup
  tpu/launch.sh run python scripts/train.py --config configs/regression.py:paper --workdir /mnt/runs/r0
  (on several hosts the workdir must be shared, e.g. a bucket mounted with gcsfuse at /mnt)
  tpu/launch.sh status; tpu/launch.sh logs --worker=1 --follow
  tpu/launch.sh delete
EOF
}

# ---------------------------------------------------------------------------------------------
# Messages, quoting, running

info() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_error() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 2; }

# Quotes one word the way Python's shlex.quote does, so printed commands can be pasted back.
quote_word() {
  local word=$1 quote="'" escaped="'\"'\"'"
  if [[ -n $word && $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$word"
  else
    printf "'%s'" "${word//$quote/$escaped}"
  fi
}

join_quoted() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote_word "$word")"
  done
  printf '%s' "$out"
}

is_dry_run() { [[ $DRY_RUN == 1 ]]; }

# Runs a command, or only prints it under --dry-run.
run_cmd() {
  if is_dry_run; then
    printf '+ %s\n' "$(join_quoted "$@")"
    return 0
  fi
  printf '+ %s\n' "$(join_quoted "$@")" >&2
  "$@"
}

truthy() {
  case $(printf '%s' "$1" | tr '[:upper:]' '[:lower:]') in
    1 | true | yes | on) return 0 ;;
    0 | false | no | off | "") return 1 ;;
    *) usage_error "$2 must be 0 or 1 (got '$1')" ;;
  esac
}

require_int() {  # require_int NAME VALUE
  [[ $2 =~ ^[0-9]+$ ]] || usage_error "$1 must be a non-negative integer (got '$2')"
}

require_var() {  # require_var NAME OPTION
  [[ -n ${!1-} ]] || usage_error "$1 is not set (export $1=... or pass $2=...)"
}

# Call directly, never in $(...): the EXIT trap must belong to the main shell.
TMP_DIR=""
make_tmp_dir() {
  if [[ -z $TMP_DIR ]]; then
    TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/jaxdev-launch.XXXXXX")
    trap 'rm -rf "$TMP_DIR"' EXIT
  fi
}

# ---------------------------------------------------------------------------------------------
# Settings

TPU_NAME=${TPU_NAME-}
ZONE=${ZONE-}
PROJECT=${PROJECT-}
ACCELERATOR=${ACCELERATOR-}
RUNTIME_VERSION=${RUNTIME_VERSION-}
SPOT=${SPOT-0}
QUEUED=${QUEUED-auto}
CREATE_FLAGS=${CREATE_FLAGS-}
CREATE_ATTEMPTS=${CREATE_ATTEMPTS-8}
BACKOFF_SECONDS=${BACKOFF_SECONDS-60}
BACKOFF_MAX_SECONDS=${BACKOFF_MAX_SECONDS-1800}
QUEUE_WAIT_SECONDS=${QUEUE_WAIT_SECONDS-7200}
QUEUE_POLL_SECONDS=${QUEUE_POLL_SECONDS-60}
GIT_REF=${GIT_REF-}
JAX_SPEC=${JAX_SPEC-}
RUN_ID=${RUN_ID-}
LOG_LINES=${LOG_LINES-100}
SSH_FLAGS=${SSH_FLAGS-}
DRY_RUN=${DRY_RUN-0}
YES=${YES-0}
WORKER=0
FOLLOW=0

# Parses one option; returns 1 if $1 is not one of ours.
parse_option() {
  case $1 in
    --name=*) TPU_NAME=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    --accelerator=*) ACCELERATOR=${1#*=} ;;
    --runtime-version=*) RUNTIME_VERSION=${1#*=} ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --no-queued) QUEUED=0 ;;
    --git-ref=*) GIT_REF=${1#*=} ;;
    --run-id=*) RUN_ID=${1#*=} ;;
    --lines=*) LOG_LINES=${1#*=} ;;
    --worker=*) WORKER=${1#*=} ;;
    --follow | -f) FOLLOW=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --yes | -y) YES=1 ;;
    -h | --help) usage; exit 0 ;;
    *) return 1 ;;
  esac
}

normalize_settings() {
  if truthy "$DRY_RUN" DRY_RUN; then DRY_RUN=1; else DRY_RUN=0; fi
  if truthy "$YES" YES; then YES=1; else YES=0; fi
  if truthy "$SPOT" SPOT; then SPOT=1; else SPOT=0; fi
  require_int CREATE_ATTEMPTS "$CREATE_ATTEMPTS"
  require_int BACKOFF_SECONDS "$BACKOFF_SECONDS"
  require_int BACKOFF_MAX_SECONDS "$BACKOFF_MAX_SECONDS"
  require_int QUEUE_WAIT_SECONDS "$QUEUE_WAIT_SECONDS"
  require_int QUEUE_POLL_SECONDS "$QUEUE_POLL_SECONDS"
  require_int LOG_LINES "$LOG_LINES"
  require_int --worker "$WORKER"
  (( CREATE_ATTEMPTS >= 1 )) || usage_error "CREATE_ATTEMPTS must be at least 1"
  if [[ -n $RUN_ID && ! $RUN_ID =~ ^[A-Za-z0-9._-]+$ ]]; then
    usage_error "RUN_ID may hold only letters, digits and . _ - (got '$RUN_ID')"
  fi
}

require_tpu() {
  require_var TPU_NAME --name
  require_var ZONE --zone
  LOCATION=(--zone="$ZONE")
  [[ -z $PROJECT ]] || LOCATION+=(--project="$PROJECT")
  SSH_EXTRA=()
  [[ -z $SSH_FLAGS ]] || read -r -a SSH_EXTRA <<<"$SSH_FLAGS"
}

# Sets VERSION: RUNTIME_VERSION, or the usual image for the accelerator's family.
resolve_runtime_version() {
  VERSION=$RUNTIME_VERSION
  [[ -z $VERSION ]] || return 0
  case $ACCELERATOR in
    v2-* | v3-* | v4-*) VERSION=tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) usage_error "no default RUNTIME_VERSION for ACCELERATOR=$ACCELERATOR; set RUNTIME_VERSION" ;;
  esac
}

# Sets USE_QUEUED to 1 when the TPU is (to be) managed as a queued resource.
resolve_queued() {
  case $(printf '%s' "$QUEUED" | tr '[:upper:]' '[:lower:]') in
    1 | true | yes) USE_QUEUED=1 ;;
    0 | false | no) USE_QUEUED=0 ;;
    auto)
      if [[ -n $ACCELERATOR ]]; then
        case $ACCELERATOR in
          v5litepod-* | v5e-* | v5p-* | v6e-*) USE_QUEUED=1 ;;
          *) USE_QUEUED=0 ;;
        esac
      elif ! is_dry_run && gcloud compute tpus queued-resources describe "$TPU_NAME" \
          "${LOCATION[@]}" --format='value(name)' >/dev/null 2>&1; then
        USE_QUEUED=1
      else
        USE_QUEUED=0
      fi
      ;;
    *) usage_error "QUEUED must be auto, 1 or 0 (got '$QUEUED')" ;;
  esac
}

tpu_vm() { run_cmd gcloud compute tpus tpu-vm "$@"; }

# Sets SSH_ARGV: gcloud tpu-vm ssh with the location and SSH_FLAGS, then the arguments given.
ssh_argv() {
  SSH_ARGV=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}"
            ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"} "$@")
}

tpu_ssh() {
  ssh_argv "$@"
  run_cmd "${SSH_ARGV[@]}"
}

# ---------------------------------------------------------------------------------------------
# create

# Capacity shortages pass with time; quota and configuration errors do not, so only the former
# are retried.
is_capacity_error() {
  grep -Eqi 'no more capacity|insufficient capacity|out of capacity|not have enough resources|resource_exhausted|resource pool exhausted|resource_pool_exhausted|stockout' "$1" &&
    ! grep -qi 'quota' "$1"
}

create_with_retries() {
  if is_dry_run; then
    run_cmd "$@"
    return 0
  fi
  local errors attempt=1 delay=$BACKOFF_SECONDS pause status
  make_tmp_dir
  errors=$TMP_DIR/create-errors
  while :; do
    printf '+ %s\n' "$(join_quoted "$@")" >&2
    # stderr goes both to the terminal and to a file that is searched for capacity errors.
    if { "$@" 2>&1 1>&3 3>&- | tee "$errors" >&2; } 3>&1; then
      return 0
    else
      status=$?
    fi
    is_capacity_error "$errors" || die "create failed (exit $status); not a capacity error, not retrying"
    if (( attempt >= CREATE_ATTEMPTS )); then
      die "no capacity for $ACCELERATOR in $ZONE after $CREATE_ATTEMPTS attempts; try another ZONE, SPOT=1 or QUEUED=1"
    fi
    pause=$(( delay < BACKOFF_MAX_SECONDS ? delay : BACKOFF_MAX_SECONDS ))
    info "no capacity for $ACCELERATOR in $ZONE (attempt $attempt of $CREATE_ATTEMPTS); retrying in ${pause}s"
    sleep "$pause"
    delay=$(( delay * 2 ))
    attempt=$(( attempt + 1 ))
  done
}

wait_until_active() {
  local describe=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${LOCATION[@]}"
                  --format='value(state.state)')
  if is_dry_run; then
    run_cmd "${describe[@]}"
    return 0
  fi
  if (( QUEUE_WAIT_SECONDS == 0 )); then
    info "queued resource $TPU_NAME requested; '$PROG status' shows when it is ACTIVE"
    return 0
  fi
  local waited=0 state
  while :; do
    state=$("${describe[@]}") || die "could not read the state of queued resource $TPU_NAME"
    case $state in
      ACTIVE) info "queued resource $TPU_NAME is ACTIVE"; return 0 ;;
      FAILED | SUSPENDING | SUSPENDED) die "queued resource $TPU_NAME is $state; '$PROG delete' removes it" ;;
    esac
    if (( waited >= QUEUE_WAIT_SECONDS )); then
      die "queued resource $TPU_NAME is still ${state:-unknown} after ${waited}s; it stays in the queue ('$PROG status' to check, '$PROG delete' to withdraw)"
    fi
    info "queued resource $TPU_NAME: ${state:-unknown} (waited ${waited}s)"
    sleep "$QUEUE_POLL_SECONDS"
    waited=$(( waited + (QUEUE_POLL_SECONDS > 0 ? QUEUE_POLL_SECONDS : 1) ))
  done
}

cmd_create() {
  require_tpu
  require_var ACCELERATOR --accelerator
  resolve_runtime_version
  resolve_queued
  local cmd extra=()
  [[ -z $CREATE_FLAGS ]] || read -r -a extra <<<"$CREATE_FLAGS"
  if (( USE_QUEUED )); then
    cmd=(gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME"
         "${LOCATION[@]}" --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION")
  else
    cmd=(gcloud compute tpus tpu-vm create "$TPU_NAME"
         "${LOCATION[@]}" --accelerator-type="$ACCELERATOR" --version="$VERSION")
  fi
  (( SPOT )) && cmd+=(--spot)
  cmd+=(${extra[@]+"${extra[@]}"})
  create_with_retries "${cmd[@]}"
  (( USE_QUEUED )) && wait_until_active
  is_dry_run || info "created $TPU_NAME; next: $PROG setup"
}

# ---------------------------------------------------------------------------------------------
# setup

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Writes the source tree to a .tar.gz whose path it stores in ARCHIVE.
make_archive() {
  local root archive
  root=$(repo_root)
  make_tmp_dir
  archive=$TMP_DIR/$REMOTE_ARCHIVE
  if [[ -n $GIT_REF ]]; then
    git -C "$root" rev-parse --verify --quiet "$GIT_REF^{commit}" >/dev/null ||
      usage_error "GIT_REF '$GIT_REF' is not a commit of $root"
    run_cmd git -C "$root" archive --format=tar.gz -o "$archive" "$GIT_REF"
  else
    run_cmd tar -czf "$archive" -C "$root" --exclude=./.git --exclude=./runs \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache \
      --exclude=./.benchmarks --exclude=./.venv --exclude=./venv --exclude=./build \
      --exclude=./dist .
  fi
  ARCHIVE=$archive
}

install_command() {
  local env_words="ACCEL=tpu"
  [[ -z $JAX_SPEC ]] || env_words+=" JAX_SPEC=$(quote_word "$JAX_SPEC")"
  printf '%s' "mkdir -p $REMOTE_TREE && tar -xzf \$HOME/$REMOTE_ARCHIVE -C $REMOTE_TREE && rm -f \$HOME/$REMOTE_ARCHIVE" \
    " && cd $REMOTE_TREE && $env_words bash tpu/setup.sh > \$HOME/jaxdev-setup.log 2>&1" \
    " && echo \"\$(hostname): \$(tail -n 1 \$HOME/jaxdev-setup.log)\"" \
    " || { echo \"\$(hostname): setup failed; end of ~/jaxdev-setup.log:\"; tail -n 25 \$HOME/jaxdev-setup.log; exit 1; }"
}

# Every worker initialises the distributed runtime (all at once, as a real job does) and reports.
readonly READY_CHECK="cd $REMOTE_TREE && JAXDEV_DISTRIBUTED=1 timeout 600 $REMOTE_VENV/bin/python -c 'import jax; from jaxdev import distributed; distributed.maybe_initialize(); print(\"JAXDEV_READY process=%d/%d local_devices=%d devices=%d backend=%s\" % (jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(), jax.default_backend()))'"

check_ready() {
  local output status=0
  ssh_argv --worker=all --command="$READY_CHECK"
  if is_dry_run; then
    run_cmd "${SSH_ARGV[@]}"
    return 0
  fi
  printf '+ %s\n' "$(join_quoted "${SSH_ARGV[@]}")" >&2
  output=$("${SSH_ARGV[@]}" 2>&1) || status=$?
  verify_ready "$output" "$status"
}

# verify_ready OUTPUT STATUS: every process of the runtime reported, on the TPU backend.
verify_ready() {
  local reports count expected backends
  reports=$(printf '%s\n' "$1" | grep -o 'JAXDEV_READY .*' || true)
  count=$(printf '%s' "$reports" | grep -c . || true)
  if (( count == 0 )); then
    printf '%s\n' "$1" >&2
    die "no worker reported ready (exit $2); see ~/jaxdev-setup.log on the workers ($PROG ssh --worker=N)"
  fi
  expected=$(printf '%s\n' "$reports" | sed -n 's|.*process=[0-9]*/\([0-9]*\).*|\1|p' | sort -u)
  backends=$(printf '%s\n' "$reports" | sed -n 's|.*backend=\([a-z]*\).*|\1|p' | sort -u | tr '\n' ' ')
  printf '%s\n' "$reports" >&2
  if [[ $expected != "$count" ]]; then
    die "only $count worker(s) reported ready (expected ${expected:-?}); re-run '$PROG setup'"
  fi
  [[ $2 == 0 ]] || die "gcloud ssh exited with status $2 although the workers reported; re-run '$PROG setup'"
  [[ $backends == "tpu " ]] || die "workers run JAX on '${backends% }', not tpu; check JAX_SPEC and libtpu"
  info "all $count worker(s) ready"
}

cmd_setup() {
  require_tpu
  make_archive
  tpu_vm scp "$ARCHIVE" "$TPU_NAME:$REMOTE_ARCHIVE" "${LOCATION[@]}" --worker=all \
    ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"}
  tpu_ssh --worker=all --command="$(install_command)"
  check_ready
}

# ---------------------------------------------------------------------------------------------
# run, status, logs, stop, ssh

run_command() {  # run_command RUN_ID CMD...: the shell line each worker executes
  local run_id=$1
  shift
  local pid_file="$REMOTE_LOGS/$run_id-worker\$w.pid"
  printf '%s' "set -e; mkdir -p $REMOTE_LOGS; cd $REMOTE_TREE; . $REMOTE_VENV/bin/activate; " \
    "w=\$(curl -sf --max-time 5 -H Metadata-Flavor:Google $WORKER_NUMBER_URL || echo 0); " \
    "log=$REMOTE_LOGS/$run_id-worker\$w.log; " \
    "PYTHONUNBUFFERED=1 JAXDEV_DISTRIBUTED=1 setsid nohup $(join_quoted "$@") > \"\$log\" 2>&1 < /dev/null & " \
    "echo \$! > $pid_file; echo \"worker \$w (\$(hostname)): started pid \$!, log \$log\""
}

cmd_run() {
  require_tpu
  (( $# > 0 )) || usage_error "run needs a command, e.g. $PROG run python scripts/train.py ..."
  local run_id=${RUN_ID:-$(date -u +%Y%m%d-%H%M%S)}
  tpu_ssh --worker=all --command="$(run_command "$run_id" "$@")"
  is_dry_run || info "started run $run_id on all workers; follow it with: $PROG logs --follow"
}

readonly STATUS_COMMAND="for p in $REMOTE_LOGS/*.pid; do [ -e \"\$p\" ] || continue; pid=\$(cat \"\$p\"); if kill -0 \"\$pid\" 2>/dev/null; then echo \"\$(hostname): running \$(basename \"\$p\" .pid) (pid \$pid)\"; fi; done; f=\$(ls -t $REMOTE_LOGS/*.log 2>/dev/null | head -n 1); if [ -n \"\$f\" ]; then echo \"\$(hostname): \$(basename \"\$f\"): \$(tail -n 1 \"\$f\")\"; else echo \"\$(hostname): no logs\"; fi"

readonly STOP_COMMAND="for p in $REMOTE_LOGS/*.pid; do [ -e \"\$p\" ] || continue; pid=\$(cat \"\$p\"); if kill -0 \"\$pid\" 2>/dev/null; then kill -TERM -- \"-\$pid\" && echo \"\$(hostname): stopped \$(basename \"\$p\" .pid)\"; fi; rm -f \"\$p\"; done"

cmd_status() {
  require_tpu
  resolve_queued
  if (( USE_QUEUED )); then
    local describe=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${LOCATION[@]}"
                    --format='value(state.state)') state
    if is_dry_run; then
      run_cmd "${describe[@]}"
    else
      printf '+ %s\n' "$(join_quoted "${describe[@]}")" >&2
      state=$("${describe[@]}")
      echo "queued resource $TPU_NAME: $state"
      if [[ $state != ACTIVE ]]; then
        info "no TPU VM until the queued resource is ACTIVE"
        return 0
      fi
    fi
  fi
  tpu_vm describe "$TPU_NAME" "${LOCATION[@]}" \
    --format='table(name.basename(),acceleratorType,state,health)'
  tpu_ssh --worker=all --command="$STATUS_COMMAND"
}

cmd_logs() {
  require_tpu
  local pattern="$REMOTE_LOGS/*.log" tail_flags="-n $LOG_LINES"
  [[ -z $RUN_ID ]] || pattern="$REMOTE_LOGS/$RUN_ID-worker*.log"
  (( FOLLOW )) && tail_flags+=" -F"
  tpu_ssh --worker="$WORKER" --command="f=\$(ls -t $pattern 2>/dev/null | head -n 1); if [ -z \"\$f\" ]; then echo \"no log matching $pattern on worker $WORKER\" >&2; exit 1; fi; echo \"==> \$f <==\"; tail $tail_flags \"\$f\""
}

cmd_stop() {
  require_tpu
  tpu_ssh --worker=all --command="$STOP_COMMAND"
}

cmd_ssh() {
  require_tpu
  tpu_ssh --worker="$WORKER"
}

# ---------------------------------------------------------------------------------------------
# fetch, delete

cmd_fetch() {
  (( $# >= 1 && $# <= 2 )) || usage_error "usage: $PROG fetch RUN_DIR [DEST]"
  local run_dir=${1%/} dest=${2:-}
  [[ -n $run_dir ]] || usage_error "fetch needs a RUN_DIR"
  if [[ $run_dir == gs://* ]]; then
    dest=${dest:-runs/${run_dir##*/}}
    echo "$run_dir is on Cloud Storage, not on the workers; copy it with:"
    echo "  gsutil -m rsync -r $(quote_word "$run_dir") $(quote_word "$dest")"
    return 0
  fi
  require_tpu
  dest=${dest:-runs}
  local remote=$run_dir
  [[ $remote == /* || $remote == '~'* ]] || remote=$REMOTE_TREE_NAME/$remote
  is_dry_run || mkdir -p "$dest"
  tpu_vm scp --recurse "$TPU_NAME:$remote" "$dest" "${LOCATION[@]}" --worker="$WORKER" \
    ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"}
}

confirm_delete() {
  (( YES )) && return 0
  local what="TPU $TPU_NAME in $ZONE${PROJECT:+ (project $PROJECT)}" answer=""
  printf '%s: delete %s? Its disks and any local run directories are lost. [y/N] ' "$PROG" "$what" >&2
  if ! read -r answer; then
    printf '\n' >&2
    die "delete not confirmed (no input); nothing deleted; pass --yes to skip the question"
  fi
  case $answer in
    y | Y | yes | YES) return 0 ;;
    *) die "delete not confirmed; nothing deleted" ;;
  esac
}

cmd_delete() {
  require_tpu
  resolve_queued
  confirm_delete
  if (( USE_QUEUED )); then
    run_cmd gcloud compute tpus queued-resources delete "$TPU_NAME" "${LOCATION[@]}" --force --quiet
  else
    tpu_vm delete "$TPU_NAME" "${LOCATION[@]}" --quiet
  fi
}

# ---------------------------------------------------------------------------------------------

main() {
  local subcommand="" args=()
  while (( $# > 0 )); do
    if [[ -z $subcommand ]]; then
      case $1 in
        -*) parse_option "$1" || usage_error "unknown option '$1' (see $PROG --help)" ;;
        *) subcommand=$1 ;;
      esac
      shift
    elif [[ $subcommand == run ]]; then
      # Options right after 'run' are ours; the command starts at the first other word or after --.
      if [[ $1 == -- ]]; then
        shift
        args=("$@")
        break
      elif [[ $1 == -* ]] && parse_option "$1"; then
        shift
      else
        args=("$@")
        break
      fi
    else
      case $1 in
        --) shift; args+=("$@"); break ;;
        -*) parse_option "$1" || usage_error "unknown option '$1' (see $PROG --help)" ;;
        *) args+=("$1") ;;
      esac
      shift
    fi
  done
  if [[ -z $subcommand ]]; then
    usage >&2
    exit 2
  fi
  normalize_settings
  case $subcommand in
    create | setup | status | logs | stop | ssh | delete)
      (( ${#args[@]} == 0 )) || usage_error "$subcommand takes no arguments (got '${args[*]}')"
      "cmd_$subcommand" ;;
    run) cmd_run ${args[@]+"${args[@]}"} ;;
    fetch) cmd_fetch ${args[@]+"${args[@]}"} ;;
    help) usage ;;
    *) usage_error "unknown subcommand '$subcommand' (see $PROG --help)" ;;
  esac
}

main "$@"
