"""Checks of the arguments of :class:`~ciliumpy.Cluster`'s methods, before anything changes.

Manifests are checked where they are parsed (``_model``); these are the same rules for what
a caller passes directly: ``add_endpoint("prod/web", labels=..., ips=...)`` gets the API
server's checks of a Pod, and ``check(src, dst, port)`` gets its port range (an ICMP type
of 300 must not reach a backend that packs it into one byte). A wrong Python type is a
``TypeError``; a wrong value a :class:`~ciliumpy.exceptions.PolicyError` naming the argument.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from ._datapath import IPAddress
from ._dns import DNSRecords, check_question
from ._labels import normalize_label_mapping
from ._model import ContainerPort, Endpoint, Namespace, Node, check_ip, one_address_per_family, validate_name
from .exceptions import PolicyError, bounded_repr

__all__ = [
    "address_argument",
    "check_arguments",
    "dns_records_from_arguments",
    "endpoint_from_arguments",
    "namespace_from_arguments",
    "node_from_arguments",
    "split_ref",
]

_ICMP_NAMES = frozenset({"ICMP", "ICMPV4", "ICMPV6"})


def split_ref(ref: Any) -> tuple[str, str]:
    """``"namespace/name"`` split and checked: an RFC 1123 label and an object name."""
    if not isinstance(ref, str):
        raise TypeError(f'an endpoint reference is a "namespace/name" str, not {type(ref).__name__}')
    ns, sep, name = ref.partition("/")
    if not sep or not ns or not name:
        raise PolicyError('endpoint reference must be "namespace/name"', value=ref)
    validate_name(ns, "namespace", label=True)
    validate_name(name, "name")
    return ns, name


def namespace_from_arguments(name: Any, labels: Any) -> Namespace:
    """The :class:`Namespace` that ``Cluster.add_namespace`` adds: an RFC 1123 label name and
    Kubernetes labels."""
    if not isinstance(name, str):
        raise TypeError(f"a namespace name is a str, not {type(name).__name__}")
    validate_name(name, "name", label=True)
    return Namespace(name, normalize_label_mapping(labels, "labels"))


def node_from_arguments(name: Any, labels: Any, ips: Any, reserved: Mapping[IPAddress, str]) -> Node:
    """The :class:`Node` that ``Cluster.add_node`` adds: an object name, Kubernetes labels and
    distinct addresses other than the reserved ones."""
    if not isinstance(name, str):
        raise TypeError(f"a node name is a str, not {type(name).__name__}")
    validate_name(name, "name")
    return Node(
        name=name, labels=normalize_label_mapping(labels, "labels"), ips=_addresses(ips, reserved, per_family=False)
    )


def endpoint_from_arguments(
    ref: Any,
    labels: Any,
    ips: Any,
    ports: Any,
    service_account: Any,
    node: Any,
    reserved: Mapping[IPAddress, str],
) -> Endpoint:
    """The :class:`Endpoint` that ``Cluster.add_endpoint`` adds, with every argument checked.

    ``reserved`` maps addresses no pod may take (the host's, the stand-in for the world) to
    what they are.
    """
    namespace, name = split_ref(ref)
    label_map = normalize_label_mapping(labels, "labels")
    addresses = _addresses(ips, reserved)
    cports = tuple(_container_port(p, f"ports[{i}]") for i, p in enumerate(_iterable(ports, "ports")))
    if not isinstance(service_account, str):
        raise TypeError(f"service_account is a str, not {type(service_account).__name__}")
    if service_account:
        validate_name(service_account, "service_account")
    if node is not None:
        if not isinstance(node, str):
            raise TypeError(f"node is a str or None, not {type(node).__name__}")
        validate_name(node, "node")
    return Endpoint(
        namespace=namespace,
        name=name,
        labels=label_map,
        ips=addresses,
        ports=cports,
        service_account=service_account,
        node=node,
    )


def _iterable(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{what} is a list, not {type(value).__name__}")
    return list(value)


def _addresses(ips: Any, reserved: Mapping[IPAddress, str], *, per_family: bool = True) -> tuple[IPAddress, ...]:
    out: list[IPAddress] = []
    for i, raw in enumerate(_iterable(ips, "ips")):
        field = f"ips[{i}]"
        if isinstance(raw, ipaddress.IPv4Address | ipaddress.IPv6Address):
            if getattr(raw, "scope_id", None):
                raise PolicyError("IPv6 zones are not allowed", field=field, value=str(raw))
            addr = raw
        elif isinstance(raw, str):
            addr = ipaddress.ip_address(check_ip(raw, field))
        else:
            raise TypeError(f"{field} is an address str, not {type(raw).__name__}")
        if addr in out:
            raise PolicyError("Duplicate value", field=field, value=str(addr))
        if addr in reserved:
            raise PolicyError(f"is the {reserved[addr]} address, which no pod may use", field=field, value=str(addr))
        out.append(addr)
    if per_family:
        one_address_per_family([str(a) for a in out], "ips")
    return tuple(out)


def _container_port(item: Any, field: str) -> ContainerPort:
    if isinstance(item, ContainerPort):
        return item
    if not isinstance(item, tuple | list) or not 2 <= len(item) <= 3:
        raise TypeError(f"{field} is a (name, port[, protocol]) tuple or a ContainerPort, not {bounded_repr(item)}")
    pname, num = item[0], item[1]
    proto = item[2] if len(item) > 2 else "TCP"
    if pname is not None and not isinstance(pname, str):
        raise TypeError(f"{field}: the port name is a str or None, not {type(pname).__name__}")
    if isinstance(num, bool) or not isinstance(num, int):
        raise TypeError(f"{field}: the port number is an int, not {type(num).__name__}")
    if not isinstance(proto, str):
        raise TypeError(f"{field}: the protocol is a str, not {type(proto).__name__}")
    try:
        return ContainerPort(pname, num, proto)
    except PolicyError as exc:
        raise exc.located(field=field) from None


def check_arguments(src: Any, dst: Any, port: Any, protocol: Any) -> int | str | None:
    """Check ``Cluster.check``'s arguments; return ``port`` as an int, a port name or ``None``.

    Ports are 0..65535; for ICMP the "port" is the ICMP type, 0..255. A name (``"http"``)
    is left for a Service destination to resolve.
    """
    for what, value in (("src", src), ("dst", dst)):
        if not isinstance(value, str):
            raise TypeError(
                f'{what} is a str ("namespace/pod", an address, "world" or "host"), not {type(value).__name__}'
            )
    if not isinstance(protocol, str):
        raise TypeError(f"protocol is a str, not {type(protocol).__name__}")
    if port is None:
        return None
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    icmp = protocol.upper() in _ICMP_NAMES
    if isinstance(port, str) and not icmp:
        return port
    if isinstance(port, bool) or not isinstance(port, int):
        if isinstance(port, str):
            raise PolicyError("an ICMP type must be a number within 0..255", field="port", value=port)
        raise TypeError(f"port is an int or a port name, not {type(port).__name__}")
    if icmp:
        if not 0 <= port <= 255:
            raise PolicyError("an ICMP type must be within 0..255", field="port", value=port)
    elif not 0 <= port <= 65535:
        raise PolicyError("port must be within 0..65535", field="port", value=port)
    return port


def address_argument(value: Any, field: str) -> IPAddress:
    """An address given as a str or an ``ipaddress`` object."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{field} is an address str, not {type(value).__name__}")
    return ipaddress.ip_address(check_ip(value, field))


def dns_records_from_arguments(records: Any, ttl: Any) -> dict[str, DNSRecords]:
    """``Cluster.add_dns_records``' records by fully qualified, lower-cased name."""
    if not isinstance(records, Mapping):
        raise TypeError(f"records is a mapping of name to addresses, not {type(records).__name__}")
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"ttl is an int, not {type(ttl).__name__}")
    if not 0 <= ttl <= 0x7FFFFFFF:
        raise PolicyError("ttl must be within 0..2147483647", field="ttl", value=ttl)
    out: dict[str, DNSRecords] = {}
    for name, ips in records.items():
        check_question(name, "A")
        addresses = tuple(address_argument(ip, f"{name}[{i}]") for i, ip in enumerate(_iterable(ips, str(name))))
        fqdn = name.strip().lower()
        out[fqdn if fqdn.endswith(".") else fqdn + "."] = DNSRecords(ips=addresses, ttl=ttl)
    return out
