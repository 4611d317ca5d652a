"""CIDR groups and the labels of ipcache prefixes.

A ``CiliumCIDRGroup`` names a list of CIDRs. Cilium's CIDR group watcher puts every one of
them into the ipcache with the group's labels under the ``cidrgroup`` source -- each
``metadata.labels`` entry and ``io.cilium.policy.cidrgroupname/<name>`` -- plus the world
label (pkg/policy/api/cidr.go ``LabelForCIDRGroupRef``). A ``cidrGroupRef`` in
``fromCIDRSet``/``toCIDRSet`` becomes the selector "has ``cidrgroup:io.cilium.policy.
cidrgroupname/<name>``"; a ``cidrGroupSelector`` becomes its own requirements read with the
``cidrgroup`` source (``CIDRRule.Sanitize``). ``except`` prefixes narrow either selector as
they narrow a ``cidr``: identities whose ``cidr:`` label lies inside an except are left out.

Prefix labels (pkg/ipcache/metadata.go ``resolveLabels``): a prefix inherits the labels of
every prefix that contains it, so a CIDR referenced by a policy (an ``except`` hole, a
``toCIDR``) inside a group's CIDR carries the group's labels, and a group's CIDR carries the
``cidr:`` label of the nearest prefix a policy references (at most one ``cidr:`` label).
Selectors never depend on the groups, only identities do: applying or deleting a group
re-labels ipcache prefixes, and the selector cache updates every policy that selects them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import attrs

from ._datapath import IPAddress, IPNetwork
from ._identity import world_label_for
from ._labels import SOURCE_ANY, Label, LabelSet, cidr_label
from ._mapstate import PeerSelector, cidr_selector
from ._model import CIDRRule, CiliumCIDRGroup
from ._selectors import Operator, Requirement

__all__ = [
    "GROUP_NAME_PREFIX",
    "SOURCE_CIDRGROUP",
    "cidr_rule_selectors",
    "group_labels",
    "ipcache_prefix_labels",
]

#: The label source of CIDR group labels.
SOURCE_CIDRGROUP: Final = "cidrgroup"
#: Key prefix of the label naming a group (``cidrgroup:io.cilium.policy.cidrgroupname/<name>``).
GROUP_NAME_PREFIX: Final = "io.cilium.policy.cidrgroupname"


def group_labels(group: CiliumCIDRGroup) -> list[Label]:
    """The labels a group gives each of its CIDRs (besides the world label)."""
    out = [Label(SOURCE_CIDRGROUP, k, v) for k, v in group.labels.items()]
    out.append(Label(SOURCE_CIDRGROUP, f"{GROUP_NAME_PREFIX}/{group.name}"))
    return out


def cidr_rule_selectors(rule: CIDRRule, dual_stack: bool) -> list[PeerSelector]:
    """The peer selector of one ``fromCIDRSet``/``toCIDRSet`` item."""
    excepts = tuple(sorted(rule.excepts, key=str))
    net = rule.network
    if net is not None:
        return [cidr_selector(net, excepts, dual_stack)]
    if rule.cidr_group_ref is not None:
        key = f"{GROUP_NAME_PREFIX}/{rule.cidr_group_ref}"
        reqs: list[Requirement] = [Requirement(SOURCE_CIDRGROUP, key, Operator.EXISTS, ())]
        text = f"{SOURCE_CIDRGROUP}:{key}"
    else:
        assert rule.cidr_group_selector is not None
        sel = rule.cidr_group_selector
        reqs = [attrs.evolve(r, source=SOURCE_CIDRGROUP) if r.source == SOURCE_ANY else r for r in sel.requirements]
        text = f"cidrGroupSelector {sel}"
    return [PeerSelector(requirements=tuple(sorted(set(reqs))), excepts=excepts, text=text)]


def _containing(net: IPNetwork, prefixes: Iterable[IPNetwork]) -> list[IPNetwork]:
    return [p for p in prefixes if p.version == net.version and net.subnet_of(p)]  # type: ignore[arg-type]


def ipcache_prefix_labels(
    referenced: Collection[IPNetwork],
    learned: Mapping[IPAddress, Collection[str]],
    fqdn_selectors: Iterable[Any],
    groups: Iterable[CiliumCIDRGroup],
    dual_stack: bool,
    cache: dict[IPNetwork, LabelSet],
) -> dict[IPNetwork, tuple[LabelSet, IPNetwork | None]]:
    """Prefix -> (labels of its local identity, the prefix whose ``cidr:`` label it carries).

    ``referenced``: prefixes peer selectors reference; ``learned``: addresses the DNS proxy
    learned with their names, matched against ``fqdn_selectors`` for ``fqdn:`` labels;
    ``cache`` keeps the labels of referenced prefixes between calls when no group exists.
    """
    group_cidrs: dict[IPNetwork, list[Label]] = {}
    for group in groups:
        for net in group.external_cidrs:
            if net.prefixlen:
                group_cidrs.setdefault(net, []).extend(group_labels(group))
    out: dict[IPNetwork, tuple[LabelSet, IPNetwork | None]] = {}
    for net in referenced:
        if net.prefixlen == 0:
            continue
        labels = cache.get(net)
        if labels is None:
            labels = cache[net] = LabelSet([world_label_for(net, dual_stack), cidr_label(net)])
        out[net] = (labels, net)
    sels = list(fqdn_selectors)
    for ip, names in learned.items():
        fqdn = {Label("fqdn", sel.label.partition(":")[2]) for sel in sels for n in names if sel.matches(n)}
        if not fqdn:
            continue
        # A learned address carries only its fqdn labels, the world label and the label of
        # the nearest prefix some CIDR rule references (CFP-28427), so addresses selected by
        # the same selectors share one identity.
        host = ipaddress.ip_network(ip)
        parents = [n for n in _containing(host, referenced) if n.prefixlen]
        parent = max(parents, key=lambda n: n.prefixlen) if parents else None
        labels_l = [world_label_for(host, dual_stack), *sorted(fqdn)]
        if parent is not None:
            labels_l.append(cidr_label(parent))
        out[host] = (LabelSet(labels_l), parent)
    if not group_cidrs:
        return out
    for net in group_cidrs:
        if net not in out:
            parents = [n for n in _containing(net, referenced) if n.prefixlen]
            parent = max(parents, key=lambda n: n.prefixlen) if parents else None
            base = [world_label_for(net, dual_stack)] + ([cidr_label(parent)] if parent is not None else [])
            out[net] = (LabelSet(base), parent)
    for net, (labels, parent) in list(out.items()):
        inherited = [lbl for g in _containing(net, group_cidrs) for lbl in group_cidrs[g]]
        if inherited:
            out[net] = (LabelSet([*labels.labels, *inherited]), parent)
    return out
