"""A live lab: the cluster's endpoints as network namespaces behind the eBPF datapath.

Topology (one node, as Cilium wires pods on a node)::

    [ep netns: eth0 = pod IPs/32,/128] ==veth== [node netns: lxc<id>] --routing-- [lxc<id'>] ...
                                                 ^ tc ingress: cil_from_container
                                                 ^ tc egress:  cil_to_container

With local delivery (the default, Cilium's BPF host routing), a packet between two
endpoints does not take the node's routing: cil_from_container enforces the source's
egress and the destination's ingress policy and hands the packet to the destination's
``eth0`` with ``bpf_redirect_peer``.  Traffic from or to the node itself is routed, and
cil_to_container judges what the node sends to an endpoint.

The node namespace owns the cluster's host addresses (``10.0.0.1``, ``fd00:10::1``) on its
loopback and routes between the ``lxc`` devices, one ``/32``/``/128`` route per pod
address; each pod routes everything through the host address as its gateway.  Neighbour
entries are static on both sides: ARP would pass the datapath (it is not IP) but IPv6
neighbour discovery is ICMPv6 that policy would judge, and Cilium answers it in BPF instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_mod
import os
import secrets
import socket
import subprocess
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._cluster import HOST_IP_V4, HOST_IP_V6, Cluster, Resolution
from .._datapath import Action, Direction, DropReason, IPAddress, Protocol
from .._dns import build_query
from ..backends import _libbpf as L
from ..backends._ebpf import DatapathEvent, EBPFBackend, EndpointDevice
from ..exceptions import BPFError, LabError, UnknownEndpointError
from . import _netns
from ._client import LabHTTPResult, ProxyLimits, dns_exchange, http_exchange
from ._netns import NetNS
from ._probe import ProbeOutcome, probe
from ._services import _SPORTS, ServiceTarget, service_target

if TYPE_CHECKING:
    from ._serving import Serving

__all__ = ["HOST", "Lab", "LiveResult"]

HOST = "host"
"""The name :meth:`Lab.connect` accepts for the node itself (the cluster's host addresses)."""

_PROTOCOLS = {"TCP": "TCP", "UDP": "UDP", "ICMP": "ICMP", "ICMPV4": "ICMP", "ICMPV6": "ICMP"}
_ECHO_REQUEST = {4: 8, 6: 128}
_TC_HANDLE = 1
_TC_PRIORITY = 1

# Per-namespace sysctls.  The node routes (forwarding), must not drop asymmetric paths
# (rp_filter) and must not tell pods about shorter routes (redirects).  "default" covers
# the lxc devices created afterwards.
_NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
}


# ---------------------------------------------------------------- results
@attrs.frozen(kw_only=True)
class LiveResult:
    """The outcome of one real exchange between two lab namespaces.

    ``allowed`` is true when the response came back to the source (TCP: connected and got
    its data echoed; UDP: got its datagram echoed; ICMP: got the echo reply).  ``reached``
    says whether the destination saw the request.  ``events`` are the flow events the
    datapath reported for this exchange, in both directions (empty when the backend's
    event mode is ``NONE``).
    """

    src: str
    dst: str
    protocol: str
    port: int | None
    src_ip: IPAddress
    dst_ip: IPAddress
    sport: int
    allowed: bool
    reached: bool
    error: str | None
    elapsed: float
    events: tuple[DatapathEvent, ...] = ()
    service: ServiceTarget | None = None  # the frontend and the backend the datapath chose

    @classmethod
    def of_probe(
        cls,
        src: str,
        dst: str,
        proto: str,
        port: int | None,
        addresses: tuple[IPAddress, IPAddress],
        outcome: ProbeOutcome,
        elapsed: float,
        events: tuple[DatapathEvent, ...],
        service: ServiceTarget | None = None,
    ) -> LiveResult:
        """The result of one :func:`probe` exchange from ``src`` to ``dst``."""
        return cls(
            src=src,
            dst=dst,
            protocol=proto,
            port=None if proto == "ICMP" else int(port or 0),
            src_ip=addresses[0],
            dst_ip=addresses[1],
            sport=outcome.sport,
            allowed=outcome.answered,
            reached=outcome.reached,
            error=None if outcome.answered else outcome.error,
            elapsed=elapsed,
            events=events,
            service=service,
        )

    @property
    def verdict(self) -> str:
        """``FORWARDED`` or ``DROPPED``, as :attr:`ciliumpy.Verdict.verdict` says it."""
        return "FORWARDED" if self.allowed else "DROPPED"

    @property
    def drop_reason(self) -> DropReason | None:
        """The reason of the first drop the datapath reported for this exchange."""
        for ev in self.events:
            if ev.action == Action.DROP:
                return ev.drop_reason
        return None

    def explain(self) -> str:
        """One line for the exchange, then one per datapath event."""
        what = f"{self.protocol} {self.src} ({self.src_ip}) -> {self.dst} ({self.dst_ip})"
        if self.port is not None:
            what += f" port {self.port}"
        state = f"{self.verdict} in {self.elapsed * 1000:.1f} ms"
        if not self.allowed:
            state += f": {self.error or 'no response'}" + (", request reached the destination" if self.reached else "")
        lines = [f"{what}: {state}"]
        for ev in self.events:
            hook = "from-container" if ev.direction == Direction.EGRESS else "to-container"
            line = f"  {hook} ep {ev.endpoint_id} {ev.src}:{ev.sport} -> {ev.dst}:{ev.dport} {ev.action.name}"
            if ev.drop_reason is not None:
                line += f" ({ev.drop_reason.text})"
            line += f" ct={ev.ct_state.name.lower()}"
            lines.append(line)
        return "\n".join(lines)


# ---------------------------------------------------------------- wiring
@attrs.frozen
class _Wiring:
    """How one endpoint is plugged in: what to rebuild when the model changes."""

    endpoint_id: int
    ips: tuple[IPAddress, ...]


@attrs.define
class _Port:
    ref: str
    wiring: _Wiring
    netns: NetNS
    host_if: str


def _mac(kind: int, endpoint_id: int) -> str:
    """Locally administered unicast MACs: kind 0 = pod side, 1 = node side."""
    return f"02:00:00:{kind:02x}:{endpoint_id >> 8:02x}:{endpoint_id & 0xFF:02x}"


def _host_ips(ipv6: bool) -> tuple[IPAddress, ...]:
    return (HOST_IP_V4, HOST_IP_V6) if ipv6 else (HOST_IP_V4,)


# ---------------------------------------------------------------- tc attachment
def _tc_attach(ifname: str, fds: dict[str, int]) -> None:
    """Attach ``fds`` by tc hook (``ingress``/``egress``) to ``ifname``; runs in the node netns."""
    lib = L.library()
    ifindex = socket.if_nametoindex(ifname)
    hook = L.opts(L.bpf_tc_hook, ifindex=ifindex, attach_point=L.BPF_TC_INGRESS)
    rc = int(lib.bpf_tc_hook_create(ctypes.byref(hook)))
    if rc < 0 and rc != -errno_mod.EEXIST:  # EEXIST: the clsact qdisc is there already
        raise BPFError(-rc, os.strerror(-rc), function="bpf_tc_hook_create")
    for name, fd in fds.items():
        point = L.BPF_TC_INGRESS if name == "ingress" else L.BPF_TC_EGRESS
        hook = L.opts(L.bpf_tc_hook, ifindex=ifindex, attach_point=point)
        tc = L.opts(L.bpf_tc_opts, prog_fd=fd, flags=L.BPF_TC_F_REPLACE, handle=_TC_HANDLE, priority=_TC_PRIORITY)
        lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(tc))


def _tc_detach(ifname: str) -> None:
    """Remove ``ifname``'s clsact qdisc with every filter on it; runs in the node netns."""
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        return  # the device is gone, and its filters with it
    hook = L.opts(L.bpf_tc_hook, ifindex=ifindex, attach_point=L.BPF_TC_INGRESS | L.BPF_TC_EGRESS)
    try:
        L.library().bpf_tc_hook_destroy(ctypes.byref(hook))
    except BPFError as exc:
        if exc.errno not in (errno_mod.ENOENT, errno_mod.EINVAL):
            raise


# ---------------------------------------------------------------- resources
class _Resources:
    """Everything a lab created; ``release()`` removes it all, once, and never raises."""

    def __init__(self) -> None:
        self.node: NetNS | None = None
        self.ports: dict[str, _Port] = {}
        self.extra: list[NetNS] = []  # namespaces of the serving lab's own (the world)
        self.serving: Serving | None = None
        self.released = False

    def drop_port(self, port: _Port) -> None:
        """Delete one endpoint's veth pair (synchronously, so its name is free) and netns."""
        node = self.node
        if node is not None and not node.closed:
            with contextlib.suppress(LabError):
                node.ip("link", "delete", port.host_if)
        port.netns.close()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.serving is not None:
            self.serving.close()
        node = self.node
        if node is not None and not node.closed and self.ports:
            # One batch for every pair; -force goes on past links that are already gone.
            with contextlib.suppress(LabError):
                _netns.ip("-force", batch=[f"link delete {p.host_if}" for p in self.ports.values()], netns=node.name)
        for port in self.ports.values():
            port.netns.close()
        self.ports.clear()
        for extra in self.extra:
            extra.close()
        if node is not None:
            node.close()


def _release_leaked(resources: _Resources) -> None:
    if not resources.released:
        warnings.warn(
            "Lab was not closed; its network namespaces were removed by the garbage collector",
            ResourceWarning,
            stacklevel=2,
        )
        resources.release()


# ---------------------------------------------------------------- the lab
class Lab:
    """Live enforcement: real traffic between the cluster's endpoints through the eBPF datapath.

    >>> with Cluster(backend="ebpf") as c, Lab(c) as lab:        # doctest: +SKIP
    ...     _ = c.add_endpoint("prod/web", labels={"app": "web"})
    ...     lab.connect("prod/web", "prod/db", 5432).allowed

    Each endpoint gets a network namespace of its own (named ``ciliumpy-<pid>-<token>-ep<id>``)
    with its model addresses on ``eth0``; a node namespace routes between them, and the
    programs of ``cluster.backend`` sit on the node side of every veth: from-container on
    tc ingress, to-container on tc egress.  With ``local_delivery`` (the default) packets
    between endpoints are delivered by from-container itself, which enforces both
    endpoints' policies, as Cilium does with BPF host routing; ``local_delivery=False``
    routes them through the node namespace, where to-container judges them on the
    destination's veth (Cilium's legacy host routing).  Policy changes reach the kernel maps as soon as
    ``cluster.apply()`` returns, so the next :meth:`connect` sees them; endpoints added or
    removed in the cluster are plugged in or out by :meth:`sync`, which :meth:`connect` runs
    first.

    L7 (redirect) verdicts pass at L3/L4: there is no proxy in the lab.  Every endpoint sits
    on the one node namespace, whatever its ``node`` says.  Namespaces and links are
    removed by :meth:`close` (also on a failed construction, and by a finalizer that warns
    with ``ResourceWarning``); :func:`ciliumpy.lab.remove_stale` deletes those of crashed
    processes.  Needs root, ``ip`` (iproute2) and a loaded :class:`EBPFBackend`.
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        attach: bool = True,
        ipv6: bool = True,
        local_delivery: bool = True,
        serve: bool = False,
        limits: ProxyLimits | None = None,
    ) -> None:
        backend = cluster.backend
        if not isinstance(backend, EBPFBackend):
            raise TypeError(f"Lab needs a cluster on the eBPF backend, got {type(backend).__name__}")
        if backend.closed:
            raise ValueError("the cluster's EBPFBackend is closed")
        if serve and not local_delivery:
            # Ingress redirects are handed to the proxy where the destination's policy runs
            # in cil_from_container, i.e. with local delivery (bpf/proxy.h).
            raise ValueError("Lab(serve=True) needs local_delivery=True: the proxies take redirects there")
        self.cluster = cluster
        self.backend: EBPFBackend = backend
        self.ipv6 = ipv6
        self.local_delivery = local_delivery
        self.token = _netns.new_token()
        self._attached = attach
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, _release_leaked, self._res)
        try:
            node = self._res.node = NetNS(self._name("node"))
            node.sysctl(_NODE_SYSCTLS)
            batch = ["link set lo up", f"address add {HOST_IP_V4}/32 dev lo"]
            if ipv6:
                batch.append(f"address add {HOST_IP_V6}/128 dev lo")
            node.ip(batch=batch)
            if serve:
                self._res.serving = _serving_module().Serving(self, limits)
            self.sync()
        except BaseException:
            self.close()
            raise

    def _name(self, role: str) -> str:
        return f"{_netns.NAME_PREFIX}{self.token}-{role}"

    # -- topology ------------------------------------------------------------------------
    @property
    def node(self) -> NetNS:
        node = self._res.node
        if node is None or self._res.released:
            raise ValueError("Lab is closed")
        return node

    @property
    def closed(self) -> bool:
        return self._res.released

    @property
    def namespaces(self) -> list[str]:
        """Names of every network namespace of this lab (node first)."""
        if self.closed:
            return []
        return [self.node.name, *(p.netns.name for p in self._res.ports.values())]

    @property
    def endpoints(self) -> list[str]:
        """The endpoint references plugged into the lab."""
        return list(self._res.ports)

    def namespace(self, who: str) -> str:
        """The netns name of an endpoint ``namespace/pod``, or of the node for ``"host"``."""
        return self._netns_of(who).name

    def interface(self, ref: str) -> str:
        """The node-side veth of an endpoint (where the datapath programs are attached)."""
        return self._port(ref).host_if

    def command(self, who: str, *argv: str) -> list[str]:
        """``argv`` prefixed to run inside ``who``'s namespace (``ip netns exec ...``).

        For external programs such as iperf3; ``ip netns exec`` execs the program, so the
        PID of the started process is the program's own.
        """
        return ["ip", "netns", "exec", self.namespace(who), *argv]

    def socket(self, who: str, family: int, type: int, proto: int = 0) -> socket.socket:
        """A new socket in ``who``'s namespace (it stays there whichever thread uses it)."""
        ns = self._netns_of(who)
        return ns.call(lambda: socket.socket(family, type, proto))

    def _netns_of(self, who: str) -> NetNS:
        if who == HOST:
            return self.node
        return self._port(who).netns

    def _port(self, ref: str) -> _Port:
        if self.closed:
            raise ValueError("Lab is closed")
        port = self._res.ports.get(ref)
        if port is None:
            known = ", ".join(sorted(self._res.ports)[:10])
            raise UnknownEndpointError(f"no endpoint {ref!r} in the lab; known: {known}")
        return port

    def sync(self) -> None:
        """Plug in endpoints the cluster gained and unplug those it lost or re-addressed."""
        wanted = {
            ref: _Wiring(self.cluster.endpoint_id(ref), tuple(ep.ips)) for ref, ep in self.cluster.endpoints.items()
        }
        ports = self._res.ports
        serving = self._res.serving
        for ref in [r for r, p in ports.items() if wanted.get(r) != p.wiring]:
            port = ports.pop(ref)
            self._forget_device(port)
            if serving is not None:
                serving.stop_endpoint(ref, port.netns.name)
            self._res.drop_port(port)
        if serving is not None:
            serving.sync_world()
        for ref, wiring in wanted.items():
            if ref not in ports:
                self._plug(ref, wiring)

    def _plug(self, ref: str, wiring: _Wiring) -> None:
        node = self.node
        ep_id = wiring.endpoint_id
        ips = [ip for ip in wiring.ips if ip.version == 4 or self.ipv6]
        pod = NetNS(self._name(f"ep{ep_id}"))
        port = _Port(ref, wiring, pod, f"lxc{ep_id}")
        self._res.ports[ref] = port  # from here on, release() removes it
        pod_mac, host_mac = _mac(0, ep_id), _mac(1, ep_id)
        # Node side in one batch: the pair, then the routes and neighbours of the pod's
        # addresses (they may point at the lxc device before its peer is up).
        node_batch = [
            f"link add {port.host_if} address {host_mac} type veth peer name eth0 address {pod_mac} netns {pod.name}",
            f"link set {port.host_if} up",
        ]
        for ip in ips:
            node_batch += [
                f"route add {ip}/{ip.max_prefixlen} dev {port.host_if}",
                f"neighbour replace {ip} lladdr {pod_mac} dev {port.host_if} nud permanent",
            ]
        node.ip(batch=node_batch)
        pod_batch = ["link set lo up", "link set eth0 addrgenmode none", "link set eth0 up"]
        for ip in ips:
            gateway = HOST_IP_V4 if ip.version == 4 else HOST_IP_V6
            default = "0.0.0.0/0" if ip.version == 4 else "::/0"
            nodad = "" if ip.version == 4 else " nodad"
            pod_batch += [
                f"address add {ip}/{ip.max_prefixlen} dev eth0{nodad}",
                f"route replace {gateway}/{gateway.max_prefixlen} dev eth0 scope link",
                f"route replace {default} via {gateway} dev eth0",
                f"neighbour replace {gateway} lladdr {host_mac} dev eth0 nud permanent",
            ]
        pod.ip(batch=pod_batch)
        if self.local_delivery:
            ifindex = node.call(lambda: socket.if_nametoindex(port.host_if))
            self.backend.set_endpoint_device(ep_id, EndpointDevice(ifindex, pod_mac, host_mac))
        if self._attached:
            self._attach_port(port)
        if self._res.serving is not None:
            self._res.serving.serve_endpoint(ref, pod, ips)

    def _adopt_netns(self, role: str) -> NetNS:
        """A namespace of this lab's own (removed with it), e.g. the serving lab's world."""
        ns = NetNS(self._name(role))
        self._res.extra.append(ns)
        return ns

    def owner_of(self, ip: IPAddress) -> str | None:
        """The endpoint plugged in with address ``ip``, if any."""
        for ref, port in self._res.ports.items():
            if ip in port.wiring.ips:
                return ref
        return None

    def _served(self, who: str, proto: str, port: int) -> bool:
        """Whether a lab server listens on ``who``'s ``port`` (then connect() talks to it)."""
        if who == HOST:
            return False
        ep = self.cluster.endpoints.get(who)
        return ep is not None and any(p.port == port and p.protocol.upper() == proto for p in ep.ports)

    def _forget_device(self, port: _Port) -> None:
        """Stop delivering to ``port``'s veth (a no-op for the backend when none is set)."""
        if self.local_delivery and not self.backend.closed:
            self.backend.set_endpoint_device(port.wiring.endpoint_id, None)

    # -- datapath programs ---------------------------------------------------------------
    @property
    def attached(self) -> bool:
        """Whether the datapath programs sit on the endpoints' veths."""
        return self._attached

    def _attach_port(self, port: _Port) -> None:
        fds = self.backend.program_fds
        hooks = {"ingress": fds[Direction.EGRESS], "egress": fds[Direction.INGRESS]}
        self.node.call(lambda: _tc_attach(port.host_if, hooks))

    def attach(self) -> None:
        """Attach the datapath programs to every endpoint's veth (no-op when attached)."""
        if self._attached:
            return
        self._attached = True
        for port in self._res.ports.values():
            self._attach_port(port)

    def detach(self) -> None:
        """Take the datapath off every veth: traffic then flows unfiltered (a baseline)."""
        self._attached = False
        for port in self._res.ports.values():
            self.node.call(lambda p=port: _tc_detach(p.host_if))  # type: ignore[misc]

    # -- traffic -------------------------------------------------------------------------
    def addresses(self, who: str) -> tuple[IPAddress, ...]:
        """The addresses ``who`` (an endpoint or ``"host"``) uses in the lab."""
        if who == HOST:
            return _host_ips(self.ipv6)
        return tuple(ip for ip in self._port(who).wiring.ips if ip.version == 4 or self.ipv6)

    def _pick(self, src: str, dst: str, family: int | None) -> tuple[IPAddress, IPAddress]:
        for a in self.addresses(src):
            for b in self.addresses(dst):
                if a.version == b.version and family in (None, a.version):
                    return a, b
        fam = f"IPv{family}" if family else "an address family"
        raise LabError(errno_mod.EAFNOSUPPORT, f"{src} and {dst} have no {fam} in common in the lab")

    def connect(
        self,
        src: str,
        dst: str,
        port: int | None = None,
        protocol: str = "TCP",
        *,
        timeout: float = 1.0,
        family: int | None = None,
        backend: str | None = None,
    ) -> LiveResult:
        """Open a real connection from ``src`` to ``dst`` and report whether it went through.

        ``src``/``dst`` are ``"namespace/pod"`` or ``"host"``; ``dst`` may be a Service
        (``"namespace/svc/name"``, its name or a cluster IP): the client connects to the
        cluster IP, the datapath translates it to a backend, where the lab listens (the
        source port is chosen so the datapath picks ``backend`` when given).  TCP and UDP need ``port``;
        ICMP sends an echo request (``port`` may only repeat the echo-request type).  The
        address pair is chosen like :meth:`Cluster.check` does (the first common family,
        or ``family`` 4/6).  A denied exchange takes the whole ``timeout`` (seconds): a
        dropped packet is only seen as the absence of an answer.
        """
        proto = _PROTOCOLS.get(protocol.upper())
        if proto is None:
            raise ValueError(f"protocol must be TCP, UDP or ICMP, got {protocol!r}")
        if not 0 < timeout <= 60:
            raise ValueError(f"timeout must be within (0, 60] seconds, got {timeout}")
        self.sync()
        target = service_target(self.cluster, src, dst, self.addresses(src), port, proto, family, backend, _SPORTS)
        if target is not None:
            src_ip, svc = target
            dst_ip, listen, sport = svc.frontend.frontend.address, (svc.backend.address, svc.backend.port), svc.sport
        elif backend is not None:
            raise ValueError("backend= applies to Service destinations only")
        else:
            (src_ip, dst_ip), listen, sport, svc = self._pick(src, dst, family), None, 0, None
        if proto == "ICMP":
            if port is not None and port != _ECHO_REQUEST[src_ip.version]:
                raise ValueError(f"the lab sends ICMP echo requests only (type {_ECHO_REQUEST[src_ip.version]})")
        elif port is None or not 0 < int(port) <= 0xFFFF:
            raise ValueError(f"{proto} needs a port within 1..65535, got {port!r}")
        src_ns = self._netns_of(src)
        if svc is None:
            dst_ns = self._netns_of(dst)
        elif svc.backend.pod is None:
            raise LabError(errno_mod.EHOSTUNREACH, f"backend {svc.backend} of {dst} is not a pod of the lab")
        else:
            dst_ns = self._netns_of(svc.backend.pod)
        self.backend.drain_events()  # earlier traffic's events are not this exchange's
        started = time.monotonic()
        try:
            served = (
                svc is None
                and self._res.serving is not None
                and proto != "ICMP"
                and self._served(dst, proto, int(port or 0))
            )
            outcome = probe(
                proto,
                lambda f, t, p: src_ns.call(lambda: socket.socket(f, t, p)),
                None if served else (lambda f, t, p: dst_ns.call(lambda: socket.socket(f, t, p))),
                src_ip,
                dst_ip,
                int(port or 0),
                timeout,
                listen=listen,
                sport=sport,
            )
        except OSError as exc:
            if isinstance(exc, LabError):
                raise
            raise LabError(exc.errno or errno_mod.EIO, f"{proto} exchange {src} -> {dst} failed: {exc}") from exc
        elapsed = time.monotonic() - started
        drained = self.backend.drain_events()
        mine = set(_flow_events(drained, proto, src_ip, dst_ip, outcome.sport, port))
        if listen is not None:  # the datapath reports the translated packets with the backend
            mine.update(_flow_events(drained, proto, src_ip, listen[0], outcome.sport, listen[1]))
        events = tuple(ev for ev in drained if ev in mine)
        result = LiveResult.of_probe(src, dst, proto, port, (src_ip, dst_ip), outcome, elapsed, events, svc)
        self.cluster.events.emit(result)  # its ring-buffer events become Hubble flows
        return result

    # -- L7: servers, proxies, real clients ------------------------------------------------
    @property
    def serving(self) -> bool:
        """Whether the lab runs servers and the L7 proxies (``Lab(..., serve=True)``)."""
        return self._res.serving is not None and not self.closed

    def _serving(self, what: str) -> Serving:
        serving = self._res.serving
        if serving is None or self.closed:
            raise LabError(errno_mod.EOPNOTSUPP, f"{what} needs a serving lab: Lab(cluster, serve=True)")
        return serving

    @property
    def flows(self) -> list[dict[str, Any]]:
        """Every Hubble flow the proxies produced so far (oldest first, the last 10,000)."""
        serving = self._res.serving
        return list(serving.flows) if serving is not None else []

    @property
    def proxied_requests(self) -> int:
        """How many HTTP requests and DNS queries the proxies have judged."""
        serving = self._res.serving
        return serving.requests if serving is not None else 0

    @property
    def proxy_errors(self) -> int:
        """Connections the proxies ended on an unexpected exception (a sound proxy: 0)."""
        serving = self._res.serving
        return serving.proxy_errors if serving is not None else 0

    def run(self, who: str, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``who``'s namespace and wait for it (text output captured).

        With a serving lab the endpoint's ``/etc/netns/<name>/resolv.conf`` points its
        resolver at the cluster DNS, so ``lab.run("prod/web", "curl", "http://api.stripe.com")``
        resolves through the DNS proxy as the pod would.
        """
        return subprocess.run(self.command(who, *argv), capture_output=True, text=True, timeout=timeout, check=False)

    def http(
        self,
        src: str,
        dst: str,
        port: int,
        method: str = "GET",
        path: str = "/",
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        *,
        body: bytes = b"",
        timeout: float = 5.0,
        family: int | None = None,
    ) -> LabHTTPResult:
        """Send one HTTP/1.1 request from ``src`` to ``dst``:``port`` over real sockets.

        Through the datapath and, where policy redirects, the lab's HTTP proxy, which
        forwards allowed requests to ``dst``'s server and answers denied ones ``403 Access
        denied``; the result carries the status, body and the proxy's flows.
        """
        serving = self._serving("http()")
        if not 0 < int(port) <= 0xFFFF:
            raise ValueError(f"port must be within 1..65535, got {port!r}")
        if not 0 < timeout <= 60:
            raise ValueError(f"timeout must be within (0, 60] seconds, got {timeout}")
        self.sync()
        src_ip, dst_ip = self._pick(src, dst, family)
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        src_ns = self._netns_of(src)
        started = time.monotonic()
        sport, status, resp_headers, resp_body, error = http_exchange(
            lambda f, t: src_ns.call(lambda: socket.socket(f, t)),
            src_ip,
            dst_ip,
            int(port),
            method,
            path,
            pairs,
            body,
            timeout,
        )
        elapsed = time.monotonic() - started
        flows = tuple(_flows_of(serving.recent_flows(64), src_ip, sport))
        return LabHTTPResult(
            src=src,
            dst=dst,
            port=int(port),
            method=method,
            path=path,
            src_ip=src_ip,
            dst_ip=dst_ip,
            sport=sport,
            status=status,
            headers=resp_headers,
            body=resp_body,
            error=error,
            elapsed=elapsed,
            flows=flows,
        )

    def resolve(self, src: str, name: str, qtype: str = "A", *, timeout: float = 3.0) -> Resolution:
        """Ask the cluster DNS for ``name`` from ``src`` over real UDP, as its resolver would.

        A query the policy redirects is answered by the lab's DNS proxy, which learns the
        answer into the cluster's FQDN cache (and kernel maps) first; the result is the
        :class:`~ciliumpy.Resolution` the proxy produced.  A query that is not redirected
        gets the server's own answer, with the model's verdict of the query's flow.
        """
        serving = self._serving("resolve()")
        self.sync()
        server = self.cluster.dns_server()
        if server is None:
            raise UnknownEndpointError("no cluster DNS endpoint: add a pod labelled k8s-app=kube-dns")
        src_ip, dns_ip = self._pick(src, server, None)
        msg_id = secrets.randbelow(0xFFFF) + 1
        query = build_query(name, qtype, id=msg_id)
        src_ns = self._netns_of(src)
        sport, answer = dns_exchange(
            lambda f, t: src_ns.call(lambda: socket.socket(f, t)), src_ip, dns_ip, query, timeout
        )
        proxied = serving.resolutions.get((str(src_ip), sport, msg_id))
        if proxied is not None:
            return proxied
        with serving.lock:
            model = self.cluster.resolve(src, name, qtype)
        resolution: Resolution = _serving_module().real_resolution(answer, model)
        return resolution

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Remove every namespace and link of the lab; idempotent."""
        self._finalizer.detach()
        if not self._res.released:
            for port in self._res.ports.values():
                with contextlib.suppress(BPFError):
                    self._forget_device(port)
        self._res.release()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._res.ports)} endpoints"
        return f"<Lab {self.token} {state}>"


def _flow_events(
    events: Sequence[DatapathEvent],
    proto: str,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    sport: int,
    port: int | None,
) -> Iterator[DatapathEvent]:
    """The events of one exchange: its 5-tuple in either direction."""
    numbers = {Protocol.ICMP, Protocol.ICMPV6} if proto == "ICMP" else {Protocol[proto]}
    pair = {src_ip, dst_ip}
    for ev in events:
        if ev.protocol not in numbers or {ev.src, ev.dst} != pair:
            continue
        if proto == "ICMP":
            if ev.sport == sport:  # the echo identifier, in requests and replies alike
                yield ev
        elif (ev.src == src_ip and (ev.sport, ev.dport) == (sport, port)) or (
            ev.src == dst_ip and (ev.sport, ev.dport) == (port, sport)
        ):
            yield ev


def _flows_of(
    flows: Iterator[dict[str, Any]] | Sequence[dict[str, Any]], ip: IPAddress, sport: int
) -> Iterator[dict[str, Any]]:
    """The flows of the connection from ``ip``:``sport``, in either direction."""
    for flow in list(flows):
        addr = flow.get("IP", {})
        for l4 in flow.get("l4", {}).values():
            if (addr.get("source") == str(ip) and l4.get("source_port") == sport) or (
                addr.get("destination") == str(ip) and l4.get("destination_port") == sport
            ):
                yield flow


def _serving_module() -> Any:
    """:mod:`._serving`, imported on first use: it needs the ``lab`` extra (h11, h2)."""
    try:
        from . import _serving
    except ImportError as exc:
        raise ImportError(
            f"Lab(serve=True) needs the proxies' libraries ({exc.name}): pip install 'ciliumpy[lab]'"
        ) from exc
    return _serving
