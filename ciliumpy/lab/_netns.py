"""Named network namespaces that ciliumpy creates, and threads pinned inside them.

A :class:`NetNS` is a namespace made with ``ip netns add`` under a name of our own prefix
(``ciliumpy-<pid>-<token>-<role>``), plus one worker thread that entered it with
``setns(CLONE_NEWNET)``.  A network namespace is a per-thread attribute on Linux, so the
worker is where anything that takes "the current namespace" runs: creating sockets (which
stay in the namespace of their creation, and can then be used from any thread), netlink
calls such as ``bpf_tc_attach``, ``if_nametoindex`` and ``/proc/sys/net`` writes.  The
process's other threads never leave the namespace they are in.

Configuration goes through ``ip -n <name> -batch -``: ``ip`` switches namespaces itself, so
nothing here ever runs a configuration command in the caller's (root) namespace.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno as errno_mod
import os
import re
import secrets
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from ..exceptions import LabError

__all__ = ["NAME_PREFIX", "NetNS", "ip", "list_namespaces", "remove_stale"]

NAME_PREFIX = "ciliumpy-"
NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
_CLONE_NEWNET = 0x40000000
# A stuck `ip` must not hang a test run: every invocation is bounded.
_IP_TIMEOUT_S = 30.0
_CALL_TIMEOUT_S = 30.0
_STALE_RE = re.compile(rf"^{re.escape(NAME_PREFIX)}(\d+)-[0-9a-f]+-")

_T = TypeVar("_T")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def ip(*args: str, batch: Iterable[str] | None = None, netns: str | None = None) -> str:
    """Run ``ip [-n netns] args...`` (or ``ip -batch -`` fed ``batch``) and return stdout.

    A non-zero exit raises :class:`LabError` carrying the command and ``ip``'s stderr.
    """
    cmd = ["ip"]
    if netns is not None:
        cmd += ["-n", netns]
    stdin = None
    if batch is not None:
        cmd += ["-batch", "-"]
        stdin = "".join(line + "\n" for line in batch)
    cmd += list(args)
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise LabError(
            errno_mod.ENOENT, "iproute2's `ip` is not installed (apt-get install iproute2)", command=cmd
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(errno_mod.ETIMEDOUT, f"`ip` did not finish in {_IP_TIMEOUT_S} s", command=cmd) from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip() or f"exit status {proc.returncode}"
        if stdin:
            detail += f" (batch: {stdin.strip()!r})"
        raise LabError(errno_mod.EIO, detail, command=cmd)
    return proc.stdout


def list_namespaces() -> list[str]:
    """Names of every named network namespace (``ip netns list``), ours or not."""
    out = ip("netns", "list")
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete ciliumpy namespaces left by processes that no longer run; return their names.

    Only names with our prefix whose creating PID is gone are touched, so namespaces of a
    lab running in another process survive; their ``/etc/netns/<name>`` folders go too.
    """
    removed = []
    for name in list_namespaces():
        m = _STALE_RE.match(name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(LabError):
            ip("netns", "delete", name)
            removed.append(name)
        # A serving lab's resolv.conf for the namespace (ip netns exec reads /etc/netns).
        shutil.rmtree(ETC_NETNS_DIR / name, ignore_errors=True)
    return removed


def new_token() -> str:
    """A fresh name component: this process's PID and random hex (see :func:`remove_stale`)."""
    return f"{os.getpid()}-{secrets.token_hex(3)}"


def _enter(path: str) -> None:
    """Thread initializer: move the calling thread into the namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetNS:
    """One named network namespace we created, with a worker thread inside it.

    ``close()`` stops the worker and deletes the namespace; it is idempotent.  The kernel
    frees the namespace (and the veth ends in it) once the last socket created in it is
    closed, so callers close their sockets first.
    """

    def __init__(self, name: str) -> None:
        if not name.startswith(NAME_PREFIX):
            raise ValueError(f"lab namespaces are named {NAME_PREFIX}...; got {name!r}")
        self.name = name
        # Started on first use: most endpoint namespaces of a big lab never need one.
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        ip("netns", "add", name)
        self._created = True

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn()`` on the thread inside this namespace and return its result."""
        if not self._created:
            raise ValueError(f"network namespace {self.name} is closed")
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"netns-{self.name}",
                initializer=_enter,
                initargs=(str(NETNS_DIR / self.name),),
            )
        try:
            return self._worker.submit(fn).result(timeout=_CALL_TIMEOUT_S)
        except concurrent.futures.BrokenExecutor as exc:
            raise LabError(errno_mod.EIO, f"cannot enter network namespace {self.name}: {exc}") from exc

    def ip(self, *args: str, batch: Iterable[str] | None = None) -> str:
        """``ip -n <this namespace> ...``."""
        return ip(*args, batch=batch, netns=self.name)

    def sysctl(self, settings: dict[str, str]) -> None:
        """Write ``net.*`` sysctls of this namespace (``/proc/sys/net`` is per thread's netns)."""

        def write() -> None:
            for key, value in settings.items():
                if not key.startswith("net."):
                    raise ValueError(f"only per-namespace net.* sysctls can be set, got {key}")
                Path("/proc/sys", *key.split(".")).write_text(value)

        self.call(write)

    @property
    def closed(self) -> bool:
        return not self._created

    def close(self) -> None:
        """Stop the worker thread and delete the namespace; idempotent, warns instead of raising."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)
        if self._created:
            self._created = False
            try:
                ip("netns", "delete", self.name)
            except LabError as exc:
                # Cleanup must go on with the other namespaces; say what was left behind.
                warnings.warn(
                    f"network namespace {self.name} could not be deleted: {exc}", RuntimeWarning, stacklevel=2
                )

    def __repr__(self) -> str:
        return f"<NetNS {self.name}{' closed' if self.closed else ''}>"
