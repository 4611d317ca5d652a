"""``ciliumpy`` run as a user would, ``python -m ciliumpy`` in a subprocess (tests import this).

The subprocess imports the same ``ciliumpy`` package as the tests (``PYTHONPATH`` is set to the
directory holding it), so a worktree tests its own code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import ciliumpy

#: The directory holding the imported ``ciliumpy`` package, so a worktree tests its own code.
PACKAGE_ROOT = str(Path(ciliumpy.__file__).resolve().parent.parent)
SEED = str(Path(ciliumpy.__file__).resolve().parent / "examples" / "seed")


def run(*args: str, cwd: str | Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``ciliumpy ARGS...`` in a subprocess; returns the finished process (stdout, stderr, returncode)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("CILIUMPY_DEBUG", None)
    env.pop("CILIUMPY_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "ciliumpy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


CLI = Callable[..., subprocess.CompletedProcess[str]]
