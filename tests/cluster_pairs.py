"""Clusters on both backends, compared (shared by the cluster-level differential tests).

* :class:`SharedDatapath` lends one loaded :class:`EBPFBackend` to cluster after cluster:
  loading the object costs ~0.15 s, so tests that build hundreds of clusters keep one.  The
  state a cluster left in the maps is deleted by the next cluster's first update.
* :func:`assert_same_verdict` compares two :class:`~ciliumpy.Verdict` objects field by field
  and shows both explanations when they differ.
* :func:`assert_kernel_enforces` reads the kernel maps back and compares them with what the
  cluster compiled: endpoints, ipcache and every endpoint's policy map, entry by entry.
* :class:`MirroredCluster` drives a simulator cluster and an eBPF cluster with the same calls
  and compares every result, so a test written for one cluster runs on both.
"""

from __future__ import annotations

import ctypes
import ipaddress
from collections.abc import Callable, Mapping, MutableSet
from typing import Any, ClassVar

import attrs

from ciliumpy import Cluster, DatapathResult, Direction, MapStateKey, Packet, PolicyEntry, Verdict
from ciliumpy._datapath import IPNetwork
from ciliumpy._fqdn import ManualClock
from ciliumpy.backends import DatapathUpdate
from ciliumpy.backends import _bpfstructs as S
from ciliumpy.backends import _libbpf as L
from ciliumpy.backends._ebpf import EBPFBackend
from ciliumpy.backends._simulator import SimulatorBackend
from ciliumpy.exceptions import CiliumpyError

T0 = 1_000_000.0  # clusters compared share one fixed time, so their verdicts compare equal


# ---------------------------------------------------------------- lending one backend
class BorrowedBackend:
    """The shared EBPFBackend as one cluster sees it.

    The first update also deletes what the previous borrower left (deletions come first in
    a ``DatapathUpdate``), so a new cluster costs one map-in-map write, i.e. one RCU grace
    period (~10 ms), instead of two.  ``close()`` leaves the backend loaded.  A borrower
    whose backend was lent to a newer cluster refuses to be used.
    """

    name: ClassVar[str] = "ebpf"

    def __init__(self, backend: EBPFBackend, leftover: DatapathUpdate) -> None:
        self.backend = backend
        self.leftover = leftover
        self.active = True
        self.endpoints: set[int] = set()  # what this cluster pushed, for the next borrower
        self.nets: set[IPNetwork] = set()
        self.services: set[int] = set()

    def _live(self) -> EBPFBackend:
        if not self.active:
            raise RuntimeError("this cluster's eBPF backend has been lent to a newer cluster")
        return self.backend

    @property
    def capabilities(self) -> frozenset[str]:
        return self._live().capabilities

    @property
    def auth_pairs(self) -> MutableSet[tuple[int, int, int]]:
        return self._live().auth_pairs

    @property
    def extended_ip_protocols(self) -> bool:
        return self._live().extended_ip_protocols

    @extended_ip_protocols.setter
    def extended_ip_protocols(self, enabled: bool) -> None:
        self._live().extended_ip_protocols = enabled

    def apply(self, update: DatapathUpdate) -> None:
        merged = attrs.evolve(
            update,
            endpoints_delete=self.leftover.endpoints_delete | update.endpoints_delete,
            ipcache_delete=self.leftover.ipcache_delete | update.ipcache_delete,
            services_delete=self.leftover.services_delete | update.services_delete,
        )
        self._live().apply(merged)
        self.leftover = DatapathUpdate()
        self.endpoints = (self.endpoints - update.endpoints_delete) | set(update.endpoints_upsert)
        self.nets = (self.nets - update.ipcache_delete) | set(update.ipcache_upsert)
        self.services = (self.services - update.services_delete) | set(update.services_upsert)

    def evaluate(self, packet: Packet, direction: Direction) -> DatapathResult:
        return self._live().evaluate(packet, direction)

    def policy_counters(self, endpoint_id: int) -> Mapping[MapStateKey, tuple[int, int]]:
        return self._live().policy_counters(endpoint_id)

    def reset_conntrack(self) -> None:
        self._live().reset_conntrack()

    def close(self) -> None:
        """The backend outlives the cluster."""


class SharedDatapath:
    """One loaded EBPFBackend that cluster after cluster borrows."""

    def __init__(self, backend: EBPFBackend) -> None:
        self.backend = backend
        self._last: BorrowedBackend | None = None

    def cluster(self, *args: Any, **options: Any) -> Cluster:
        """A new cluster on the shared backend (conntrack and auth pairs start empty)."""
        leftover = DatapathUpdate()
        if self._last is not None:
            last, last.active = self._last, False
            leftover = DatapathUpdate(
                endpoints_delete=last.leftover.endpoints_delete | frozenset(last.endpoints),
                ipcache_delete=last.leftover.ipcache_delete | frozenset(last.nets),
                services_delete=last.leftover.services_delete | frozenset(last.services),
            )
        self.backend.reset_conntrack()
        self.backend.auth_pairs.clear()
        self.backend.extended_ip_protocols = False
        self._last = BorrowedBackend(self.backend, leftover)
        options.setdefault("clock", ManualClock(T0))
        return Cluster(*args, backend=self._last, **options)


# ---------------------------------------------------------------- what the kernel holds
def _keys_and_values(fd: int, key_type: Any, value_type: Any) -> dict[bytes, Any]:
    out = {}
    for key in L.map_keys(fd, key_type):
        value = value_type()
        if L.map_lookup(fd, key, value):
            out[bytes(key)] = (key, value)
    return out


def kernel_policy(backend: EBPFBackend, endpoint_id: int) -> dict[MapStateKey, Any] | None:
    """The policy map the kernel holds for an endpoint (None: no map), as key -> C value."""
    map_id = ctypes.c_uint32()
    if not L.map_lookup(backend.map_fd("cil_policy"), ctypes.c_uint32(endpoint_id), map_id):
        return None
    with L.map_get_fd_by_id(map_id.value) as inner:
        pairs = _keys_and_values(inner.fd, S.PolicyKey, S.PolicyEntryValue).values()
        return {S.policy_key_from_c(key): value for key, value in pairs}


def assert_kernel_enforces(cluster: Cluster, backend: EBPFBackend) -> None:
    """The kernel maps hold exactly ``cluster``'s endpoints, ipcache and policy maps: policy
    entries byte for byte, and each entry's cookie names the rules behind it."""
    refs = sorted(cluster.endpoints)
    ids = {ref: cluster.endpoint_id(ref) for ref in refs}
    want_ipcache = cluster.ipcache()  # brings the datapath up to date first
    want_lxc = {ip: (ids[ref], cluster.identity_of(ref).id) for ref in refs for ip in cluster.endpoints[ref].ips}
    lxc = {
        S.address_from_c(key.addr, key.family): (value.endpoint_id, value.identity)
        for key, value in _keys_and_values(backend.map_fd("cil_lxc"), S.EndpointKey, S.EndpointInfo).values()
    }
    assert lxc == want_lxc, "cil_lxc differs from the cluster's endpoints"
    ipcache = {}
    for key, value in _keys_and_values(backend.map_fd("cil_ipcache"), S.IpcacheKey, S.IpcacheEntry).values():
        addr = S.address_from_c(key.addr, key.family)
        ipcache[ipaddress.ip_network(f"{addr}/{key.prefixlen - S.IPCACHE_STATIC_PREFIX}")] = value.sec_identity
    assert ipcache == want_ipcache, "cil_ipcache differs from the cluster's ipcache"
    maps = {int(k.value) for k in L.map_keys(backend.map_fd("cil_policy"), ctypes.c_uint32)}
    assert maps == set(ids.values()), f"policy maps for endpoints {sorted(maps)}, cluster has {ids}"
    for ref in refs:
        held = kernel_policy(backend, ids[ref]) or {}
        want: Mapping[MapStateKey, PolicyEntry] = cluster.map_state(ref)
        assert set(held) == set(want), f"policy map keys of {ref}: {sorted(set(held) ^ set(want))} differ"
        for key, value in held.items():
            expected = S.policy_entry_to_c(key, want[key], value.cookie)
            assert bytes(value) == bytes(expected), f"{ref} {key}: kernel entry differs from {want[key]!r}"
            assert backend.origins_of_cookie(value.cookie) == want[key].origins, f"{ref} {key}: rule origins"
    lb_maps = (
        ("cil_lb_service", S.LbServiceKey, S.LbService),
        ("cil_lb_backend", ctypes.c_uint32, S.LbBackend),
        ("cil_lb_revnat", ctypes.c_uint16, S.LbRevnat),
    )
    want_lb = S.lb_entries(cluster.service_table.datapath_services(cluster.endpoints).values())
    for (name, key_type, value_type), want_map in zip(lb_maps, want_lb, strict=True):
        held_map = {k: bytes(v[1]) for k, v in _keys_and_values(backend.map_fd(name), key_type, value_type).items()}
        assert held_map == want_map, f"{name} differs from the cluster's services"


def assert_no_traffic_state(backend: EBPFBackend) -> None:
    """No conntrack entry, policy counter or auth pair is left from earlier clusters."""
    for name, key_type in (("cil_ct", S.CtKey), ("cil_policystats", S.PolicyStatsKey), ("cil_auth", S.AuthKey)):
        assert next(L.map_keys(backend.map_fd(name), key_type), None) is None, f"{name} is not empty"


# ---------------------------------------------------------------- comparing results
def _headline(v: Verdict) -> dict[str, Any]:
    return {
        "allowed": v.allowed,
        "verdict": v.verdict,
        "drop_reason": v.drop_reason,
        "direction": v.direction,
        "match_type": v.match_type,
        "entry": v.entry,
        "proxy_port": [h.result.proxy_port for h in (v.egress, v.ingress) if h is not None],
        "policies": v.policies,
        "l7": None if v.l7 is None else (v.l7.allowed, v.http_status),
        "egress": v.egress,
        "ingress": v.ingress,
        "peers": (v.src, v.dst),
    }


def assert_same_verdict(what: str, sim: Verdict, ebpf: Verdict) -> None:
    """Equal verdicts: every field (both hooks' datapath results and L7 decisions, the peers,
    the packet, the DNS lookup) and the rules responsible; else both explanations."""
    if sim == ebpf and sim.policies == ebpf.policies:
        return
    a, b = _headline(sim), _headline(ebpf)
    differ = [k for k in a if a[k] != b[k]]
    lines = [f"{what}: the backends disagree on {', '.join(differ) or 'fields not shown here'}"]
    for k in differ:
        lines += [f"  {k}: simulator {a[k]!r}", f"  {' ' * len(k)}  ebpf      {b[k]!r}"]
    lines += ["--- simulator:", sim.explain(), "--- ebpf:", ebpf.explain()]
    raise AssertionError("\n".join(lines))


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn``'s result, or the ciliumpy error it raised."""
    try:
        return fn(*args, **kwargs)
    except CiliumpyError as exc:
        return exc


def assert_same_outcome(what: str, sim: Any, ebpf: Any) -> None:
    """Equal results: verdicts field by field, errors by type and message, others by ``==``."""
    if isinstance(sim, BaseException) or isinstance(ebpf, BaseException):
        assert type(sim) is type(ebpf) and str(sim) == str(ebpf), f"{what}: simulator {sim!r}, ebpf {ebpf!r}"
    elif isinstance(sim, Verdict) and isinstance(ebpf, Verdict):
        assert_same_verdict(what, sim, ebpf)
    else:
        assert sim == ebpf, f"{what}: simulator {sim!r}, ebpf {ebpf!r}"


# ---------------------------------------------------------------- one test, two clusters
def _is_data(value: Any) -> bool:
    """Plain values and containers, compared (what the cluster's properties return)."""
    return _is_value(value) or isinstance(value, list | dict | set | Mapping)


def _is_value(value: Any) -> bool:
    """Immutable values: compared, never acted on."""
    return isinstance(value, int | float | str | bytes | tuple | frozenset | None) or attrs.has(type(value))


class _Both:
    """An attribute of both clusters that is an object, not data (``backend``, ``clock``,
    ``backend.auth_pairs``): calls go to both objects and must return equal results; the eBPF
    side's is returned."""

    def __init__(self, path: str, sim: Any, ebpf: Any) -> None:
        self._path, self._sim, self._ebpf = path, sim, ebpf

    def __getattr__(self, name: str) -> Any:
        path, sim, ebpf = f"{self._path}.{name}", getattr(self._sim, name), getattr(self._ebpf, name)
        if not callable(sim):
            return _same(path, sim, ebpf) if _is_value(sim) else _Both(path, sim, ebpf)

        def both(*args: Any, **kwargs: Any) -> Any:
            return _same(f"{path}{args}", attempt(sim, *args, **kwargs), attempt(ebpf, *args, **kwargs))

        return both

    def __contains__(self, item: object) -> bool:
        return bool(_same(f"{item!r} in {self._path}", item in self._sim, item in self._ebpf))

    def __len__(self) -> int:
        return int(_same(f"len({self._path})", len(self._sim), len(self._ebpf)))


def _same(what: str, sim: Any, ebpf: Any) -> Any:
    assert_same_outcome(what, sim, ebpf)
    if isinstance(ebpf, BaseException):
        raise ebpf
    return ebpf


# Calls after which the kernel maps are checked against the cluster (before the next read).
_CHANGES = frozenset(
    {"apply", "delete", "add_namespace", "add_endpoint", "remove_endpoint", "add_node", "add_service", "resolve"}
)


class MirroredCluster:
    """A cluster on the simulator and one on the eBPF backend, driven by the same calls.

    Each method call runs on both; the results must be equal (see
    :func:`assert_same_outcome`) and the eBPF cluster's result is returned (or its error
    raised), so the caller's own assertions check the kernel datapath.  After a change, the
    kernel maps are compared with the compiled state before the next question.
    """

    def __init__(self, datapath: SharedDatapath, *args: Any, **options: Any) -> None:
        options.pop("backend", None)
        options.setdefault("clock", ManualClock(T0))
        sim_options = {**options, "clock": ManualClock(T0)}
        self._sim = Cluster(*args, backend=SimulatorBackend(), **sim_options)
        self._ebpf = datapath.cluster(*args, **options)
        self._backend = datapath.backend
        self._changed = True
        self.verdicts = 0  # how many verdicts were compared
        self.kernel_checks = 0

    @property
    def clusters(self) -> tuple[Cluster, Cluster]:
        """(simulator cluster, eBPF cluster)."""
        return self._sim, self._ebpf

    def check_kernel(self) -> None:
        assert_kernel_enforces(self._ebpf, self._backend)
        self.kernel_checks += 1
        self._changed = False

    def __getattr__(self, name: str) -> Any:
        sim_attr, ebpf_attr = getattr(self._sim, name), getattr(self._ebpf, name)
        if not callable(sim_attr):
            if not _is_data(sim_attr):  # e.g. the backend or the clock: act on both
                return _Both(name, sim_attr, ebpf_attr)
            assert_same_outcome(name, sim_attr, ebpf_attr)
            return ebpf_attr

        def both(*args: Any, **kwargs: Any) -> Any:
            if self._changed and name not in _CHANGES:
                self.check_kernel()
            sim, ebpf = attempt(sim_attr, *args, **kwargs), attempt(ebpf_attr, *args, **kwargs)
            assert_same_outcome(f"{name}{args}", sim, ebpf)
            if isinstance(ebpf, Verdict):
                self.verdicts += 1
            # A check of a host name resolves it, and may learn addresses.
            learned = isinstance(ebpf, Verdict) and ebpf.dns is not None
            self._changed = self._changed or name in _CHANGES or learned
            if isinstance(ebpf, BaseException):
                raise ebpf
            return ebpf

        return both
