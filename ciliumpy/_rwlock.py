"""A reader-writer lock for objects shared between threads (the :class:`Cluster` façade).

Readers share the lock; a writer holds it alone.  Waiting writers take precedence over
new readers, so a stream of questions cannot starve an apply.  Both sides are re-entrant
in the way the façade needs: a thread holding the write side may read (a writer asks
questions while it works), and a thread holding the read side may read again (``check``
calls ``evaluate``).  A reader asking to write is a programming error and raises
:class:`RuntimeError` at once instead of deadlocking.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

__all__ = ["ReadWriteLock", "reads", "writes"]


class ReadWriteLock:
    """Many readers or one writer; writer-preferring, re-entrant as described above."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # threads holding the read side (each counted once)
        self._writer: int | None = None  # thread id of the writer
        self._write_depth = 0
        self._writers_waiting = 0
        self._local = threading.local()  # .reads: this thread's read depth

    def _read_depth(self) -> int:
        depth: int = getattr(self._local, "reads", 0)
        return depth

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the read side: no writer changes anything until the block ends."""
        me = threading.get_ident()
        depth = self._read_depth()
        if self._writer == me or depth:
            # Nested in this thread's own write or read: already excluded from writers.
            self._local.reads = depth + 1
            try:
                yield
            finally:
                self._local.reads = depth
            return
        with self._cond:
            while self._writer is not None or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        self._local.reads = 1
        try:
            yield
        finally:
            self._local.reads = 0
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the write side: no reader or other writer runs until the block ends."""
        me = threading.get_ident()
        if self._writer == me:
            self._write_depth += 1
            try:
                yield
            finally:
                self._write_depth -= 1
            return
        if self._read_depth():
            raise RuntimeError("a thread holding the read side of a ReadWriteLock cannot take the write side")
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = me
            self._write_depth = 1
        try:
            yield
        finally:
            with self._cond:
                self._write_depth = 0
                self._writer = None
                self._cond.notify_all()

    @property
    def held_for_write(self) -> bool:
        """Whether the calling thread holds the write side."""
        return self._writer == threading.get_ident()


_F = TypeVar("_F", bound=Callable[..., Any])


def reads(method: _F) -> _F:
    """Run ``method`` holding the read side of ``self._lock``."""

    @functools.wraps(method)
    def reader(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        with self._lock.read():
            return method(self, *args, **kwargs)

    return cast(_F, reader)


def writes(method: _F) -> _F:
    """Run ``method`` holding the write side of ``self._lock``."""

    @functools.wraps(method)
    def writer(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        with self._lock.write():
            return method(self, *args, **kwargs)

    return cast(_F, writer)
