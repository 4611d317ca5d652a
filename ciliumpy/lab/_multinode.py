"""A lab with several nodes: node namespaces on an underlay, WireGuard tunnels between them.

Topology::

    [pod netns] ==veth== [node netns "…-n0"] eth0 ==veth== [underlay netns: br0] == … [node "…-n1"]
                          lxc<id>: tc programs           (node InternalIPs)           cilium_wg0
                          cilium_wg0 (wireguard-go)

Every node namespace owns the cluster's host address on its loopback (the pods' gateway),
its model ``InternalIP`` on ``eth0`` (a veth into the underlay namespace's bridge) and one
``lxc`` veth per pod on that node, with the eBPF backend's programs on it as in
:class:`~ciliumpy.lab.Lab`.  Packets between pods on different nodes are routed by the
nodes: with WireGuard on, into ``cilium_wg0`` (whose peers' allowed IPs are the remote pods'
addresses, exactly :class:`ciliumpy.encryption.WireGuard`'s), else straight over the
underlay.  Local delivery is off: a packet's source node judges its egress policy on the
way out, the destination node its ingress policy on the way in.

The kernel here has no WireGuard module, so the tunnels are Debian's ``wireguard-go`` (the
userspace implementation, Cilium's own fallback when the kernel lacks the module), one
process per node, started and ended by this lab.  It is configured through its UAPI socket
(the text protocol ``wg(8)`` speaks), so ``wireguard-tools`` is not needed.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from .._cluster import HOST_IP_V4, Cluster
from .._datapath import Direction, IPAddress
from ..backends._ebpf import EBPFBackend
from ..encryption import INTERFACE, LISTEN_PORT, WireGuard, wireguard
from ..exceptions import LabError, UnknownEndpointError
from . import _netns
from ._lab import _NODE_SYSCTLS, LiveResult, _flow_events, _mac, _tc_attach
from ._netns import NetNS
from ._probe import probe

__all__ = ["Capture", "MultiNodeLab"]

_UAPI_DIR = Path("/var/run/wireguard")
_START_TIMEOUT_S = 10.0
_MTU = 1420  # WireGuard's default (1500 minus the outer headers)


@attrs.frozen
class Frame:
    """One frame seen on the underlay: its bytes and, for IPv4, the outer 5-tuple."""

    data: bytes
    src: str | None = None
    dst: str | None = None
    protocol: int | None = None
    sport: int | None = None
    dport: int | None = None


def _parse(data: bytes) -> Frame:
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        return Frame(data)
    ihl = (data[14] & 0x0F) * 4
    proto = data[23]
    src = str(ipaddress.IPv4Address(data[26:30]))
    dst = str(ipaddress.IPv4Address(data[30:34]))
    sport = dport = None
    l4 = 14 + ihl
    if proto in (6, 17) and len(data) >= l4 + 4:
        sport = int.from_bytes(data[l4 : l4 + 2], "big")
        dport = int.from_bytes(data[l4 + 2 : l4 + 4], "big")
    return Frame(data, src, dst, proto, sport, dport)


class Capture:
    """Frames crossing the underlay bridge, read from an ``AF_PACKET`` socket on it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.frames: list[Frame] = []

    def read(self) -> list[Frame]:
        """Drain what arrived so far (bounded: at most 100,000 frames a call); after the
        capture ended, the frames it kept."""
        if self._sock.fileno() < 0:
            return self.frames
        for _ in range(100_000):
            try:
                data = self._sock.recv(65535)
            except BlockingIOError:
                break
            self.frames.append(_parse(data))
        return self.frames

    def contains(self, needle: bytes) -> bool:
        """Whether any captured frame carries ``needle`` in clear text."""
        return any(needle in f.data for f in self.read())

    def close(self) -> None:
        self._sock.close()


@attrs.define
class _Node:
    name: str
    netns: NetNS
    address: ipaddress.IPv4Address
    uplink: str  # its veth end in the underlay namespace
    wg: subprocess.Popen[bytes] | None = None
    uapi: Path | None = None


@attrs.define
class _Pod:
    ref: str
    node: str
    endpoint_id: int
    ips: tuple[IPAddress, ...]
    netns: NetNS
    host_if: str


class _Resources:
    """What the lab made; ``release()`` ends the processes it started and removes the rest."""

    def __init__(self) -> None:
        self.underlay: NetNS | None = None
        self.nodes: dict[str, _Node] = {}
        self.pods: dict[str, _Pod] = {}
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        for node in self.nodes.values():
            proc = node.wg
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # only the wireguard-go this lab started
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if node.uapi is not None:
                with contextlib.suppress(OSError):
                    node.uapi.unlink()
        for pod in self.pods.values():
            pod.netns.close()
        for node in self.nodes.values():
            node.netns.close()
        if self.underlay is not None:
            self.underlay.close()
        self.pods.clear()
        self.nodes.clear()


def _release_leaked(res: _Resources) -> None:
    if not res.released:
        warnings.warn("MultiNodeLab was not closed; the garbage collector removed it", ResourceWarning, stacklevel=2)
        res.release()


def _uapi_exchange(path: Path, request: str) -> list[tuple[str, str]]:
    """One request on a WireGuard UAPI socket; the reply's ``key=value`` lines in order."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(request.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    lines = [line.partition("=") for line in buf.decode().splitlines() if "=" in line]
    return [(key, value) for key, _, value in lines]


def _uapi(path: Path, request: str) -> None:
    """A ``set`` request on a WireGuard UAPI socket; an error reply raises :class:`LabError`."""
    errno_lines = [v for k, v in _uapi_exchange(path, request) if k == "errno"]
    if errno_lines and errno_lines[-1] != "0":
        raise LabError(errno_mod.EIO, f"wireguard-go refused the configuration (errno={errno_lines[-1]})")


class MultiNodeLab:
    """Several nodes with real pods, the eBPF datapath on every pod and WireGuard between nodes.

    >>> c = Cluster(backend="ebpf", values={"encryption": {"enabled": True, "type": "wireguard"}})  # doctest: +SKIP
    >>> for n, ip in (("a", "192.168.50.11"), ("b", "192.168.50.12")):                         # doctest: +SKIP
    ...     _ = c.add_node(n, ips=[ip])
    >>> _ = c.add_endpoint("prod/web", ips=["10.244.1.5"], node="a")                              # doctest: +SKIP
    >>> _ = c.add_endpoint("prod/db", ips=["10.244.2.5"], node="b")                               # doctest: +SKIP
    >>> with MultiNodeLab(c) as lab, lab.capture() as cap:                                          # doctest: +SKIP
    ...     assert lab.connect("prod/web", "prod/db", 5432).allowed
    ...     assert not cap.contains(b"ciliumpy-lab")

    Every endpoint needs ``node`` naming a declared node, and every node an IPv4
    ``InternalIP`` (its underlay address).  ``encryption`` defaults to the cluster's Helm
    values (``encryption.type=wireguard``); keys come from
    :func:`ciliumpy.encryption.wireguard`, so the tunnels use the keys ``encrypt status``
    shows.  Pods get their IPv4 addresses only.  Node-to-node traffic (node encryption)
    is modelled by :func:`ciliumpy.encryption.transit` but not carried through the lab's
    tunnels: their own UDP packets travel between the node addresses.
    """

    def __init__(self, cluster: Cluster, *, encryption: bool | None = None) -> None:
        backend = cluster.backend
        if not isinstance(backend, EBPFBackend):
            raise TypeError(f"MultiNodeLab needs a cluster on the eBPF backend, got {type(backend).__name__}")
        self.cluster = cluster
        self.backend: EBPFBackend = backend
        self.encryption = cluster.values.encryption.wireguard if encryption is None else encryption
        self.wireguard: WireGuard = wireguard(cluster)
        if self.encryption and shutil.which("wireguard-go") is None:
            raise LabError(errno_mod.ENOENT, "wireguard-go is not installed (Debian package wireguard-go)")
        self.token = _netns.new_token()
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, _release_leaked, self._res)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- construction --------------------------------------------------------------------
    def _name(self, role: str) -> str:
        return f"{_netns.NAME_PREFIX}{self.token}-{role}"

    def _build(self) -> None:
        nodes = self.cluster.nodes
        for ref, ep in self.cluster.endpoints.items():
            if ep.node is None or ep.node not in nodes:
                raise LabError(errno_mod.EINVAL, f"endpoint {ref} has no declared node (spec.nodeName)")
        underlay = self._res.underlay = NetNS(self._name("underlay"))
        underlay.ip(batch=["link set lo up", "link add br0 type bridge", "link set br0 up"])
        for i, (name, node) in enumerate(sorted(nodes.items())):
            v4 = [ip for ip in node.ips if ip.version == 4]
            if not v4:
                raise LabError(errno_mod.EINVAL, f"node {name} has no IPv4 InternalIP for the underlay")
            ns = NetNS(self._name(f"n{i}"))
            entry = _Node(name, ns, v4[0], f"up{i}")
            self._res.nodes[name] = entry
            ns.sysctl(_NODE_SYSCTLS)
            underlay.ip(
                batch=[
                    f"link add {entry.uplink} type veth peer name eth0 netns {ns.name}",
                    f"link set {entry.uplink} master br0",
                    f"link set {entry.uplink} up",
                ]
            )
            ns.ip(
                batch=[
                    "link set lo up",
                    f"address add {HOST_IP_V4}/32 dev lo",
                    f"address add {entry.address}/32 dev eth0",
                    "link set eth0 up",
                ]
            )
        for entry in self._res.nodes.values():
            others = [o for o in self._res.nodes.values() if o is not entry]
            if others:
                entry.netns.ip(batch=[f"route add {o.address}/32 dev eth0" for o in others])
        for ref, ep in sorted(self.cluster.endpoints.items()):
            self._plug(ref, ep.node or "")
        if self.encryption:
            for entry in self._res.nodes.values():
                self._start_wireguard(entry)
        self._route_remote_pods()

    def _plug(self, ref: str, node_name: str) -> None:
        node = self._res.nodes[node_name]
        ep = self.cluster.endpoint(ref)
        ep_id = self.cluster.endpoint_id(ref)
        ips = tuple(ip for ip in ep.ips if ip.version == 4)
        pod = _Pod(ref, node_name, ep_id, ips, NetNS(self._name(f"ep{ep_id}")), f"lxc{ep_id}")
        self._res.pods[ref] = pod
        pod_mac, host_mac = _mac(0, ep_id), _mac(1, ep_id)
        batch = [
            f"link add {pod.host_if} address {host_mac} type veth peer name eth0 address {pod_mac} "
            f"netns {pod.netns.name}",
            f"link set {pod.host_if} up",
        ]
        for ip in ips:
            batch += [
                f"route add {ip}/32 dev {pod.host_if}",
                f"neighbour replace {ip} lladdr {pod_mac} dev {pod.host_if} nud permanent",
            ]
        node.netns.ip(batch=batch)
        pod_batch = ["link set lo up", "link set eth0 up"]
        for ip in ips:
            pod_batch += [
                f"address add {ip}/32 dev eth0",
                f"route replace {HOST_IP_V4}/32 dev eth0 scope link",
                f"route replace default via {HOST_IP_V4} dev eth0",
                f"neighbour replace {HOST_IP_V4} lladdr {host_mac} dev eth0 nud permanent",
            ]
        pod.netns.ip(batch=pod_batch)
        fds = self.backend.program_fds
        hooks = {"ingress": fds[Direction.EGRESS], "egress": fds[Direction.INGRESS]}
        node.netns.call(lambda: _tc_attach(pod.host_if, hooks))

    def _start_wireguard(self, node: _Node) -> None:
        # wireguard-go names its UAPI socket after the interface in a directory every
        # namespace shares, so each starts under a name of its own and is renamed after.
        tmp = f"wg{secrets.token_hex(5)}"  # 12 characters: within IFNAMSIZ, unique per start
        if (_UAPI_DIR / f"{tmp}.sock").exists():
            raise LabError(errno_mod.EEXIST, f"a WireGuard UAPI socket {tmp}.sock exists already")
        cmd = ["ip", "netns", "exec", node.netns.name, "wireguard-go", "-f", tmp]
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        node.wg = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node.uapi = _UAPI_DIR / f"{tmp}.sock"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not node.uapi.exists():
            if node.wg.poll() is not None or time.monotonic() > deadline:
                raise LabError(errno_mod.EIO, f"wireguard-go did not start in node {node.name}")
            time.sleep(0.02)
        node.netns.ip("link", "set", tmp, "name", INTERFACE)
        dev = self.wireguard.node(node.name)
        key = self.wireguard.key(node.name)
        lines = ["set=1", f"private_key={key.private.hex()}", f"listen_port={LISTEN_PORT}", "replace_peers=true"]
        for peer in dev.peers:
            other = self._res.nodes[peer.node]
            lines += [
                f"public_key={self.wireguard.key(peer.node).public.hex()}",
                f"endpoint={other.address}:{LISTEN_PORT}",
                "replace_allowed_ips=true",
                *(f"allowed_ip={net}" for net in peer.allowed_ips if net.version == 4),
            ]
        _uapi(node.uapi, "\n".join(lines) + "\n")
        node.netns.ip("link", "set", INTERFACE, "mtu", str(_MTU), "up")

    def _route_remote_pods(self) -> None:
        for node in self._res.nodes.values():
            batch = []
            for pod in self._res.pods.values():
                if pod.node == node.name:
                    continue
                via = f"dev {INTERFACE}" if self.encryption else f"via {self._res.nodes[pod.node].address} dev eth0"
                batch += [f"route replace {ip}/32 {via}" for ip in pod.ips]
            if batch:
                node.netns.ip(batch=batch)

    # -- questions -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._res.released

    @property
    def nodes(self) -> list[str]:
        """Node names, sorted."""
        return sorted(self._res.nodes)

    @property
    def namespaces(self) -> list[str]:
        """Every network namespace of the lab (underlay, nodes, pods)."""
        if self.closed or self._res.underlay is None:
            return []
        return [
            self._res.underlay.name,
            *(n.netns.name for n in self._res.nodes.values()),
            *(p.netns.name for p in self._res.pods.values()),
        ]

    def node_namespace(self, node: str) -> str:
        """The network namespace of ``node``."""
        entry = self._res.nodes.get(node)
        if entry is None:
            raise UnknownEndpointError(f"no node {node!r} in the lab; known: {', '.join(self.nodes)}")
        return entry.netns.name

    def namespace(self, ref: str) -> str:
        """The network namespace of pod ``ref``."""
        return self._pod(ref).netns.name

    def _pod(self, ref: str) -> _Pod:
        if self.closed:
            raise ValueError("MultiNodeLab is closed")
        pod = self._res.pods.get(ref)
        if pod is None:
            raise UnknownEndpointError(f"no endpoint {ref!r} in the lab")
        return pod

    def peers(self, node: str) -> list[dict[str, Any]]:
        """The running tunnel's peers on ``node`` as wireguard-go reports them (``get=1``):
        public key, endpoint, allowed IPs, last handshake and byte counters."""
        entry = self._res.nodes.get(node)
        if entry is None or entry.uapi is None:
            return []
        peers: list[dict[str, Any]] = []
        for key, value in _uapi_exchange(entry.uapi, "get=1\n"):
            if key == "public_key":
                peers.append({"public_key": bytes.fromhex(value), "allowed_ips": []})
            elif peers and key == "allowed_ip":
                peers[-1]["allowed_ips"].append(value)
            elif peers and key in ("endpoint", "rx_bytes", "tx_bytes", "last_handshake_time_sec"):
                peers[-1][key] = value if key == "endpoint" else int(value)
        return peers

    @contextlib.contextmanager
    def capture(self) -> Iterator[Capture]:
        """Capture every frame crossing the underlay (all bridge ports) while the block runs."""
        underlay = self._res.underlay
        if underlay is None or self.closed:
            raise ValueError("MultiNodeLab is closed")

        def open_sock() -> socket.socket:
            # Unbound: every device of the underlay namespace, so the bridge ports' frames
            # (the bridge device itself only sees what is addressed to it).
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.setblocking(False)
            return s

        cap = Capture(underlay.call(open_sock))
        try:
            yield cap
        finally:
            cap.read()
            cap.close()

    def connect(
        self, src: str, dst: str, port: int | None = None, protocol: str = "TCP", *, timeout: float = 2.0
    ) -> LiveResult:
        """A real exchange from pod ``src`` to pod ``dst`` (TCP, UDP or ICMP), as :meth:`Lab.connect`."""
        proto = protocol.upper()
        if proto not in ("TCP", "UDP", "ICMP"):
            raise ValueError(f"protocol must be TCP, UDP or ICMP, got {protocol!r}")
        if proto != "ICMP" and (port is None or not 0 < int(port) <= 0xFFFF):
            raise ValueError(f"{proto} needs a port within 1..65535, got {port!r}")
        if not 0 < timeout <= 60:
            raise ValueError(f"timeout must be within (0, 60] seconds, got {timeout}")
        a, b = self._pod(src), self._pod(dst)
        if not a.ips or not b.ips:
            raise LabError(errno_mod.EAFNOSUPPORT, f"{src} and {dst} need IPv4 addresses in the lab")
        src_ip, dst_ip = a.ips[0], b.ips[0]
        self.backend.drain_events()
        started = time.monotonic()
        outcome = probe(
            proto,
            lambda f, t, p: a.netns.call(lambda: socket.socket(f, t, p)),
            lambda f, t, p: b.netns.call(lambda: socket.socket(f, t, p)),
            src_ip,
            dst_ip,
            int(port or 0),
            timeout,
        )
        elapsed = time.monotonic() - started
        events = tuple(_flow_events(self.backend.drain_events(), proto, src_ip, dst_ip, outcome.sport, port))
        result = LiveResult.of_probe(src, dst, proto, port, (src_ip, dst_ip), outcome, elapsed, events)
        self.cluster.events.emit(result)  # its ring-buffer events become Hubble flows, as Lab's
        return result

    def command(self, who: str, *argv: str) -> list[str]:
        """``argv`` prefixed to run in pod ``who``'s namespace (or node ``who``'s)."""
        ns = self._res.nodes[who].netns.name if who in self._res.nodes else self.namespace(who)
        return ["ip", "netns", "exec", ns, *argv]

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """End the wireguard-go processes and remove every namespace; idempotent."""
        self._finalizer.detach()
        self._res.release()

    def __enter__(self) -> MultiNodeLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._res.nodes)} nodes, {len(self._res.pods)} pods"
        return f"<MultiNodeLab {self.token} {state}>"
