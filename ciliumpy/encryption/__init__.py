"""Transparent encryption between nodes, as Cilium does it with WireGuard.

Cilium's WireGuard mode (Helm ``encryption.enabled=true``, ``encryption.type=wireguard``)
gives every node an X25519 key pair, publishes the public key on the node's ``CiliumNode``
as the annotation ``network.cilium.io/wg-pub-key``, and configures ``cilium_wg0`` (UDP port
51871) with one peer per remote node whose allowed IPs are that node's pod addresses (and
its node addresses with ``encryption.nodeEncryption``).  Pod traffic between nodes then
leaves through the tunnel; traffic that stays on a node never is encrypted.

* :class:`WireGuard` models the keys, peers and ``cilium encrypt status`` of a cluster.
* :func:`transit` says whether a packet between two addresses crosses nodes and is
  encrypted; :meth:`ciliumpy.Cluster.check` puts it on every verdict (``Verdict.transit``)
  when the cluster declares its nodes.
* :class:`ciliumpy.lab.MultiNodeLab` runs it for real: node namespaces, an underlay between
  them and WireGuard tunnels.

The configuration comes from the cluster's Helm values (``Cluster(values=...)``,
``Cluster.from_manifests(..., values="values.yaml")``, see :mod:`ciliumpy._values`).
"""

from __future__ import annotations

from ._transit import Transit, transit
from ._wireguard import (
    INTERFACE,
    LISTEN_PORT,
    PUBKEY_ANNOTATION,
    KeyPair,
    NodeWireGuard,
    Peer,
    WireGuard,
    encrypt_status,
    wireguard,
)

__all__ = [
    "INTERFACE",
    "LISTEN_PORT",
    "PUBKEY_ANNOTATION",
    "KeyPair",
    "NodeWireGuard",
    "Peer",
    "Transit",
    "WireGuard",
    "encrypt_status",
    "transit",
    "wireguard",
]
