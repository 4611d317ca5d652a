"""The lab's event loop: one thread, inside the node's network namespace, running asyncio.

The proxies live where Cilium runs Envoy and its DNS proxy, in the node's namespace: their
listening sockets and the upstream connections they open are created by this thread, so
they belong to that namespace.  Servers in endpoint namespaces are served by the same loop
from sockets created in those namespaces beforehand (a socket stays in the namespace of its
creation, whichever thread then uses it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..exceptions import LabError
from ._netns import _enter

__all__ = ["Runtime"]

_T = TypeVar("_T")
_CALL_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


class Runtime:
    """An asyncio loop on a daemon thread that entered the namespace at ``netns_path``.

    ``run(coro)`` runs a coroutine there and returns its result; ``close()`` cancels every
    task, closes the loop and joins the thread (idempotent).
    """

    def __init__(self, netns_path: str, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(netns_path,), name=name, daemon=True)
        self._closed = False
        self._thread.start()
        try:
            self._ready.result(timeout=_CALL_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def _main(self, netns_path: str) -> None:
        try:
            _enter(netns_path)
        except OSError as exc:
            self._ready.set_exception(LabError(exc.errno or 0, f"lab runtime cannot enter {netns_path}: {exc}"))
            return
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set_result, None)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = _CALL_TIMEOUT_S) -> _T:
        """Run ``coro`` on the loop and wait (at most ``timeout`` s) for its result."""
        if self._closed:
            coro.close()
            raise ValueError("the lab runtime is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the loop (cancelling its tasks) and join the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have closed already
                self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(_STOP_TIMEOUT_S)
        elif not self.loop.is_closed():
            self.loop.close()
