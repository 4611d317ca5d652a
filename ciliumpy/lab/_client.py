"""The lab's own clients (one HTTP/1.1 request, one DNS query) and the public L7 records.

Sockets are created in the source endpoint's namespace by the caller's factory and then
driven here, blocking with one deadline.  :class:`LabHTTPResult` is what :meth:`Lab.http`
returns; :class:`ProxyLimits` bounds the proxies.  h11 is imported when a request is made,
so that ``import ciliumpy.lab`` works without the ``lab`` extra.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from .._datapath import IPAddress

__all__ = ["ACCESS_DENIED_BODY", "LabHTTPResult", "ProxyLimits", "dns_exchange", "http_exchange"]

#: Envoy's local reply body for requests the policy denies (Cilium's l7policy filter).
ACCESS_DENIED_BODY: Final = b"Access denied\r\n"


@attrs.frozen
class ProxyLimits:
    """Bounds on what one client may make a proxy hold or wait for.

    Timeouts are in seconds: ``request_timeout`` for a whole request (headers and body) to
    arrive once its first byte did, ``idle_timeout`` between requests of a kept-alive
    connection, ``upstream_timeout`` for the server to accept and answer.  Sizes in bytes;
    ``max_streams`` bounds concurrent HTTP/2 streams per connection.
    """

    request_timeout: float = 10.0
    idle_timeout: float = 30.0
    upstream_timeout: float = 10.0
    max_header_bytes: int = 16384
    max_body_bytes: int = 1 << 20
    max_response_bytes: int = 8 << 20
    max_streams: int = 100


SocketFactory = Callable[[int, int], socket.socket]


@attrs.frozen(kw_only=True)
class LabHTTPResult:
    """One HTTP request from an endpoint over real sockets, and what came back.

    ``status`` is ``None`` when no response arrived (the connection was dropped, refused or
    timed out; ``error`` says which).  ``denied`` is the proxy's refusal (``403`` with
    ``Access denied``); ``flows`` are the Hubble flows the proxy produced for this request
    (policy verdicts and L7 request/response, with the connection's real ports).
    """

    src: str
    dst: str
    port: int
    method: str
    path: str
    src_ip: IPAddress
    dst_ip: IPAddress
    sport: int
    status: int | None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    error: str | None = None
    elapsed: float = 0.0
    flows: tuple[dict[str, Any], ...] = ()

    @property
    def denied(self) -> bool:
        """The proxy refused the request (Envoy's ``403 Access denied``)."""
        return self.status == 403 and self.body == ACCESS_DENIED_BODY

    @property
    def allowed(self) -> bool:
        """A response came back and it was not the proxy's refusal."""
        return self.status is not None and not self.denied

    @property
    def verdict(self) -> str:
        """``FORWARDED`` or ``DROPPED``, as :attr:`ciliumpy.Verdict.verdict` says it."""
        return "FORWARDED" if self.allowed else "DROPPED"

    def explain(self) -> str:
        """One line for the request, then one per L7 flow."""
        what = f"HTTP {self.method} {self.path} {self.src} ({self.src_ip}) -> {self.dst} ({self.dst_ip}):{self.port}"
        got = f"{self.status}" if self.status is not None else f"no response ({self.error})"
        lines = [f"{what}: {got} in {self.elapsed * 1000:.1f} ms"]
        lines += [f"  {f.get('verdict')} {f.get('Summary')}" for f in self.flows if f.get("Type") == "L7"]
        return "\n".join(lines)


def _addr(ip: IPAddress, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    return (str(ip), port) if ip.version == 4 else (str(ip), port, 0, 0)


def http_exchange(
    make: SocketFactory,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    port: int,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    timeout: float,
) -> tuple[int, int | None, tuple[tuple[str, str], ...], bytes, str | None]:
    """``(sport, status, headers, body, error)`` of one request on a new connection."""
    import h11

    family = socket.AF_INET if dst_ip.version == 4 else socket.AF_INET6
    deadline = time.monotonic() + timeout
    with make(family, socket.SOCK_STREAM) as sock:
        sock.bind(_addr(src_ip, 0))
        sport = int(sock.getsockname()[1])
        conn = h11.Connection(h11.CLIENT)
        try:
            sock.settimeout(timeout)
            sock.connect(_addr(dst_ip, port))
            out = list(headers)
            if not any(n.lower() == "host" for n, _ in out):
                host = str(dst_ip) if dst_ip.version == 4 else f"[{dst_ip}]"
                out.insert(0, ("host", f"{host}:{port}"))
            out.append(("content-length", str(len(body))))
            sock.sendall(conn.send(h11.Request(method=method, target=path, headers=out)) or b"")
            sock.sendall((conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b""))
            status: int | None = None
            resp_headers: tuple[tuple[str, str], ...] = ()
            data = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    conn.receive_data(sock.recv(65536))
                elif isinstance(event, h11.Response):
                    status = int(event.status_code)
                    resp_headers = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers)
                elif isinstance(event, h11.Data):
                    data += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return sport, status, resp_headers, bytes(data), None
        except (OSError, h11.ProtocolError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            return sport, None, (), b"", reason


def dns_exchange(
    make: SocketFactory, src_ip: IPAddress, server: IPAddress, query: bytes, timeout: float
) -> tuple[int, bytes | None]:
    """``(sport, answer)`` of one query over UDP to ``server``:53; ``None`` on silence."""
    family = socket.AF_INET if server.version == 4 else socket.AF_INET6
    deadline = time.monotonic() + timeout
    with make(family, socket.SOCK_DGRAM) as sock:
        sock.bind(_addr(src_ip, 0))
        sport = int(sock.getsockname()[1])
        sock.connect(_addr(server, 53))
        sock.send(query)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                answer = sock.recv(65535)
            except (TimeoutError, OSError):
                return sport, None
            if answer[:2] == query[:2]:
                return sport, answer
        return sport, None
