"""Hypothesis strategies for Cilium policies, pods, clusters and flows.

Needs the ``hypothesis`` extra (``pip install 'ciliumpy[hypothesis]'``); this is the only
ciliumpy module that imports Hypothesis. Every strategy is a function with keyword-only
parameters, validates its arguments when called (raising
:class:`hypothesis.errors.InvalidArgument`) and generates values that are valid by
construction: each policy it draws is accepted by :meth:`ciliumpy.Cluster.apply`. Examples
shrink toward empty policies (``ingress: [{}]``), few labels drawn from a small readable
vocabulary, and few rules.

Strategies compose through their hooks: pass a strategy to ``keys=``, ``selectors=``,
``rules=``, ``namespaces=`` … to narrow what is drawn::

    from hypothesis import given, strategies as st
    from ciliumpy import Cluster, strategies as cst

    @given(cst.cilium_network_policies(namespaces=st.just("payments")))
    def test_every_policy_loads(policy):
        Cluster().apply(policy)

Importing this module registers strategies for the public model types with
:func:`hypothesis.strategies.register_type_strategy`, so ``st.from_type(CiliumNetworkPolicy)``
works too.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import attrs
from hypothesis import currently_in_test_context, note, reject
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.strategies import SearchStrategy

from ._cluster import HOST_IP_V4, HOST_IP_V6, WORLD_IP_V4, WORLD_IP_V6, Cluster
from ._datapath import Direction, Packet, Protocol, TCPFlags
from ._fqdn import FQDNSelector
from ._identity import is_identity_relevant
from ._l7 import DNSRule, HTTPRule, KafkaRule, L7Rules
from ._labels import NAMESPACE_KEY, Label, LabelSet
from ._model import (
    ENTITIES,
    ICMP_TYPES_V4,
    ICMP_TYPES_V6,
    CIDRRule,
    CiliumCIDRGroup,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    ContainerPort,
    Endpoint,
    ICMPField,
    ICMPRule,
    IPBlock,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
    PeerRule,
    PortProtocol,
    PortRule,
    Rule,
    validate_name,
)
from ._selectors import EndpointSelector, Operator, Requirement
from .backends import BUILTIN_BACKENDS
from .exceptions import PolicyError
from .testing import ClusterSpec, Flow
from .testing import _addresses as _peer_addresses

__all__ = [
    "DEFAULT_LABEL_KEYS",
    "DEFAULT_LABEL_VALUES",
    "DEFAULT_NAMESPACES",
    "NAMED_PORTS",
    "cidr_groups",
    "cidr_rules",
    "cilium_network_policies",
    "cluster_specs",
    "clusters",
    "clusterwide_policies",
    "dns_rules",
    "endpoints",
    "flows",
    "fqdn_selectors",
    "http_rules",
    "icmp_rules",
    "kafka_rules",
    "label_keys",
    "label_selectors",
    "label_sets",
    "label_values",
    "namespace_names",
    "namespaces",
    "network_policies",
    "packets",
    "peer_rules",
    "policy_rules",
    "port_protocols",
    "port_rules",
]

T = TypeVar("T")

#: Label keys drawn first (and shrunk toward, in this order).
DEFAULT_LABEL_KEYS: tuple[str, ...] = ("app", "team", "tier", "env")
#: Label values drawn first.
DEFAULT_LABEL_VALUES: tuple[str, ...] = ("web", "db", "api", "x")
#: Namespace names drawn first.
DEFAULT_NAMESPACES: tuple[str, ...] = ("default", "prod", "dev", "payments")
#: Named container ports and the number each name stands for. Drawing names with fixed
#: numbers keeps egress named ports resolvable cluster-wide (one number per name).
NAMED_PORTS: Mapping[str, tuple[int, str]] = {
    "http": (8080, "TCP"),
    "grpc": (9090, "TCP"),
    "metrics": (9100, "TCP"),
    "dns": (53, "UDP"),
}
_COMMON_PORTS = ("80", "0", "443", "5432", "8080", "53")
# L7 ports. Since Cilium 1.18 HTTP rules for one peer and Kafka rules for another may share
# a port (the parser belongs to each peer selector); two parsers for one selector and port
# are a resolution error, which generated policies rarely produce.
_HTTP_PORTS = ("80", "8080", "443")
_KAFKA_TOPICS = ("orders", "audit")
_GROUP_NAMES = ("office", "lab", "partners")
_HTTP_NAMED = ("http", "grpc")
_HTTP_METHODS = ("GET", "POST", "GET|HEAD", ".*", "PUT|DELETE")
_HTTP_PATHS = ("/", "/api/.*", "/health", "/v1/[a-z]+", "/public.*")
_HTTP_HOSTS = ("api\\.example\\.com", ".*\\.example\\.com")
_HTTP_HEADERS = ("X-Token", "X-Env prod")
_DNS_NAMES = ("example.com", "api.example.com", "cilium.io")
_DNS_PATTERNS = ("*.example.com", "*", "api.*.com", "*.cilium.io")
_CIDRS_V4 = ("10.0.0.0/8", "198.51.100.0/24", "192.168.0.0/16", "0.0.0.0/0", "203.0.113.7/32")
_CIDRS_V6 = ("2001:db8::/32", "::/0", "fd00::/8")
_ENTITY_ORDER = (
    "world",
    "cluster",
    "host",
    "all",
    *(e for e in ENTITIES if e not in ("world", "cluster", "host", "all")),
)
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_ALNUM = _LOWER + "0123456789"
_PROTOCOLS_L4 = ("TCP", "UDP", "SCTP", "ANY")
_FLOW_PROTOCOLS = ("TCP", "UDP", "SCTP", "ICMP")
_EXPLICIT_V4 = ipaddress.ip_network("10.244.100.0/24")
_EXPLICIT_V6 = ipaddress.ip_network("fd00:10:244:100::/64")
_FAMILIES = ("auto", "ipv4", "ipv6", "dual")
_BOOL = st.booleans()
_OPTIONAL_BOOL = st.none() | st.booleans()


# --------------------------------------------------------------------------------------------
# argument validation


def _check_strategy(value: object, name: str) -> None:
    if not isinstance(value, SearchStrategy):
        raise InvalidArgument(f"{name}={value!r} must be a Hypothesis strategy")


def _opt_strategy(
    value: SearchStrategy[T] | None, name: str, default: Callable[[], SearchStrategy[T]]
) -> SearchStrategy[T]:
    if value is None:
        return default()
    _check_strategy(value, name)
    return value


def _check_size(value: object, name: str, *, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name}={value!r} must be an integer")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"within {low}..{high}"
        raise InvalidArgument(f"{name}={value} must be {bound}")
    return value


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be True or False")
    return value


def _check_choices(values: object, name: str, allowed: Collection[str]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Collection):
        raise InvalidArgument(f"{name}={values!r} must be a collection of strings")
    out = tuple(values)
    if not out:
        raise InvalidArgument(f"{name} must not be empty")
    for v in out:
        if v not in allowed:
            raise InvalidArgument(f"{name}: {v!r} is not one of {', '.join(map(str, allowed))}")
    return out


def _check_vocabulary(values: object, name: str, check: Callable[[str], None]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Collection):
        raise InvalidArgument(f"{name}={values!r} must be a collection of strings")
    out = tuple(values)
    for v in out:
        if not isinstance(v, str):
            raise InvalidArgument(f"{name}: {v!r} is not a string")
        try:
            check(v)
        except PolicyError as exc:
            raise InvalidArgument(f"{name}: {exc}") from None
    return out


def _check_direction(value: object, name: str) -> Direction | None:
    if value is None:
        return None
    if isinstance(value, Direction):
        return value
    if isinstance(value, str) and value.lower() in ("ingress", "egress"):
        return Direction.INGRESS if value.lower() == "ingress" else Direction.EGRESS
    raise InvalidArgument(f"{name}={value!r} must be 'ingress', 'egress', a Direction or None")


class _Named:
    """A strategy with a short name to print instead of its repr: the repr of a nested strategy
    tree runs to hundreds of kilobytes (and Hypothesis warns about it) whenever it is shown."""

    def __init__(self, name: str, strategy: SearchStrategy[Any]) -> None:
        self.name = name
        self.strategy = strategy

    def __repr__(self) -> str:
        return self.name


@st.composite
def _drawn(draw: st.DrawFn, named: _Named) -> Any:
    return draw(named.strategy)


def _short_repr(strategy: SearchStrategy[T], name: str) -> SearchStrategy[T]:
    out: SearchStrategy[T] = _drawn(_Named(name, strategy))
    return out


@functools.cache
def _words(alphabet_head: str, alphabet_tail: str, max_size: int) -> SearchStrategy[str]:
    return st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(alphabet_head),
        st.text(alphabet_tail, max_size=max_size),
    )


@functools.cache
def _dns_label(max_size: int = 8) -> SearchStrategy[str]:
    """RFC 1123 labels such as ``a``, ``ab1``, ``a-b``; shrink toward ``a``."""
    return _words(_LOWER, _ALNUM, max_size - 1) | st.builds(
        lambda a, b: f"{a}-{b}", _words(_LOWER, _ALNUM, 3), _words(_ALNUM, _ALNUM, 3)
    )


# --------------------------------------------------------------------------------------------
# labels and selectors


def _valid_key(key: str) -> None:
    EndpointSelector.from_manifest({"matchLabels": {key: "v"}}, "key")


def _valid_value(value: str) -> None:
    EndpointSelector.from_manifest({"matchLabels": {"k": value}}, "value")


def _alnum_end(text: str) -> str:
    return text.rstrip("-._")


def _relevant_key(key: str) -> bool:
    return is_identity_relevant(key) and not key.startswith("io.")


def label_keys(
    *,
    vocabulary: Collection[str] = DEFAULT_LABEL_KEYS,
    generated: bool = True,
    prefixed: bool = False,
) -> SearchStrategy[str]:
    """Pod label keys: first from ``vocabulary``, then (if ``generated``) new names.

    Generated keys are identity-relevant (Cilium's label filter keeps them) and never collide
    with the keys Cilium derives (``io.kubernetes.*``, ``io.cilium.*``). With ``prefixed``
    some keys get a DNS prefix (``example.com/app``).

    >>> label_keys(vocabulary=["app"], generated=False).example()
    'app'
    """
    vocab = _check_vocabulary(vocabulary, "vocabulary", _valid_key)
    _check_bool(generated, "generated")
    _check_bool(prefixed, "prefixed")
    options: list[SearchStrategy[str]] = []
    if vocab:
        options.append(st.sampled_from(vocab))
    if generated:
        options.append(_words(_LOWER, _ALNUM + "-._", 9).map(_alnum_end).filter(_relevant_key))
    if not options:
        raise InvalidArgument("label_keys needs a non-empty vocabulary or generated=True")
    keys = st.one_of(options)
    if prefixed:
        prefixes = st.sampled_from(("example.com", "acme.io"))
        keys = keys | st.builds(lambda p, k: f"{p}/{k}", prefixes, keys)
    return keys


def label_values(
    *,
    vocabulary: Collection[str] = DEFAULT_LABEL_VALUES,
    generated: bool = True,
    empty: bool = True,
) -> SearchStrategy[str]:
    """Label values: ``vocabulary`` first, then generated ones (and ``""`` if ``empty``).

    >>> label_values(vocabulary=["web"], generated=False, empty=False).example()
    'web'
    """
    vocab = _check_vocabulary(vocabulary, "vocabulary", _valid_value)
    _check_bool(generated, "generated")
    _check_bool(empty, "empty")
    options: list[SearchStrategy[str]] = []
    if vocab:
        options.append(st.sampled_from(vocab))
    if generated:
        options.append(_words(_ALNUM + _LOWER.upper(), _ALNUM + "-_.", 9).map(_alnum_end))
    if empty:
        options.append(st.just(""))
    if not options:
        raise InvalidArgument("label_values needs a vocabulary, generated=True or empty=True")
    return st.one_of(options)


def _first(pair: tuple[str, str]) -> str:
    return pair[0]


def _label_maps(
    keys: SearchStrategy[str], values: SearchStrategy[str], min_size: int, max_size: int
) -> SearchStrategy[dict[str, str]]:
    # A list of (key, value) pairs rather than st.dictionaries: with keys from sampled_from,
    # st.dictionaries draws keys as indices into the keys not yet used, so dropping one label
    # renames the others and the shrinker gets stuck at {app: web, team: x} instead of {team: x}.
    pairs = st.lists(st.tuples(keys, values), min_size=min_size, max_size=max_size, unique_by=_first)
    return pairs.map(dict)


def label_sets(
    *,
    keys: SearchStrategy[str] | None = None,
    values: SearchStrategy[str] | None = None,
    min_size: int = 0,
    max_size: int = 3,
) -> SearchStrategy[dict[str, str]]:
    """A pod's or namespace's ``labels`` mapping; shrinks toward ``{}``.

    >>> label_sets(max_size=0).example()
    {}
    """
    keys = _opt_strategy(keys, "keys", label_keys)
    values = _opt_strategy(values, "values", label_values)
    _check_size(min_size, "min_size")
    _check_size(max_size, "max_size", low=min_size)
    return _label_maps(keys, values, min_size, max_size)


_OPERATORS = {op.value: op for op in Operator}


def _sorted_values(values: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


@st.composite
def _selector(
    draw: st.DrawFn,
    labels: SearchStrategy[dict[str, str]],
    expressions: SearchStrategy[list[Requirement]],
    namespace: SearchStrategy[str] | None,
) -> EndpointSelector:
    match = dict(draw(labels))
    if namespace is not None and draw(_BOOL):
        match[f"k8s:{NAMESPACE_KEY}"] = draw(namespace)
    return EndpointSelector(tuple(match.items()), tuple(draw(expressions)))


def label_selectors(
    *,
    keys: SearchStrategy[str] | None = None,
    values: SearchStrategy[str] | None = None,
    max_labels: int = 2,
    max_expressions: int = 1,
    operators: Collection[str] = ("In", "NotIn", "Exists", "DoesNotExist"),
    namespaces: SearchStrategy[str] | None = None,
) -> SearchStrategy[EndpointSelector]:
    """:class:`~ciliumpy.EndpointSelector` with ``matchLabels`` and ``matchExpressions``.

    Shrinks toward ``{}`` (which selects everything in scope). When ``namespaces`` is given,
    some selectors also pin ``k8s:io.kubernetes.pod.namespace`` to a drawn namespace, which
    makes CNP peers cross-namespace.

    >>> label_selectors(max_labels=0, max_expressions=0).example().to_manifest()
    {}
    """
    keys = _opt_strategy(keys, "keys", label_keys)
    values = _opt_strategy(values, "values", lambda: label_values(empty=False))
    _check_size(max_labels, "max_labels")
    _check_size(max_expressions, "max_expressions")
    ops = _check_choices(operators, "operators", tuple(_OPERATORS))
    if namespaces is not None:
        _check_strategy(namespaces, "namespaces")
    value_sets = st.lists(values, min_size=1, max_size=2).map(_sorted_values)
    requirement_options = []
    for name in ops:
        op = _OPERATORS[name]
        vals = value_sets if op in (Operator.IN, Operator.NOT_IN) else st.just(())
        requirement_options.append(st.builds(Requirement, st.just("any"), keys, st.just(op), vals))
    expressions = st.lists(st.one_of(requirement_options), max_size=max_expressions)
    return _short_repr(
        _selector(_label_maps(keys, values, 0, max_labels), expressions, namespaces), "label_selectors()"
    )


# --------------------------------------------------------------------------------------------
# namespaces and pods


def _valid_namespace(name: str) -> None:
    validate_name(name, "name", label=True)


def namespace_names(*, vocabulary: Collection[str] = DEFAULT_NAMESPACES, generated: bool = True) -> SearchStrategy[str]:
    """Namespace names (RFC 1123 labels), ``vocabulary`` first.

    >>> namespace_names(generated=False).example() in DEFAULT_NAMESPACES
    True
    """
    vocab = _check_vocabulary(vocabulary, "vocabulary", _valid_namespace)
    _check_bool(generated, "generated")
    options: list[SearchStrategy[str]] = []
    if vocab:
        options.append(st.sampled_from(vocab))
    if generated:
        options.append(_dns_label())
    if not options:
        raise InvalidArgument("namespace_names needs a vocabulary or generated=True")
    return st.one_of(options)


def namespaces(
    *,
    names: SearchStrategy[str] | None = None,
    labels: SearchStrategy[Mapping[str, str]] | None = None,
) -> SearchStrategy[Namespace]:
    """:class:`~ciliumpy.Namespace` objects with a few labels.

    >>> namespaces(names=st.just("prod"), labels=st.just({})).example()
    Namespace(name='prod', labels={})
    """
    names = _opt_strategy(names, "names", namespace_names)
    labels = _opt_strategy(labels, "labels", lambda: label_sets(max_size=2))
    return st.builds(lambda n, lab: Namespace(n, dict(lab)), names, labels)


def _named_container_port(name: str) -> ContainerPort:
    number, proto = NAMED_PORTS[name]
    return ContainerPort(name, number, proto)


def _container_ports(max_ports: int) -> SearchStrategy[tuple[ContainerPort, ...]]:
    named = st.sampled_from(tuple(NAMED_PORTS)).map(_named_container_port)
    unnamed = st.builds(
        ContainerPort,
        st.none(),
        st.sampled_from((80, 5432, 443)) | st.integers(1, 65535),
        st.sampled_from(("TCP", "UDP", "SCTP")),
    )
    return st.lists(named | unnamed, max_size=max_ports, unique_by=lambda c: (c.port, c.protocol)).map(tuple)


_V4_ADDRESSES = st.ip_addresses(network=_EXPLICIT_V4)
_V6_ADDRESSES = st.ip_addresses(network=_EXPLICIT_V6)


@st.composite
def _addresses(draw: st.DrawFn, families: SearchStrategy[str]) -> tuple[str, ...]:
    family = draw(families)
    if family == "auto":
        return ()
    v4, v6 = str(draw(_V4_ADDRESSES)), str(draw(_V6_ADDRESSES))
    return {"ipv4": (v4,), "ipv6": (v6,), "dual": (v4, v6)}[family]


def endpoints(
    *,
    namespaces: SearchStrategy[str] | None = None,
    names: SearchStrategy[str] | None = None,
    labels: SearchStrategy[Mapping[str, str]] | None = None,
    service_accounts: SearchStrategy[str] | None = None,
    ip_families: Collection[str] = _FAMILIES,
    max_ports: int = 2,
) -> SearchStrategy[Endpoint]:
    """Pods (:class:`~ciliumpy.Endpoint`) with labels, addresses and named container ports.

    ``ip_families`` chooses among ``"auto"`` (no address: the cluster assigns an IPv4 one),
    ``"ipv4"``, ``"ipv6"`` and ``"dual"``. Container ports are named from
    :data:`NAMED_PORTS` (a name always has the same number) or unnamed.

    >>> ep = endpoints(namespaces=st.just("prod"), ip_families=["ipv6"]).example()
    >>> ep.namespace, ep.ips[0].version
    ('prod', 6)
    """
    namespaces = _opt_strategy(namespaces, "namespaces", namespace_names)
    names = _opt_strategy(names, "names", _dns_label)
    labels = _opt_strategy(labels, "labels", label_sets)
    service_accounts = _opt_strategy(
        service_accounts, "service_accounts", lambda: st.sampled_from(("default", "app")) | _dns_label()
    )
    families = _check_choices(ip_families, "ip_families", _FAMILIES)
    _check_size(max_ports, "max_ports")
    return _short_repr(
        st.builds(
            Endpoint,
            namespace=namespaces,
            name=names,
            labels=labels,
            service_account=service_accounts,
            ips=_addresses(st.sampled_from(families)),
            ports=_container_ports(max_ports),
        ),
        "endpoints()",
    )


# --------------------------------------------------------------------------------------------
# L4 and L7 pieces


def _port_with_range(port: str, ranged: bool, extra: int, protocol: str) -> PortProtocol:
    end = 0
    if ranged and port.isdigit() and int(port) > 0:
        end = min(int(port) + extra, 65535)
    return PortProtocol(port, end, protocol)


def port_protocols(
    *,
    protocols: Collection[str] = _PROTOCOLS_L4,
    named_ports: Collection[str] = tuple(NAMED_PORTS),
    ranges: bool = True,
) -> SearchStrategy[PortProtocol]:
    """One ``toPorts[].ports[]`` item: a number (``"0"`` = all), a name, or a range.

    >>> port_protocols(protocols=["TCP"], named_ports=[], ranges=False).example().protocol
    'TCP'
    """
    protos = _check_choices(protocols, "protocols", _PROTOCOLS_L4)
    named = tuple(named_ports)
    for n in named:
        try:
            PortProtocol.from_manifest({"port": n}, "port")
        except PolicyError as exc:
            raise InvalidArgument(f"named_ports: {exc}") from None
    _check_bool(ranges, "ranges")
    options: list[SearchStrategy[str]] = [st.sampled_from(_COMMON_PORTS), st.integers(0, 65535).map(str)]
    if named:
        options.append(st.sampled_from(named))
    return st.builds(
        _port_with_range,
        st.one_of(options),
        st.booleans() if ranges else st.just(False),
        st.integers(0, 300),
        st.sampled_from(protos),
    )


def http_rules(*, headers: bool = True) -> SearchStrategy[HTTPRule]:
    """``rules.http`` entries with RE2-safe regexes; shrink toward ``{}`` (allow all).

    >>> set(http_rules().example().to_manifest()) <= {"method", "path", "host", "headers"}
    True
    """
    _check_bool(headers, "headers")
    literal_path = st.lists(_words(_LOWER, _LOWER, 5), min_size=1, max_size=2).map(lambda p: "/" + "/".join(p))
    paths = st.none() | st.sampled_from(_HTTP_PATHS) | literal_path | literal_path.map(lambda p: p + "/.*")
    return st.builds(
        HTTPRule,
        method=st.none() | st.sampled_from(_HTTP_METHODS),
        path=paths,
        host=st.none() | st.sampled_from(_HTTP_HOSTS),
        headers=st.lists(st.sampled_from(_HTTP_HEADERS), unique=True, max_size=1 if headers else 0).map(tuple),
    )


@functools.cache
def _dns_names() -> SearchStrategy[str]:
    return st.sampled_from(_DNS_NAMES) | st.lists(_dns_label(6), min_size=2, max_size=3).map(".".join)


@functools.cache
def _dns_patterns() -> SearchStrategy[str]:
    return st.sampled_from(_DNS_PATTERNS) | _dns_names().map(lambda n: "*." + n.split(".", 1)[1])


def dns_rules() -> SearchStrategy[DNSRule]:
    """``rules.dns`` entries: exactly one of ``matchName`` or ``matchPattern`` (the CRD's oneOf).

    >>> r = dns_rules().example(); (r.match_name is None) != (r.match_pattern is None)
    True
    """
    return st.one_of(
        st.builds(DNSRule, match_name=_dns_names()),
        st.builds(DNSRule, match_pattern=_dns_patterns()),
    )


def kafka_rules() -> SearchStrategy[KafkaRule]:
    """``rules.kafka`` entries: a role or an API key, optionally a topic; shrink toward ``{}``.

    >>> r = kafka_rules().example(); not (r.role and r.api_key)
    True
    """
    topic = st.none() | st.sampled_from(_KAFKA_TOPICS)
    return st.one_of(
        st.builds(KafkaRule, topic=topic),
        st.builds(KafkaRule, role=st.sampled_from(("produce", "consume")), topic=topic),
        st.builds(KafkaRule, api_key=st.sampled_from(("produce", "fetch", "metadata")), topic=topic),
    )


def fqdn_selectors() -> SearchStrategy[FQDNSelector]:
    """``toFQDNs`` entries: exactly one of ``matchName`` or ``matchPattern``.

    >>> s = fqdn_selectors().example(); (s.match_name is None) != (s.match_pattern is None)
    True
    """
    return st.builds(FQDNSelector, match_name=_dns_names()) | st.builds(FQDNSelector, match_pattern=_dns_patterns())


def _icmp_types(family: str) -> SearchStrategy[ICMPField]:
    table = ICMP_TYPES_V4 if family == "IPv4" else ICMP_TYPES_V6
    echo = 8 if family == "IPv4" else 128
    types: SearchStrategy[int | str] = st.just(echo) | st.sampled_from(sorted(table)) | st.integers(0, 255)
    return st.builds(ICMPField, st.just(family), types)


def icmp_rules(*, families: Collection[str] = ("IPv4", "IPv6"), max_fields: int = 2) -> SearchStrategy[ICMPRule]:
    """``icmps`` items: ICMP(v6) types by number or CamelCase name.

    >>> icmp_rules(families=["IPv4"]).example().fields[0].family
    'IPv4'
    """
    fams = _check_choices(families, "families", ("IPv4", "IPv6"))
    _check_size(max_fields, "max_fields", low=1, high=40)
    fields = st.one_of([_icmp_types(f) for f in fams])
    return st.lists(fields, min_size=1, max_size=max_fields, unique=True).map(lambda fs: ICMPRule(tuple(fs)))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network_from(addr: Any, prefix: int) -> Network:
    return ipaddress.ip_network(f"{addr}/{min(prefix, addr.max_prefixlen)}", strict=False)


@functools.cache
def _networks(versions: tuple[int, ...]) -> SearchStrategy[Network]:
    options: list[SearchStrategy[Network]] = []
    for v in versions:
        common = _CIDRS_V4 if v == 4 else _CIDRS_V6
        addresses = st.ip_addresses(v=4) if v == 4 else st.ip_addresses(v=6)
        options.append(st.sampled_from(common).map(ipaddress.ip_network))
        options.append(st.builds(_network_from, addresses, st.integers(0, 32 if v == 4 else 128)))
    return st.one_of(options)


def _subnet(net: Network, extra: int, index: int) -> Network:
    bits = net.max_prefixlen
    new = min(net.prefixlen + extra, bits)
    index &= (1 << (new - net.prefixlen)) - 1
    base = int(net.network_address) + (index << (bits - new))
    return ipaddress.ip_network(f"{type(net.network_address)(base)}/{new}")


_SUBNET_STEPS = st.tuples(st.integers(1, 8), st.integers(0, 255))


@st.composite
def _cidr_rule(
    draw: st.DrawFn, networks: SearchStrategy[Network], steps: SearchStrategy[list[tuple[int, int]]]
) -> CIDRRule:
    net = draw(networks)
    excepts: list[str] = []
    if net.prefixlen < net.max_prefixlen:
        excepts = list(dict.fromkeys(str(_subnet(net, e, i)) for e, i in draw(steps)))
    return CIDRRule(cidr=str(net), except_=tuple(excepts))


@st.composite
def _group_cidr_rule(
    draw: st.DrawFn, groups: tuple[CiliumCIDRGroup, ...], steps: SearchStrategy[list[tuple[int, int]]]
) -> CIDRRule:
    group = draw(st.sampled_from(groups))
    label_items = sorted(group.labels.items())
    by_label = draw(_BOOL) if label_items else False
    if by_label:
        key, value = draw(st.sampled_from(label_items))
        rule = CIDRRule(cidr_group_selector=EndpointSelector.from_manifest({"matchLabels": {key: value}}, "s"))
    else:
        # Sometimes a name no group has: the reference then selects nothing (until it exists).
        rule = CIDRRule(cidr_group_ref=draw(st.just(group.name) | st.sampled_from(_GROUP_NAMES)))
    nets = [n for n in group.external_cidrs if n.prefixlen < n.max_prefixlen]
    if nets:
        net = draw(st.sampled_from(nets))
        excepts = list(dict.fromkeys(str(_subnet(net, e, i)) for e, i in draw(steps)))
        rule = attrs.evolve(rule, except_=tuple(excepts))
    return rule


def cidr_rules(
    *, ip_versions: Collection[int] = (4, 6), max_excepts: int = 2, groups: Collection[CiliumCIDRGroup] = ()
) -> SearchStrategy[CIDRRule]:
    """``toCIDRSet``/``fromCIDRSet`` items: a prefix with ``except`` holes inside it, or with
    ``groups``, also a ``cidrGroupRef`` (a group's name, or one no group has) or a
    ``cidrGroupSelector`` (one of a group's labels), with holes inside one of its CIDRs.

    >>> r = cidr_rules(ip_versions=[4]).example()
    >>> all(ipaddress.ip_network(e).subnet_of(ipaddress.ip_network(r.cidr)) for e in r.except_)
    True
    """
    versions = tuple(ip_versions)
    if not versions or any(v not in (4, 6) for v in versions):
        raise InvalidArgument(f"ip_versions={ip_versions!r} must hold 4 and/or 6")
    _check_size(max_excepts, "max_excepts")
    gs = tuple(groups)
    if any(not isinstance(g, CiliumCIDRGroup) for g in gs):
        raise InvalidArgument(f"groups={groups!r} must hold CiliumCIDRGroup objects")
    steps = st.lists(_SUBNET_STEPS, max_size=max_excepts)
    plain = _cidr_rule(_networks(versions), steps)
    return plain | _group_cidr_rule(gs, steps) if gs else plain


def _valid_group_name(name: str) -> None:
    validate_name(name, "names")


def cidr_groups(
    *, names: Collection[str] = _GROUP_NAMES, ip_versions: Collection[int] = (4, 6), max_cidrs: int = 2
) -> SearchStrategy[CiliumCIDRGroup]:
    """``CiliumCIDRGroup`` objects: a name from ``names``, a label or two from the default
    vocabulary and up to ``max_cidrs`` prefixes (never ``/0``).

    >>> g = cidr_groups(names=["office"]).example(); g.name
    'office'
    """
    ns = _check_vocabulary(names, "names", _valid_group_name)
    versions = tuple(ip_versions)
    if not versions or any(v not in (4, 6) for v in versions):
        raise InvalidArgument(f"ip_versions={ip_versions!r} must hold 4 and/or 6")
    _check_size(max_cidrs, "max_cidrs", low=1)
    nets = _networks(versions).filter(lambda n: n.prefixlen > 0)
    return st.builds(
        CiliumCIDRGroup,
        name=st.sampled_from(ns),
        labels=label_sets(max_size=2),
        external_cidrs=st.lists(nets, min_size=1, max_size=max_cidrs, unique=True).map(tuple),
    )


@functools.cache
def _http_ports(max_ports: int) -> SearchStrategy[list[PortProtocol]]:
    port = st.sampled_from(_HTTP_PORTS) | st.sampled_from(_HTTP_NAMED) | st.integers(1024, 65000).map(str)
    one = st.builds(_port_with_range, port, st.booleans(), st.integers(0, 300), st.just("TCP"))
    return st.lists(one, min_size=1, max_size=max_ports, unique=True)


def _l7_port_rule(ports: list[PortProtocol], rules: L7Rules) -> PortRule:
    return PortRule(tuple(ports), rules)


def port_rules(
    *,
    direction: str | Direction = "ingress",
    deny: bool = False,
    l7: bool = True,
    ports: SearchStrategy[PortProtocol] | None = None,
    max_ports: int = 2,
) -> SearchStrategy[PortRule]:
    """``toPorts`` items: ports alone, or (allow rules only) with HTTP, Kafka or, on egress,
    DNS rules.

    L7 ports obey Cilium's checks: HTTP and Kafka only on explicit TCP non-zero ports, DNS
    on port 53 without ranges and never on ingress. HTTP and Kafka rules share ports, so
    peers with different parsers on one port are drawn (valid since Cilium 1.18).

    >>> port_rules(deny=True).example().rules is None
    True
    """
    d = _check_direction(direction, "direction")
    if d is None:
        raise InvalidArgument("direction must be 'ingress' or 'egress'")
    _check_bool(deny, "deny")
    _check_bool(l7, "l7")
    ports = _opt_strategy(ports, "ports", port_protocols)
    _check_size(max_ports, "max_ports", low=1, high=40)
    plain = st.lists(ports, min_size=1, max_size=max_ports, unique=True).map(
        lambda pps: PortRule(tuple(pps), deny_form=deny)
    )
    options = [plain]
    if l7 and not deny:
        http = st.lists(http_rules(), max_size=2, unique=True).map(lambda rs: L7Rules(http=tuple(rs)))
        options.append(st.builds(_l7_port_rule, _http_ports(max_ports), http))
        kafka = st.lists(kafka_rules(), min_size=1, max_size=2, unique=True).map(lambda rs: L7Rules(kafka=tuple(rs)))
        options.append(st.builds(_l7_port_rule, _http_ports(max_ports), kafka))
        if d == Direction.EGRESS:
            dns_ports = st.sampled_from(("UDP", "ANY")).map(lambda p: [PortProtocol("53", 0, p)])
            dns = st.lists(dns_rules(), min_size=1, max_size=2, unique=True).map(lambda rs: L7Rules(dns=tuple(rs)))
            options.append(st.builds(_l7_port_rule, dns_ports, dns))
    return _short_repr(st.one_of(options), "port_rules()")


# --------------------------------------------------------------------------------------------
# rules


@attrs.frozen
class _PeerParts:
    """The sub-strategies one peer-rule strategy draws from (built once, not per draw)."""

    kinds: Mapping[tuple[Direction, bool], SearchStrategy[str]]
    peers: Mapping[str, SearchStrategy[Any]]
    layer4: SearchStrategy[str]
    to_ports: Mapping[tuple[Direction, bool], SearchStrategy[list[PortRule]]]
    icmps: SearchStrategy[list[ICMPRule]]
    authentication: SearchStrategy[str | None] | None


@st.composite
def _peer_rule(draw: st.DrawFn, direction: Direction | None, deny: bool | None, parts: _PeerParts) -> PeerRule:
    d = direction if direction is not None else draw(st.sampled_from(tuple(Direction)))
    dn = deny if deny is not None else draw(_BOOL)
    kind = draw(parts.kinds[(d, dn)])
    kw: dict[str, Any] = {}
    if kind != "none":
        kw[kind] = tuple(draw(parts.peers[kind]))
    l4 = draw(parts.layer4)
    if l4 == "ports":
        kw["to_ports"] = tuple(draw(parts.to_ports[(d, dn)]))
    elif l4 == "icmps":
        kw["icmps"] = tuple(draw(parts.icmps))
    if parts.authentication is not None and not dn:
        kw["authentication"] = draw(parts.authentication)
    return PeerRule(direction=d, deny=dn, **kw)


def peer_rules(
    *,
    direction: str | Direction | None = None,
    deny: bool | None = False,
    selectors: SearchStrategy[EndpointSelector] | None = None,
    entities: Collection[str] = _ENTITY_ORDER,
    cidrs: bool = True,
    fqdns: bool = True,
    icmps: bool = True,
    l7: bool = True,
    authentication: bool = False,
    max_peers: int = 2,
    cidr_groups: Collection[CiliumCIDRGroup] = (),
) -> SearchStrategy[PeerRule]:
    """One element of ``ingress``/``egress`` (or ``ingressDeny``/``egressDeny`` when ``deny``).

    One peer kind per element (endpoints, entities, CIDRs, CIDR sets, or on egress allow
    FQDNs), optionally restricted by ``toPorts`` or ``icmps``. ``direction`` and ``deny``
    ``None`` draw both. ``authentication`` lets allow rules require mutual authentication.
    With ``cidr_groups``, CIDR sets also reference those groups (:func:`cidr_rules`).
    Shrinks toward ``{}``, which selects nothing.

    >>> r = peer_rules(direction="egress", deny=True).example()
    >>> r.deny, r.fqdns
    (True, None)
    """
    d = _check_direction(direction, "direction")
    if deny is not None:
        _check_bool(deny, "deny")
    selectors = _opt_strategy(selectors, "selectors", label_selectors)
    ents = tuple(entities)
    for e in ents:
        if e not in ENTITIES:
            raise InvalidArgument(f"entities: {e!r} is not one of {', '.join(ENTITIES)}")
    for flag, name in ((cidrs, "cidrs"), (fqdns, "fqdns"), (icmps, "icmps"), (l7, "l7")):
        _check_bool(flag, name)
    _check_bool(authentication, "authentication")
    _check_size(max_peers, "max_peers")
    peers: dict[str, SearchStrategy[Any]] = {"endpoints": st.lists(selectors, max_size=max_peers)}
    if ents:
        peers["entities"] = st.lists(st.sampled_from(ents), max_size=max_peers, unique=True)
    if cidrs:
        peers["cidr"] = st.lists(_networks((4, 6)).map(str), max_size=max_peers, unique=True)
        peers["cidr_set"] = st.lists(cidr_rules(groups=cidr_groups), max_size=max_peers)
    if fqdns:
        peers["fqdns"] = st.lists(fqdn_selectors(), max_size=max_peers, unique=True)
    kinds = {}
    for dd in Direction:
        for dn in (False, True):
            names = ["none", *(k for k in peers if k != "fqdns" or (dd == Direction.EGRESS and not dn))]
            kinds[(dd, dn)] = st.sampled_from(names)
    parts = _PeerParts(
        kinds=kinds,
        peers=peers,
        layer4=st.sampled_from(("none", "ports", "icmps") if icmps else ("none", "ports")),
        to_ports={
            (dd, dn): st.lists(port_rules(direction=dd, deny=dn, l7=l7), min_size=1, max_size=2)
            for dd in Direction
            for dn in (False, True)
        },
        icmps=st.lists(icmp_rules(), min_size=1, max_size=2),
        authentication=st.sampled_from((None, "required")) if authentication else None,
    )
    return _short_repr(_peer_rule(d, deny, parts), "peer_rules()")


_SECTIONS = (
    ("ingress", Direction.INGRESS, False),
    ("egress", Direction.EGRESS, False),
    ("ingress_deny", Direction.INGRESS, True),
    ("egress_deny", Direction.EGRESS, True),
)


@st.composite
def _rule(
    draw: st.DrawFn,
    subjects: SearchStrategy[EndpointSelector],
    sections: tuple[tuple[str, Direction, bool, SearchStrategy[list[PeerRule]]], ...],
    default_deny: bool,
    metadata: SearchStrategy[dict[str, Any]] | None,
) -> Rule:
    kw: dict[str, Any] = {"endpoint_selector": draw(subjects)}
    for attr, _, _, items in sections:
        if draw(_BOOL):
            kw[attr] = tuple(draw(items))
    if not any(kw.get(attr) for attr, _, _, _ in sections):
        attr, direction, deny, _ = sections[0]
        kw[attr] = (PeerRule(direction=direction, deny=deny),)
    if default_deny and draw(_BOOL):
        kw["enable_default_deny_ingress"] = draw(_OPTIONAL_BOOL)
        kw["enable_default_deny_egress"] = draw(_OPTIONAL_BOOL)
    if metadata is not None and draw(_BOOL):
        kw.update(draw(metadata))
    return Rule(**kw)


def _rule_metadata() -> SearchStrategy[dict[str, Any]]:
    label = st.builds(
        Label, st.just("unspec"), st.sampled_from(DEFAULT_LABEL_KEYS), st.sampled_from(DEFAULT_LABEL_VALUES)
    )
    return st.fixed_dictionaries(
        {
            "description": st.sampled_from(("generated", "allow web", "")),
            "labels": st.lists(label, max_size=1).map(tuple),
            "log": st.none() | st.sampled_from(("audit", "x")),
        }
    )


def policy_rules(
    *,
    subjects: SearchStrategy[EndpointSelector] | None = None,
    peers: SearchStrategy[EndpointSelector] | None = None,
    ingress: bool = True,
    egress: bool = True,
    allow: bool = True,
    deny: bool = True,
    max_peer_rules: int = 2,
    l7: bool = True,
    fqdns: bool = True,
    icmps: bool = True,
    cidrs: bool = True,
    authentication: bool = False,
    default_deny: bool = True,
    metadata: bool = False,
    cidr_groups: Collection[CiliumCIDRGroup] = (),
) -> SearchStrategy[Rule]:
    """One Cilium rule (a policy's ``spec`` or an item of ``specs``).

    ``subjects`` draws the ``endpointSelector``, ``peers`` the selectors of
    ``fromEndpoints``/``toEndpoints``. The flags choose which sections (``ingress``,
    ``egress``; ``allow`` and/or ``deny`` forms) and features may appear;
    ``default_deny`` allows ``enableDefaultDeny``; ``metadata`` adds labels, description
    and log; ``cidr_groups`` lets CIDR sets reference those groups. Every rule has at
    least one non-empty section: the smallest is ``{endpointSelector: {}, ingress: [{}]}``.

    >>> r = policy_rules(deny=False, egress=False).example()
    >>> r.ingress is not None and r.egress is None and r.ingress_deny is None
    True
    """
    subjects = _opt_strategy(subjects, "subjects", label_selectors)
    peer_sel = _opt_strategy(peers, "peers", label_selectors)
    for flag, name in (
        (ingress, "ingress"),
        (egress, "egress"),
        (deny, "deny"),
        (allow, "allow"),
        (l7, "l7"),
        (fqdns, "fqdns"),
        (icmps, "icmps"),
        (cidrs, "cidrs"),
        (authentication, "authentication"),
        (default_deny, "default_deny"),
        (metadata, "metadata"),
    ):
        _check_bool(flag, name)
    if not (ingress or egress):
        raise InvalidArgument("policy_rules needs ingress=True or egress=True")
    if not (allow or deny):
        raise InvalidArgument("policy_rules needs allow=True or deny=True")
    _check_size(max_peer_rules, "max_peer_rules", low=1)
    sections = []
    for attr, d, dn in _SECTIONS:
        if not (ingress if d == Direction.INGRESS else egress) or not (deny if dn else allow):
            continue
        element = peer_rules(
            direction=d,
            deny=dn,
            selectors=peer_sel,
            l7=l7,
            fqdns=fqdns,
            icmps=icmps,
            cidrs=cidrs,
            authentication=authentication,
            cidr_groups=cidr_groups,
        )
        sections.append((attr, d, dn, st.lists(element, max_size=max_peer_rules)))
    return _short_repr(
        _rule(subjects, tuple(sections), default_deny, _rule_metadata() if metadata else None), "policy_rules()"
    )


@functools.cache
def _policy_names() -> SearchStrategy[str]:
    return st.sampled_from(("p", "q", "allow-web", "deny-all")) | _dns_label()


def _cilium_policies(
    cls: type[T], fields: Mapping[str, SearchStrategy[Any]], rules: SearchStrategy[Rule], max_specs: int
) -> SearchStrategy[T]:
    """``spec``, ``specs`` or both; built with ``st.builds`` so examples print as constructor calls."""
    options = [st.builds(cls, **fields, spec=rules)]
    if max_specs:
        some = st.lists(rules, min_size=1, max_size=max_specs).map(tuple)
        options.append(st.builds(cls, **fields, specs=some))
        options.append(st.builds(cls, **fields, spec=rules, specs=st.lists(rules, max_size=max_specs).map(tuple)))
    return st.one_of(options)


def cilium_network_policies(
    *,
    namespaces: SearchStrategy[str] | None = None,
    names: SearchStrategy[str] | None = None,
    rules: SearchStrategy[Rule] | None = None,
    max_specs: int = 2,
) -> SearchStrategy[CiliumNetworkPolicy]:
    """Namespaced :class:`~ciliumpy.CiliumNetworkPolicy` objects with ``spec`` and/or ``specs``.

    Every drawn policy passes :meth:`ciliumpy.Cluster.apply`; ``.to_manifest()`` gives the
    YAML-ready dict.

    >>> p = cilium_network_policies(namespaces=st.just("prod")).example()
    >>> p.namespace, p.to_manifest()["kind"]
    ('prod', 'CiliumNetworkPolicy')
    """
    namespaces = _opt_strategy(namespaces, "namespaces", namespace_names)
    names = _opt_strategy(names, "names", _policy_names)
    rules = _opt_strategy(rules, "rules", policy_rules)
    _check_size(max_specs, "max_specs")
    return _short_repr(
        _cilium_policies(CiliumNetworkPolicy, {"name": names, "namespace": namespaces}, rules, max_specs),
        "cilium_network_policies()",
    )


def clusterwide_policies(
    *,
    names: SearchStrategy[str] | None = None,
    rules: SearchStrategy[Rule] | None = None,
    max_specs: int = 2,
) -> SearchStrategy[CiliumClusterwideNetworkPolicy]:
    """:class:`~ciliumpy.CiliumClusterwideNetworkPolicy` objects (endpoint selectors only).

    >>> clusterwide_policies().example().to_manifest()["kind"]
    'CiliumClusterwideNetworkPolicy'
    """
    names = _opt_strategy(names, "names", _policy_names)
    rules = _opt_strategy(rules, "rules", policy_rules)
    _check_size(max_specs, "max_specs")
    return _short_repr(
        _cilium_policies(CiliumClusterwideNetworkPolicy, {"name": names}, rules, max_specs),
        "clusterwide_policies()",
    )


def _np_port(protocol: str, port: int | str | None, ranged: bool, extra: int) -> NetworkPolicyPort:
    end = min(port + extra, 65535) if isinstance(port, int) and ranged else None
    return NetworkPolicyPort(protocol, port, end)


def _ip_block(net: Network, steps: list[tuple[int, int]]) -> IPBlock:
    if net.prefixlen == net.max_prefixlen:
        net = net.supernet()
    excepts = dict.fromkeys(str(_subnet(net, e, i)) for e, i in steps)
    return IPBlock(str(net), tuple(excepts))


def network_policies(
    *,
    namespaces: SearchStrategy[str] | None = None,
    names: SearchStrategy[str] | None = None,
    pod_selectors: SearchStrategy[EndpointSelector] | None = None,
    namespace_selectors: SearchStrategy[EndpointSelector] | None = None,
    max_rules: int = 2,
    named_ports: Collection[str] = tuple(NAMED_PORTS),
) -> SearchStrategy[NetworkPolicy]:
    """Kubernetes :class:`~ciliumpy.NetworkPolicy` objects (pod/namespace/ipBlock peers, ports).

    ``policyTypes`` is omitted or non-empty (an empty list is defaulted by the API server).

    >>> network_policies().example().to_manifest()["apiVersion"]
    'networking.k8s.io/v1'
    """
    namespaces = _opt_strategy(namespaces, "namespaces", namespace_names)
    names = _opt_strategy(names, "names", _policy_names)
    pods = _opt_strategy(pod_selectors, "pod_selectors", label_selectors)
    nss = _opt_strategy(
        namespace_selectors,
        "namespace_selectors",
        lambda: label_selectors(keys=st.sampled_from(("kubernetes.io/metadata.name", "team")), max_labels=1),
    )
    _check_size(max_rules, "max_rules")
    named = tuple(named_ports)
    for n in named:
        try:
            NetworkPolicyPort.from_manifest({"port": n}, "port")
        except PolicyError as exc:
            raise InvalidArgument(f"named_ports: {exc}") from None
    numbers: list[SearchStrategy[int | str | None]] = [
        st.none(),
        st.sampled_from((80, 443, 5432)),
        st.integers(1, 65535),
    ]
    if named:
        numbers.append(st.sampled_from(named))
    port = st.builds(
        _np_port, st.sampled_from(("TCP", "UDP", "SCTP")), st.one_of(numbers), st.booleans(), st.integers(0, 300)
    )
    ip_block = st.builds(_ip_block, _networks((4, 6)), st.lists(_SUBNET_STEPS, max_size=2))
    peer = st.one_of(
        st.builds(NetworkPolicyPeer, pod_selector=pods),
        st.builds(NetworkPolicyPeer, namespace_selector=nss),
        st.builds(NetworkPolicyPeer, pod_selector=pods, namespace_selector=nss),
        st.builds(NetworkPolicyPeer, ip_block=ip_block),
    )
    rule = st.builds(
        NetworkPolicyRule,
        st.none() | st.lists(peer, min_size=1, max_size=2).map(tuple),
        st.none() | st.lists(port, min_size=1, max_size=2).map(tuple),
    )
    rules = st.none() | st.lists(rule, max_size=max_rules).map(tuple)
    types = st.none() | st.lists(st.sampled_from(("Ingress", "Egress")), min_size=1, max_size=2, unique=True).map(tuple)
    return _short_repr(
        st.builds(
            NetworkPolicy,
            name=names,
            namespace=namespaces,
            pod_selector=pods,
            ingress=rules,
            egress=rules,
            policy_types=types,
        ),
        "network_policies()",
    )


# --------------------------------------------------------------------------------------------
# clusters


def _explicit_addresses(eps: list[Endpoint]) -> list[Endpoint]:
    """Give explicit addresses a unique value each, keeping every pod's address families."""
    out = []
    for i, ep in enumerate(eps):
        if not ep.ips:
            out.append(ep)
            continue
        ips = tuple(_EXPLICIT_V4[i + 1] if ip.version == 4 else _EXPLICIT_V6[i + 1] for ip in ep.ips)
        out.append(attrs.evolve(ep, ips=ips))
    return out


@st.composite
def _cluster_spec(
    draw: st.DrawFn,
    endpoint_list: SearchStrategy[list[Endpoint]],
    policy_list: SearchStrategy[list[Any]],
    namespace_labels: SearchStrategy[Mapping[str, str]],
) -> ClusterSpec:
    eps = draw(endpoint_list)
    policies = draw(policy_list)
    used = [ep.namespace for ep in eps] + [p.namespace for p in policies if p.namespace]
    ns_objs = [Namespace(name, dict(draw(namespace_labels))) for name in dict.fromkeys(used)]
    return ClusterSpec(namespaces=ns_objs, endpoints=_explicit_addresses(eps), policies=policies)


# cluster_specs takes parameters named like these strategies.
_namespace_names = namespace_names
_endpoints = endpoints


def cluster_specs(
    *,
    namespace_names: SearchStrategy[str] | None = None,
    endpoints: SearchStrategy[Endpoint] | None = None,
    policies: SearchStrategy[Any] | None = None,
    namespace_labels: SearchStrategy[Mapping[str, str]] | None = None,
    min_endpoints: int = 0,
    max_endpoints: int = 4,
    min_policies: int = 0,
    max_policies: int = 3,
) -> SearchStrategy[ClusterSpec]:
    """:class:`~ciliumpy.testing.ClusterSpec` values: pods and policies that fit together.

    By default pods and namespaced policies share a few namespace names
    (``namespace_names``, default ``default``/``prod``/``dev``/``payments``), peer
    selectors may pin other namespaces, and labels come from the small default vocabulary,
    so policies select drawn pods often. Each namespace used gets a ``Namespace`` with
    ``namespace_labels``. Explicit pod addresses are made unique. ``policies`` may draw
    CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy objects. A spec
    prints as the manifests that rebuild it.

    >>> spec = cluster_specs(min_endpoints=1, max_policies=0).example()
    >>> len(spec.endpoints) >= 1 and spec.policies == ()
    True
    """
    ns = _opt_strategy(namespace_names, "namespace_names", lambda: _namespace_names(generated=False))
    labels = _opt_strategy(namespace_labels, "namespace_labels", lambda: label_sets(max_size=1))
    _check_size(min_endpoints, "min_endpoints")
    _check_size(max_endpoints, "max_endpoints", low=min_endpoints)
    _check_size(min_policies, "min_policies")
    _check_size(max_policies, "max_policies", low=min_policies)
    if endpoints is None:
        endpoints = _endpoints(namespaces=ns, names=st.sampled_from(("a", "b", "c", "d")) | _dns_label())
    else:
        _check_strategy(endpoints, "endpoints")
    if policies is None:
        rules = policy_rules(peers=label_selectors(namespaces=ns))
        policies = st.one_of(
            cilium_network_policies(namespaces=ns, rules=rules),
            clusterwide_policies(rules=rules),
            network_policies(namespaces=ns),
        )
    else:
        _check_strategy(policies, "policies")
    assert endpoints is not None and policies is not None
    endpoint_list = st.lists(endpoints, min_size=min_endpoints, max_size=max_endpoints, unique_by=lambda e: e.ref)
    policy_list = st.lists(policies, min_size=min_policies, max_size=max_policies, unique_by=lambda p: p.key)
    return _short_repr(_cluster_spec(endpoint_list, policy_list, labels), "cluster_specs()")


def clusters(
    *,
    backend: str = "simulator",
    specs: SearchStrategy[ClusterSpec] | None = None,
    dual_stack: bool = False,
) -> SearchStrategy[Cluster]:
    """Built :class:`~ciliumpy.Cluster` objects on ``backend``, from :func:`cluster_specs`.

    Inside a test the spec is printed with the failing example (``note``), as kubectl-ready
    YAML. For the eBPF backend prefer drawing specs and ``with spec.build("ebpf") as c:``,
    so each kernel datapath is closed when the example ends.

    >>> c = clusters(specs=cluster_specs(min_endpoints=1, max_policies=0)).example()
    >>> len(c.endpoints) >= 1
    True
    """
    if not isinstance(backend, str) or backend not in BUILTIN_BACKENDS:
        raise InvalidArgument(f"backend={backend!r} must be one of {', '.join(BUILTIN_BACKENDS)}")
    specs = _opt_strategy(specs, "specs", cluster_specs)
    _check_bool(dual_stack, "dual_stack")

    def build(spec: ClusterSpec) -> Cluster:
        if currently_in_test_context():
            note(f"cluster built from {spec!r}")
        return spec.build(backend, dual_stack=dual_stack)

    return _short_repr(specs.map(build), "clusters()")


# --------------------------------------------------------------------------------------------
# flows and packets


def _interesting_ports(cluster: Cluster, src: str, dst: str, protocol: int) -> list[int]:
    """Ports where the two ends' map-state keys start or end, plus the destination's ports."""
    ports: set[int] = set()
    for who, direction in ((src, Direction.EGRESS), (dst, Direction.INGRESS)):
        if "/" not in who:
            continue
        for key in cluster.map_state(who):
            if key.direction == direction and key.protocol == protocol and key.prefix_len:
                lo, hi = key.port_range
                ports.update((lo, hi))
    if "/" in dst:
        ports.update(p.port for p in cluster.endpoint(dst).ports if int(Protocol[p.protocol]) == protocol)
    return sorted(ports)


_HTTP_REQUEST_PATHS = st.sampled_from(("/", "/api/v1", "/health", "/public/x")) | st.lists(
    _words(_LOWER, _LOWER, 5), min_size=1, max_size=2
).map(lambda p: "/" + "/".join(p))
_HTTP_REQUESTS = st.fixed_dictionaries(
    {"method": st.sampled_from(("GET", "POST", "PUT", "HEAD")), "path": _HTTP_REQUEST_PATHS}
)


@st.composite
def _flow(
    draw: st.DrawFn,
    cluster: Cluster,
    sources: SearchStrategy[str] | None,
    destinations: SearchStrategy[str] | None,
    protocols: tuple[str, ...],
    specials: tuple[str, ...],
    http: bool,
    dns: bool,
) -> Flow:
    pods = sorted(cluster.endpoints)
    candidates = pods + list(specials)
    if not pods or len(candidates) < 2:
        reject()
    src = draw(sources) if sources is not None else draw(st.sampled_from(candidates))
    src_fams = {ip.version for ip in _peer_addresses(cluster, src)}
    if destinations is not None:
        dst = draw(destinations)
    else:
        options = [
            c
            for c in candidates
            if c != src and (c in pods or src in pods) and src_fams & {ip.version for ip in _peer_addresses(cluster, c)}
        ]
        if not options:
            reject()
        dst = draw(st.sampled_from(options))
    common = src_fams & {ip.version for ip in _peer_addresses(cluster, dst)}
    proto = draw(st.sampled_from(protocols))
    if proto == "ICMP":
        v6 = 4 not in common
        seen = _interesting_ports(cluster, src, dst, int(Protocol.ICMPV6 if v6 else Protocol.ICMP))
        icmp_type = draw(st.sampled_from([128 if v6 else 8, *seen]) | st.integers(0, 255))
        return Flow(src=src, dst=dst, protocol="ICMP", port=icmp_type)
    if dns and proto == "UDP" and draw(_BOOL):
        return Flow(src=src, dst=dst, protocol="UDP", port=53, dns=draw(_dns_names()))
    seen = _interesting_ports(cluster, src, dst, int(Protocol[proto]))
    port = draw(st.sampled_from(seen or [80]) | st.integers(0, 65535))
    request = draw(_HTTP_REQUESTS) if http and proto == "TCP" and draw(_BOOL) else None
    return Flow(src=src, dst=dst, protocol=proto, port=port, http=request)


def flows(
    cluster: Cluster,
    *,
    sources: SearchStrategy[str] | None = None,
    destinations: SearchStrategy[str] | None = None,
    protocols: Collection[str] = _FLOW_PROTOCOLS,
    world: bool = True,
    host: bool = True,
    http: bool = True,
    dns: bool = True,
) -> SearchStrategy[Flow]:
    """New connections (:class:`~ciliumpy.testing.Flow`) among a cluster's pods, world and host.

    At least one end is a pod and the ends share an address family (unless ``sources`` or
    ``destinations`` say otherwise). Ports are drawn first among those that matter to the
    two ends (where their map-state keys start and end, the destination's container ports),
    then anywhere. TCP flows may carry an HTTP request, UDP flows a DNS query. The cluster
    is read when a flow is drawn, so draw after building it: ``data.draw(flows(cluster))``.

    >>> from ciliumpy import Cluster
    >>> c = Cluster(); _ = c.add_endpoint("prod/web")
    >>> f = flows(c, protocols=["TCP"], http=False).example()
    >>> "prod/web" in (f.src, f.dst), f.protocol
    (True, 'TCP')
    """
    if not isinstance(cluster, Cluster):
        raise InvalidArgument(f"cluster={cluster!r} must be a ciliumpy.Cluster")
    if sources is not None:
        _check_strategy(sources, "sources")
    if destinations is not None:
        _check_strategy(destinations, "destinations")
    protos = _check_choices([str(p).upper() for p in protocols], "protocols", _FLOW_PROTOCOLS)
    for flag, name in ((world, "world"), (host, "host"), (http, "http"), (dns, "dns")):
        _check_bool(flag, name)
    specials = tuple(n for n, on in (("world", world), ("host", host)) if on)
    return _short_repr(_flow(cluster, sources, destinations, protos, specials, http, dns), "flows(cluster)")


@st.composite
def _packet(
    draw: st.DrawFn,
    cluster: Cluster | None,
    protocols: tuple[str, ...],
    tcp_flags: SearchStrategy[int],
) -> Packet:
    if cluster is not None:
        pool = [ip for ep in cluster.endpoints.values() for ip in ep.ips]
        pool += [WORLD_IP_V4, WORLD_IP_V6, HOST_IP_V4, HOST_IP_V6]
        src = draw(st.sampled_from(pool))
        dst = draw(st.sampled_from([ip for ip in pool if ip.version == src.version and ip != src]))
    else:
        addresses = st.ip_addresses(v=4) if draw(_BOOL) else st.ip_addresses(v=6)
        src, dst = draw(addresses), draw(addresses)
    proto = draw(st.sampled_from(protocols))
    sport = draw(st.integers(1024, 65535))
    if proto == "ICMP":
        number = Protocol.ICMPV6 if src.version == 6 else Protocol.ICMP
        echo = 128 if src.version == 6 else 8
        icmp_type = draw(st.just(echo) | st.integers(0, 255))
        return Packet(src, dst, int(number), sport=sport, icmp_type=icmp_type, tcp_flags=0)
    dport = draw(st.sampled_from((80, 443, 53, 5432, 8080)) | st.integers(0, 65535))
    flags = draw(tcp_flags) if proto == "TCP" else 0
    return Packet(src, dst, int(Protocol[proto]), sport=sport, dport=dport, tcp_flags=flags)


def packets(
    cluster: Cluster | None = None,
    *,
    protocols: Collection[str] = _FLOW_PROTOCOLS,
    tcp_flags: SearchStrategy[int] | None = None,
) -> SearchStrategy[Packet]:
    """Datapath :class:`~ciliumpy.Packet` objects for ``Cluster.evaluate`` or a backend.

    With a ``cluster``, addresses are its pods', world's and host's; without, any pair of
    one family. ``tcp_flags`` defaults to a SYN (a new connection).

    >>> packets(protocols=["UDP"]).example().protocol
    17
    """
    if cluster is not None and not isinstance(cluster, Cluster):
        raise InvalidArgument(f"cluster={cluster!r} must be a ciliumpy.Cluster or None")
    protos = _check_choices([str(p).upper() for p in protocols], "protocols", _FLOW_PROTOCOLS)
    flags = _opt_strategy(tcp_flags, "tcp_flags", lambda: st.just(int(TCPFlags.SYN)))
    return _packet(cluster, protos, flags)


# --------------------------------------------------------------------------------------------
# st.from_type support


def _register() -> None:
    st.register_type_strategy(Namespace, namespaces())
    st.register_type_strategy(Endpoint, endpoints())
    st.register_type_strategy(EndpointSelector, label_selectors())
    st.register_type_strategy(Label, st.builds(Label, st.just("k8s"), label_keys(), label_values()))
    st.register_type_strategy(LabelSet, label_sets().map(LabelSet.from_mapping))
    st.register_type_strategy(PortProtocol, port_protocols())
    st.register_type_strategy(PortRule, port_rules())
    st.register_type_strategy(ICMPRule, icmp_rules())
    st.register_type_strategy(CIDRRule, cidr_rules())
    st.register_type_strategy(PeerRule, peer_rules(deny=None))
    st.register_type_strategy(Rule, policy_rules())
    st.register_type_strategy(HTTPRule, http_rules())
    st.register_type_strategy(DNSRule, dns_rules())
    st.register_type_strategy(FQDNSelector, fqdn_selectors())
    st.register_type_strategy(CiliumNetworkPolicy, cilium_network_policies())
    st.register_type_strategy(CiliumClusterwideNetworkPolicy, clusterwide_policies())
    st.register_type_strategy(NetworkPolicy, network_policies())
    st.register_type_strategy(ClusterSpec, cluster_specs())
    st.register_type_strategy(Cluster, clusters())
    st.register_type_strategy(Packet, packets())


_register()
