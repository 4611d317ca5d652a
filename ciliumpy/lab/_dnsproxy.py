"""The lab's DNS proxy: transparent UDP and TCP listeners in the node namespace.

The datapath assigns redirected DNS packets to these sockets (bpf/proxy.h).  For UDP the
original destination of each datagram comes from ``IP_RECVORIGDSTADDR`` and the answer is
sent from that address (a transparent socket bound to it), so the client's resolver accepts
it; for TCP the accepted socket's own address is the original destination.  What to answer
is the :data:`Answer` callback's business (the lab: policy, forwarding to the real server,
learning); it runs on a worker thread, since it blocks, and must not raise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Final

from ._client import ProxyLimits
from ._proxy import MARK_FROM_PROXY, ConnectionInfo, Deadline, frame_dns_tcp, read_dns_tcp, transparent_socket

__all__ = ["Answer", "DNSProxyTCP", "DNSProxyUDP", "forward_dns"]

Answer = Callable[[ConnectionInfo, bytes, str], bytes]
"""``(connection, query, "UDP" | "TCP") -> response`` (``b""``: send nothing)."""

_IP_RECVORIGDSTADDR: Final = 20
_IPV6_RECVORIGDSTADDR: Final = 74
_MAX_MESSAGE: Final = 65535
_MAX_INFLIGHT: Final = 64  # UDP queries being answered at once; more are dropped, as UDP may be
_UPSTREAM_TIMEOUT_S: Final = 2.0


def _origdst(ancillary: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_IP and kind == _IP_RECVORIGDSTADDR and len(data) >= 8:
            port = struct.unpack("!H", data[2:4])[0]
            return str(ipaddress.IPv4Address(data[4:8])), port
        if level == socket.IPPROTO_IPV6 and kind == _IPV6_RECVORIGDSTADDR and len(data) >= 24:
            port = struct.unpack("!H", data[2:4])[0]
            return str(ipaddress.IPv6Address(data[8:24])), port
    return None


def udp_listener(family: int, port: int) -> socket.socket:
    """The proxy's UDP socket: any address, ``port``, original destinations reported."""
    any_addr = "0.0.0.0" if family == socket.AF_INET else "::"
    sock = transparent_socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.SOL_IP, _IP_RECVORIGDSTADDR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVORIGDSTADDR, 1)
        sock.bind((any_addr, port) if family == socket.AF_INET else (any_addr, port, 0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class DNSProxyUDP:
    """Reads redirected queries from one UDP socket and answers each from its original address."""

    def __init__(
        self, sock: socket.socket, proxy_port: int, answer: Answer, executor: concurrent.futures.Executor
    ) -> None:
        self.sock, self.proxy_port, self.answer, self.executor = sock, proxy_port, answer, executor
        self.inflight: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.errors = 0

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        for task in self.inflight:
            task.cancel()
        self.sock.close()

    def _readable(self) -> None:
        for _ in range(64):  # bounded: other connections get their turn
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(64))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            orig = _origdst(ancillary)
            if orig is None or len(self.inflight) >= _MAX_INFLIGHT:
                self.dropped += 1
                continue
            info = ConnectionInfo(
                src_ip=ipaddress.ip_address(addr[0]),
                sport=int(addr[1]),
                dst_ip=ipaddress.ip_address(orig[0]),
                dport=orig[1],
                proxy_port=self.proxy_port,
            )
            task = asyncio.get_running_loop().create_task(self._handle(info, data, addr))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    async def _handle(self, info: ConnectionInfo, query: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(self.executor, self.answer, info, query, "UDP")
            if not response:
                return
            family = socket.AF_INET if info.dst_ip.version == 4 else socket.AF_INET6
            # From the address the client asked, or its resolver would ignore the answer.
            with transparent_socket(family, socket.SOCK_DGRAM, bind=(str(info.dst_ip), info.dport)) as out:
                out.sendto(response, addr)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1


class DNSProxyTCP:
    """Serves redirected DNS-over-TCP connections: framed queries until the client closes."""

    def __init__(
        self,
        proxy_port: int,
        answer: Answer,
        executor: concurrent.futures.Executor,
        limits: ProxyLimits | None = None,
    ) -> None:
        self.proxy_port, self.answer, self.executor = proxy_port, answer, executor
        self.limits = limits or ProxyLimits()
        self.errors = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            info = ConnectionInfo.of(writer.get_extra_info("socket"))
            info = ConnectionInfo(info.src_ip, info.sport, info.dst_ip, info.dport, self.proxy_port)
            while True:
                query = await read_dns_tcp(reader, Deadline(self.limits.idle_timeout))
                if query is None:
                    return
                response = await loop.run_in_executor(self.executor, self.answer, info, query, "TCP")
                if not response:
                    return
                writer.write(frame_dns_tcp(response))
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:
            self.errors += 1
        finally:
            writer.close()


def forward_dns(info: ConnectionInfo, query: bytes, transport: str, timeout: float = _UPSTREAM_TIMEOUT_S) -> bytes:
    """Ask the real server the client asked (blocking), from the client's address.

    Runs on a thread inside the node namespace; the upstream socket carries the proxy mark,
    so the datapath returns the server's answer here.  Raises ``OSError``/``TimeoutError``.
    """
    family = socket.AF_INET if info.src_ip.version == 4 else socket.AF_INET6
    kind = socket.SOCK_DGRAM if transport == "UDP" else socket.SOCK_STREAM
    with transparent_socket(family, kind, bind=(str(info.src_ip), 0), mark=MARK_FROM_PROXY) as sock:
        sock.settimeout(timeout)
        sock.connect((str(info.dst_ip), info.dport))
        if kind == socket.SOCK_STREAM:
            sock.sendall(frame_dns_tcp(query))
            head = _recv_exactly(sock, 2)
            return _recv_exactly(sock, struct.unpack("!H", head)[0])
        sock.send(query)
        for _ in range(8):  # a stray datagram is skipped, not taken for the answer
            answer = sock.recv(_MAX_MESSAGE)
            if answer[:2] == query[:2]:
                return answer
        raise TimeoutError("no answer with the query's id")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the DNS server closed the connection")
        data += chunk
    return data
