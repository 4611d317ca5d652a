"""The cluster's event log: every decision, in order, for whoever observes the cluster.

Cilium's datapath writes monitor events into a perf ring buffer and Hubble decodes them
later, in its own goroutine; the datapath never waits for Hubble. ``EventLog`` plays the
ring buffer: :meth:`emit` appends the raw decision object (a ``Verdict``, a
``Resolution``, a lab ``LiveResult``) in constant time, and a reader such as
``ciliumpy.hubble``'s flow store decodes them when it is asked for flows. A reader that
registers a ``drain`` callback is called before the log would overwrite events it has not
read (once per ``capacity`` events), so nothing is lost while it is attached.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["EventLog"]

DEFAULT_CAPACITY = 4096


class EventLog:
    """A bounded, append-only log of decision events with a sequence number.

    ``seq`` counts every event ever emitted; :meth:`since` returns the events after a
    sequence number that are still held and how many were overwritten in between.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._buf: deque[Any] = deque(maxlen=max(capacity, 1))
        self.enabled = capacity > 0
        self.seq = 0
        self.read = 0  # sequence number up to which the reader has taken events
        self.drain: Callable[[], None] | None = None
        self._cond = threading.Condition()
        self._waiters = 0

    @property
    def capacity(self) -> int:
        """How many events the log holds; 0 means the log is off and keeps nothing."""
        return (self._buf.maxlen or 0) if self.enabled else 0

    @capacity.setter
    def capacity(self, n: int) -> None:
        self.enabled = n > 0
        self._buf = deque(self._buf, maxlen=max(n, 1))

    def emit(self, event: Any) -> None:
        """Record one event (called on every decision; must stay cheap)."""
        if not self.enabled:
            return
        # Readers of a shared Cluster emit from several threads at once: the append and the
        # count move together, or since() would number events wrongly.
        with self._cond:
            buf = self._buf
            if self.drain is not None and self.seq - self.read >= (buf.maxlen or 0):
                self.drain()  # the oldest unread event would be overwritten
            buf.append(event)
            self.seq += 1
            if self._waiters:
                self._cond.notify_all()

    def since(self, seq: int) -> tuple[list[Any], int, int]:
        """``(events after seq still held, number overwritten before them, new seq)``.

        The caller is taken to be the log's reader: the events returned count as read."""
        with self._cond:
            now = self.seq
            missing = now - seq
            held = min(missing, len(self._buf))
            events = list(itertools.islice(reversed(self._buf), held))[::-1] if held else []
            self.read = max(self.read, now)
        return events, missing - held, now

    def wait(self, seq: int, timeout: float | None) -> bool:
        """Block until an event after ``seq`` is emitted (or ``timeout`` seconds pass)."""
        with self._cond:
            self._waiters += 1
            try:
                return self._cond.wait_for(lambda: self.seq > seq, timeout)
            finally:
                self._waiters -= 1

    def __len__(self) -> int:
        return len(self._buf)
