"""Test set-up: eight host CPU devices, so that sharded code paths are exercised.

The flag must be set before jax is imported anywhere in the test process.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def text_data_dir(tmp_path_factory):
  """One TFDS data directory for the whole session: the tokenized demo corpus is built once."""
  return str(tmp_path_factory.mktemp("tfds"))
