"""Connections to Services in the lab: which backend the datapath will pick, and where to listen.

The lab has no socket load balancer: a pod's packets to a cluster IP leave it addressed to the
frontend and the datapath's tc load balancer translates them (bpf/lb.h).  The backend a
connection lands on follows from the client's address and source port
(:func:`ciliumpy._datapath.lb_slot`), so the lab picks the source port that leads to the
backend it wants (the first free one, or the one ``backend=`` names) and listens there.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import ipaddress
import itertools
from collections.abc import Iterator

import attrs

from .._datapath import IPAddress, Protocol, lb_slot
from .._services import ServiceBackend, ServiceFrontend
from ..exceptions import LabError

__all__ = ["ServiceTarget", "service_target"]

_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP}
# Source ports for Service connections, cycled so a port comes back long after its last use.
_SPORTS = itertools.cycle(range(42000, 60000))


@attrs.frozen
class ServiceTarget:
    """A connection to a frontend: the source port to use and the backend it leads to."""

    frontend: ServiceFrontend
    backend: ServiceBackend
    sport: int


def service_target(
    cluster: object,
    src: str,
    dst: str,
    src_addresses: tuple[IPAddress, ...],
    port: int | None,
    protocol: str,
    family: int | None,
    backend: str | None,
    sports: Iterator[int],
) -> tuple[IPAddress, ServiceTarget] | None:
    """``(client address, target)`` when ``dst`` names a Service, else None."""
    table = getattr(cluster, "service_table", None)
    if table is None or not table.services:
        return None
    addr: IPAddress | None = None
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(dst)
    caller_ns = src.partition("/")[0] if src.count("/") == 1 else None
    if addr is not None:
        svc = table.service_at(addr)
    elif dst.count("/") == 2 or "/" not in dst:
        svc = table.lookup(dst, caller_ns)
    else:
        return None
    if svc is None:
        return None
    if protocol not in _PROTOCOLS or port is None:
        raise LabError(errno_mod.EINVAL, f"a Service is reached over TCP or UDP with a port, not {protocol} {port}")
    for client in src_addresses:
        if family not in (None, client.version) or (addr is not None and addr.version != client.version):
            continue
        front_ip = next((ip for ip in svc.cluster_ips if ip.version == client.version), None)
        if front_ip is None:
            continue
        fe = table.frontend(cluster.endpoints, front_ip, int(port), _PROTOCOLS[protocol])  # type: ignore[attr-defined]
        if fe is None:
            raise LabError(errno_mod.ECONNREFUSED, f"service {svc.ref} has no {protocol} port {port}")
        # The datapath is one node: its slots hold the backends selectable without a node.
        pool = fe.selectable(None)
        if not pool:
            raise LabError(errno_mod.ECONNREFUSED, f"service {svc.ref} {fe.frontend} has no backend")
        wanted = None
        if backend is not None:
            wanted = next((i for i, b in enumerate(pool) if backend in (b.pod, str(b.address))), None)
            if wanted is None:
                offered = ", ".join(b.pod or str(b.address) for b in pool)
                raise LabError(errno_mod.EINVAL, f"{backend!r} is not a backend of {svc.ref}; backends: {offered}")
        for sport in sports:
            slot = lb_slot(client, None if fe.affinity else sport, len(pool)) - 1
            if wanted is None or slot == wanted:
                return client, ServiceTarget(fe, pool[slot], sport)
        raise LabError(errno_mod.EADDRINUSE, "no source port left that leads to the wanted backend")
    raise LabError(errno_mod.EAFNOSUPPORT, f"{src} and service {svc.ref} have no address family in common in the lab")
