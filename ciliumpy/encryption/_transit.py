"""Where a packet travels: which nodes it leaves and enters, and whether WireGuard encrypts it.

The rules follow Cilium's WireGuard agent (``pkg/wireguard/agent/agent.go``,
``node_handler.go``) and its documentation (``encryption-wireguard.rst``):

* A packet crosses nodes when its source and destination sit on different nodes.  A pod's
  node is its ``spec.nodeName``; a node address belongs to its node; the cluster's host
  address (``"host"``) is the node the other side is on; any other address is outside the
  cluster, so the packet leaves through the node's uplink, not through a WireGuard peer.
* Between two pods on different nodes the packet is encrypted: the remote node's peer lists
  every pod address of that node as an allowed IP.
* A node address (or a hostNetwork pod, which uses it) on either side is encrypted only with
  ``encryption.nodeEncryption``, and not when that node opts out of node encryption (its
  labels match ``nodeEncryptionOptOutLabels``, by default control-plane nodes).
* Same-node traffic is never encrypted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..exceptions import PolicyError

if TYPE_CHECKING:
    from .._cluster import Cluster
    from .._datapath import IPAddress

__all__ = ["Transit", "node_selector_matches", "place", "transit"]

INTERFACE = "cilium_wg0"


@attrs.frozen(kw_only=True)
class Transit:
    """How a packet gets from its source to its destination across the cluster's nodes.

    ``src_node`` / ``dst_node`` are node names (``None`` outside the cluster or where the
    pod has no node); ``crossed_nodes`` says whether the packet goes from one node to
    another; ``encrypted`` whether WireGuard encrypts it on the way (``interface`` is then
    ``cilium_wg0``); ``reason`` says why in one sentence.
    """

    src_node: str | None
    dst_node: str | None
    crossed_nodes: bool
    encrypted: bool
    reason: str
    interface: str | None = None

    def explain(self) -> str:
        """One line: the nodes on both ends and the encryption decision."""
        where = f"{self.src_node or 'outside the cluster'} -> {self.dst_node or 'outside the cluster'}"
        how = f"encrypted by WireGuard ({self.interface})" if self.encrypted else "not encrypted"
        return f"path: {where}: {how}; {self.reason}"


@attrs.frozen
class _Side:
    node: str | None
    is_node: bool  # the address is a node's own (host networking), not a pod's


def place(cluster: Cluster, ip: IPAddress) -> _Side | None:
    """The node ``ip`` lives on, or ``None`` for an address outside the cluster.

    Reads the cluster's endpoints by address and its declared nodes; the host address
    returns a side with no node (the caller takes the other side's node).
    """
    from .._cluster import HOST_IP_V4, HOST_IP_V6

    ref = cluster._by_ip.get(ip)
    if ref is not None:
        ep = cluster._endpoints[ref]
        return _Side(ep.node, ep.host_network)
    for name, node in cluster._nodes.items():
        if ip in node.ips:
            return _Side(name, True)
    if ip in (HOST_IP_V4, HOST_IP_V6):
        return _Side(None, True)
    return None


def _requirements(selector: str) -> list[tuple[str, str, str | None]]:
    """Parse a Kubernetes label selector string (``labels.Parse``'s equality form)."""
    out: list[tuple[str, str, str | None]] = []
    for part in (p.strip() for p in selector.split(",")):
        if not part:
            continue
        if "!=" in part:
            key, value = part.split("!=", 1)
            out.append((key.strip(), "!=", value.strip()))
        elif "==" in part or "=" in part:
            key, value = part.split("==" if "==" in part else "=", 1)
            out.append((key.strip(), "=", value.strip()))
        elif part.startswith("!"):
            out.append((part[1:].strip(), "!", None))
        else:
            out.append((part, "exists", None))
    for key, _, _ in out:
        if not key or any(c in key for c in " ()"):
            raise PolicyError("invalid label selector", field="nodeEncryptionOptOutLabels", value=selector)
    return out


def node_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether node ``labels`` match a label selector string such as Cilium's opt-out one.

    As Kubernetes' ``labels.Parse``: comma-separated requirements are ANDed, and an empty
    selector matches every node.
    """
    for key, op, value in _requirements(selector):
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
    return True


def _opted_out(cluster: Cluster, node: str | None, selector: str) -> bool:
    obj = cluster._nodes.get(node) if node is not None else None
    return obj is not None and node_selector_matches(selector, obj.labels)


def transit(cluster: Cluster, src: IPAddress | str, dst: IPAddress | str) -> Transit | None:
    """The :class:`Transit` of a packet from ``src`` to ``dst`` in ``cluster``.

    ``None`` when the cluster declares no nodes: without them nothing says where pods run.
    """
    if not cluster._nodes:
        return None
    src_ip = ipaddress.ip_address(src) if isinstance(src, str) else src
    dst_ip = ipaddress.ip_address(dst) if isinstance(dst, str) else dst
    a, b = place(cluster, src_ip), place(cluster, dst_ip)
    a_node = a.node if a is not None else None
    b_node = b.node if b is not None else None
    if a is not None and a.node is None and a.is_node:
        a_node = b_node  # the host address: the node the other side is on
    if b is not None and b.node is None and b.is_node:
        b_node = a_node
    enc: Any = cluster.values.encryption

    def result(crossed: bool, encrypted: bool, reason: str) -> Transit:
        return Transit(
            src_node=a_node,
            dst_node=b_node,
            crossed_nodes=crossed,
            encrypted=encrypted,
            interface=INTERFACE if encrypted else None,
            reason=reason,
        )

    if a is None or b is None:
        return result(False, False, "one end is outside the cluster; WireGuard peers only cover cluster nodes")
    if a_node is None or b_node is None:
        return result(False, False, "a pod without spec.nodeName has no node to place it on")
    if a_node == b_node:
        return result(False, False, "both ends are on the same node, and same-node traffic is never encrypted")
    if not enc.wireguard:
        state = f"encryption type {enc.type}" if enc.enabled else "encryption is disabled"
        return result(True, False, f"{state} (Helm encryption.enabled / encryption.type=wireguard)")
    if a.is_node or b.is_node:
        if not enc.node_encryption:
            return result(
                True, False, "a node address is involved and encryption.nodeEncryption is off (pod traffic only)"
            )
        for side, node in ((a, a_node), (b, b_node)):
            if side.is_node and _opted_out(cluster, node, enc.opt_out_labels):
                return result(
                    True, False, f"node {node} opts out of node encryption (labels match {enc.opt_out_labels!r})"
                )
        return result(True, True, "node encryption is on, so node addresses are in the peers' allowed IPs")
    return result(True, True, f"pod traffic between nodes; {dst_ip} is an allowed IP of node {b_node}'s peer")
