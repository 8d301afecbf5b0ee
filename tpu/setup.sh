#!/usr/bin/env bash
# Installs jaxdev into a Python virtual environment on the machine it runs on.
#
# Safe to run again: the venv is created only if missing, pip skips what is already installed,
# and the same command brings a worker up to date after the source tree changed.
#
#   ACCEL=tpu bash tpu/setup.sh     # Cloud TPU VM (what `tpu/launch.sh setup` runs on every worker)
#   ACCEL=gpu bash tpu/setup.sh     # one machine with NVIDIA GPUs (CUDA 12 wheels from PyPI)
#   ACCEL=cpu bash tpu/setup.sh     # plain CPU jax
#
# Environment variables:
#   ACCEL      tpu | gpu | cpu (default: tpu if /dev/accel* or /dev/vfio exist, gpu if
#              nvidia-smi works, else cpu).
#   VENV       virtual environment directory (default: ~/jaxdev-venv).
#   PYTHON     interpreter for a new venv (default: the newest python3.11+ found; on Ubuntu
#              images that only ship 3.10, python3.11 is installed with apt, because current
#              JAX releases need Python >= 3.11).
#   JAX_SPEC   pip requirement for JAX (default: 'jax[tpu]', 'jax[cuda12]' or 'jax';
#              e.g. JAX_SPEC='jax[tpu]==0.7.2' to pin a version).
#   UPGRADE=1  pass --upgrade to pip (newest JAX and dependencies).
#   RECREATE=1 delete and rebuild the venv.
#
# On success the last line is "jaxdev ready: ..." and $VENV/.jaxdev-ready records the set-up.
set -euo pipefail

readonly LIBTPU_FIND_LINKS="https://storage.googleapis.com/jax-releases/libtpu_releases.html"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$HOME/jaxdev-venv}

log() { printf 'setup.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

detect_accel() {
  if compgen -G '/dev/accel*' >/dev/null || [[ -d /dev/vfio ]]; then
    echo tpu
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo gpu
  else
    echo cpu
  fi
}

accel=${ACCEL:-$(detect_accel)}
case $accel in
  tpu) default_spec='jax[tpu]' ;;
  gpu) default_spec='jax[cuda12]' ;;
  cpu) default_spec='jax' ;;
  *) die "ACCEL must be tpu, gpu or cpu (got '$accel')" ;;
esac
jax_spec=${JAX_SPEC:-$default_spec}

# Runs a command as root: directly when already root, else through passwordless sudo.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 1
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  log "apt-get install $*"
  # A fresh VM may still be running unattended-upgrades; wait for the dpkg lock instead of failing.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@"
}

python_ok() {  # python_ok EXE: EXE exists and is Python >= 3.11
  command -v "$1" >/dev/null 2>&1 &&
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

pick_python() {
  if [[ -n ${PYTHON:-} ]]; then
    echo "$PYTHON"
    return
  fi
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if python_ok "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  if apt_install python3.11 python3.11-venv >&2 && python_ok python3.11; then
    echo python3.11
    return
  fi
  log "warning: no Python >= 3.11 found; using python3 (pip will pick an older JAX)"
  echo python3
}

make_venv() {
  local python
  python=$(pick_python)
  command -v "$python" >/dev/null 2>&1 || die "interpreter '$python' not found"
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    local name
    name=$(basename "$python")
    [[ $name == python3 ]] && name=$("$python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
    apt_install "$name-venv" || die "$python has no venv module; install the $name-venv package"
  fi
  log "creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
}

if [[ ${RECREATE:-0} == 1 && -d $venv ]]; then
  log "removing $venv (RECREATE=1)"
  rm -rf "$venv"
fi
if [[ ! -x $venv/bin/python ]]; then
  make_venv
fi

marker=$venv/.jaxdev-ready
if [[ -f $marker ]] && ! grep -qx "accel=$accel" "$marker"; then
  log "warning: $venv was set up for $(grep '^accel=' "$marker" | cut -d= -f2), now ACCEL=$accel;" \
      "run with RECREATE=1 if JAX misbehaves"
fi

pip=("$venv/bin/python" -m pip)
upgrade=()
[[ ${UPGRADE:-0} == 1 ]] && upgrade=(--upgrade)

"${pip[@]}" install --quiet --upgrade pip
find_links=()
[[ $accel == tpu ]] && find_links=(--find-links "$LIBTPU_FIND_LINKS")
# One resolver run for the package and JAX, so the accelerator build wins over plain jax.
log "pip install -e ${repo}[dev] $jax_spec"
"${pip[@]}" install --quiet "${upgrade[@]}" "${find_links[@]}" -e "${repo}[dev]" "$jax_spec"

# Import only: on a multi-host slice the devices are checked by launch.sh, with all hosts at once.
summary=$(cd "$repo" && "$venv/bin/python" -c \
  'import jax, jaxdev; print("jax", jax.__version__, "jaxdev", jaxdev.__version__)')
if [[ $accel != tpu ]]; then
  backend=$(cd "$repo" && "$venv/bin/python" -c 'import jax; print(jax.default_backend(), jax.device_count())')
  read -r platform count <<<"$backend"
  [[ $accel == cpu || $platform == gpu ]] || die "ACCEL=$accel but JAX runs on $platform; check the CUDA driver (nvidia-smi)"
  summary+=", $count $platform device(s)"
fi
printf 'accel=%s\nsource=%s\n%s\n' "$accel" "$repo" "$summary" >"$marker"
echo "jaxdev ready: $summary (venv $venv, ACCEL=$accel)"
