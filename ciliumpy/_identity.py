"""Security identities: reserved numbers, label filtering, allocation and the ipcache.

Same identity-relevant label set → same numeric identity. Global identities start at 256
and are allocated in order of first use (Cilium picks them at random; ours are
deterministic). CIDR and FQDN identities are cluster-local: ``1 << 24 | n``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._datapath import (
    ID_HEALTH,
    ID_HOST,
    ID_INGRESS,
    ID_INIT,
    ID_KUBE_APISERVER,
    ID_REMOTE_NODE,
    ID_UNMANAGED,
    ID_WORLD,
    ID_WORLD_IPV4,
    ID_WORLD_IPV6,
    LOCAL_IDENTITY_FLAG,
    MIN_GLOBAL_IDENTITY,
    IPNetwork,
)
from ._labels import (
    CILIUM_LABEL_PREFIX,
    CLUSTER_KEY,
    NAMESPACE_KEY,
    NAMESPACE_LABELS_PREFIX,
    SERVICE_ACCOUNT_KEY,
    SOURCE_K8S,
    SOURCE_RESERVED,
    Label,
    LabelSet,
    cidr_label,
)

__all__ = [
    "Identity",
    "IdentityAllocator",
    "endpoint_identity_labels",
    "filter_pod_labels",
    "is_identity_relevant",
    "sanitize_pod_labels",
]


def _reserved(*names: str) -> LabelSet:
    return LabelSet(Label(SOURCE_RESERVED, n) for n in names)


RESERVED_IDENTITIES: dict[int, LabelSet] = {
    ID_HOST: _reserved("host"),
    ID_WORLD: _reserved("world"),
    ID_UNMANAGED: _reserved("unmanaged"),
    ID_HEALTH: _reserved("health"),
    ID_INIT: _reserved("init"),
    ID_REMOTE_NODE: _reserved("remote-node"),
    ID_KUBE_APISERVER: _reserved("kube-apiserver", "remote-node"),
    ID_INGRESS: _reserved("ingress"),
    ID_WORLD_IPV4: _reserved("world-ipv4"),
    ID_WORLD_IPV6: _reserved("world-ipv6"),
}
RESERVED_NAMES = {
    ID_HOST: "host",
    ID_WORLD: "world",
    ID_UNMANAGED: "unmanaged",
    ID_HEALTH: "health",
    ID_INIT: "init",
    ID_REMOTE_NODE: "remote-node",
    ID_KUBE_APISERVER: "kube-apiserver",
    ID_INGRESS: "ingress",
    ID_WORLD_IPV4: "world-ipv4",
    ID_WORLD_IPV6: "world-ipv6",
}

# Default label prefixes (pkg/labelsfilter/filter.go): regexes anchored at the key start.
_INCLUDE = [
    "reserved:.*",
    NAMESPACE_KEY,
    NAMESPACE_LABELS_PREFIX.rstrip("."),
    "app.kubernetes.io",
    CLUSTER_KEY,
    SERVICE_ACCOUNT_KEY,
]
_IGNORE = [
    "io.kubernetes",
    "kubernetes.io",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
    "batch.kubernetes.io/controller-uid",
    ".*beta.kubernetes.io",
    "k8s.io",
    "pod-template-generation",
    "pod-template-hash",
    "controller-revision-hash",
    "controller-uid",
    "annotation.*",
    "etcd_node",
]
_INCLUDE_RE = [(p, re.compile(p)) for p in _INCLUDE]
_IGNORE_RE = [(p, re.compile(p)) for p in _IGNORE]


@functools.lru_cache(maxsize=4096)
def is_identity_relevant(key: str) -> bool:
    """Whether a pod label key takes part in the identity (default label filter).

    A key is dropped when an ignore prefix matches it, unless the longest matching include
    prefix is longer than the shortest matching ignore prefix.
    """
    ignores = [len(p) for p, rx in _IGNORE_RE if rx.match(key)]
    if not ignores:
        return True
    includes = [len(p) for p, rx in _INCLUDE_RE if rx.match(key)]
    return bool(includes) and max(includes) > min(ignores)


def filter_pod_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A pod's own labels without those Cilium owns: every key starting ``io.cilium.k8s``.

    Mirrors ``filterPodLabels`` (pkg/k8s/watchers/pod.go, pkg/k8s/utils/utils.go): a plain
    string-prefix test, so ``io.cilium.k8s.policy.cluster`` and ``io.cilium.k8sfoo`` go too.
    """
    return {k: v for k, v in labels.items() if not k.startswith(CILIUM_LABEL_PREFIX)}


def sanitize_pod_labels(
    labels: Mapping[str, str],
    namespace: str,
    namespace_labels: Mapping[str, str],
    service_account: str,
    cluster: str,
) -> dict[str, str]:
    """The k8s labels Cilium gives a pod before the label filter (``SanitizePodLabels``).

    The keys Cilium derives are *assigned*, never added next to a pod's own value, so a pod
    cannot claim another namespace, service account, cluster or namespace label: its own
    ``io.cilium.k8s*`` labels are dropped first, then the namespace labels, the namespace
    name, the service account (removed when empty) and the cluster name are written.
    """
    out = filter_pod_labels(labels)
    for k, v in namespace_labels.items():
        out[NAMESPACE_LABELS_PREFIX + k] = v
    out[NAMESPACE_KEY] = namespace
    if service_account:
        out[SERVICE_ACCOUNT_KEY] = service_account
    else:
        out.pop(SERVICE_ACCOUNT_KEY, None)
    out[CLUSTER_KEY] = cluster
    return out


def endpoint_identity_labels(
    labels: Mapping[str, str],
    namespace: str,
    namespace_labels: Mapping[str, str],
    service_account: str,
    cluster: str,
) -> LabelSet:
    """The identity labels Cilium derives for a pod (§1.9, §2.2).

    :func:`sanitize_pod_labels`, then the default label filter (:func:`is_identity_relevant`),
    all with source ``k8s``.
    """
    sanitized = sanitize_pod_labels(labels, namespace, namespace_labels, service_account, cluster)
    return LabelSet(Label(SOURCE_K8S, k, v) for k, v in sanitized.items() if is_identity_relevant(k))


@attrs.frozen
class Identity:
    """A numeric security identity with its labels.

    ``cidr`` is set for CIDR/FQDN identities (the prefix whose ``cidr:`` label they
    carry); such identities are selected by CIDR selectors through prefix containment.
    """

    id: int
    labels: LabelSet
    cidr: IPNetwork | None = None
    _name: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

    @property
    def is_reserved(self) -> bool:
        return self.id < MIN_GLOBAL_IDENTITY

    @property
    def is_local(self) -> bool:
        return bool(self.id & LOCAL_IDENTITY_FLAG)

    @property
    def name(self) -> str:
        """A short human name: ``world``, ``production/app=web``, ``cidr:10.0.0.0/8``,
        ``cidrgroup:office``."""
        if self._name is None:
            object.__setattr__(self, "_name", self._make_name())
        assert self._name is not None
        return self._name

    def _make_name(self) -> str:
        if self.id in RESERVED_NAMES:
            return RESERVED_NAMES[self.id]
        if self.is_local:
            fq = [lbl.key for lbl in self.labels.labels if lbl.source == "fqdn"]
            if fq:
                return f"fqdn:{','.join(sorted(fq))}"
            if self.cidr is not None:
                return str(cidr_label(self.cidr))
            # A CIDR group's prefix without a cidr: label is named by its groups, as Hubble UI does.
            groups = [
                lbl.key.partition("/")[2]
                for lbl in self.labels.labels
                if lbl.source == "cidrgroup" and lbl.key.startswith("io.cilium.policy.cidrgroupname/")
            ]
            return f"cidrgroup:{','.join(sorted(groups))}" if groups else str(self.id)
        ns = self.labels.get(NAMESPACE_KEY, SOURCE_K8S)
        app = [
            f"{lbl.key}={lbl.value}"
            for lbl in sorted(self.labels.labels)
            if lbl.source == SOURCE_K8S and not lbl.key.startswith("io.")
        ]
        return f"{ns}/{','.join(app)}" if ns else ",".join(app) or str(self.id)

    def __str__(self) -> str:
        return f"{self.id} ({self.name})"


class IdentityAllocator:
    """Allocates identities by label set; reference-counted so unused ones are released."""

    def __init__(self) -> None:
        self._by_labels: dict[LabelSet, Identity] = {}
        self._by_id: dict[int, Identity] = {}
        self._refs: dict[int, int] = {}
        self._next_global = MIN_GLOBAL_IDENTITY
        self._next_local = 1
        for num, labels in RESERVED_IDENTITIES.items():
            ident = Identity(num, labels)
            self._by_id[num] = ident
            self._by_labels[labels] = ident

    def get(self, num: int) -> Identity | None:
        return self._by_id.get(num)

    def __iter__(self) -> Iterable[Identity]:
        return iter(list(self._by_id.values()))

    def all(self) -> list[Identity]:
        return sorted(self._by_id.values(), key=lambda i: i.id)

    def acquire(self, labels: LabelSet, cidr: IPNetwork | None = None, *, local: bool = False) -> tuple[Identity, bool]:
        """Return the identity of ``labels`` (allocating it if new) and whether it is new.

        CIDR identities (``cidr`` given) and FQDN identities (``local``) are node-local."""
        existing = self._by_labels.get(labels)
        if existing is not None:
            if not existing.is_reserved:
                self._refs[existing.id] = self._refs.get(existing.id, 0) + 1
            return existing, False
        if cidr is not None or local:
            num = LOCAL_IDENTITY_FLAG | self._next_local
            self._next_local += 1
        else:
            num = self._next_global
            self._next_global += 1
        ident = Identity(num, labels, cidr)
        self._by_labels[labels] = ident
        self._by_id[num] = ident
        self._refs[num] = 1
        return ident, True

    def release(self, ident: Identity) -> bool:
        """Drop one reference; return True when the identity is gone."""
        if ident.is_reserved:
            return False
        left = self._refs.get(ident.id, 0) - 1
        if left > 0:
            self._refs[ident.id] = left
            return False
        self._refs.pop(ident.id, None)
        self._by_id.pop(ident.id, None)
        self._by_labels.pop(ident.labels, None)
        return True

    def checkpoint(self) -> tuple[Any, ...]:
        """The allocator's state, for :meth:`rollback` (a failed change keeps every number)."""
        return (dict(self._by_labels), dict(self._by_id), dict(self._refs), self._next_global, self._next_local)

    def rollback(self, state: tuple[Any, ...]) -> None:
        """Return to a :meth:`checkpoint`: the same identities, numbers and reference counts."""
        by_labels, by_id, refs, self._next_global, self._next_local = state
        self._by_labels, self._by_id, self._refs = dict(by_labels), dict(by_id), dict(refs)


def world_label_for(net: IPNetwork, dual_stack: bool) -> Label:
    if not dual_stack:
        return Label(SOURCE_RESERVED, "world")
    return Label(SOURCE_RESERVED, "world-ipv4" if net.version == 4 else "world-ipv6")


def cidr_identity_labels(net: IPNetwork, fqdn_labels: Iterable[Label], dual_stack: bool) -> LabelSet:
    """Labels of a local identity for ``net``: its cidr label, fqdn labels and a world label."""
    labels = [world_label_for(net, dual_stack), *fqdn_labels]
    if net.prefixlen > 0:
        labels.append(cidr_label(net))
    return LabelSet(labels)


def host_network(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IPNetwork:
    return ipaddress.ip_network(addr)
