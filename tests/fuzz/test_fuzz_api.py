"""Fuzzing the public API's arguments: add_endpoint, add_namespace, check and the DNS proxy's
wire input must answer or raise a CiliumpyError (a TypeError for a wrong Python type)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz_support import Tally, fuzz_settings, only_ciliumpy_errors
from hypothesis import given
from hypothesis import strategies as st

from ciliumpy import Cluster
from ciliumpy._dns import DNSProxy, build_query
from ciliumpy._fqdn import FQDNCache, ManualClock

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10) | st.integers(), max_size=3),
)
REFS = st.one_of(
    ANY_VALUE,
    st.sampled_from(["d/a", "d/", "/a", "D/a", "d/a/b", "kube-system/x", "a" * 70 + "/b", "d/" + "a" * 300]),
    st.builds(lambda ns, n: f"{ns}/{n}", st.text(max_size=12), st.text(max_size=12)),
)
ADDRESSES = st.one_of(
    st.sampled_from(["10.0.0.256", "10.0.0.1", "198.51.100.254", "fe80::1%eth0", "::", "0.0.0.0", "010.1.1.1"]),
    st.ip_addresses().map(str),
    st.ip_addresses(),
    ANY_VALUE,
)
_GOOD_PEERS = st.sampled_from(["d/a", "d/b", "world", "host", "10.9.9.9", "::1", "fd00::2"])
_ODD_PEERS = st.sampled_from(["abc", "d/missing", "", "a.b.c", "d/a/x", "fe80::1%eth0", "D/A", "10.1.0.256"])
# Mostly strings (the checks worth reaching), sometimes any type at all.
PEERS = st.one_of(_GOOD_PEERS, _GOOD_PEERS, _ODD_PEERS, st.text(max_size=20), ANY_VALUE)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        c.add_endpoint("d/a", labels={"app": "a"}, ips=["10.1.0.1"])
        c.add_endpoint("d/b", labels={"app": "b"}, ips=["10.1.0.2", "fd00::2"])
        yield c


_GOOD_REFS = st.sampled_from(["d/b", "d/c", "d/" + "a" * 63, "kube-system/x", "d/a.b"])
_ENDPOINT_WELL_TYPED = st.fixed_dictionaries(
    {
        "ref": st.one_of(_GOOD_REFS, REFS.filter(lambda r: isinstance(r, str))),
        "labels": st.dictionaries(st.text(max_size=70), st.text(max_size=70), max_size=3),
        "ips": st.lists(ADDRESSES.filter(lambda a: isinstance(a, str)), max_size=3),
        "ports": st.lists(
            st.tuples(st.none() | st.text(max_size=16), st.integers(-5, 70000), st.text(max_size=5)), max_size=2
        ),
        "service_account": st.one_of(st.just("default"), st.text(max_size=20)),
    }
)
_ENDPOINT_ANY_TYPED = st.fixed_dictionaries(
    {
        "ref": REFS,
        "labels": st.one_of(ANY_VALUE, st.dictionaries(st.text(max_size=70), ANY_VALUE, max_size=3)),
        "ips": st.one_of(ANY_VALUE, st.lists(ADDRESSES, max_size=3)),
        "ports": st.one_of(ANY_VALUE, st.lists(st.tuples(ANY_VALUE, ANY_VALUE, ANY_VALUE), max_size=2)),
        "service_account": ANY_VALUE,
    }
)


# Mostly well-typed arguments (the value checks are what is worth reaching), sometimes any.
@given(st.one_of(_ENDPOINT_WELL_TYPED, _ENDPOINT_WELL_TYPED, _ENDPOINT_WELL_TYPED, _ENDPOINT_ANY_TYPED))
@fuzz_settings(80)
def test_add_endpoint_arguments_give_only_ciliumpy_or_type_errors(kwargs: dict[str, Any]) -> None:
    def call() -> None:
        with Cluster() as c:
            c.add_endpoint("d/other", ips=["10.1.0.9"])
            c.add_endpoint(**kwargs)

    only_ciliumpy_errors("api-add-endpoint", call, type_errors=True)


@given(name=REFS, labels=st.one_of(ANY_VALUE, st.dictionaries(st.text(max_size=20), ANY_VALUE, max_size=3)))
@fuzz_settings(40)
def test_add_namespace_arguments_give_only_ciliumpy_or_type_errors(name: Any, labels: Any) -> None:
    def call() -> None:
        with Cluster() as c:
            c.add_namespace(name, labels)

    only_ciliumpy_errors("api-add-namespace", call, type_errors=True)


_CHECK_WELL_TYPED = st.tuples(
    st.one_of(_GOOD_PEERS, _ODD_PEERS, st.text(max_size=20)),
    st.one_of(_GOOD_PEERS, _ODD_PEERS, st.text(max_size=20)),
    st.one_of(st.integers(-10, 70000), st.integers(0, 300), st.sampled_from(["80", "x", "http"])),
    st.sampled_from(["TCP", "udp", "ICMP", "ICMPv6", "SCTP", "GRE", "", "icmpv4"]),
)
_CHECK_ANY_TYPED = st.tuples(PEERS, PEERS, st.one_of(st.integers(-10, 70000), ANY_VALUE), ANY_VALUE)


@given(st.one_of(_CHECK_WELL_TYPED, _CHECK_WELL_TYPED, _CHECK_WELL_TYPED, _CHECK_ANY_TYPED))
@fuzz_settings(120)
def test_check_arguments_give_only_ciliumpy_or_type_errors(cluster: Cluster, args: tuple[Any, ...]) -> None:
    only_ciliumpy_errors("api-check", lambda: cluster.check(*args), type_errors=True)


def _header(qdcount: int = 1, flags: int = 0x0100) -> bytes:
    return struct.pack("!6H", 0x1234, flags, qdcount, 0, 0, 0)


@st.composite
def dns_messages(draw: st.DrawFn) -> bytes:
    """Valid queries with bytes flipped, cut or spliced, and hand-made question names."""
    kind = draw(st.sampled_from(["mutated", "labels", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "labels":
        labels = draw(st.lists(st.binary(min_size=0, max_size=70), max_size=6))
        name = b"".join(bytes([min(len(lb), 255)]) + lb for lb in labels)
        tail = draw(st.sampled_from([b"\x00", b"", b"\xc0\x0c", b"\xc0\xff", b"\x00\x00"]))
        return _header() + name + tail + struct.pack("!HH", draw(st.integers(0, 65535)), 1)
    msg = bytearray(build_query(draw(st.sampled_from(["api.stripe.com", "a.b", "x" * 60 + ".io"]))))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(msg) - 1))
        msg[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(msg)))
    return bytes(msg[:cut]) if draw(st.booleans()) else bytes(msg)


@given(dns_messages())
@fuzz_settings(300)
def test_dns_proxy_answers_every_wire_message(message: bytes) -> None:
    cache = FQDNCache(ManualClock(0.0))
    proxy = DNSProxy(cache=cache, endpoint="d/a")
    result = proxy.handle(message, allow=lambda n: True, upstream={"api.stripe.com": (["203.0.113.7"], 60)}, now=0.0)
    Tally.add("dns-wire", result.rcode_name if result.response else "dropped")
    assert result.rcode_name != "SERVFAIL", result.reason
    assert len(result.reason) <= 4096
    # Only a real three-label api.stripe.com may be learned.
    for entry in cache.entries():
        assert entry.name == "api.stripe.com."


@given(ANY_VALUE)
@fuzz_settings(30)
def test_dns_proxy_non_bytes_input_is_a_type_error(query: Any) -> None:
    if isinstance(query, bytes):
        return
    with pytest.raises(TypeError):
        DNSProxy().handle(query, allow=lambda n: True, upstream={})


@pytest.fixture(scope="module")
def dns_cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        c.add_endpoint("kube-system/dns", labels={"k8s-app": "kube-dns"}, ips=["10.1.0.53"])
        c.add_endpoint("d/a", labels={"app": "a"}, ips=["10.1.0.1"])
        c.add_dns_records({"api.stripe.com": ["203.0.113.7"]})
        yield c


NAMES = st.one_of(
    st.sampled_from(["api.stripe.com", "API.Stripe.com.", "", ".", "a..b", "é.com", "*.com", "a\\.b.com"]),
    st.lists(st.text(max_size=70), min_size=1, max_size=4).map(".".join),
    ANY_VALUE,
)


_QTYPES = st.sampled_from(["A", "AAAA", "TXT", "ANY", "BOGUS", "a"])
_STR_NAMES = NAMES.filter(lambda n: isinstance(n, str))


@given(
    st.one_of(
        st.tuples(_STR_NAMES, _QTYPES), st.tuples(_STR_NAMES, _QTYPES), st.tuples(NAMES, st.one_of(_QTYPES, ANY_VALUE))
    )
)
@fuzz_settings(60)
def test_resolve_arguments_give_only_ciliumpy_or_type_errors(dns_cluster: Cluster, args: tuple[Any, Any]) -> None:
    name, qtype = args
    only_ciliumpy_errors("api-resolve", lambda: dns_cluster.resolve("d/a", name, qtype), type_errors=True)


@given(
    st.dictionaries(NAMES.filter(lambda n: isinstance(n, str)), st.lists(ADDRESSES, max_size=2) | ANY_VALUE, max_size=2)
)
@fuzz_settings(40)
def test_add_dns_records_arguments_give_only_ciliumpy_or_type_errors(records: Any) -> None:
    def call() -> None:
        with Cluster() as c:
            c.add_dns_records(records)

    only_ciliumpy_errors("api-dns-records", call, type_errors=True)
