"""Services: ClusterIP frontends, their backends, and the translation Cilium's load balancer does.

A :class:`ServiceTable` holds the Services and EndpointSlices of a cluster and derives,
with the cluster's pods, what Cilium's agent writes into its service and backend maps:
one :class:`ServiceFrontend` per (cluster IP, port, protocol) with its ordered backends.
It answers which Service an address or DNS name denotes, translates a connection to a
backend (:meth:`ServiceTable.translate`), lists the peers a ``toServices`` rule selects
(reference §1.3) and what CoreDNS answers for a Service name.

Upstream: ``pkg/loadbalancer`` (frontends, backends, states), ``pkg/k8s/endpoints.go`` and
``pkg/loadbalancer/reflectors`` (EndpointSlice conditions), ``bpf/lib/lb.h`` (selection),
``pkg/policy/k8s/service.go`` (toServices). docs/semantics.md, "Services", records the
decisions.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._datapath import DatapathResult, IPAddress, LBBackend, LBService, Packet, Protocol, TCPFlags, lb_slot
from ._labels import SOURCE_K8S, LabelSet
from ._mapstate import PeerSelector, cidr_selector, namespace_requirement
from ._model import Endpoint, EndpointSlice, PeerRule, Service, ServicePort
from ._selectors import Operator, Requirement
from ._verdict import Verdict
from .exceptions import PolicyError, UnknownEndpointError

if TYPE_CHECKING:
    from ._cluster import Cluster

__all__ = [
    "CLUSTER_DOMAIN",
    "BackendState",
    "Frontend",
    "ServiceBackend",
    "ServiceFrontend",
    "ServiceTable",
    "ServiceTranslation",
    "check_service",
    "tc_translation",
    "uses_services",
]

CLUSTER_DOMAIN = "cluster.local"
_PROTOCOL_NUMBERS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}


class BackendState(enum.IntEnum):
    """A backend's load-balancing state (``loadbalancer.BackendState``, same numbers)."""

    ACTIVE = 0
    TERMINATING = 1
    TERMINATING_NOT_SERVING = 2
    QUARANTINED = 3
    MAINTENANCE = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@attrs.frozen(order=True)
class Frontend:
    """A service frontend: cluster IP, port and L4 protocol (the service map key)."""

    address: IPAddress
    port: int
    protocol: int = Protocol.TCP

    def __str__(self) -> str:
        addr = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{addr}:{self.port}/{Protocol(self.protocol).label}"


@attrs.frozen(order=True)
class ServiceBackend:
    """One backend of a frontend: address, target port, state, and the pod it is, if known."""

    address: IPAddress
    port: int
    state: BackendState = BackendState.ACTIVE
    pod: str | None = None
    node: str | None = None

    def __str__(self) -> str:
        addr = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{addr}:{self.port}"


@attrs.frozen
class ServiceFrontend:
    """A frontend with every backend the agent knows for it (active first, then by address)."""

    service: Service
    frontend: Frontend
    port_name: str
    backends: tuple[ServiceBackend, ...]
    id: int = 0  # the frontend's service ID (and rev-NAT index) in the datapath

    @property
    def ref(self) -> str:
        return self.service.ref

    @property
    def affinity(self) -> bool:
        return self.service.session_affinity == "ClientIP"

    def selectable(self, node: str | None = None, *, local_only: bool | None = None) -> tuple[ServiceBackend, ...]:
        """Backends a new connection may land on, in slot order.

        Active backends; when there is none, terminating-but-serving ones (KEP-1669, as
        Cilium's service writer does). With ``internalTrafficPolicy: Local`` only those on
        ``node`` (the client's node).
        """
        pool = self.backends
        local = self.service.internal_traffic_policy == "Local" if local_only is None else local_only
        if local:
            pool = tuple(b for b in pool if b.node == node)
        active = tuple(b for b in pool if b.state == BackendState.ACTIVE)
        if active:
            return active
        return tuple(b for b in pool if b.state == BackendState.TERMINATING)


@attrs.frozen(kw_only=True)
class ServiceTranslation:
    """How a connection to a Service was translated: the frontend, and the backend chosen.

    ``backend`` is None when the frontend had no backend to offer (the connection fails
    as Cilium drops it: ``DROP_NO_SERVICE``). ``mode`` is ``"socket-lb"`` (translated at
    ``connect()``, before any packet) or ``"tc"`` (DNAT of the packet in the datapath).
    """

    service: str
    frontend: Frontend
    backend: ServiceBackend | None
    candidates: int
    mode: str = "socket-lb"
    pinned: bool = False
    affinity: bool = False

    @property
    def namespace(self) -> str:
        return self.service.partition("/")[0]

    @property
    def name(self) -> str:
        return self.service.partition("/")[2]

    def describe(self) -> str:
        """One line: frontend -> backend, and how the backend was chosen."""
        head = f"service {self.service} {self.frontend}"
        if self.backend is None:
            return f"{head} has no backend (connection refused by the load balancer)"
        who = f" ({self.backend.pod})" if self.backend.pod else ""
        if self.pinned:
            how = "pinned by the caller"
        elif self.affinity:
            how = "sessionAffinity ClientIP: chosen by the client address"
        elif self.mode == "socket-lb":
            how = "chosen at connect() by the client address hash"
        else:
            how = "chosen by the client address and source port hash"
        state = "" if self.backend.state == BackendState.ACTIVE else f", {self.backend.state.label}"
        return (
            f"{head} -> backend {self.backend}{who} via {self.mode}; "
            f"{how}, 1 of {self.candidates} backend{'s' if self.candidates != 1 else ''}{state}"
        )

    def to_hubble(self) -> dict[str, str]:
        """Hubble's ``destination_service`` (``ServiceReference``)."""
        return {"name": self.name, "namespace": self.namespace}


@attrs.define
class ServiceTable:
    """The Services and EndpointSlices of a cluster, and the load-balancer state they give."""

    services: dict[tuple[str, str], Service] = attrs.field(factory=dict)
    slices: dict[tuple[str, str], EndpointSlice] = attrs.field(factory=dict)
    gen: int = 0
    _memo: tuple[Any, tuple[ServiceFrontend, ...], dict[tuple[Any, ...], ServiceFrontend]] | None = None
    # IDs stay with a frontend (backend address) while it exists, as the agent allocates them.
    _frontend_ids: dict[Frontend, int] = attrs.field(factory=dict)
    _backend_ids: dict[tuple[IPAddress, int, int], int] = attrs.field(factory=dict)
    _by_ip: tuple[int, dict[IPAddress, Service]] | None = None
    # Readers share the cluster's lock: the memo and the ID allocation are built under this.
    _lock: threading.Lock = attrs.field(factory=threading.Lock, eq=False, repr=False)

    # -- state ------------------------------------------------------------------------
    def store(self, obj: Service | EndpointSlice) -> None:
        """Add or replace a Service or an EndpointSlice."""
        target: dict[tuple[str, str], Any] = self.services if isinstance(obj, Service) else self.slices
        if target.get((obj.namespace, obj.name)) != obj:
            target[(obj.namespace, obj.name)] = obj
            self.gen += 1

    def remove(self, obj: Service | EndpointSlice) -> None:
        """Forget the Service or EndpointSlice of that namespace and name."""
        target: dict[tuple[str, str], Any] = self.services if isinstance(obj, Service) else self.slices
        if target.pop((obj.namespace, obj.name), None) is not None:
            self.gen += 1

    def snapshot(self) -> tuple[dict[tuple[str, str], Service], dict[tuple[str, str], EndpointSlice]]:
        return dict(self.services), dict(self.slices)

    def restore(self, snap: tuple[dict[tuple[str, str], Service], dict[tuple[str, str], EndpointSlice]]) -> None:
        self.services, self.slices = dict(snap[0]), dict(snap[1])
        self.gen += 1

    def __len__(self) -> int:
        return len(self.services)

    # -- load-balancer state ------------------------------------------------------------
    def frontends(self, endpoints: Mapping[str, Endpoint]) -> tuple[ServiceFrontend, ...]:
        """Every frontend with its backends, sorted by service and frontend."""
        return self._build(endpoints)[0]

    def frontend(
        self, endpoints: Mapping[str, Endpoint], address: IPAddress, port: int, protocol: int
    ) -> ServiceFrontend | None:
        """The frontend at ``address:port/protocol`` (the service map lookup), if any."""
        return self._build(endpoints)[1].get((address, port, int(protocol)))

    def service_at(self, address: IPAddress) -> Service | None:
        """The Service one of whose cluster IPs is ``address``."""
        if self._by_ip is None or self._by_ip[0] != self.gen:
            self._by_ip = (self.gen, {ip: svc for svc in self.services.values() for ip in svc.cluster_ips})
        return self._by_ip[1].get(address)

    def _build(
        self, endpoints: Mapping[str, Endpoint]
    ) -> tuple[tuple[ServiceFrontend, ...], dict[tuple[Any, ...], ServiceFrontend]]:
        # Pods are immutable and replaced on change, so their ids (alive in the mapping)
        # say whether the pod set changed.
        key = (self.gen, tuple(map(id, endpoints.values())))
        memo = self._memo
        if memo is not None and memo[0] == key:
            return memo[1], memo[2]
        with self._lock:
            return self._build_locked(key, endpoints)

    def _build_locked(
        self, key: Any, endpoints: Mapping[str, Endpoint]
    ) -> tuple[tuple[ServiceFrontend, ...], dict[tuple[Any, ...], ServiceFrontend]]:
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1], self._memo[2]
        out: list[ServiceFrontend] = []
        for (_ns, _name), svc in sorted(self.services.items()):
            if svc.headless:
                continue
            for ip in svc.cluster_ips:
                for sp in svc.ports:
                    backends = self.backends_of(svc, sp, ip.version, endpoints)
                    fe = Frontend(ip, sp.port, _PROTOCOL_NUMBERS[sp.protocol])
                    out.append(ServiceFrontend(svc, fe, sp.name or "", backends))
        live = {f.frontend for f in out}
        self._frontend_ids = {fe: num for fe, num in self._frontend_ids.items() if fe in live}
        out = [attrs.evolve(f, id=_allocate(self._frontend_ids, f.frontend)) for f in out]
        index = {(f.frontend.address, f.frontend.port, f.frontend.protocol): f for f in out}
        self._memo = (key, tuple(out), index)
        return tuple(out), index

    def backends_of(
        self, svc: Service, sp: ServicePort, family: int, endpoints: Mapping[str, Endpoint]
    ) -> tuple[ServiceBackend, ...]:
        """The backends of one Service port in one address family, active ones first."""
        found: dict[IPAddress, ServiceBackend] = {}
        if svc.selector is not None:
            for ref in sorted(endpoints):
                ep = endpoints[ref]
                if ep.namespace != svc.namespace or ep.host_network:
                    continue
                if any(ep.labels.get(k) != v for k, v in svc.selector.items()):
                    continue
                target = sp.target
                # The EndpointSlice controller resolves a named targetPort per pod, by name
                # and protocol; a pod without that port is not a backend of the port.
                num = ep.named_port(target, sp.protocol) if isinstance(target, str) else target
                if num is None:
                    continue
                for ip in ep.ips:
                    if ip.version == family:
                        found.setdefault(ip, ServiceBackend(ip, num, BackendState.ACTIVE, ref, ep.node))
        else:
            by_ip = {ip: ref for ref, ep in endpoints.items() for ip in ep.ips}
            for (ns, _), es in sorted(self.slices.items()):
                if ns != svc.namespace or es.service_name != svc.name or es.address_type != f"IPv{family}":
                    continue
                port = next((p.port for p in es.ports if p.name == (sp.name or "") and p.protocol == sp.protocol), None)
                if port is None:
                    continue
                for item in es.endpoints:
                    state = _backend_state(
                        item.conditions.is_ready, item.conditions.is_serving, item.conditions.is_terminating
                    )
                    for ip in item.addresses:
                        pod = f"{item.target_ref[0]}/{item.target_ref[1]}" if item.target_ref else by_ip.get(ip)
                        found.setdefault(ip, ServiceBackend(ip, port, state, pod, item.node_name))
            if isinstance(sp.target, int):
                for ip in svc.backend_ips:
                    if ip.version == family:
                        found.setdefault(ip, ServiceBackend(ip, sp.target, BackendState.ACTIVE, by_ip.get(ip)))
        return tuple(sorted(found.values(), key=lambda b: (b.state != BackendState.ACTIVE, b.address, b.port)))

    def datapath_services(self, endpoints: Mapping[str, Endpoint]) -> dict[int, LBService]:
        """The service map as the datapath gets it: frontend ID -> frontend and slot backends.

        The datapath is one node whose pods have no node name, so ``internalTrafficPolicy:
        Local`` keeps the backends without a node.
        """
        frontends = self.frontends(endpoints)
        with self._lock:
            return self._datapath_services(frontends)

    def _datapath_services(self, frontends: tuple[ServiceFrontend, ...]) -> dict[int, LBService]:
        wanted = {(b.address, b.port, f.frontend.protocol) for f in frontends for b in f.selectable(None)}
        self._backend_ids = {k: v for k, v in self._backend_ids.items() if k in wanted}
        out = {}
        for f in frontends:
            slots = tuple(
                LBBackend(_allocate(self._backend_ids, (b.address, b.port, f.frontend.protocol)), b.address, b.port)
                for b in f.selectable(None)
            )
            fe = f.frontend
            out[f.id] = LBService(f.id, fe.address, fe.port, fe.protocol, slots, f.affinity)
        return out

    def frontend_by_id(self, endpoints: Mapping[str, Endpoint], service_id: int) -> ServiceFrontend | None:
        """The frontend with that service ID (rev-NAT index)."""
        return next((f for f in self.frontends(endpoints) if f.id == service_id), None)

    # -- translation --------------------------------------------------------------------
    def translate(
        self,
        fe: ServiceFrontend,
        client: IPAddress,
        *,
        client_node: str | None = None,
        sport: int | None = None,
        backend: str | None = None,
        mode: str = "socket-lb",
    ) -> ServiceTranslation:
        """Choose the backend for a new connection from ``client`` to ``fe``.

        The choice is :func:`~ciliumpy._datapath.lb_slot` of the client address and (unless
        the Service has ClientIP affinity, or ``sport`` is None as at ``connect()`` time)
        the source port. ``backend`` pins it: a pod ``namespace/name`` or an address.
        """
        pool = fe.selectable(client_node)
        if backend is not None:
            chosen = _pick(pool, fe, backend)
            return ServiceTranslation(
                service=fe.ref, frontend=fe.frontend, backend=chosen, candidates=len(pool), mode=mode, pinned=True
            )
        if not pool:
            return ServiceTranslation(service=fe.ref, frontend=fe.frontend, backend=None, candidates=0, mode=mode)
        slot = lb_slot(client, None if fe.affinity else sport, len(pool))
        return ServiceTranslation(
            service=fe.ref,
            frontend=fe.frontend,
            backend=pool[slot - 1],
            candidates=len(pool),
            mode=mode,
            affinity=fe.affinity,
        )

    # -- names --------------------------------------------------------------------------
    def lookup(self, text: str, caller_namespace: str | None) -> Service | None:
        """The Service named by ``ns/svc/name`` or by a DNS name.

        DNS names are tried as a pod's resolver tries them (``ndots:5`` and the search list
        ``<ns>.svc.cluster.local svc.cluster.local cluster.local``), so ``orders``,
        ``orders.production``, ``orders.production.svc`` and the full name all work.
        """
        parts = text.split("/")
        if len(parts) == 3 and parts[1] == "svc":
            svc = self.services.get((parts[0], parts[2]))
            if svc is None:
                known = ", ".join(f"{ns}/svc/{name}" for ns, name in sorted(self.services)[:10])
                raise UnknownEndpointError(f"no service {text!r}; known: {known or 'none'}")
            return svc
        for fq in self.search_names(text, caller_namespace):
            svc = self.service_of_name(fq)
            if svc is not None:
                return svc
        return None

    @staticmethod
    def search_names(name: str, caller_namespace: str | None) -> list[str]:
        """Fully qualified names a pod's resolver tries for ``name``, in order."""
        name = name.strip().lower()
        if name.endswith("."):
            return [name.rstrip(".")]
        search = [f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        if caller_namespace:
            search.insert(0, f"{caller_namespace}.svc.{CLUSTER_DOMAIN}")
        tried = [f"{name}.{suffix}" for suffix in search]
        return [*tried, name] if name.count(".") < 5 else [name, *tried]

    def service_of_name(self, fqdn: str) -> Service | None:
        """The Service whose cluster DNS name is ``fqdn`` (``name.ns.svc.cluster.local``)."""
        labels = fqdn.rstrip(".").lower().split(".")
        suffix = ["svc", *CLUSTER_DOMAIN.split(".")]
        if len(labels) != 2 + len(suffix) or labels[2:] != suffix:
            return None
        return self.services.get((labels[1], labels[0]))

    def dns_answer(self, fqdn: str, endpoints: Mapping[str, Endpoint]) -> tuple[IPAddress, ...] | None:
        """What CoreDNS answers for a Service name: its cluster IPs, or for a headless
        Service the addresses of its ready backends; None if the name is no Service."""
        svc = self.service_of_name(fqdn)
        if svc is None:
            return None
        if not svc.headless:
            return svc.cluster_ips
        ports = svc.ports or (ServicePort(1),)
        out: list[IPAddress] = []
        for family in (4, 6):
            for sp in ports:
                for b in self.backends_of(svc, sp, family, endpoints):
                    if b.state == BackendState.ACTIVE and b.address not in out:
                        out.append(b.address)
        return tuple(out)

    # -- policy -------------------------------------------------------------------------
    def peer_selectors(
        self, pr: PeerRule, policy_namespace: str, endpoints: Mapping[str, Endpoint]
    ) -> Iterator[PeerSelector]:
        """What a ``toServices`` list selects (Cilium 1.17+, reference §1.3).

        A Service with a selector becomes that selector in the Service's namespace; one
        without becomes its backend addresses as /32 or /128 CIDRs.
        """
        for sr in pr.services or ():
            ns = sr.namespace or policy_namespace
            if sr.name is not None:
                svcs = [s for (sns, sname), s in sorted(self.services.items()) if sns == ns and sname == sr.name]
            else:
                assert sr.selector is not None
                svcs = [
                    s
                    for (sns, _), s in sorted(self.services.items())
                    if sns == ns and sr.selector.matches(LabelSet.from_mapping(s.labels))
                ]
            for svc in svcs:
                if svc.selector is not None:
                    reqs = [Requirement(SOURCE_K8S, k, Operator.IN, (v,)) for k, v in svc.selector.items()]
                    reqs.append(namespace_requirement(svc.namespace))
                    yield PeerSelector.labels(reqs, f"service {svc.namespace}/{svc.name}")
                    continue
                for addr in self._policy_backends(svc, endpoints):
                    yield cidr_selector(ipaddress.ip_network(addr))

    def _policy_backends(self, svc: Service, endpoints: Mapping[str, Endpoint]) -> list[IPAddress]:
        # The agent's view of a selector-less Service's endpoints: ready or serving.
        out: list[IPAddress] = []
        ports = svc.ports or (ServicePort(1),)
        for family in (4, 6):
            for sp in ports:
                for b in self.backends_of(svc, sp, family, endpoints):
                    if b.state in (BackendState.ACTIVE, BackendState.TERMINATING) and b.address not in out:
                        out.append(b.address)
        for ip in svc.backend_ips:
            if ip not in out:
                out.append(ip)
        return out

    def manifests(self) -> Iterable[dict[str, Any]]:
        for svc in self.services.values():
            yield svc.to_manifest()
        for es in self.slices.values():
            yield es.to_manifest()


# ----------------------------------------------------------------------------------------
# Cluster.check() towards a Service
def check_service(
    cluster: Cluster,
    src: str,
    dst: str,
    port: int | str | None,
    protocol: str,
    http: Mapping[str, Any] | None,
    *,
    backend: str | None = None,
    all_backends: bool = False,
) -> Verdict | list[Verdict] | None:
    """``Cluster.check`` when ``dst`` names a Service; None when it does not.

    The connection is translated as Cilium's socket load balancer translates it at
    ``connect()`` (the packets leave the pod already addressed to the backend), then judged
    by policy against the backend. A DNS name is resolved through the cluster DNS when the
    cluster has one (DNS policy applies), else read from the Service registry.
    """
    table = cluster.service_table
    if not table.services:
        return None
    caller_ns = src.partition("/")[0] if src.count("/") == 1 else None
    addr: IPAddress | None = None
    by_name = False
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(dst)
    if addr is not None:
        svc = table.service_at(addr)
    elif dst.count("/") == 2:
        svc = table.lookup(dst, caller_ns)
    elif "/" not in dst and dst not in ("world", "host"):
        svc = table.lookup(dst, caller_ns)
        by_name = True
    else:
        return None
    if svc is None:
        return None
    proto_name = str(protocol).upper()
    if proto_name not in _PROTOCOL_NUMBERS:
        raise PolicyError("a Service is reached over TCP, UDP or SCTP", field="protocol", value=protocol)
    fqdn = f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}"
    dns = None
    answers: tuple[IPAddress, ...] = ()
    if by_name and cluster.dns_server() is not None:
        dns = cluster.resolve(src, fqdn)
        if not dns.answers:
            return attrs.evolve(dns.verdict, failure=f"DNS lookup of {dns.name} failed: {dns.reason}", dns=dns)
        answers = tuple(ipaddress.ip_address(a) for a in dns.answers)
    if svc.headless:
        return _check_headless(cluster, svc, fqdn, src, port, protocol, http, answers, dns, backend, all_backends)
    src_addrs = cluster._candidates(src)
    families = [a.version for a in (answers or ((addr,) if addr is not None else svc.cluster_ips))]
    src_ip = next((a for f in families for a in src_addrs if a.version == f), None)
    if src_ip is None:
        raise PolicyError(f"{src} and service {svc.ref} have no address family in common", value=(src, dst))
    fe_ip = next(ip for ip in svc.cluster_ips if ip.version == src_ip.version)
    sp = _service_port(svc, port, proto_name)
    proto = _PROTOCOL_NUMBERS[proto_name]
    fe = table.frontend(cluster.endpoints, fe_ip, sp.port, proto) if sp is not None else None
    if fe is None:
        wanted = Frontend(fe_ip, int(str(port)) if str(port).isdigit() else 0, proto)
        failure = f"service {svc.ref} has no port {port}/{proto_name}: nothing translates {wanted}"
        return _failed(cluster, src_ip, fe_ip, proto, wanted.port, failure, dns, None)
    node = cluster.endpoints[src].node if src in cluster.endpoints else None
    if all_backends:
        pool = fe.selectable(node)
        pins: list[str | None] = [str(b.address) for b in pool] or [None]
    else:
        pins = [backend]
    verdicts = []
    for pin in pins:
        tr = table.translate(fe, src_ip, client_node=node, backend=pin)
        verdicts.append(_translated(cluster, src_ip, tr, proto, http, dns))
    return verdicts if all_backends else verdicts[0]


def _service_port(svc: Service, port: int | str | None, protocol: str) -> ServicePort | None:
    if port is None:
        if len(svc.ports) == 1 and svc.ports[0].protocol == protocol:
            return svc.ports[0]
        raise PolicyError(f"service {svc.ref} has several ports: name one", field="port", value=None)
    for sp in svc.ports:
        if sp.protocol == protocol and (sp.port == port or str(sp.port) == str(port) or (sp.name and sp.name == port)):
            return sp
    return None


def _translated(
    cluster: Cluster,
    src_ip: IPAddress,
    tr: ServiceTranslation,
    proto: int,
    http: Mapping[str, Any] | None,
    dns: Any,
) -> Verdict:
    if tr.backend is None:
        failure = tr.describe()
        return _failed(cluster, src_ip, tr.frontend.address, proto, tr.frontend.port, failure, dns, tr)
    pkt = Packet(
        src_ip,
        tr.backend.address,
        proto,
        sport=next(cluster._sport) % 28000 + 32768,
        dport=tr.backend.port,
        tcp_flags=int(TCPFlags.SYN) if proto == Protocol.TCP else 0,
    )
    if tr.backend.address == src_ip:
        # Hairpin: the socket LB gave the pod its own address, so the connection runs over
        # the pod's loopback and never meets a policy hook (Cilium skips policy for it too).
        note = f"hairpin: {tr.backend.pod or src_ip} reached itself through its Service; no policy applies"
        return Verdict(
            src=cluster._peer(src_ip, None),
            dst=cluster._peer(src_ip, None),
            packet=pkt,
            egress=None,
            ingress=None,
            notes=(note,),
            dns=dns,
            service=tr,
            time=cluster.clock.now(),
        )
    return attrs.evolve(cluster.evaluate(pkt, http=http, probe=True, service=tr), dns=dns)


def _failed(
    cluster: Cluster,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    proto: int,
    port: int,
    failure: str,
    dns: Any,
    tr: ServiceTranslation | None,
) -> Verdict:
    pkt = Packet(src_ip, dst_ip, proto, sport=next(cluster._sport) % 28000 + 32768, dport=port)
    return Verdict(
        src=cluster._peer(src_ip, None),
        dst=cluster._peer(dst_ip, None),
        packet=pkt,
        egress=None,
        ingress=None,
        failure=failure,
        dns=dns,
        service=tr,
        time=cluster.clock.now(),
    )


def _check_headless(
    cluster: Cluster,
    svc: Service,
    fqdn: str,
    src: str,
    port: int | str | None,
    protocol: str,
    http: Mapping[str, Any] | None,
    answers: tuple[IPAddress, ...],
    dns: Any,
    backend: str | None,
    all_backends: bool,
) -> Verdict | list[Verdict]:
    # A headless Service has no frontend: DNS answers the ready pods' addresses and the
    # client connects to one of them directly, on the port it chose.
    addrs = answers or table_answer(cluster, fqdn)
    by_ip = {ip: ep.ref for ep in cluster.endpoints.values() for ip in ep.ips}
    if backend is not None:
        addrs = tuple(a for a in addrs if str(a) == backend or by_ip.get(a) == backend)
        if not addrs:
            raise PolicyError(f"{backend!r} is not an address DNS answers for {fqdn}", field="backend", value=backend)
    if not addrs:
        raise PolicyError(f"headless service {svc.ref} has no ready backend to connect to", field="dst", value=fqdn)
    note = f"headless service {svc.ref}: DNS answers the pod addresses ({', '.join(map(str, addrs))}); no translation"
    out = []
    for a in addrs if all_backends else addrs[:1]:
        v = cluster.check(src, str(a), port, protocol, http)
        out.append(attrs.evolve(v, dns=dns, notes=(*v.notes, note)))
    return out if all_backends else out[0]


def table_answer(cluster: Cluster, fqdn: str) -> tuple[IPAddress, ...]:
    return cluster.service_table.dns_answer(fqdn, cluster.endpoints) or ()


def uses_services(rules: Iterable[Any]) -> bool:
    """Whether any of these selected rules (``SelectedRule``) has a ``toServices`` peer: only
    their endpoints' policies depend on the Services."""
    for selected in rules:
        rule = selected.rule
        for peers in (rule.egress, rule.egress_deny, rule.ingress, rule.ingress_deny):
            if any(pr.services is not None for pr in peers or ()):
                return True
    return False


def tc_translation(
    table: ServiceTable, endpoints: Mapping[str, Endpoint], result: DatapathResult, packet: Packet
) -> ServiceTranslation | None:
    """The translation a datapath hook reports (its DNAT of ``packet`` to a backend)."""
    fe = table.frontend_by_id(endpoints, result.service_id)
    if fe is None or result.nat_address is None:
        return None
    pool = fe.selectable(None)
    chosen = next((b for b in pool if b.address == result.nat_address and b.port == result.nat_port), None)
    backend = chosen or ServiceBackend(result.nat_address, result.nat_port)
    return ServiceTranslation(
        service=fe.ref, frontend=fe.frontend, backend=backend, candidates=len(pool), mode="tc", affinity=fe.affinity
    )


def _allocate(ids: dict[Any, int], key: Any) -> int:
    num = ids.get(key)
    if num is None:
        # IDs are dense while nothing is removed, so the next one is usually free.
        num = len(ids) + 1
        if num in ids.values():
            used = set(ids.values())
            num = next(n for n in itertools.count(1) if n not in used)
        ids[key] = num
    return num


def _backend_state(ready: bool, serving: bool, terminating: bool) -> BackendState:
    # Cilium 1.19's reading of EndpointSlice conditions (pkg/loadbalancer/reflectors).
    if ready:
        return BackendState.ACTIVE
    if terminating and not serving:
        return BackendState.TERMINATING_NOT_SERVING
    if terminating:
        return BackendState.TERMINATING
    return BackendState.MAINTENANCE


def _pick(pool: tuple[ServiceBackend, ...], fe: ServiceFrontend, wanted: str) -> ServiceBackend:
    for b in pool:
        if b.pod == wanted or str(b.address) == wanted:
            return b
    offered = ", ".join(b.pod or str(b.address) for b in pool) or "none"
    raise PolicyError(
        f"{wanted!r} is not a backend new connections to {fe.ref} {fe.frontend} can use; backends: {offered}",
        field="backend",
        value=wanted,
    )
