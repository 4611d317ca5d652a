"""Fixtures for the CLI tests; helpers live in ``cli_support`` (a unique module name: every
test directory has a ``conftest``, so ``from conftest import ...`` picks whichever came first).
"""

from __future__ import annotations

import pytest
from cli_support import CLI, run


@pytest.fixture
def cli() -> CLI:
    """``cli("get", "pods", "-f", DIR)`` runs ``ciliumpy get pods -f DIR`` and returns the process."""
    return run
