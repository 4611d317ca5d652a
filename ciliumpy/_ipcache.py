"""Identity allocation and the ipcache: which identity each endpoint and address has.

:class:`IPCache` is the state machine Cilium splits between ``pkg/identity`` (the allocator)
and ``pkg/ipcache`` (prefix → identity, with labels derived from what policies reference):
it gives every endpoint the identity of its labels, gives every prefix a CIDR rule or group
references and every address the DNS proxy learned for a ``toFQDNs`` selector a node-local
identity (their labels come from :func:`ciliumpy._cidrgroup.ipcache_prefix_labels`),
keeps the selector cache's identities in step, and remembers what was pushed to the
datapath.  Its changes can be undone exactly (:meth:`IPCache.checkpoint` /
:meth:`IPCache.rollback`): a failed apply keeps every identity *number*, not just the label
sets, so the datapath's maps and established connections stay valid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._datapath import ID_HOST, ID_REMOTE_NODE, ID_WORLD, ID_WORLD_IPV4, ID_WORLD_IPV6, IPAddress, IPNetwork
from ._identity import Identity, IdentityAllocator, endpoint_identity_labels
from ._labels import LabelSet
from ._mapstate import SelectorCache
from ._model import Endpoint, Namespace, Node
from .backends._simulator import LPMTable

__all__ = ["HOST_IP_V4", "HOST_IP_V6", "IPCache", "IPCacheCheckpoint"]

HOST_IP_V4 = ipaddress.ip_address("10.0.0.1")
HOST_IP_V6 = ipaddress.ip_address("fd00:10::1")


@attrs.frozen
class IPCacheCheckpoint:
    """What :meth:`IPCache.rollback` needs to put an :class:`IPCache` back (opaque)."""

    allocator: tuple[Any, ...]
    endpoint_identities: Mapping[str, Identity]
    prefix_identities: Mapping[IPNetwork, Identity]
    desired: Mapping[IPNetwork, int]
    pushed: Mapping[IPNetwork, int]
    journal_length: int


class IPCache:
    """Endpoint and prefix identities, and the prefix → identity table of the datapath.

    ``selector_cache`` learns every identity that appears or goes away.  Readers use
    :meth:`lookup`, :attr:`endpoint_identities`, :attr:`allocator` and :attr:`pushed`;
    the cluster drives :meth:`sync_endpoints`, :meth:`sync_prefixes` and :meth:`commit`.
    """

    def __init__(self, selector_cache: SelectorCache, *, cluster_name: str, dual_stack: bool) -> None:
        self.allocator = IdentityAllocator()
        self.selector_cache = selector_cache
        self.cluster_name = cluster_name
        self.dual_stack = dual_stack
        for ident in self.allocator.all():
            selector_cache.add_identity(ident)
        self.endpoint_identities: dict[str, Identity] = {}
        self.prefix_identities: dict[IPNetwork, Identity] = {}
        self.desired: dict[IPNetwork, int] = {}  # what the datapath should hold
        self.pushed: dict[IPNetwork, int] = {}  # what it holds
        self._lpm = LPMTable()  # ``pushed`` as a longest-prefix-match table
        # caches of derived values, valid whatever is rolled back
        self._label_cache: dict[str, tuple[Endpoint, Namespace | None, LabelSet]] = {}
        self.prefix_labels: dict[IPNetwork, LabelSet] = {}  # for _cidrgroup.ipcache_prefix_labels
        self._host_nets: dict[IPAddress, IPNetwork] = {}
        # selector-cache changes since the oldest open checkpoint: (added?, identity)
        self._journal: list[tuple[bool, Identity]] = []
        self._open_checkpoints = 0

    # -- reading -----------------------------------------------------------------------------
    def lookup(self, ip: IPAddress) -> Identity:
        """Longest-prefix match in what the datapath holds; a miss is world."""
        hit = self._lpm.lookup(ip)
        found = self.allocator.get(ID_WORLD if hit is None else hit)
        assert found is not None
        return found

    # -- transactions ------------------------------------------------------------------------
    def checkpoint(self) -> IPCacheCheckpoint:
        """Remember the current state; pair with :meth:`rollback` or :meth:`release`."""
        self._open_checkpoints += 1
        return IPCacheCheckpoint(
            allocator=self.allocator.checkpoint(),
            endpoint_identities=self.endpoint_identities,
            prefix_identities=self.prefix_identities,
            desired=self.desired,
            pushed=self.pushed,
            journal_length=len(self._journal),
        )

    def rollback(self, cp: IPCacheCheckpoint) -> None:
        """Put back the state of ``cp``: same identities, same numbers, same ipcache."""
        self.allocator.rollback(cp.allocator)
        while len(self._journal) > cp.journal_length:
            added, ident = self._journal.pop()
            if added:
                self.selector_cache.remove_identity(ident)
            else:
                self.selector_cache.add_identity(ident)
        self.endpoint_identities = dict(cp.endpoint_identities)
        self.prefix_identities = dict(cp.prefix_identities)
        self.desired = dict(cp.desired)
        if self.pushed != cp.pushed:  # only a commit changes it, and commits come last
            self._set_pushed(dict(cp.pushed))
        self.release(cp)

    def release(self, cp: IPCacheCheckpoint) -> None:
        """Forget ``cp`` (the change it guarded is kept)."""
        self._open_checkpoints -= 1
        if not self._open_checkpoints:
            self._journal.clear()

    def _acquire(self, labels: LabelSet, cidr: IPNetwork | None = None, *, local: bool = False) -> Identity:
        ident, new = self.allocator.acquire(labels, cidr, local=local)
        if new:
            self.selector_cache.add_identity(ident)
            if self._open_checkpoints:
                self._journal.append((True, ident))
        return ident

    def _release(self, ident: Identity) -> None:
        if self.allocator.release(ident):
            self.selector_cache.remove_identity(ident)
            if self._open_checkpoints:
                self._journal.append((False, ident))

    # -- synchronisation ---------------------------------------------------------------------
    def sync_endpoints(self, endpoints: Mapping[str, Endpoint], namespaces: Mapping[str, Namespace]) -> None:
        """Give every endpoint the identity of its labels; release those no longer used."""
        live: dict[str, Identity] = {}
        label_cache = self._label_cache
        for ref, ep in endpoints.items():
            ns = namespaces.get(ep.namespace)
            hit = label_cache.get(ref)
            if hit is not None and hit[0] is ep and hit[1] is ns:
                labels = hit[2]
            else:
                ns_labels = (ns or Namespace(ep.namespace)).effective_labels()
                labels = endpoint_identity_labels(
                    ep.labels, ep.namespace, ns_labels, ep.service_account, self.cluster_name
                )
                label_cache[ref] = (ep, ns, labels)
            old = self.endpoint_identities.get(ref)
            if old is not None and old.labels == labels:
                live[ref] = old
                continue
            live[ref] = self._acquire(labels)
            if old is not None:
                self._release(old)
        for ref, old in self.endpoint_identities.items():
            if ref not in endpoints:
                self._release(old)
        self.endpoint_identities = live

    def sync_prefixes(
        self,
        wanted: Mapping[IPNetwork, tuple[LabelSet, IPNetwork | None]],
        nodes: Iterable[Node],
        endpoints: Mapping[str, Endpoint],
    ) -> None:
        """Give every prefix in ``wanted`` (labels, and the prefix whose ``cidr:`` label they
        carry) a node-local identity and compute the table the datapath should hold
        (:attr:`desired`): those prefixes, the host, nodes and endpoint addresses."""
        fixed: dict[IPNetwork, int] = {}
        if self.dual_stack:
            fixed[ipaddress.ip_network("0.0.0.0/0")] = ID_WORLD_IPV4
            fixed[ipaddress.ip_network("::/0")] = ID_WORLD_IPV6
        for ip in (HOST_IP_V4, HOST_IP_V6):
            fixed[ipaddress.ip_network(ip)] = ID_HOST
        for node in nodes:
            for ip in node.ips:
                fixed[ipaddress.ip_network(ip)] = ID_REMOTE_NODE
        nets = self._host_nets
        for ref, ep in endpoints.items():
            num = self.endpoint_identities[ref].id
            for ip in ep.ips:
                pfx = nets.get(ip)
                if pfx is None:
                    pfx = nets[ip] = ipaddress.ip_network(ip)
                fixed[pfx] = num
        # (re)allocate local identities
        new_ids: dict[IPNetwork, Identity] = {}
        for net, (labels, parent) in wanted.items():
            old = self.prefix_identities.get(net)
            if old is not None and old.labels == labels:
                new_ids[net] = old
                continue
            new_ids[net] = self._acquire(labels, cidr=parent, local=True)
            if old is not None:
                self._release(old)
        for net, old in self.prefix_identities.items():
            if net not in wanted:
                self._release(old)
        self.prefix_identities = new_ids
        self.desired = {**{n: i.id for n, i in new_ids.items()}, **fixed}

    def changes(self) -> tuple[dict[IPNetwork, int], frozenset[IPNetwork]]:
        """Upserts and deletes that take the datapath from :attr:`pushed` to :attr:`desired`."""
        upserts = {k: v for k, v in self.desired.items() if self.pushed.get(k) != v}
        return upserts, frozenset(set(self.pushed) - set(self.desired))

    def commit(self) -> None:
        """Record that the datapath now holds :attr:`desired`."""
        self._set_pushed(dict(self.desired))

    def _set_pushed(self, table: dict[IPNetwork, int]) -> None:
        for net in set(self.pushed) - set(table):
            self._lpm.delete(net)
        for net, num in table.items():
            if self.pushed.get(net) != num:
                self._lpm.set(net, num)
        self.pushed = table
