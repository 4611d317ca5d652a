"""matchName / matchPattern semantics, the DNS proxy allow-regex and the FQDN cache."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciliumpy._fqdn import (
    MATCH_ALL_ANCHORED,
    FQDNCache,
    FQDNSelector,
    ManualClock,
    dns_allow_regex,
    dns_name_allowed,
    is_dns_wildcard,
    match_pattern_to_regex,
    normalize_name,
)
from ciliumpy._l7 import DNSRule
from ciliumpy.exceptions import PolicyError

FIELD = "spec.egress[0].toFQDNs[0]"


def sel(pattern: str) -> FQDNSelector:
    return FQDNSelector(match_pattern=pattern)


# --- the documented cases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "name", "expected"),
    [
        (FQDNSelector(match_name="cilium.io"), "cilium.io", True),
        (FQDNSelector(match_name="cilium.io"), "cilium.io.", True),
        (FQDNSelector(match_name="cilium.io"), "CILIUM.IO", True),
        (FQDNSelector(match_name="cilium.io"), "www.cilium.io", False),
        (FQDNSelector(match_name="Cilium.IO"), "cilium.io", True),
        (sel("cilium.io"), "cilium.io", True),
        (sel("cilium.io"), "www.cilium.io", False),
        (sel("*.cilium.io"), "www.cilium.io", True),
        (sel("*.cilium.io"), "blog.cilium.io", True),
        (sel("*.cilium.io"), "cilium.io", False),
        (sel("*.cilium.io"), "a.b.cilium.io", False),
        (sel("*.cilium.io"), "google.com", False),
        (sel("*cilium.io"), "cilium.io", True),
        (sel("*cilium.io"), "subcilium.io", True),
        (sel("*cilium.io"), "www.cilium.io", False),
        (sel("sub*.cilium.io"), "sub.cilium.io", True),
        (sel("sub*.cilium.io"), "subdomain.cilium.io", True),
        (sel("sub*.cilium.io"), "www.cilium.io", False),
        (sel("sub*.cilium.io"), "cilium.io", False),
        (sel("*"), "cilium.io", True),
        (sel("*"), "a.b.c.d.example.com", True),
        (sel("*"), "_foobar._tcp.cilium.io", True),
        (sel("*"), ".", True),
        (sel("**.cilium.io"), "app.cilium.io", True),
        (sel("**.cilium.io"), "test.app.cilium.io", True),
        (sel("**.cilium.io"), "cilium.io", False),
        (sel("**.cilium.io"), "app.ciliumandmore.io", False),
        (sel("*.ci*.io"), "anysub.ci.io", True),
        (sel("*.ci*.io"), "anysub.ciliumandmore.io", True),
        (sel("*.ci*.io"), "cilium.io", False),
    ],
)
def test_documented_name_matching(selector: FQDNSelector, name: str, expected: bool) -> None:
    assert selector.matches(name) is expected


# Accept/reject lists from upstream's matchpattern tests, restricted to the cases the 1.19
# implementation (leading "**." only) decides the same way.
UPSTREAM_CASES = [
    (
        "cilium.io.",
        ["cilium.io."],
        ["", "anysub.cilium.io.", "anysub.ci.io.", "anysub.ciliumandmore.io."],
    ),
    (
        "*.cilium.io.",
        ["anysub.cilium.io."],
        ["", "cilium.io.", "anysub.ci.io.", "anysub.ciliumandmore.io."],
    ),
    (
        "*.ci*.io.",
        ["anysub.cilium.io.", "anysub.ci.io.", "anysub.ciliumandmore.io."],
        ["", "ci.io", "cilium.io.", "service.namesace.svc.cluster.local."],
    ),
    (
        "*",
        [".", "io.", "cilium.io.", "svc.cluster.local.", "_foobar._tcp.cilium.io."],
        ["", ".io.", ".cilium.io.", ".svc.cluster.local."],
    ),
    (".", ["."], ["", ".io.", ".cilium.io"]),
    ("_foobar._tcp.cilium.io.", ["_foobar._tcp.cilium.io."], ["", "_tcp.cilium.io.", "cilium.io."]),
    ("*.*.cilium.io.", ["_foobar._tcp.cilium.io."], [""]),
    (
        "**.cilium.io.",
        [
            "anysub.cilium.io.",
            "_foobar._tcp.cilium.io.",
            "sub11.sub22.sub33._foobar._tcp.cilium.io.",
        ],
        [
            "",
            "cilium.io.",
            "anysub.ci.io.",
            "anysub.ciliumandmore.io.",
            "1._foobar_tcp.cilium.trio.",
        ],
    ),
    (
        "**.ci*.io.",
        [
            "anysub.cilium.io.",
            "anysub.ci.io.",
            "1.anysub.ciliumandmore.io.",
            "service.namesace.svc.ciuster.io.",
        ],
        ["", "cilium.io.", "service.namesace.svc..ciblaster.io."],
    ),
    (
        "**.*.io.",
        ["anysub.cilium.io.", "anysub.ci.io.", "service.namesace.svc.ciuster.io."],
        ["", "io.", "..cilium.io.", "cilium.io.", "service..namesace.svc.cluster.io."],
    ),
    (
        "**",
        [".", "io.", "cilium.io.", "_foobar._tcp.cilium.io."],
        ["", "..io.", ".svc.cluster..local."],
    ),
]


@pytest.mark.parametrize(("pattern", "accept", "reject"), UPSTREAM_CASES)
def test_upstream_matchpattern_cases(pattern: str, accept: list[str], reject: list[str]) -> None:
    import re2

    # Upstream runs these against the regex directly, so do we (no normalisation of input).
    compiled = re2.compile(match_pattern_to_regex(pattern))
    for name in accept:
        assert compiled.search(name), (pattern, name)
    for name in reject:
        assert not compiled.search(name), (pattern, name)


@pytest.mark.parametrize(
    ("pattern", "regex"),
    [
        ("cilium.io", "^cilium[.]io[.]$"),
        ("*.cilium.io.", "^[-a-zA-Z0-9_]*[.]cilium[.]io[.]$"),
        ("**.cilium.io.", "^([-a-zA-Z0-9_]+([.][-a-zA-Z0-9_]+){0,})[.]cilium[.]io[.]$"),
        ("*", "(^([-a-zA-Z0-9_]+[.])+$)|(^[.]$)"),
        ("**", "(^([-a-zA-Z0-9_]+[.])+$)|(^[.]$)"),
        ("*.", "(^([-a-zA-Z0-9_]+[.])+$)|(^[.]$)"),
        ("a**b.io", "^a[-a-zA-Z0-9_]*b[.]io[.]$"),
        ("Sub.Cilium.IO", "^sub[.]cilium[.]io[.]$"),
    ],
)
def test_pattern_to_regex(pattern: str, regex: str) -> None:
    assert match_pattern_to_regex(pattern) == regex


def test_wildcard_detection() -> None:
    assert all(is_dns_wildcard(p) for p in ("*", "**", "***", "*.", "**."))
    assert not any(is_dns_wildcard(p) for p in ("", ".", "*.io", "a*", "**.io"))


def test_double_star_is_only_special_as_a_prefix() -> None:
    # In the middle "**" is an ordinary in-label wildcard (1.19 keeps only the prefix form).
    assert sel("a.**.io").matches("a.b.io")
    assert not sel("a.**.io").matches("a.b.c.io")


# --- selectors -----------------------------------------------------------------------------------


def test_selector_manifest_round_trip_and_label() -> None:
    s = FQDNSelector.from_manifest({"matchPattern": "*.AmazonAWS.com"}, FIELD)
    assert s.to_manifest() == {"matchPattern": "*.AmazonAWS.com"}
    # The label keeps the string exactly as written.
    assert s.label == "fqdn:*.AmazonAWS.com"
    assert FQDNSelector.from_manifest({"matchName": "api.stripe.com"}, FIELD).label == ("fqdn:api.stripe.com")
    assert s.matches("s3.amazonaws.com")


def test_selector_with_both_fields() -> None:
    with pytest.raises(PolicyError) as info:
        FQDNSelector.from_manifest({"matchName": "a.com", "matchPattern": "*.a.com"}, FIELD)
    assert info.value.reason == ("only one of MatchName or MatchPattern is allowed in an FQDNSelector")
    assert info.value.field == FIELD


def test_selector_field_errors() -> None:
    with pytest.raises(PolicyError) as info:
        FQDNSelector.from_manifest({"matchName": "a b.com"}, FIELD)
    assert info.value.field == f"{FIELD}.matchName"
    assert info.value.reason.startswith('Invalid characters in MatchName: "a b.com".')
    with pytest.raises(PolicyError) as info:
        FQDNSelector.from_manifest({"matchPattern": "a+.com"}, FIELD)
    assert info.value.field == f"{FIELD}.matchPattern"
    with pytest.raises(PolicyError) as info:
        FQDNSelector.from_manifest({"pattern": "a.com"}, FIELD)
    assert info.value.field == f"{FIELD}.pattern"
    with pytest.raises(PolicyError) as info:
        FQDNSelector.from_manifest(["a.com"], FIELD)
    assert info.value.field == FIELD
    with pytest.raises(PolicyError) as info:
        FQDNSelector.from_manifest({"matchName": "a" * 256}, FIELD)
    assert "Must be <= 255 characters long." in info.value.reason


# --- the DNS proxy's allow-regex -----------------------------------------------------------------


def test_allow_regex_combines_names_and_patterns() -> None:
    rules = [DNSRule(match_name="api.stripe.com"), DNSRule(match_pattern="*.amazonaws.com")]
    regex = dns_allow_regex(rules)
    assert regex == "^(?:api[.]stripe[.]com[.]|[-a-zA-Z0-9_]*[.]amazonaws[.]com[.])$"
    assert dns_name_allowed(regex, "API.stripe.com")
    assert dns_name_allowed(regex, "s3.amazonaws.com.")
    assert not dns_name_allowed(regex, "s3.us-east-1.amazonaws.com")
    assert not dns_name_allowed(regex, "evil-site.com")
    assert not dns_name_allowed(regex, "api.stripe.com.evil-site.com")


def test_wildcard_pattern_allows_every_name_even_odd_ones() -> None:
    rules = [DNSRule(match_name="a.com"), DNSRule(match_pattern="*")]
    assert dns_allow_regex(rules) == MATCH_ALL_ANCHORED
    assert dns_name_allowed(MATCH_ALL_ANCHORED, "weird name with spaces")


def test_no_rules_allow_everything_but_empty_rules_allow_nothing() -> None:
    assert dns_allow_regex(None) == MATCH_ALL_ANCHORED
    assert dns_allow_regex([]) == MATCH_ALL_ANCHORED
    nothing = dns_allow_regex([DNSRule()])
    assert nothing == "^(?:)$"
    assert not dns_name_allowed(nothing, "a.com")


def test_one_dns_rule_may_carry_both_fields() -> None:
    regex = dns_allow_regex([DNSRule(match_name="cilium.io", match_pattern="*.cilium.io")])
    assert dns_name_allowed(regex, "cilium.io")
    assert dns_name_allowed(regex, "docs.cilium.io")
    assert not dns_name_allowed(regex, "a.docs.cilium.io")


# --- properties ----------------------------------------------------------------------------------

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=10)
names = st.lists(label, min_size=1, max_size=4).map(".".join)


@given(names, names)
def test_pattern_without_star_behaves_like_match_name(pattern: str, name: str) -> None:
    assert sel(pattern).matches(name) == FQDNSelector(match_name=pattern).matches(name)
    assert FQDNSelector(match_name=pattern).matches(name) == (normalize_name(pattern) == normalize_name(name))


@given(label, label, label, label)
def test_star_never_crosses_a_dot(prefix: str, left: str, right: str, suffix: str) -> None:
    pattern = f"{prefix}*.{suffix}"
    assert sel(pattern).matches(f"{prefix}{left}.{suffix}")
    # Two labels where the star stands must not match.
    assert not sel(pattern).matches(f"{prefix}{left}.{right}.{suffix}")


@given(names, st.sampled_from(["*.", "", "sub*.", "**."]))
def test_matching_is_case_insensitive(name: str, prefix: str) -> None:
    selector = sel(prefix + "example.com")
    candidate = f"{name}.example.com"
    assert selector.matches(candidate) == selector.matches(candidate.upper())
    assert selector.matches(candidate) == sel((prefix + "example.com").upper()).matches(candidate)


@given(st.lists(label, min_size=1, max_size=5))
def test_double_star_prefix_matches_one_or_more_labels(labels: list[str]) -> None:
    assert sel("**.cilium.io").matches(".".join(labels) + ".cilium.io")
    assert not sel("*.cilium.io").matches(".".join(labels) + ".cilium.io") or len(labels) == 1


# --- cache ---------------------------------------------------------------------------------------


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_entries_expire_after_their_ttl() -> None:
    clock = ManualClock(1000.0)
    cache = FQDNCache(clock)
    cache.add("api.github.com", ["203.0.113.20", "203.0.113.21"], ttl=30)
    assert cache.lookup("api.github.com") == {ip("203.0.113.20"), ip("203.0.113.21")}
    assert cache.names_for_ip("203.0.113.20") == {"api.github.com."}
    clock.advance(29)
    assert cache.expire() == ()
    clock.advance(1)
    assert cache.lookup("api.github.com") == frozenset()
    removed = cache.expire()
    assert {e.ip for e in removed} == {ip("203.0.113.20"), ip("203.0.113.21")}
    assert all(e.expires == 1030.0 and e.ttl == 30 for e in removed)
    assert len(cache) == 0


def test_min_ttl_extends_short_ttls() -> None:
    clock = ManualClock(0.0)
    cache = FQDNCache(clock, min_ttl=3600)
    (entry,) = cache.add("short.example.com", ["192.0.2.1"], ttl=5)
    assert entry.ttl == 5 and entry.expires == 3600
    clock.advance(1000)
    assert cache.lookup("short.example.com") == {ip("192.0.2.1")}
    clock.advance(2600)
    assert cache.lookup("short.example.com") == frozenset()


def test_newer_lookups_extend_but_never_shorten() -> None:
    clock = ManualClock(0.0)
    cache = FQDNCache(clock)
    cache.add("a.example.com", ["192.0.2.1"], ttl=100)
    clock.advance(10)
    cache.add("a.example.com", ["192.0.2.1", "192.0.2.2"], ttl=5)
    clock.advance(10)  # t=20: .1 still valid (until 100), .2 expired at 15
    assert cache.lookup("a.example.com") == {ip("192.0.2.1")}
    cache.add("a.example.com", ["192.0.2.2"], ttl=300)
    # .1 is not in the newest answer but lingers until its own expiry.
    assert cache.lookup("a.example.com") == {ip("192.0.2.1"), ip("192.0.2.2")}


def test_lookups_per_endpoint() -> None:
    cache = FQDNCache(ManualClock(0.0))
    cache.add("a.com", ["192.0.2.1"], ttl=60, endpoint="prod/backend")
    cache.add("a.com", ["192.0.2.2"], ttl=60, endpoint="prod/frontend")
    assert cache.lookup("a.com", endpoint="prod/backend") == {ip("192.0.2.1")}
    assert cache.lookup("a.com") == {ip("192.0.2.1"), ip("192.0.2.2")}
    assert cache.names_for_ip("192.0.2.2", endpoint="prod/backend") == frozenset()


def test_in_use_ips_become_zombies_until_unused() -> None:
    clock = ManualClock(0.0)
    cache = FQDNCache(clock)
    cache.add("a.com", ["192.0.2.1", "192.0.2.2"], ttl=10)
    clock.advance(11)
    removed = cache.expire(in_use=["192.0.2.1"])
    assert [str(e.ip) for e in removed] == ["192.0.2.2"]
    assert [str(e.ip) for e in cache.zombies()] == ["192.0.2.1"]
    # The zombie keeps the IP allowed while its connection lives.
    assert cache.names_for_ip("192.0.2.1") == {"a.com."}
    assert [str(e.ip) for e in cache.expire()] == ["192.0.2.1"]
    assert cache.names_for_ip("192.0.2.1") == frozenset()


def test_cname_chain_is_recorded_and_ips_belong_to_the_question() -> None:
    cache = FQDNCache(ManualClock(0.0))
    cache.add("www.example.com", ["192.0.2.7"], ttl=30, cnames=["edge.example.net"])
    assert cache.cnames_for("www.example.com") == ("edge.example.net.",)
    assert cache.lookup("edge.example.net") == frozenset()
    assert cache.names_for_ip("192.0.2.7") == {"www.example.com."}


def test_per_name_ip_limit_keeps_the_longest_lived() -> None:
    cache = FQDNCache(ManualClock(0.0), max_ips_per_hostname=2)
    cache.add("a.com", ["192.0.2.1"], ttl=10)
    cache.add("a.com", ["192.0.2.2"], ttl=20)
    cache.add("a.com", ["192.0.2.3"], ttl=30)
    assert cache.lookup("a.com") == {ip("192.0.2.2"), ip("192.0.2.3")}


def test_manual_clock_cannot_go_backwards() -> None:
    clock = ManualClock(10.0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(5.0)
    clock.set(20.0)
    assert clock.now() == 20.0


def test_negative_ttl_is_rejected() -> None:
    with pytest.raises(ValueError):
        FQDNCache(ManualClock()).add("a.com", ["192.0.2.1"], ttl=-1)
