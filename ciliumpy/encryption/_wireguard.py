"""WireGuard keys, peers and status per node, as Cilium's WireGuard agent sets them up.

Upstream: ``pkg/wireguard/agent/agent.go`` (key generation, peer configuration, allowed IPs
from the ipcache), ``pkg/wireguard/types/types.go`` (``cilium_wg0``, port 51871, the
``network.cilium.io/wg-pub-key`` annotation), ``cilium-dbg/cmd/encrypt_status.go`` and
``status.go`` (what ``cilium encrypt status`` and ``cilium status`` print).
"""

from __future__ import annotations

import base64
import ipaddress
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..exceptions import PolicyError, UnknownEndpointError
from ._transit import INTERFACE, node_selector_matches

if TYPE_CHECKING:
    from .._cluster import Cluster
    from .._datapath import IPAddress, IPNetwork

__all__ = [
    "INTERFACE",
    "LISTEN_PORT",
    "PUBKEY_ANNOTATION",
    "KeyPair",
    "NodeWireGuard",
    "Peer",
    "WireGuard",
    "encrypt_status",
    "wireguard",
]

LISTEN_PORT = 51871
PUBKEY_ANNOTATION = "network.cilium.io/wg-pub-key"


@attrs.frozen(repr=False)
class KeyPair:
    """An X25519 key pair; keys print in WireGuard's base64 form."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh random key pair (what each agent makes at first start)."""
        return cls.from_private(X25519PrivateKey.generate())

    @classmethod
    def from_private(cls, key: X25519PrivateKey | bytes | str) -> KeyPair:
        """The pair of a private key given as raw 32 bytes, base64 text or a key object."""
        if isinstance(key, str):
            try:
                raw = base64.b64decode(key, validate=True)
            except ValueError:
                raise PolicyError("a WireGuard key must be base64", value=key[:60]) from None
            key = raw
        if isinstance(key, bytes):
            if len(key) != 32:
                raise PolicyError("a WireGuard private key has 32 bytes", value=len(key))
            key = X25519PrivateKey.from_private_bytes(key)
        private = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(private, public)

    @property
    def private_b64(self) -> str:
        return base64.b64encode(self.private).decode()

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode()

    def __repr__(self) -> str:  # never print the private key
        return f"KeyPair(public={self.public_b64})"


@attrs.frozen(kw_only=True)
class Peer:
    """One remote node as a WireGuard peer of another node."""

    node: str
    public_key: str  # base64
    endpoint: str | None  # "ip:51871" (node InternalIP), None when the node has no address
    allowed_ips: tuple[IPNetwork, ...]


@attrs.frozen(kw_only=True)
class NodeWireGuard:
    """The WireGuard device of one node: ``cilium_wg0``, its key and its peers."""

    node: str
    public_key: str
    listen_port: int
    interface: str
    peers: tuple[Peer, ...]
    node_encryption: str  # Disabled | Enabled | OptedOut (as cilium status prints it)

    @property
    def annotations(self) -> dict[str, str]:
        """What the agent publishes on the node's ``CiliumNode``."""
        return {PUBKEY_ANNOTATION: self.public_key}

    def encrypt_status(self) -> str:
        """What ``cilium encrypt status`` prints on this node."""
        return (
            "Encryption: Wireguard\n"
            f"Interface: {self.interface}\n"
            f"\tPublic key: {self.public_key}\n"
            f"\tNumber of peers: {len(self.peers)}\n"
        )

    def status_line(self) -> str:
        """The ``Encryption:`` line of ``cilium status``."""
        return (
            f"Encryption: Wireguard [NodeEncryption: {self.node_encryption}, {self.interface} "
            f"(Pubkey: {self.public_key}, Port: {self.listen_port}, Peers: {len(self.peers)})]"
        )


class WireGuard:
    """WireGuard as Cilium configures it on every node of ``cluster``.

    Keys are made once per node and kept for the life of this object (pass ``keys`` —
    node name to :class:`KeyPair` or base64 private key — to pin them); peers and allowed IPs
    are read from the cluster each time, so they follow pods and nodes as they change.

    >>> import ciliumpy
    >>> c = ciliumpy.Cluster(values={"encryption": {"enabled": True, "type": "wireguard"}})
    >>> _ = c.add_node("a", ips=["192.168.0.11"]); _ = c.add_node("b", ips=["192.168.0.12"])
    >>> _ = c.add_endpoint("prod/web", labels={"app": "web"}, ips=["10.244.1.5"], node="a")
    >>> wg = WireGuard(c)
    >>> [str(n) for n in wg.node("b").peers[0].allowed_ips]
    ['10.244.1.5/32']
    """

    def __init__(self, cluster: Cluster, keys: Mapping[str, KeyPair | str | bytes] | None = None) -> None:
        self.cluster = cluster
        self._keys: dict[str, KeyPair] = {
            name: k if isinstance(k, KeyPair) else KeyPair.from_private(k) for name, k in (keys or {}).items()
        }

    @property
    def enabled(self) -> bool:
        """Whether the cluster's values turn WireGuard on."""
        return bool(self.cluster.values.encryption.wireguard)

    def node_names(self) -> list[str]:
        """The cluster's nodes: declared ``Node`` objects and nodes named by pods."""
        names = set(self.cluster.nodes)
        names.update(ep.node for ep in self.cluster.endpoints.values() if ep.node)
        return sorted(names)

    def key(self, node: str) -> KeyPair:
        """The node's key pair (made on first use)."""
        pair = self._keys.get(node)
        if pair is None:
            pair = self._keys[node] = KeyPair.generate()
        return pair

    def _opted_out(self, node: str) -> bool:
        obj = self.cluster.nodes.get(node)
        enc = self.cluster.values.encryption
        return obj is not None and node_selector_matches(enc.opt_out_labels, obj.labels)

    def allowed_ips(self, node: str) -> tuple[IPNetwork, ...]:
        """What the peers of ``node`` route to it: its pods' addresses (and node addresses
        with node encryption, unless the node opts out), as the agent takes them from the
        ipcache."""
        enc = self.cluster.values.encryption
        nets: list[IPNetwork] = []
        for ep in self.cluster.endpoints.values():
            if ep.node == node and not ep.host_network:
                nets += [ipaddress.ip_network(ip) for ip in ep.ips]
        obj = self.cluster.nodes.get(node)
        if enc.node_encryption and obj is not None and not self._opted_out(node):
            nets += [ipaddress.ip_network(ip) for ip in obj.ips]
        return tuple(sorted(set(nets), key=lambda n: (n.version, n)))

    def node(self, name: str) -> NodeWireGuard:
        """The WireGuard device of node ``name``."""
        names = self.node_names()
        if name not in names:
            raise UnknownEndpointError(f"no node {name!r}; known: {', '.join(names[:10]) or 'none'}")
        peers = []
        for other in names:
            if other == name:
                continue
            obj = self.cluster.nodes.get(other)
            node_ips: tuple[IPAddress, ...] = obj.ips if obj is not None else ()
            ips = sorted(node_ips, key=lambda ip: ip.version)  # the InternalIPv4 first, as the agent
            endpoint = None
            if ips:
                endpoint = f"{ips[0]}:{LISTEN_PORT}" if ips[0].version == 4 else f"[{ips[0]}]:{LISTEN_PORT}"
            peers.append(
                Peer(
                    node=other,
                    public_key=self.key(other).public_b64,
                    endpoint=endpoint,
                    allowed_ips=self.allowed_ips(other),
                )
            )
        enc = self.cluster.values.encryption
        if not enc.node_encryption:
            node_enc = "Disabled"
        elif self._opted_out(name):
            node_enc = "OptedOut"
        else:
            node_enc = "Enabled"
        return NodeWireGuard(
            node=name,
            public_key=self.key(name).public_b64,
            listen_port=LISTEN_PORT,
            interface=INTERFACE,
            peers=tuple(peers),
            node_encryption=node_enc,
        )

    def nodes(self) -> list[NodeWireGuard]:
        """Every node's WireGuard device, by node name."""
        return [self.node(n) for n in self.node_names()]

    def status(self, node: str | None = None) -> str:
        """What ``cilium encrypt status`` prints: on ``node``, or on every node in turn."""
        enc = self.cluster.values.encryption
        if not enc.enabled:
            return "Encryption: Disabled\n"
        if not enc.wireguard:
            return "Encryption: IPsec (not modelled by ciliumpy)\n"
        if node is not None:
            return self.node(node).encrypt_status()
        names = self.node_names()
        if not names:
            return "Encryption: Wireguard\nInterface: cilium_wg0\n\tNumber of peers: 0\n"
        return "\n".join(f"Node: {n}\n{self.node(n).encrypt_status()}" for n in names)

    def to_dict(self) -> dict[str, Any]:
        """Every node's device as JSON-ready data (keys base64, no private keys)."""
        return {
            n.node: {
                "interface": n.interface,
                "public-key": n.public_key,
                "listen-port": n.listen_port,
                "node-encryption": n.node_encryption,
                "peers": [
                    {
                        "node": p.node,
                        "public-key": p.public_key,
                        "endpoint": p.endpoint,
                        "allowed-ips": [str(a) for a in p.allowed_ips],
                    }
                    for p in n.peers
                ],
            }
            for n in self.nodes()
        }


_BY_CLUSTER: weakref.WeakKeyDictionary[Any, WireGuard] = weakref.WeakKeyDictionary()


def wireguard(cluster: Cluster) -> WireGuard:
    """The cluster's :class:`WireGuard` (one per cluster, so node keys stay the same)."""
    wg = _BY_CLUSTER.get(cluster)
    if wg is None:
        wg = _BY_CLUSTER[cluster] = WireGuard(cluster)
    return wg


def encrypt_status(cluster: Cluster, node: str | None = None) -> str:
    """``cilium encrypt status`` for ``cluster`` (every node, or ``node``)."""
    return wireguard(cluster).status(node)
