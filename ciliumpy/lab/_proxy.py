"""The lab's L7 proxies: HTTP/1.1 and HTTP/2 (gRPC) on h11/h2, DNS on UDP and TCP.

They play Envoy and Cilium's DNS proxy.  The datapath hands them redirected connections
transparently (bpf/proxy.h): an accepted socket's own address is the destination the client
asked for, its peer the client.  Each request is judged by a :data:`Decide` callback (the lab
runs ``Cluster.check`` there, i.e. the landed L7 engine); an allowed request is forwarded to
the real server over a new connection that keeps the client's address (``IP_TRANSPARENT``)
and carries the proxy mark (``SO_MARK``), which the datapath needs to send the server's
replies back here; a denied one gets Envoy's answer, ``403`` with ``Access denied`` (for gRPC,
``grpc-status`` 7 with that message).  A request that does not parse gets ``400`` and its
connection is closed; headers, bodies and waiting are bounded by :class:`ProxyLimits`.

Everything here runs on the lab's event loop (:mod:`._runtime`), inside the node namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11

from .._datapath import IPAddress
from .._l7 import HTTPRequest
from ._client import ACCESS_DENIED_BODY, ProxyLimits

__all__ = [
    "MARK_FROM_PROXY",
    "ConnectionInfo",
    "Deadline",
    "HTTPProxy",
    "ProxyDecision",
    "frame_dns_tcp",
    "h11_message",
    "h11_send",
    "read_dns_tcp",
    "transparent_socket",
]

#: SO_MARK of the proxies' upstream connections (bpf/proxy.h CIL_MARK_FROM_PROXY).
MARK_FROM_PROXY: Final = 0x0A00
_IP_TRANSPARENT: Final = 19
_IPV6_TRANSPARENT: Final = 75
_H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_READ_CHUNK: Final = 65536
# Hop-by-hop headers are the connection's own, never forwarded (RFC 9110 §7.6.1).
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}
)


@attrs.frozen
class ConnectionInfo:
    """A redirected connection as the proxy sees it: the client and where it was going."""

    src_ip: IPAddress
    sport: int
    dst_ip: IPAddress
    dport: int
    proxy_port: int

    @classmethod
    def of(cls, sock: socket.socket) -> ConnectionInfo:
        peer, local = sock.getpeername(), sock.getsockname()
        return cls(
            src_ip=ipaddress.ip_address(peer[0]),
            sport=int(peer[1]),
            dst_ip=ipaddress.ip_address(local[0]),
            dport=int(local[1]),
            proxy_port=0,
        )


@attrs.frozen
class ProxyDecision:
    """What the :data:`Decide` callback says about one request."""

    allowed: bool
    reason: str = ""


Decide = Callable[[ConnectionInfo, HTTPRequest], ProxyDecision]
"""``(connection, request) -> decision``; called once per request, on the loop thread."""
Respond = Callable[[ConnectionInfo, HTTPRequest, ProxyDecision, int], None]
"""``(connection, request, decision, status)``: told the status the client got."""


def transparent_socket(
    family: int, type: int, *, bind: tuple[str, int] | None = None, mark: int | None = None
) -> socket.socket:
    """A socket that may use addresses the namespace does not own (``IP_TRANSPARENT``)."""
    sock = socket.socket(family, type)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.SOL_IP, _IP_TRANSPARENT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_TRANSPARENT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        if type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if type == socket.SOCK_STREAM or (bind is not None and bind[1]):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if bind is not None:
            sock.bind(bind if family == socket.AF_INET else (bind[0], bind[1], 0, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_upstream(info: ConnectionInfo, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the original destination from the client's address, with the proxy mark."""
    family = socket.AF_INET if info.src_ip.version == 4 else socket.AF_INET6
    sock = transparent_socket(family, socket.SOCK_STREAM, bind=(str(info.src_ip), 0), mark=MARK_FROM_PROXY)
    try:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (str(info.dst_ip), info.dport)), timeout)
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


class _TooLarge(Exception):
    """A request or response exceeded its size limit."""


class Deadline:
    """A point in time ``seconds`` from now; ``left()`` raises TimeoutError once it passed."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left


async def _read(reader: asyncio.StreamReader, deadline: Deadline) -> bytes:
    return await asyncio.wait_for(reader.read(_READ_CHUNK), deadline.left())


async def _h11_event(conn: h11.Connection, reader: asyncio.StreamReader, deadline: Deadline) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await _read(reader, deadline))


async def h11_message(
    conn: h11.Connection, reader: asyncio.StreamReader, first: Deadline, limits: ProxyLimits, limit: int
) -> tuple[Any, bytes] | None:
    """One request (server side) or response (client side) with its body; ``None`` at EOF."""
    event = await _h11_event(conn, reader, first)
    if isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request | h11.Response):
        raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", error_status_hint=400)
    head = event
    # h11 bounds only headers still arriving (max_incomplete_event_size); a header block
    # that came in one piece is measured here.
    if sum(len(n) + len(v) + 4 for n, v in head.headers) > limits.max_header_bytes:
        raise h11.RemoteProtocolError("header block too large", error_status_hint=431)
    deadline = Deadline(limits.request_timeout)
    body = bytearray()
    while True:
        event = await _h11_event(conn, reader, deadline)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                raise _TooLarge
        elif isinstance(event, h11.EndOfMessage):
            return head, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("connection closed mid-message", error_status_hint=400)


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _forwardable(headers: Any) -> list[tuple[str, str]]:
    out = []
    for name, value in headers:
        key = _text(name).lower()
        if key not in _HOP_BY_HOP and key != "content-length":
            out.append((key, _text(value)))
    return out


class HTTPProxy:
    """Envoy's part for one listener: HTTP/1.1, and HTTP/2 with prior knowledge (gRPC)."""

    def __init__(
        self, decide: Decide, *, proxy_port: int, limits: ProxyLimits | None = None, respond: Respond | None = None
    ) -> None:
        self.decide = decide
        self.respond = respond
        self.proxy_port = proxy_port
        self.limits = limits or ProxyLimits()
        self.errors = 0  # connections that ended in an unexpected exception (a test checks 0)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one redirected client connection until it ends; never raises."""
        try:
            sock = writer.get_extra_info("socket")
            info = attrs.evolve(ConnectionInfo.of(sock), proxy_port=self.proxy_port)
            first = Deadline(self.limits.request_timeout)
            data = b""
            while len(data) < len(_H2_PREFACE) and _H2_PREFACE.startswith(data):
                chunk = await _read(reader, first)
                if not chunk:
                    break
                data += chunk
            if data.startswith(_H2_PREFACE):
                await _H2Session(self, info, reader, writer).run(data)
            elif data:
                await self._http1(info, reader, writer, data)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancelled: the lab is closing (asyncio's stream callback must not see it)
        except Exception:
            self.errors += 1
        finally:
            writer.close()

    def _judge(self, info: ConnectionInfo, request: HTTPRequest) -> ProxyDecision:
        try:
            return self.decide(info, request)
        except Exception as exc:  # fail closed: a request the engine cannot judge is denied
            return ProxyDecision(False, f"the policy engine failed: {exc!r}")

    def _told(self, info: ConnectionInfo, request: HTTPRequest, decision: ProxyDecision, status: int) -> None:
        if self.respond is not None:
            with contextlib.suppress(Exception):
                self.respond(info, request, decision, status)

    # -- HTTP/1.1 ---------------------------------------------------------------------------
    async def _http1(
        self, info: ConnectionInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> None:
        limits = self.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        conn.receive_data(data)
        upstream: _H1Upstream | None = None
        try:
            first = Deadline(limits.request_timeout)
            while True:
                try:
                    message = await h11_message(conn, reader, first, limits, limits.max_body_bytes)
                except _TooLarge:
                    await self._h1_local(conn, writer, 413, b"Payload Too Large\r\n")
                    return
                except h11.RemoteProtocolError as exc:
                    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        await self._h1_local(conn, writer, exc.error_status_hint, b"Bad Request\r\n")
                    return
                except TimeoutError:
                    started = conn.their_state is not h11.IDLE or bool(conn.trailing_data[0])
                    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE) and started:
                        await self._h1_local(conn, writer, 408, b"Request Timeout\r\n")
                    return
                if message is None:
                    return
                head, body = message
                headers = [(_text(n), _text(v)) for n, v in head.headers]
                host = next((v for n, v in headers if n.lower() == "host"), None)
                request = HTTPRequest(
                    method=_text(head.method),
                    path=_text(head.target),
                    host=host,
                    headers=tuple(headers),
                    protocol="HTTP/1.1",
                )
                decision = self._judge(info, request)
                if not decision.allowed:
                    self._told(info, request, decision, 403)
                    await self._h1_local(conn, writer, 403, ACCESS_DENIED_BODY, close=False)
                else:
                    if upstream is None or not upstream.reusable:
                        if upstream is not None:
                            upstream.close()
                        upstream = None
                        try:
                            upstream = await _H1Upstream.open(info, limits)
                        except (OSError, TimeoutError):
                            self._told(info, request, decision, 503)
                            await self._h1_local(conn, writer, 503, b"upstream connect error\r\n")
                            return
                    try:
                        status, resp_headers, resp_body = await upstream.exchange(head, body)
                    except (OSError, TimeoutError, h11.ProtocolError, _TooLarge):
                        self._told(info, request, decision, 503)
                        await self._h1_local(conn, writer, 503, b"upstream reset before response\r\n")
                        return
                    self._told(info, request, decision, status)
                    out = [*resp_headers, ("content-length", str(len(resp_body)))]
                    response = h11.Response(status_code=status, headers=out)
                    await h11_send(conn, writer, response, h11.Data(data=resp_body), h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:
                    await _client_closes_first(reader)
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                first = Deadline(limits.idle_timeout)
        finally:
            if upstream is not None:
                upstream.close()

    async def _h1_local(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes, *, close: bool = True
    ) -> None:
        """A response of the proxy's own (403, 400, 503 ...)."""
        headers = [("content-type", "text/plain"), ("content-length", str(len(body))), ("server", "envoy")]
        if close:
            headers.append(("connection", "close"))
        with contextlib.suppress(h11.LocalProtocolError):
            response = h11.Response(status_code=status, headers=headers)
            await h11_send(conn, writer, response, h11.Data(data=body), h11.EndOfMessage())


async def _client_closes_first(reader: asyncio.StreamReader, timeout: float = 2.0) -> None:
    """Wait (briefly) for the client to close after a last response, then close too.

    Whoever closes first keeps the 4-tuple in TIME_WAIT.  Were it the proxy, the node would
    hold it: the datapath passes over a TIME_WAIT socket and assigns a new connection from the
    same client port to the listener, which cannot take over the old tuple as the kernel's own
    TIME_WAIT handling would.  Left to the client, TIME_WAIT stays in its namespace, whose
    kernel then simply picks another port.  A client that asked to close does so at once.
    """
    with contextlib.suppress(TimeoutError, ConnectionError):
        deadline = Deadline(timeout)
        while await _read(reader, deadline):
            pass


async def h11_send(conn: h11.Connection, writer: asyncio.StreamWriter, *events: Any) -> None:
    # One write for all events: a response's head and body leave in one segment.
    writer.write(b"".join(conn.send(event) or b"" for event in events))
    await writer.drain()


class _H1Upstream:
    """A kept-alive HTTP/1.1 connection to the real server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: ProxyLimits) -> None:
        self.reader, self.writer, self.limits = reader, writer, limits
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, info: ConnectionInfo, limits: ProxyLimits) -> _H1Upstream:
        reader, writer = await open_upstream(info, limits.upstream_timeout)
        return cls(reader, writer, limits)

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE

    async def exchange(self, head: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [*_forwardable(head.headers), ("content-length", str(len(body)))]
        request = h11.Request(method=head.method, target=head.target, headers=headers)
        await h11_send(self.conn, self.writer, request, h11.Data(data=body), h11.EndOfMessage())
        deadline = Deadline(self.limits.upstream_timeout)
        message = await h11_message(self.conn, self.reader, deadline, self.limits, self.limits.max_response_bytes)
        if message is None:
            raise ConnectionResetError("the server closed the connection")
        response, resp_body = message
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return int(response.status_code), _forwardable(response.headers), resp_body

    def close(self) -> None:
        self.writer.close()


# -------------------------------------------------------------------------------- HTTP/2
def _str_headers(headers: Any) -> list[tuple[str, str]]:
    """h2's header tuples as text (they are already text with ``header_encoding`` set)."""
    out = []
    for name, value in headers or ():
        n = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        v = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        out.append((n, v))
    return out


def _h2_config(client_side: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")


class _H2Writer:
    """An h2 connection's outbound side: flushes and waits for flow-control windows."""

    def __init__(self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter) -> None:
        self.conn, self.writer = conn, writer
        self.window = asyncio.Event()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def body(self, stream_id: int, data: bytes, deadline: Deadline, *, end: bool) -> None:
        view = memoryview(data)
        while view:
            room = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.window.clear()
                await asyncio.wait_for(self.window.wait(), deadline.left())
                continue
            self.conn.send_data(stream_id, bytes(view[:room]))
            view = view[room:]
            await self.flush()
        if end:
            self.conn.end_stream(stream_id)
            await self.flush()


@attrs.define
class _H2Stream:
    headers: list[tuple[str, str]]
    deadline: Deadline  # the whole request (headers to END_STREAM) within request_timeout
    body: bytearray = attrs.field(factory=bytearray)


class _FrameGuard:
    """Follows HTTP/2 frame boundaries in a byte stream to refuse oversized frames early."""

    def __init__(self, skip: int, limit: int) -> None:
        self.skip, self.limit = skip, limit
        self.head = b""
        self.body_left = 0

    def ok(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            if self.skip or self.body_left:
                n = min(self.skip or self.body_left, len(view))
                if self.skip:
                    self.skip -= n
                else:
                    self.body_left -= n
                view = view[n:]
                continue
            need = 9 - len(self.head)
            self.head += bytes(view[:need])
            view = view[need:]
            if len(self.head) == 9:
                length = int.from_bytes(self.head[:3], "big")
                self.head = b""
                if length > self.limit:
                    return False
                self.body_left = length
        return True


class _H2Session:
    """One client's HTTP/2 connection through the proxy."""

    def __init__(
        self, proxy: HTTPProxy, info: ConnectionInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy, self.info, self.reader = proxy, info, reader
        self.limits = proxy.limits
        self.conn = h2.connection.H2Connection(_h2_config(client_side=False))
        self.out = _H2Writer(self.conn, writer)
        self.streams: dict[int, _H2Stream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.upstream: _H2Upstream | None = None
        self._upstream_lock = asyncio.Lock()

    async def run(self, data: bytes) -> None:
        self.conn.initiate_connection()
        self.conn.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_bytes,
            }
        )
        await self.out.flush()
        guard = _FrameGuard(len(_H2_PREFACE), self.conn.local_settings.max_frame_size)
        try:
            while data:
                if not guard.ok(data):
                    # h2 would buffer a frame of any announced size before checking it.
                    self.conn.close_connection(error_code=h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
                    await self.out.flush()
                    return
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    # A malformed frame, header block or sequence: GOAWAY, as Envoy does.
                    with contextlib.suppress(h2.exceptions.ProtocolError):
                        self.conn.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
                    await self.out.flush()
                    return
                for event in events:
                    if not await self._event(event):
                        await self.out.flush()
                        return
                await self.out.flush()
                data = await _read(self.reader, self._next_deadline())
        finally:
            for task in self.tasks:
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.upstream is not None:
                self.upstream.close()

    def _next_deadline(self) -> Deadline:
        """When to give up waiting for the client: its oldest unfinished request's deadline,
        else the idle timeout (streams being answered bound themselves by upstream_timeout).
        """
        if self.streams:
            return min((s.deadline for s in self.streams.values()), key=lambda d: d.at)
        limits = self.limits
        return Deadline(limits.upstream_timeout + limits.request_timeout if self.tasks else limits.idle_timeout)

    async def _event(self, event: Any) -> bool:
        if isinstance(event, h2.events.RequestReceived):
            deadline = Deadline(self.limits.request_timeout)
            self.streams[event.stream_id] = _H2Stream(_str_headers(event.headers), deadline)
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body += event.data or b""
                if len(stream.body) > self.limits.max_body_bytes:
                    del self.streams[event.stream_id]
                    self.conn.send_headers(event.stream_id, [(":status", "413")], end_stream=True)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                task = asyncio.get_running_loop().create_task(self._serve(event.stream_id, stream))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            self.out.window.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            return False
        return True

    async def _serve(self, stream_id: int, stream: _H2Stream) -> None:
        try:
            await self._serve_stream(stream_id, stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, ConnectionError):
            pass
        except Exception:
            self.proxy.errors += 1

    async def _serve_stream(self, stream_id: int, stream: _H2Stream) -> None:
        pseudo = {n: v for n, v in stream.headers if n.startswith(":")}
        regular = [(n, v) for n, v in stream.headers if not n.startswith(":")]
        request = HTTPRequest(
            method=pseudo.get(":method", ""),
            path=pseudo.get(":path", ""),
            host=pseudo.get(":authority"),
            headers=tuple(regular),
            protocol="HTTP/2",
        )
        grpc = any(n == "content-type" and v.startswith("application/grpc") for n, v in regular)
        decision = self.proxy._judge(self.info, request)
        deadline = Deadline(self.limits.upstream_timeout)
        if not decision.allowed:
            self.proxy._told(self.info, request, decision, 403)
            await self._local(stream_id, 403, ACCESS_DENIED_BODY, grpc=grpc, grpc_status=7, deadline=deadline)
            return
        try:
            async with self._upstream_lock:
                if self.upstream is None or self.upstream.closed:
                    self.upstream = await _H2Upstream.open(self.info, self.limits)
            response = await self.upstream.request(stream.headers, bytes(stream.body), deadline)
        except (OSError, TimeoutError, h2.exceptions.ProtocolError, _TooLarge):
            self.proxy._told(self.info, request, decision, 503)
            await self._local(
                stream_id, 503, b"upstream connect error\r\n", grpc=grpc, grpc_status=14, deadline=deadline
            )
            return
        status_headers, body, trailers = response
        status = int(dict(status_headers).get(":status", "0") or 0)
        self.proxy._told(self.info, request, decision, status)
        head = [(n, v) for n, v in status_headers if n not in _HOP_BY_HOP]
        self.conn.send_headers(stream_id, head, end_stream=not body and not trailers)
        await self.out.flush()
        if body:
            await self.out.body(stream_id, body, deadline, end=not trailers)
        if trailers:
            self.conn.send_headers(stream_id, trailers, end_stream=True)
            await self.out.flush()

    async def _local(
        self, stream_id: int, status: int, body: bytes, *, grpc: bool, grpc_status: int, deadline: Deadline
    ) -> None:
        if grpc:
            # Envoy answers gRPC requests with a trailers-only gRPC status instead of a page.
            message = body.decode().strip()
            headers = [
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", str(grpc_status)),
                ("grpc-message", message),
            ]
            self.conn.send_headers(stream_id, headers, end_stream=True)
            await self.out.flush()
            return
        headers = [(":status", str(status)), ("content-type", "text/plain"), ("content-length", str(len(body)))]
        self.conn.send_headers(stream_id, headers)
        await self.out.body(stream_id, body, deadline, end=True)


class _H2Upstream:
    """A client-side HTTP/2 connection to the real server, shared by a session's streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: ProxyLimits) -> None:
        self.reader, self.limits = reader, limits
        self.conn = h2.connection.H2Connection(_h2_config(client_side=True))
        self.out = _H2Writer(self.conn, writer)
        self.queues: dict[int, asyncio.Queue[Any]] = {}
        self.closed = False
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, info: ConnectionInfo, limits: ProxyLimits) -> _H2Upstream:
        reader, writer = await open_upstream(info, limits.upstream_timeout)
        self = cls(reader, writer, limits)
        self.conn.initiate_connection()
        await self.out.flush()
        self._pump = asyncio.get_running_loop().create_task(self._read_loop())
        return self

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(_READ_CHUNK)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if isinstance(event, h2.events.WindowUpdated):
                        self.out.window.set()
                    queue = self.queues.get(getattr(event, "stream_id", 0) or 0)
                    if queue is not None:
                        queue.put_nowait(event)
                await self.out.flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed = True
            for queue in self.queues.values():
                queue.put_nowait(None)

    async def request(
        self, headers: list[tuple[str, str]], body: bytes, deadline: Deadline
    ) -> tuple[list[tuple[str, str]], bytes, list[tuple[str, str]]]:
        stream_id = self.conn.get_next_available_stream_id()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.queues[stream_id] = queue
        try:
            fwd = [(n, v) for n, v in headers if n not in _HOP_BY_HOP or (n == "te" and v == "trailers")]
            self.conn.send_headers(stream_id, fwd, end_stream=not body)
            await self.out.flush()
            if body:
                await self.out.body(stream_id, body, deadline, end=True)
            status: list[tuple[str, str]] = []
            trailers: list[tuple[str, str]] = []
            data = bytearray()
            while True:
                event = await asyncio.wait_for(queue.get(), deadline.left())
                if event is None or isinstance(event, h2.events.StreamReset):
                    raise ConnectionResetError("the server reset the stream")
                if isinstance(event, h2.events.ResponseReceived):
                    status = _str_headers(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data or b""
                    if len(data) > self.limits.max_response_bytes:
                        raise _TooLarge
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = _str_headers(event.headers)
                if isinstance(event, h2.events.StreamEnded) or getattr(event, "stream_ended", None):
                    return status, bytes(data), trailers
        finally:
            self.queues.pop(stream_id, None)

    def close(self) -> None:
        self.closed = True
        if self._pump is not None:
            self._pump.cancel()
        self.out.writer.close()


# -------------------------------------------------------------------------------- DNS framing
async def read_dns_tcp(reader: asyncio.StreamReader, deadline: Deadline) -> bytes | None:
    """One length-prefixed DNS message from a TCP stream (RFC 1035 §4.2.2); None at EOF."""
    try:
        head = await asyncio.wait_for(reader.readexactly(2), deadline.left())
    except asyncio.IncompleteReadError:
        return None
    (length,) = struct.unpack("!H", head)
    return await asyncio.wait_for(reader.readexactly(length), deadline.left())


def frame_dns_tcp(message: bytes) -> bytes:
    """``message`` with its two-byte length prefix."""
    return struct.pack("!H", len(message)) + message
