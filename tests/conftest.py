"""Test set-up: eight host CPU devices, so that sharded code paths are exercised, and one
persistent XLA compilation cache for the session.

The environment must be set before jax is imported anywhere in the test process. The scripts
that tests run as subprocesses inherit it, so the same small programs are compiled once per
session rather than once per process (a tiny training run: 43 s cold, 15 s from the cache, on
the 2-core development CPU). A cache entry is the compiled program itself: results do not
change, only the time to the first step. A JAX_COMPILATION_CACHE_DIR already set is used as is.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="jaxdev-tests-xla-cache-")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small programs too
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def text_data_dir(tmp_path_factory):
  """One TFDS data directory for the whole session: the tokenized demo corpus is built once."""
  return str(tmp_path_factory.mktemp("tfds"))
