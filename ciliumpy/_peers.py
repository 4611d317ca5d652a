"""How ``Cluster.check`` names its peers beyond ``namespace/pod``: workloads and hostNetwork pods.

* A workload ref ``namespace/kind/name`` (``shop/deployment/frontend``, ``shop/deploy/frontend``,
  ``shop/statefulset/db``, ``shop/replicaset/web-5d9f``) means any one of its pods: they share
  the template's labels, hence one identity. The first pod by name is used.
* A pod with ``hostNetwork: true`` is not a Cilium endpoint (the kubelet does not call the CNI
  plugin for it, so Cilium makes no endpoint): no policy selects it and it has no policy of its
  own. Its traffic leaves from its node's address, so another pod sees it as the ``host``
  identity when both run on the same node and as ``remote-node`` otherwise (the node address
  is in the ipcache with the node's identity).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._model import Endpoint, Node
from ._workloads import workload_pods
from .exceptions import PolicyError

__all__ = ["check_port", "host_pod_nodes", "peer_refs"]


def _pod(endpoints: Mapping[str, Endpoint], host_pods: Mapping[str, Endpoint], ref: str) -> str:
    if ref.count("/") == 2 and ":" not in ref:
        return workload_pods({**endpoints, **host_pods}, ref)[0]
    return ref


def _as_node(pod: Endpoint, peer: Endpoint | None, nodes: Mapping[str, Node]) -> str:
    if peer is not None and pod.node is not None and pod.node == peer.node:
        return "host"
    if pod.ips:
        return str(pod.ips[0])
    node = nodes.get(pod.node) if pod.node is not None else None
    if node is not None and node.ips:
        return str(node.ips[0])
    return "host"


def peer_refs(
    endpoints: Mapping[str, Endpoint],
    host_pods: Mapping[str, Endpoint],
    nodes: Mapping[str, Node],
    src: str,
    dst: str,
) -> tuple[str, str]:
    """``src`` and ``dst`` as ``check`` addresses them: a pod ref, an address, ``host`` or ``world``.

    Raises :class:`~ciliumpy.exceptions.UnknownEndpointError` for a workload without pods.
    """
    src, dst = _pod(endpoints, host_pods, src), _pod(endpoints, host_pods, dst)
    src_host, dst_host = host_pods.get(src), host_pods.get(dst)
    if src_host is not None:
        src = _as_node(src_host, endpoints.get(dst), nodes)
    if dst_host is not None:
        dst = _as_node(dst_host, endpoints.get(src), nodes)
    return src, dst


def host_pod_nodes(host_pods: Mapping[str, Endpoint], nodes: Mapping[str, Node]) -> list[Node]:
    """Stand-in nodes for hostNetwork pods' addresses no Node object holds: the ipcache maps
    them to ``remote-node``, as it maps the address of the node the pod runs on."""
    known = {ip for node in nodes.values() for ip in node.ips}
    extra = sorted({ip for pod in host_pods.values() for ip in pod.ips if ip not in known}, key=str)
    return [Node(name=f"host-network-{ip}", ips=(ip,)) for ip in extra]


_PORTLESS = ("ICMP", "ICMPV6")


def check_port(
    endpoints: Mapping[str, Endpoint], host_pods: Mapping[str, Endpoint], dst: str, port: object, protocol: str
) -> int | None:
    """The port number ``check(src, dst, port, protocol)`` asks about.

    A name (``"http"``) is the destination pod's container port of that name *and* protocol,
    as Kubernetes and Cilium resolve named ports (``pkg/types/portmap.go``: a port of another
    protocol does not match). ICMP needs no port (the echo request type is used).
    """
    proto = str(protocol).upper()
    if port is None:
        if proto in _PORTLESS:
            return None
        raise TypeError(
            f"check() needs a port for {protocol}: a number (8080) or a container port name of the destination ('http')"
        )
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise TypeError(f"port must be an int or a port name, not {type(port).__name__}")
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    name = port.lower()
    ref = _pod(endpoints, host_pods, dst) if "/" in dst else dst
    pod = endpoints.get(ref) or host_pods.get(ref)
    if pod is None:
        raise PolicyError(f"a named port needs a pod as destination, not {dst!r}", field="port", value=port)
    matches = [p for p in pod.ports if p.name == name]
    for p in matches:
        if p.protocol == proto:
            return p.port
    other = f" (it is {'/'.join(sorted(p.protocol for p in matches))})" if matches else ""
    raise PolicyError(f"{ref} has no {proto} container port named {name!r}{other}", field="port", value=port)
