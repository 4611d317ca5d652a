"""Real servers in the lab's namespaces: HTTP echo, gRPC, UDP echo and the cluster DNS.

``Lab(cluster, serve=True)`` starts them (docs/lab.md, "Servers and proxies"):

* every declared TCP port: an HTTP/1.1 server (h11) answering any request with ``200`` and a
  JSON echo of what it received; a connection that starts with the lab probe's token is
  echoed byte for byte instead, so :meth:`Lab.connect` works on served ports too;
* TCP ports where the scenario names gRPC (a port named ``grpc``/``grpc-*``, or one an HTTP
  rule gives a ``/package.Service/Method`` path): a real gRPC server (grpcio) answering every
  unary method with ``<method>: <request>``;
* every declared UDP port: a datagram echo;
* the cluster DNS pod (``k8s-app=kube-dns``) on UDP and TCP 53: a DNS server answering from
  ``Cluster.dns_records`` (the records given with ``add_dns_records``).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any, Final, cast

import h11

from .._dns import DNSProxy
from ._client import ProxyLimits
from ._proxy import Deadline, frame_dns_tcp, h11_message, h11_send, read_dns_tcp

__all__ = ["PROBE_PREFIX", "DNSServerProtocol", "UDPEchoProtocol", "dns_answer", "grpc_server", "http_echo"]

#: What :mod:`._probe` TCP tokens start with; the echo server mirrors such connections.
PROBE_PREFIX: Final = b"ciliumpy-lab "
_LIMITS: Final = ProxyLimits()


async def http_echo(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one connection: HTTP/1.1 echo (keep-alive), or a raw echo of a probe."""
    try:
        first = await asyncio.wait_for(reader.read(65536), _LIMITS.idle_timeout)
        if first.startswith(PROBE_PREFIX):
            data = first
            while data:
                writer.write(data)
                await writer.drain()
                data = await asyncio.wait_for(reader.read(65536), _LIMITS.idle_timeout)
            return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_LIMITS.max_header_bytes)
        conn.receive_data(first)
        deadline = Deadline(_LIMITS.request_timeout)
        while True:
            message = await h11_message(conn, reader, deadline, _LIMITS, _LIMITS.max_body_bytes)
            if message is None:
                return
            request, body = message
            payload = json.dumps(
                {
                    "server": name,
                    "method": request.method.decode("latin-1"),
                    "path": request.target.decode("latin-1"),
                    "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in request.headers],
                    "body_bytes": len(body),
                }
            ).encode()
            headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
            response = h11.Response(status_code=200, headers=headers)
            await h11_send(conn, writer, response, h11.Data(data=payload), h11.EndOfMessage())
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            deadline = Deadline(_LIMITS.idle_timeout)
    except (asyncio.CancelledError, Exception):
        return  # a server drops what it cannot serve; shutdown cancels it quietly
    finally:
        writer.close()


class UDPEchoProtocol(asyncio.DatagramProtocol):
    """Sends every datagram back to its sender."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


Records = Callable[[], Mapping[str, Any]]


def dns_answer(query: bytes, records: Records) -> bytes:
    """The lab DNS server's answer: from the registered records, NXDOMAIN for the rest."""
    return DNSProxy().handle(query, allow=lambda _name: True, upstream=dict(records())).response


class DNSServerProtocol(asyncio.DatagramProtocol):
    """The cluster DNS over UDP."""

    def __init__(self, records: Records) -> None:
        self.records = records

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = dns_answer(data, self.records)
        if answer:
            self.transport.sendto(answer, addr)


async def dns_tcp(records: Records, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The cluster DNS over TCP: length-prefixed messages until the client closes."""
    try:
        while True:
            query = await read_dns_tcp(reader, Deadline(_LIMITS.idle_timeout))
            if query is None:
                return
            answer = dns_answer(query, records)
            if not answer:
                return
            writer.write(frame_dns_tcp(answer))
            await writer.drain()
    except (asyncio.CancelledError, Exception):
        return
    finally:
        writer.close()


def grpc_server(address: str, port: int) -> Any:
    """A started grpcio server on ``address:port`` answering every unary method.

    Call it on a thread inside the endpoint's namespace: the listening socket is created
    there, by ``add_insecure_port``.
    """
    import grpc

    def answer(method: str) -> Callable[[bytes, Any], bytes]:
        return lambda request, _context: method.encode() + b": " + request

    class _AnyMethod(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(answer(details.method))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((_AnyMethod(),))
    host = f"[{address}]" if ":" in address else address
    if server.add_insecure_port(f"{host}:{port}") != port:
        raise OSError(f"gRPC server cannot listen on {host}:{port}")
    server.start()
    return server


def listening_socket(family: int, type: int, address: str, port: int) -> socket.socket:
    """A bound (and, for TCP, listening) non-blocking socket; call it inside the namespace."""
    sock = socket.socket(family, type)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        if type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
            sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
