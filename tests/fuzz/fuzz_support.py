"""Shared pieces of the fuzz suite: the budget, the seed corpus and the one property.

The property every fuzz test checks: whatever the input, ciliumpy raises nothing but a
:class:`~ciliumpy.exceptions.CiliumpyError` (or a ``TypeError`` for a wrong Python type),
and its message stays short. CI runs a fixed number of derandomized examples per test
(the whole suite stays well under a minute on two cores); ``CILIUMPY_FUZZ_EXAMPLES=N``
(the ``fuzz`` nox session) runs N random examples per test instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from ciliumpy.exceptions import CiliumpyError

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIRS = (ROOT / "examples", Path("/work/shared/data/realworld"), ROOT / "tests" / "data")
#: The longest message a fuzz input may produce.
MAX_MESSAGE = 4096

_LONG = int(os.environ.get("CILIUMPY_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(ci_examples: int) -> settings:
    """``ci_examples`` derandomized examples in CI; the long run's count, randomized, otherwise."""
    common: dict[str, Any] = {
        "deadline": None,
        "database": None,
        "suppress_health_check": list(HealthCheck),
    }
    if _LONG > 0:
        return settings(max_examples=_LONG, derandomize=False, **common)
    return settings(max_examples=ci_examples, derandomize=True, **common)


@functools.cache
def corpus() -> tuple[tuple[str, str], ...]:
    """``(name, text)`` of every YAML/JSON manifest in the examples and the real-world data."""
    out: list[tuple[str, str]] = []
    for base in CORPUS_DIRS:
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.suffix in (".yaml", ".yml", ".json") and path.is_file() and path.stat().st_size < 200_000:
                try:
                    out.append((str(path.relative_to(base.parent)), path.read_text(encoding="utf-8")))
                except UnicodeDecodeError:
                    continue
    return tuple(out)


class Tally:
    """Counts the inputs a fuzz test tried and how each ended (printed by the long run)."""

    counts: dict[str, int] = {}

    @classmethod
    def add(cls, test: str, outcome: str) -> None:
        key = f"{test}:{outcome}"
        cls.counts[key] = cls.counts.get(key, 0) + 1


def only_ciliumpy_errors(test: str, call: Callable[[], Any], *, type_errors: bool = False) -> None:
    """Run ``call``: it may succeed or raise a CiliumpyError (a TypeError when allowed) with a
    message of at most :data:`MAX_MESSAGE` characters; anything else fails the test."""
    try:
        call()
    except CiliumpyError as exc:
        text = str(exc)
        assert len(text) <= MAX_MESSAGE, f"message of {len(text)} characters: {text[:300]}..."
        Tally.add(test, type(exc).__name__)
        return
    except TypeError as exc:
        if not type_errors:
            raise
        assert len(str(exc)) <= MAX_MESSAGE
        Tally.add(test, "TypeError")
        return
    Tally.add(test, "ok")


def terminal_summary(terminalreporter: Any) -> None:
    """Print what the long run tried (see the ``fuzz`` nox session)."""
    if _LONG > 0 and Tally.counts:
        total = sum(Tally.counts.values())
        terminalreporter.write_line(f"fuzz: {total} inputs tried")
        for key, n in sorted(Tally.counts.items()):
            terminalreporter.write_line(f"  {key}: {n}")
