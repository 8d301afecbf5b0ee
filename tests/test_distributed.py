"""Distributed start-up switch."""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from configs import regression as regression_configs
from jaxdev import distributed
from jaxdev import llc
from jaxdev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = [sys.executable, os.path.join(REPO, "scripts", "llc_sweep.py"), "--notrain", "--noanalyze",
         "--config", os.path.join(REPO, "configs", "llc.py:tiny"), "--config.sgld.num_chains=4"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_maybe_initialize_is_off_unless_asked():
  assert distributed.maybe_initialize({}) is False
  assert distributed.maybe_initialize({"JAXDEV_DISTRIBUTED": "0"}) is False
