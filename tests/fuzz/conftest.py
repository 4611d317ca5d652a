"""The fuzz suite's report of how many inputs a long run tried (``nox -s fuzz``)."""

from __future__ import annotations

from typing import Any

from fuzz_support import terminal_summary


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminal_summary(terminalreporter)
