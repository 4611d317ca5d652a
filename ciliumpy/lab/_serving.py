"""What ``Lab(cluster, serve=True)`` runs: proxies in the node, servers in the endpoints.

:class:`Serving` owns the lab's event loop (:mod:`._runtime`) and everything on it:

* the L7 proxies on the cluster's proxy ports (HTTP ingress/egress: :class:`._proxy.HTTPProxy`;
  DNS: :mod:`._dnsproxy`), with the node's policy routing for marked packets and the
  datapath's ``proxy_redirect`` switched on (bpf/proxy.h);
* a server per declared endpoint port (:mod:`._servers`), the cluster DNS on the
  ``k8s-app=kube-dns`` pod, and a ``world`` namespace holding the addresses of the DNS
  records that no endpoint owns, so that ``toFQDNs`` connections reach something real;
* ``/etc/netns/<name>/resolv.conf`` per endpoint namespace, pointing at the cluster DNS.

Each proxy decision is ``Cluster.check`` (HTTP) or ``Cluster.resolve`` (DNS) for the real
request, taken under :attr:`Serving.lock`; its Hubble flows (``Verdict.to_hubble()``, with
the connection's real ports, plus the L7 response) are kept in :attr:`Serving.flows`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import copy
import functools
import re
import shutil
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
from dnslib import RCODE, DNSHeader, DNSRecord

from .._cluster import HOST_IP_V4, HOST_IP_V6, Resolution
from .._datapath import IPAddress
from .._dns import DNSProxy, DNSProxyResult, DNSRecords, dns_l7_records, extract_msg_details
from .._l7 import HTTPRequest
from . import _netns
from ._client import ProxyLimits
from ._dnsproxy import DNSProxyTCP, DNSProxyUDP, forward_dns, udp_listener
from ._netns import NETNS_DIR, NetNS
from ._proxy import ConnectionInfo, HTTPProxy, ProxyDecision, transparent_socket
from ._runtime import Runtime
from ._servers import DNSServerProtocol, UDPEchoProtocol, dns_tcp, grpc_server, http_echo, listening_socket

if TYPE_CHECKING:
    from ._lab import Lab

__all__ = ["NODE_NAME", "Serving"]

NODE_NAME: Final = "ciliumpy-lab"
ETC_NETNS: Final = Path("/etc/netns")
# The node's policy routing for packets the datapath marked for a proxy (Cilium's 2004).
_PROXY_TABLE: Final = 2004
_PROXY_RULE_PREF: Final = 9
_MARK_TO_PROXY: Final = "0x200/0xf00"
_GRPC_PATH: Final = re.compile(r"^/[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+/\w+$")
_WORLD_PORTS: Final = (80, 443)
_POD_PORTS: Final = "32768 49151"  # ephemeral ports: the pods' (Linux's default start) ...
_NODE_PORTS: Final = "49152 65535"  # ... and the node's, i.e. the proxies' upstream side
_FLOW_LOG: Final = 10000
_RCODE_SERVFAIL: Final = 2


def _family(ip: IPAddress) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _any(family: int) -> str:
    return "0.0.0.0" if family == socket.AF_INET else "::"


def _walk_rules(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(direction, rule) for every ingress/egress rule of every CNP/CCNP spec."""
    for doc in manifests:
        if doc.get("kind") not in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
            continue
        specs = doc.get("specs") or [doc.get("spec") or {}]
        for spec in specs:
            for direction in ("ingress", "egress", "ingressDeny", "egressDeny"):
                for rule in spec.get(direction) or ():
                    if isinstance(rule, dict):
                        yield direction, rule


def _rule_ports(rule: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    for port_rule in rule.get("toPorts") or ():
        for port in port_rule.get("ports") or ():
            with contextlib.suppress(TypeError, ValueError):
                yield int(port.get("port")), port_rule


class Serving:
    """The proxies, servers and DNS of one serving lab (see the module docstring)."""

    def __init__(self, lab: Lab, limits: ProxyLimits | None = None) -> None:
        self.lab = lab
        self.cluster = lab.cluster
        self.limits = limits or ProxyLimits()
        self.lock = threading.RLock()
        self.log: collections.deque[_Logged] = collections.deque(maxlen=_FLOW_LOG)
        self.resolutions: collections.OrderedDict[tuple[str, int, int], Resolution] = collections.OrderedDict()
        self.proxies: list[Any] = []
        self._servers: dict[str, list[Any]] = {}
        self._grpc: dict[str, list[Any]] = {}
        self._etc: list[Path] = []
        # request -> (when decided, its log entry) until the proxy reports the status
        self._pending: collections.OrderedDict[int, tuple[float, _Logged]] = collections.OrderedDict()
        self.requests = 0  # HTTP requests and DNS queries the proxies judged
        self._world: NetNS | None = None
        self._world_ips: set[IPAddress] = set()
        self._closed = False
        node = lab.node
        node_path = str(NETNS_DIR / node.name)
        self.runtime = Runtime(node_path, name=f"lab-{lab.token}")
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=f"lab-dns-{lab.token}", initializer=_netns._enter, initargs=(node_path,)
        )
        # The proxies' upstream connections use the client's address with the node's
        # ephemeral ports, the pods their own: disjoint ranges (serve_endpoint sets the pods'),
        # so a proxied connection never shares a 4-tuple -- and a conntrack entry flagged
        # for the proxy -- with a connection the pod opens itself.
        node.sysctl({"net.ipv4.ip_local_port_range": _NODE_PORTS, "net.ipv4.tcp_tw_reuse": "1"})
        batch = [f"rule add fwmark {_MARK_TO_PROXY} lookup {_PROXY_TABLE} pref {_PROXY_RULE_PREF}"]
        batch.append(f"route add local 0.0.0.0/0 dev lo table {_PROXY_TABLE}")
        node.ip(batch=batch)
        if lab.ipv6:
            node.ip(
                "-6",
                "rule",
                "add",
                "fwmark",
                _MARK_TO_PROXY,
                "lookup",
                str(_PROXY_TABLE),
                "pref",
                str(_PROXY_RULE_PREF),
            )
            node.ip("-6", "route", "add", "local", "::/0", "dev", "lo", "table", str(_PROXY_TABLE))
        self.runtime.run(self._start_proxies())
        lab.backend.proxy_redirect = True

    # -- proxies ---------------------------------------------------------------------------
    async def _start_proxies(self) -> None:
        families = [socket.AF_INET] + ([socket.AF_INET6] if self.lab.ipv6 else [])
        for (_direction, parser), port in sorted(self.cluster.config.proxy_ports.items(), key=lambda kv: kv[1]):
            if parser == "http":
                proxy = HTTPProxy(self._decide_http, proxy_port=port, limits=self.limits, respond=self._responded)
                self.proxies.append(proxy)
                for family in families:
                    sock = transparent_socket(family, socket.SOCK_STREAM, bind=(_any(family), port))
                    sock.listen(128)
                    self.proxies.append(await asyncio.start_server(proxy.handle, sock=sock))
            elif parser == "dns":
                tcp = DNSProxyTCP(port, self._answer_dns, self.executor, self.limits)
                self.proxies.append(tcp)
                for family in families:
                    udp = DNSProxyUDP(udp_listener(family, port), port, self._answer_dns, self.executor)
                    udp.start()
                    self.proxies.append(udp)
                    sock = transparent_socket(family, socket.SOCK_STREAM, bind=(_any(family), port))
                    sock.listen(128)
                    self.proxies.append(await asyncio.start_server(tcp.handle, sock=sock))

    @property
    def proxy_errors(self) -> int:
        """Connections or queries the proxies ended on an unexpected exception (0 when sound)."""
        return sum(getattr(p, "errors", 0) for p in self.proxies)

    @property
    def flows(self) -> list[dict[str, Any]]:
        """The Hubble flows of every decision still in the log, oldest first."""
        return [flow for entry in list(self.log) for flow in entry.flows()]

    def recent_flows(self, entries: int) -> list[dict[str, Any]]:
        """The flows of the last ``entries`` decisions (a request's own are among them)."""
        log = list(self.log)[-entries:]
        return [flow for entry in log for flow in entry.flows()]

    def _decide_http(self, info: ConnectionInfo, request: HTTPRequest) -> ProxyDecision:
        http = {
            "method": request.method,
            "path": request.path,
            "host": request.host,
            "headers": list(request.headers),
            "protocol": request.protocol,
        }
        with self.lock:
            verdict = self.cluster.check(str(info.src_ip), str(info.dst_ip), info.dport, "TCP", http=http)
            self.requests += 1
        # Flows are built when read: a request pays only for its decision.
        entry = _Logged(lambda: [_with_ports(f, info, "TCP") for f in verdict.to_hubble(node_name=NODE_NAME)])
        self.log.append(entry)
        self._pending[id(request)] = (time.monotonic(), entry)
        while len(self._pending) > 1000:  # requests whose client vanished before the answer
            self._pending.popitem(last=False)
        return ProxyDecision(verdict.allowed, verdict.l7.reason if verdict.l7 is not None else "")

    def _responded(self, info: ConnectionInfo, request: HTTPRequest, decision: ProxyDecision, status: int) -> None:
        pending = self._pending.pop(id(request), None)
        if pending is None or not decision.allowed:
            return
        started, entry = pending
        latency = int((time.monotonic() - started) * 1e9)

        def response() -> list[dict[str, Any]]:
            l7 = [f for f in entry.flows() if f.get("Type") == "L7"]
            return [_http_response_flow(l7[-1], request, status, latency)] if l7 else []

        self.log.append(_Logged(response))

    # -- DNS -------------------------------------------------------------------------------
    def _answer_dns(self, info: ConnectionInfo, query: bytes, transport: str) -> bytes:
        """Policy, the real server, learning; on a worker thread in the node namespace."""
        try:
            return self._answer_dns_checked(info, query, transport)
        except Exception:
            msg_id = struct.unpack("!H", query[:2])[0] if len(query) >= 2 else 0
            return bytes(DNSRecord(DNSHeader(id=msg_id, qr=1, rcode=_RCODE_SERVFAIL)).pack())

    def _answer_dns_checked(self, info: ConnectionInfo, query: bytes, transport: str) -> bytes:
        # Malformed or non-query messages are answered (FORMERR, NOTIMP) or dropped as the
        # DNS proxy does, before policy is consulted.
        parsed = DNSProxy().handle(query, allow=lambda _name: False, upstream={})
        if not parsed.name:
            return parsed.response
        real: list[bytes] = []

        def upstream(_qname: str, _qtype: str) -> DNSRecords | None:
            answer = forward_dns(info, query, transport)
            real.append(answer)
            message = DNSRecord.parse(answer)
            if message.header.rcode != RCODE.NOERROR:
                return None
            details = extract_msg_details(message)
            return DNSRecords(ips=details.ips, ttl=details.ttl, cnames=details.cnames)

        src = self.lab.owner_of(info.src_ip) or str(info.src_ip)
        with self.lock:
            self.requests += 1
            resolution = self.cluster.resolve(src, parsed.name, parsed.qtype, upstream=upstream)
            # Learned names become identities in the kernel's ipcache and policy maps now,
            # before the client sees the answer and connects.
            self.cluster.ipcache()
        key = (str(info.src_ip), info.sport, parsed.id)
        self.resolutions[key] = resolution
        while len(self.resolutions) > 1000:
            self.resolutions.popitem(last=False)
        self.log.append(_Logged(lambda: _dns_flows(resolution, info, transport)))
        result = resolution.result
        if result is None:
            return b""  # dropped at L3/L4 (the policy changed under the connection)
        if real and result.rcode != _RCODE_SERVFAIL:
            return real[0]  # the real server's answer, byte for byte
        response: bytes = result.response
        return struct.pack("!H", parsed.id) + response[2:]

    # -- endpoint servers ------------------------------------------------------------------
    def _grpc_ports(self, ref: str) -> set[int]:
        ep = self.cluster.endpoints[ref]
        ports = {p.port for p in ep.ports if p.name and (p.name == "grpc" or p.name.startswith("grpc-"))}
        manifests = self.cluster.to_manifests()
        for _direction, rule in _walk_rules(manifests):
            for port, port_rule in _rule_ports(rule):
                http = ((port_rule.get("rules") or {}).get("http")) or ()
                grpc = any(_GRPC_PATH.match(str(r.get("path") or "")) for r in http if isinstance(r, dict))
                if grpc and any(p.port == port for p in ep.ports):
                    ports.add(port)
        return ports

    def serve_endpoint(self, ref: str, netns: NetNS, ips: list[IPAddress]) -> None:
        """Start ``ref``'s servers in its namespace and write its resolv.conf."""
        ep = self.cluster.endpoints[ref]
        netns.sysctl({"net.ipv4.ip_local_port_range": _POD_PORTS})
        dns_ref = self.cluster.dns_server()
        grpc_ports = self._grpc_ports(ref)
        families = sorted({_family(ip) for ip in ips})
        handles: list[Any] = []
        grpcs: list[Any] = []
        self._servers[ref] = handles
        self._grpc[ref] = grpcs
        name = ref
        for cport in ep.ports:
            proto = cport.protocol.upper()
            for family in families:
                if proto == "TCP" and cport.port in grpc_ports:
                    grpcs.append(netns.call(functools.partial(grpc_server, _any(family), cport.port)))
                elif proto == "TCP":
                    sock = netns.call(
                        functools.partial(listening_socket, family, socket.SOCK_STREAM, _any(family), cport.port)
                    )
                    handler = (
                        functools.partial(dns_tcp, self._records)
                        if ref == dns_ref and cport.port == 53
                        else functools.partial(http_echo, name)
                    )
                    handles.append(self.runtime.run(_start_server(handler, sock)))
                elif proto == "UDP":
                    sock = netns.call(
                        functools.partial(listening_socket, family, socket.SOCK_DGRAM, _any(family), cport.port)
                    )
                    dns = ref == dns_ref and cport.port == 53
                    handles.append(self.runtime.run(_start_datagram(sock, dns, self._records)))
        self._write_resolv_conf(netns.name, ep.namespace)

    def _records(self) -> Mapping[str, Any]:
        return dict(self.cluster.dns_records)

    def stop_endpoint(self, ref: str, netns_name: str) -> None:
        """Stop ``ref``'s servers and remove its resolv.conf."""
        for handle in self._servers.pop(ref, []):
            with contextlib.suppress(Exception):
                self.runtime.run(_close(handle), timeout=5)
        for server in self._grpc.pop(ref, []):
            with contextlib.suppress(Exception):
                server.stop(0)
        self._remove_etc(ETC_NETNS / netns_name)

    def _write_resolv_conf(self, netns_name: str, namespace: str) -> None:
        dns_ref = self.cluster.dns_server()
        if dns_ref is None:
            return
        servers = [ip for ip in self.cluster.endpoints[dns_ref].ips if ip.version == 4 or self.lab.ipv6]
        if not servers:
            return
        folder = ETC_NETNS / netns_name
        folder.mkdir(parents=True, exist_ok=True)
        self._etc.append(folder)
        lines = [f"nameserver {ip}" for ip in servers[:3]]
        lines.append(f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local")
        # ndots:1, not Kubernetes' 5: a dotted name is asked as given first, so the DNS
        # rules see the name the program used rather than a search-list expansion.
        lines.append("options ndots:1 timeout:2 attempts:2")
        (folder / "resolv.conf").write_text("\n".join(lines) + "\n")

    def _remove_etc(self, folder: Path) -> None:
        if folder in self._etc:
            self._etc.remove(folder)
        if folder.parent == ETC_NETNS and folder.name.startswith(_netns.NAME_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)

    # -- the world -------------------------------------------------------------------------
    def sync_world(self) -> None:
        """Give every DNS-record address no endpoint owns to the ``world`` namespace."""
        owned = {ip for ep in self.cluster.endpoints.values() for ip in ep.ips}
        wanted: set[IPAddress] = set()
        for records in self.cluster.dns_records.values():
            for ip in records.ips:
                if ip not in owned and (ip.version == 4 or self.lab.ipv6):
                    wanted.add(ip)
        new = wanted - self._world_ips
        if not new:
            return
        node = self.lab.node
        if self._world is None:
            self._world = self.lab._adopt_netns("world")
            world_side, node_side = _WORLD_MAC
            batch = [
                f"link add world0 address {node_side} type veth peer name eth0 address {world_side} "
                f"netns {self._world.name}",
                "link set world0 up",
            ]
            node.ip(batch=batch)
            pod = ["link set lo up", "link set eth0 addrgenmode none", "link set eth0 up"]
            for gateway in (HOST_IP_V4, HOST_IP_V6) if self.lab.ipv6 else (HOST_IP_V4,):
                default = "0.0.0.0/0" if gateway.version == 4 else "::/0"
                pod += [
                    f"route replace {gateway}/{gateway.max_prefixlen} dev eth0 scope link",
                    f"route replace {default} via {gateway} dev eth0",
                    f"neighbour replace {gateway} lladdr {_WORLD_MAC[1]} dev eth0 nud permanent",
                ]
            self._world.ip(batch=pod)
            self._start_world_servers()
        node_batch, world_batch = [], []
        for ip in sorted(new, key=lambda a: (a.version, int(a))):
            nodad = " nodad" if ip.version == 6 else ""
            world_batch.append(f"address add {ip}/{ip.max_prefixlen} dev eth0{nodad}")
            node_batch += [
                f"route replace {ip}/{ip.max_prefixlen} dev world0",
                f"neighbour replace {ip} lladdr {_WORLD_MAC[0]} dev world0 nud permanent",
            ]
        self._world.ip(batch=world_batch)
        node.ip(batch=node_batch)
        self._world_ips |= new

    def _start_world_servers(self) -> None:
        assert self._world is not None
        ports = set(_WORLD_PORTS)
        for direction, rule in _walk_rules(self.cluster.to_manifests()):
            if direction == "egress" and rule.get("toFQDNs"):
                ports.update(port for port, _ in _rule_ports(rule) if 0 < port < 65536)
        handles: list[Any] = []
        self._servers["world"] = handles
        families = [socket.AF_INET] + ([socket.AF_INET6] if self.lab.ipv6 else [])
        for port in sorted(ports):
            for family in families:
                sock = self._world.call(
                    functools.partial(listening_socket, family, socket.SOCK_STREAM, _any(family), port)
                )
                handles.append(self.runtime.run(_start_server(functools.partial(http_echo, "world"), sock)))

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            if not self.lab.backend.closed:
                self.lab.backend.proxy_redirect = False
        for servers in self._grpc.values():
            for server in servers:
                with contextlib.suppress(Exception):
                    server.stop(0)
        self._grpc.clear()
        with contextlib.suppress(Exception):
            self.runtime.run(self._close_all(), timeout=5)
        self.runtime.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        for folder in list(self._etc):
            self._remove_etc(folder)

    async def _close_all(self) -> None:
        """Close every listening socket and transport on the loop, before it stops."""
        for proxy in self.proxies:
            if isinstance(proxy, DNSProxyUDP):
                proxy.stop()
            elif isinstance(proxy, asyncio.Server):
                proxy.close()
        for handles in self._servers.values():
            for handle in handles:
                handle.close()
        self._servers.clear()


_WORLD_MAC: Final = ("02:00:00:00:ff:fe", "02:00:00:01:ff:fe")  # (world side, node side)


async def _start_server(handler: Any, sock: socket.socket) -> asyncio.Server:
    return await asyncio.start_server(handler, sock=sock)


async def _start_datagram(sock: socket.socket, dns: bool, records: Any) -> asyncio.BaseTransport:
    loop = asyncio.get_running_loop()
    factory: Any = (lambda: DNSServerProtocol(records)) if dns else UDPEchoProtocol
    transport, _protocol = await loop.create_datagram_endpoint(factory, sock=sock)
    return transport


async def _close(handle: Any) -> None:
    handle.close()
    if isinstance(handle, asyncio.Server):
        await handle.wait_closed()


class _Logged:
    """One proxy decision in the log; its flow dicts are built on first read."""

    __slots__ = ("_flows", "make")

    def __init__(self, make: Callable[[], list[dict[str, Any]]]) -> None:
        self.make = make
        self._flows: list[dict[str, Any]] | None = None

    def flows(self) -> list[dict[str, Any]]:
        if self._flows is None:
            self._flows = self.make()
        return self._flows


def _with_ports(flow: dict[str, Any], info: ConnectionInfo, proto: str) -> dict[str, Any]:
    """``flow`` (a fresh dict) with the real connection's ports (check() numbers its own packets)."""
    l4 = flow.get("l4", {}).get(proto)
    if l4 is not None:
        l4["source_port"], l4["destination_port"] = info.sport, info.dport
    return flow


def _reply_of(flow: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(flow)
    ip = out.get("IP")
    if ip is not None:
        ip["source"], ip["destination"] = ip["destination"], ip["source"]
    for l4 in out.get("l4", {}).values():
        if "source_port" in l4:
            l4["source_port"], l4["destination_port"] = l4["destination_port"], l4["source_port"]
    out["source"], out["destination"] = out.get("destination", {}), out.get("source", {})
    out["is_reply"] = True
    return out


def _http_response_flow(
    request_flow: dict[str, Any], request: HTTPRequest, status: int, latency_ns: int
) -> dict[str, Any]:
    """Hubble's L7 RESPONSE record for a forwarded request (status and latency)."""
    flow = _reply_of(request_flow)
    flow["verdict"] = "FORWARDED"
    flow["l7"] = {
        "type": "RESPONSE",
        "latency_ns": str(latency_ns),
        "http": {"code": status, "method": request.method, "url": request.url, "protocol": request.protocol},
    }
    millis = latency_ns // 1_000_000
    flow["Summary"] = f"{request.protocol} {status} {millis}ms ({request.method} {urllib.parse.unquote(request.url)})"
    return flow


_POLICY_KEYS: Final = (
    "policy_match_type",
    "proxy_port",
    "drop_reason",
    "drop_reason_desc",
    "egress_allowed_by",
    "ingress_allowed_by",
    "egress_denied_by",
    "ingress_denied_by",
)


def _dns_flows(resolution: Resolution, info: ConnectionInfo, transport: str) -> list[dict[str, Any]]:
    """Hubble L7 DNS flows (query, and answer when answered) of one proxied query."""
    result = resolution.result
    if result is None:
        return []
    base_flows = [_with_ports(f, info, transport) for f in resolution.verdict.to_hubble(node_name=NODE_NAME)]
    if not base_flows:
        return []
    egress = [f for f in base_flows if f.get("traffic_direction") == "EGRESS"]
    base = copy.deepcopy((egress or base_flows)[0])
    for key in _POLICY_KEYS:
        base.pop(key, None)
    base["Type"] = "L7"
    base["event_type"] = {"type": 129}
    flows = []
    for record in dns_l7_records(result):
        reply = record["l7"]["type"] == "RESPONSE"
        flow = _reply_of(base) if reply else copy.deepcopy(base)
        flow["verdict"] = record["verdict"]
        flow["l7"] = record["l7"]
        flow["Summary"] = record["Summary"]
        flows.append(flow)
    return base_flows + flows


def real_resolution(answer: bytes | None, fallback: Resolution) -> Resolution:
    """A :class:`Resolution` for a query the client sent past no proxy (not redirected).

    ``answer`` is what the server sent (None: nothing came back); the model's verdict of the
    query's flow is kept, nothing is learned.
    """
    if answer is None:
        return attrs.evolve(fallback, result=None, learned=False)
    message = DNSRecord.parse(answer)
    details = extract_msg_details(message) if message.questions else None
    result = DNSProxyResult(
        response=answer,
        rcode=int(message.header.rcode),
        allowed=True,
        name=fallback.name,
        qtype=fallback.qtype,
        answers=tuple(str(ip) for ip in details.ips) if details else (),
        ttl=details.ttl if details and details.ips else 0,
        cnames=details.cnames if details else (),
        reason="answered by the cluster DNS (not redirected to the DNS proxy)",
        id=int(message.header.id),
        answer_types=details.answer_types if details else (),
    )
    return attrs.evolve(fallback, result=result, learned=False)
