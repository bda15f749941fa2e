"""Importing colorgan starts no JAX backend: jax.distributed.initialize() must still be possible after.

A multi-host program imports its modules first and joins the run second; a module that builds a jax
array at import time starts the local backend, and initialize() then refuses to run.
"""

import os
import pkgutil
import subprocess
import sys

import colorgan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_importing_every_module_initializes_no_backend():
  modules = sorted(m.name for m in pkgutil.walk_packages(colorgan.__path__, "colorgan."))
  # The walk found the package and its subpackages.
  assert "colorgan.color" in modules and "colorgan.training.loop" in modules
  program = "\n".join(
    [
      "import importlib, sys",
      "from jax._src import xla_bridge",
      f"for name in {modules!r}:",
      "  importlib.import_module(name)",
      "  if xla_bridge.backends_are_initialized():",
      "    sys.exit(f'importing {name} initialized a JAX backend')",
      "import jax",  # the check itself works: a computation does start one
      "jax.numpy.zeros(1).block_until_ready()",
      "assert xla_bridge.backends_are_initialized()",
    ]
  )
  result = subprocess.run(
    [sys.executable, "-c", program],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
