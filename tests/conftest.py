"""Test set-up: eight host CPU devices, so that sharded code paths are exercised.

The flag must be set before jax is imported anywhere in the test process.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
