"""One request/response exchange over real sockets between two network namespaces.

The sockets are created by the caller's factories (inside the right namespaces); all I/O
then runs here, in the calling thread, non-blocking and bounded by one deadline:

* TCP: a listener at the destination, a client connect, a token sent and echoed back;
* UDP: a bound server socket, one datagram sent and echoed back;
* ICMP: an echo request from a raw socket, answered by the destination's kernel; a raw
  observer socket at the destination tells whether the request arrived.

``reached`` says the destination saw the request (TCP: accepted the connection, which
needs the whole handshake), ``answered`` that the response came back to the source.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import ipaddress
import os
import secrets
import selectors
import socket
import struct
import time
from collections.abc import Callable

import attrs

from .._datapath import IPAddress

__all__ = ["ProbeOutcome", "SocketFactory", "probe"]

SocketFactory = Callable[[int, int, int], socket.socket]
"""``(family, type, proto) -> socket`` created in some network namespace."""

_ICMP_ECHO = {4: (8, 0), 6: (128, 129)}  # (request type, reply type)
_RECV_MAX = 65535


@attrs.frozen
class ProbeOutcome:
    """What one exchange observed (see the module docstring)."""

    reached: bool
    answered: bool
    sport: int
    error: str | None = None


def _family(addr: IPAddress) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def _sockaddr(addr: IPAddress, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    return (str(addr), port) if addr.version == 4 else (str(addr), port, 0, 0)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def probe(
    protocol: str,
    src_socket: SocketFactory,
    dst_socket: SocketFactory | None,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    port: int,
    timeout: float,
    *,
    listen: tuple[IPAddress, int] | None = None,
    sport: int = 0,
) -> ProbeOutcome:
    """Run one exchange of ``protocol`` (``TCP``, ``UDP`` or ``ICMP``) within ``timeout`` s.

    ``dst_socket`` None: a server of the lab's already listens there and echoes (TCP, UDP);
    whether it saw the request is then only known from its answer.  ``listen`` is where the
    destination's socket binds when that is not ``dst_ip:port`` (a Service's backend, which
    the datapath translates the frontend to); ``sport`` binds the client to that port.
    """
    deadline = time.monotonic() + timeout
    token = b"ciliumpy-lab " + secrets.token_hex(8).encode()
    where = listen or (dst_ip, port)
    if protocol == "TCP":
        return _tcp(src_socket, dst_socket, src_ip, dst_ip, port, token, deadline, where, sport)
    if protocol == "UDP":
        return _udp(src_socket, dst_socket, src_ip, dst_ip, port, token, deadline, where, sport)
    if protocol == "ICMP":
        if dst_socket is None:
            raise ValueError("an ICMP probe needs the destination's socket factory")
        return _icmp(src_socket, dst_socket, src_ip, dst_ip, token, deadline)
    raise ValueError(f"protocol must be TCP, UDP or ICMP, got {protocol!r}")


def _tcp(
    src_socket: SocketFactory,
    dst_socket: SocketFactory | None,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    port: int,
    token: bytes,
    deadline: float,
    listen: tuple[IPAddress, int],
    bind_port: int,
) -> ProbeOutcome:
    fam = _family(dst_ip)
    with contextlib.ExitStack() as stack:
        listener = None
        if dst_socket is not None:
            listener = stack.enter_context(dst_socket(fam, socket.SOCK_STREAM, 0))
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(_sockaddr(*listen))
            listener.listen(4)
            listener.setblocking(False)
        client = stack.enter_context(src_socket(fam, socket.SOCK_STREAM, 0))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        client.bind(_sockaddr(src_ip, bind_port))
        client.setblocking(False)
        sport = int(client.getsockname()[1])
        rc = client.connect_ex(_sockaddr(dst_ip, port))
        if rc not in (0, errno_mod.EINPROGRESS):
            return ProbeOutcome(False, False, sport, os.strerror(rc))
        sel = stack.enter_context(selectors.DefaultSelector())
        if listener is not None:
            sel.register(listener, selectors.EVENT_READ, "accept")
        sel.register(client, selectors.EVENT_WRITE, "connect")
        reached = False
        received = b""
        conns: list[socket.socket] = []  # accepted connections, closed with the rest

        def close_conns() -> None:
            for conn in conns:
                conn.close()

        stack.callback(close_conns)
        while (left := _remaining(deadline)) > 0:
            for key, _mask in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data == "accept":
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        conns.append(conn)
                        sel.register(conn, selectors.EVENT_READ, "serve")
                        reached = True
                elif key.data == "connect":
                    err = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        return ProbeOutcome(reached, False, sport, os.strerror(err))
                    client.sendall(token)  # a few bytes into an empty send buffer: never blocks
                    sel.modify(client, selectors.EVENT_READ, "read")
                elif key.data == "serve":
                    with contextlib.suppress(BlockingIOError):
                        data = sock.recv(_RECV_MAX)
                        if data:
                            sock.sendall(data)
                        else:
                            sel.unregister(sock)
                elif key.data == "read":
                    try:
                        data = client.recv(_RECV_MAX)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        return ProbeOutcome(reached, False, sport, exc.strerror or str(exc))
                    received += data
                    if received == token:
                        return ProbeOutcome(reached or listener is None, True, sport)
                    if not data or not token.startswith(received):
                        return ProbeOutcome(reached, False, sport, "connection closed without the echo")
        return ProbeOutcome(reached, False, sport, "timed out")


def _udp(
    src_socket: SocketFactory,
    dst_socket: SocketFactory | None,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    port: int,
    token: bytes,
    deadline: float,
    listen: tuple[IPAddress, int],
    bind_port: int,
) -> ProbeOutcome:
    fam = _family(dst_ip)
    with contextlib.ExitStack() as stack:
        server = None
        if dst_socket is not None:
            server = stack.enter_context(dst_socket(fam, socket.SOCK_DGRAM, 0))
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(_sockaddr(*listen))
            server.setblocking(False)
        client = stack.enter_context(src_socket(fam, socket.SOCK_DGRAM, 0))
        client.bind(_sockaddr(src_ip, bind_port))
        client.setblocking(False)
        sport = int(client.getsockname()[1])
        client.connect(_sockaddr(dst_ip, port))
        client.send(token)
        sel = stack.enter_context(selectors.DefaultSelector())
        if server is not None:
            sel.register(server, selectors.EVENT_READ, "serve")
        sel.register(client, selectors.EVENT_READ, "read")
        reached = False
        while (left := _remaining(deadline)) > 0:
            for key, _mask in sel.select(left):
                if key.data == "serve":
                    assert server is not None
                    try:
                        data, addr = server.recvfrom(_RECV_MAX)
                    except BlockingIOError:
                        continue
                    if data == token:
                        reached = True
                        server.sendto(data, addr)
                else:
                    try:
                        data = client.recv(_RECV_MAX)
                    except BlockingIOError:
                        continue
                    except OSError as exc:  # an ICMP error for the connected socket
                        return ProbeOutcome(reached, False, sport, exc.strerror or str(exc))
                    if data == token:
                        return ProbeOutcome(reached or server is None, True, sport)
        return ProbeOutcome(reached, False, sport, "timed out")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmp_echo(version: int, ident: int, payload: bytes) -> bytes:
    kind = _ICMP_ECHO[version][0]
    msg = struct.pack("!BBHHH", kind, 0, 0, ident, 1) + payload
    if version == 6:
        return msg  # the kernel fills in the ICMPv6 checksum (it covers a pseudo-header)
    return msg[:2] + struct.pack("!H", _checksum(msg)) + msg[4:]


def _icmp_message(version: int, packet: bytes) -> bytes:
    """The ICMP message of a raw-socket read (IPv4 raw sockets include the IP header)."""
    if version == 4 and packet:
        return packet[(packet[0] & 0x0F) * 4 :]
    return packet


def _is_echo(message: bytes, kind: int, ident: int, payload: bytes) -> bool:
    if len(message) < 8:
        return False
    mtype, _code, _csum, mid, _seq = struct.unpack("!BBHHH", message[:8])
    return mtype == kind and mid == ident and message[8:] == payload


def _icmp(
    src_socket: SocketFactory,
    dst_socket: SocketFactory,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    token: bytes,
    deadline: float,
) -> ProbeOutcome:
    version = dst_ip.version
    fam = _family(dst_ip)
    proto = socket.IPPROTO_ICMP if version == 4 else socket.IPPROTO_ICMPV6
    request, reply = _ICMP_ECHO[version]
    # A fresh identifier per probe: it is the "port" of the conntrack entry.
    ident = secrets.randbelow(0xFFFF) + 1
    with contextlib.ExitStack() as stack:
        observer = stack.enter_context(dst_socket(fam, socket.SOCK_RAW, proto))
        observer.setblocking(False)
        client = stack.enter_context(src_socket(fam, socket.SOCK_RAW, proto))
        client.bind(_sockaddr(src_ip, 0))
        client.setblocking(False)
        client.sendto(_icmp_echo(version, ident, token), _sockaddr(dst_ip, 0))
        sel = stack.enter_context(selectors.DefaultSelector())
        sel.register(observer, selectors.EVENT_READ, "observe")
        sel.register(client, selectors.EVENT_READ, "read")
        reached = False
        while (left := _remaining(deadline)) > 0:
            for key, _mask in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                # Raw sockets see every ICMP message of the namespace: read all that is
                # queued, keep only ours.
                for _ in range(64):
                    try:
                        packet, addr = sock.recvfrom(_RECV_MAX)
                    except BlockingIOError:
                        break
                    message = _icmp_message(version, packet)
                    peer = ipaddress.ip_address(addr[0].partition("%")[0])
                    if key.data == "observe":
                        if peer == src_ip and _is_echo(message, request, ident, token):
                            reached = True
                    elif peer == dst_ip and _is_echo(message, reply, ident, token):
                        return ProbeOutcome(reached, True, ident)
        return ProbeOutcome(reached, False, ident, "timed out")
