"""L7 rules: parsing and validation, HTTP/gRPC/Kafka/generic matching and the L7 stage."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import re2
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ciliumpy._datapath import RuleOrigin
from ciliumpy._l7 import (
    DNSQuery,
    DNSRule,
    FrozenStrMap,
    GenericL7Request,
    HeaderMatch,
    HeaderSecret,
    HTTPRequest,
    HTTPRule,
    KafkaRequest,
    KafkaRule,
    L7PolicyView,
    L7Rules,
    evaluate_l7,
    explain_http,
    http_l7_record,
    match_generic,
    match_http,
    match_kafka,
    validate_port_rule_l7,
)
from ciliumpy.exceptions import PolicyError

RULES = "spec.ingress[0].toPorts[0].rules"
CNP = RuleOrigin("CiliumNetworkPolicy", "default", "rule1", "specs[0].ingress[0]")
OTHER = RuleOrigin("CiliumNetworkPolicy", "default", "other", "specs[0].ingress[0]")
SEED = pathlib.Path(__file__).resolve().parent.parent / "examples" / "seed"


def http_rules(*rules: dict[str, Any]) -> L7Rules:
    return L7Rules.from_manifest({"http": list(rules)}, RULES)


def raises_policy(reason: str, field: str | None) -> Any:
    """Context manager asserting a PolicyError with exactly this reason and field."""

    class _Check:
        def __enter__(self) -> None:
            return None

        def __exit__(self, typ: Any, exc: Any, tb: Any) -> bool:
            assert typ is PolicyError, f"expected PolicyError, got {typ!r}"
            assert exc.reason == reason
            assert exc.field == field
            return True

    return _Check()


# --- Star Wars demo ------------------------------------------------------------------------------

STAR_WARS = http_rules({"method": "POST", "path": "/v1/request-landing"})


def test_star_wars_landing_request_is_allowed() -> None:
    req = HTTPRequest.from_mapping({"method": "POST", "path": "/v1/request-landing", "host": "deathstar.default.svc"})
    decision = evaluate_l7([L7PolicyView({CNP}, STAR_WARS)], req)
    assert decision.allowed
    assert decision.status == 200
    assert decision.matched_rule == HTTPRule(method="POST", path="/v1/request-landing")
    assert decision.matched_origins == {CNP}
    assert "matches POST /v1/request-landing" in decision.reason


def test_star_wars_exhaust_port_put_is_denied_with_403() -> None:
    req = HTTPRequest("PUT", "/v1/exhaust-port")
    decision = evaluate_l7([L7PolicyView({CNP}, STAR_WARS)], req)
    assert not decision.allowed
    assert decision.status == 403
    assert decision.matched_rule is None
    assert "method 'PUT' does not match 'POST'" in decision.reason
    assert "path '/v1/exhaust-port' does not match '/v1/request-landing'" in decision.reason
    assert decision.accepts == ("POST /v1/request-landing",)


def test_without_a_request_the_decision_lists_what_is_accepted() -> None:
    decision = evaluate_l7([L7PolicyView({CNP}, STAR_WARS)], None)
    assert not decision.allowed
    assert decision.accepts == ("POST /v1/request-landing",)
    assert decision.parser == "http"
    assert "redirected to the proxy" in decision.reason


# --- parsing and round trips ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "manifest",
    [
        {"http": [{}]},
        {"http": []},
        {"http": [{"method": "GET", "path": "/api/products"}]},
        {"http": [{"method": "GET|HEAD", "path": "/public/.*", "host": "api\\.example\\.com"}]},
        {"http": [{"headers": ["X-My-Header: true", "X-Present"]}]},
        {
            "http": [
                {
                    "headerMatches": [
                        {"name": "X-Token", "value": "s3cr3t"},
                        {"name": "X-Sec", "secret": {"namespace": "ns", "name": "tok"}},
                        {"name": "X-Log", "value": "v", "mismatch": "LOG"},
                        {"name": "X-Add", "value": "v", "mismatch": "ADD"},
                        {"name": "X-Del", "mismatch": "DELETE"},
                        {"name": "X-Rep", "value": "v", "mismatch": "REPLACE"},
                    ]
                }
            ]
        },
        {"kafka": [{"role": "produce", "topic": "orders"}]},
        {"kafka": [{"apiKey": "fetch", "apiVersion": "2", "clientID": "c1", "topic": "t"}]},
        {"dns": [{"matchName": "api.stripe.com"}, {"matchPattern": "*.amazonaws.com"}]},
        {"dns": [{"matchPattern": "*"}, {"matchName": "cilium.io."}]},
        {"l7proto": "r2d2", "l7": [{"cmd": "READ", "file": "/public/.*"}]},
        {"l7proto": "r2d2"},
        {},
    ],
)
def test_rules_round_trip_through_the_manifest_form(manifest: dict[str, Any]) -> None:
    rules = L7Rules.from_manifest(manifest, RULES)
    assert rules.to_manifest() == manifest
    assert L7Rules.from_manifest(rules.to_manifest(), RULES) == rules
    hash(rules)  # frozen and usable as a dict key


@pytest.mark.parametrize(
    ("manifest", "parser", "priority"),
    [
        ({"http": [{}]}, "http", 101),
        ({"kafka": [{}]}, "kafka", 106),
        ({"l7proto": "r2d2", "l7": [{}]}, "r2d2", 111),
        ({"dns": [{"matchPattern": "*"}]}, "dns", 121),
        ({}, None, 0),
    ],
)
def test_parser_and_listener_priority(manifest: dict[str, Any], parser: str | None, priority: int) -> None:
    rules = L7Rules.from_manifest(manifest, RULES)
    assert rules.parser == parser
    assert rules.listener_priority == priority


def test_empty_strings_are_the_same_as_omitted_fields() -> None:
    rules = http_rules({"method": "", "path": "", "host": ""})
    assert rules.http == (HTTPRule(),)
    assert rules.to_manifest() == {"http": [{}]}


def test_unknown_rule_key_is_rejected_with_its_path() -> None:
    with pytest.raises(PolicyError) as info:
        L7Rules.from_manifest({"http": [{"method": "GET", "verb": "x"}]}, RULES)
    assert info.value.field == f"{RULES}.http[0].verb"
    assert "unknown field 'verb'" in info.value.reason


def test_unknown_top_level_key_is_rejected() -> None:
    with pytest.raises(PolicyError) as info:
        L7Rules.from_manifest({"grpc": []}, RULES)
    assert info.value.field == f"{RULES}.grpc"


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ({"http": {"method": "GET"}}, f"{RULES}.http"),
        ({"http": [{"method": 7}]}, f"{RULES}.http[0].method"),
        ({"http": ["GET /"]}, f"{RULES}.http[0]"),
        ({"http": [{"headers": [1]}]}, f"{RULES}.http[0].headers[0]"),
        ({"dns": [{"matchName": 3}]}, f"{RULES}.dns[0].matchName"),
        ({"kafka": [{"topic": ["a"]}]}, f"{RULES}.kafka[0].topic"),
        ({"l7proto": "r2d2", "l7": [{"cmd": 1}]}, f"{RULES}.l7[0].cmd"),
        ("http", RULES),
    ],
)
def test_wrong_types_are_rejected(manifest: Any, field: str) -> None:
    with pytest.raises(PolicyError) as info:
        L7Rules.from_manifest(manifest, RULES)
    assert info.value.field == field


# --- validation messages of §1.10 ----------------------------------------------------------------


def test_two_l7_types_in_one_rule() -> None:
    with raises_policy("multiple L7 protocol rule types specified in single rule", RULES):
        L7Rules.from_manifest({"http": [{}], "dns": [{"matchName": "a.com"}]}, RULES)


def test_empty_lists_still_count_as_l7_types() -> None:
    # The agent counts non-nil lists, so an empty list selects a parser too.
    with raises_policy("multiple L7 protocol rule types specified in single rule", RULES):
        L7Rules.from_manifest({"http": [], "kafka": []}, RULES)


def test_l7_without_l7proto() -> None:
    with raises_policy("'l7' may only be specified when a 'l7proto' is also specified", f"{RULES}.l7"):
        L7Rules.from_manifest({"l7": [{"cmd": "READ"}]}, RULES)


def test_l7proto_with_http_is_two_types() -> None:
    with raises_policy("multiple L7 protocol rule types specified in single rule", RULES):
        L7Rules.from_manifest({"http": [{}], "l7proto": "r2d2"}, RULES)


def test_empty_l7_key() -> None:
    with raises_policy("Empty key not allowed", f"{RULES}.l7[1]"):
        L7Rules.from_manifest({"l7proto": "r2d2", "l7": [{"a": "b"}, {"": "x"}]}, RULES)


@pytest.mark.parametrize(
    ("field", "pattern", "message"),
    [
        ("path", "(", "error parsing regexp: missing closing ): `(`"),
        ("path", "/a[b", "error parsing regexp: missing closing ]: `[b`"),
        ("method", "GET**", "error parsing regexp: invalid nested repetition operator: `**`"),
        ("method", "(?=GET)", "error parsing regexp: invalid or unsupported Perl syntax: `(?=`"),
        ("host", "a{1001}", "error parsing regexp: invalid repeat count: `{1001}`"),
    ],
)
def test_invalid_http_regex(field: str, pattern: str, message: str) -> None:
    with raises_policy(message, f"{RULES}.http[1].{field}"):
        http_rules({"path": "/ok"}, {field: pattern})


def test_backreferences_are_not_re2() -> None:
    with pytest.raises(PolicyError) as info:
        http_rules({"path": "/(a)\\1"})
    assert info.value.field == f"{RULES}.http[0].path"
    assert info.value.reason.startswith("error parsing regexp: invalid escape sequence")


def test_header_name_missing() -> None:
    with raises_policy("Header name missing", f"{RULES}.http[0].headerMatches[0].name"):
        http_rules({"headerMatches": [{"value": "x"}]})


def test_invalid_header_action() -> None:
    with raises_policy("Invalid header action: DROP", f"{RULES}.http[0].headerMatches[1].mismatch"):
        http_rules({"headerMatches": [{"name": "A"}, {"name": "B", "mismatch": "DROP"}]})


def test_secret_name_missing() -> None:
    with raises_policy("Secret name missing", f"{RULES}.http[0].headerMatches[0].secret.name"):
        http_rules({"headerMatches": [{"name": "A", "secret": {"namespace": "ns"}}]})


def test_match_name_with_invalid_characters() -> None:
    with raises_policy(
        'Invalid characters in MatchName: "api.*.com". Only 0-9, a-z, A-Z and ., -, _ characters are allowed',
        f"{RULES}.dns[0].matchName",
    ):
        L7Rules.from_manifest({"dns": [{"matchName": "api.*.com"}]}, RULES)


def test_match_pattern_with_invalid_characters() -> None:
    with raises_policy(
        'Invalid characters in MatchPattern: "[a-z]+.com". Only 0-9, a-z, A-Z and ., -, _ and * characters are allowed',
        f"{RULES}.dns[1].matchPattern",
    ):
        L7Rules.from_manifest({"dns": [{"matchName": "ok.com"}, {"matchPattern": "[a-z]+.com"}]}, RULES)


def test_match_pattern_too_long() -> None:
    pattern = "a" * 256
    with raises_policy(
        f'Invalid MatchPattern: "{pattern}". Must be <= 255 characters long.',
        f"{RULES}.dns[0].matchPattern",
    ):
        L7Rules.from_manifest({"dns": [{"matchPattern": pattern}]}, RULES)


@pytest.mark.parametrize(
    ("rule", "message", "sub"),
    [
        (
            {"role": "produce", "apiKey": "fetch"},
            'cannot set both Role "produce" and APIKey "fetch" together',
            "",
        ),
        ({"apiKey": "sing"}, 'invalid Kafka APIKey "sing"', ".apiKey"),
        ({"role": "admin"}, 'invalid Kafka Role "admin"', ".role"),
        ({"apiVersion": "-1"}, 'invalid Kafka APIVersion "-1"', ".apiVersion"),
        ({"apiVersion": "40000"}, 'invalid Kafka APIVersion "40000"', ".apiVersion"),
        ({"topic": "a" * 256}, "kafka topic exceeds maximum len of 255", ".topic"),
        ({"topic": "a b"}, 'invalid Kafka Topic name "a b"', ".topic"),
    ],
)
def test_kafka_rule_validation(rule: dict[str, str], message: str, sub: str) -> None:
    with raises_policy(message, f"{RULES}.kafka[0]{sub}"):
        L7Rules.from_manifest({"kafka": [rule]}, RULES)


def test_kafka_names_are_case_insensitive() -> None:
    rule = L7Rules.from_manifest({"kafka": [{"apiKey": "Produce"}]}, RULES).kafka
    assert rule is not None and rule[0].api_keys == frozenset({0})


# --- validation against ports and direction ------------------------------------------------------

PORT_RULE = "spec.egress[0].toPorts[0]"
DNS_RULES = L7Rules(dns=(DNSRule(match_pattern="*"),))
HTTP_RULES = L7Rules(http=(HTTPRule(),))


def test_dns_rules_on_ingress() -> None:
    with raises_policy("DNS rules are not allowed on ingress", f"{PORT_RULE}.rules.dns"):
        validate_port_rule_l7(DNS_RULES, [{"port": "53", "protocol": "UDP"}], path=PORT_RULE, ingress=True)


def test_http_rules_on_udp() -> None:
    with raises_policy(
        "L7 rules can only apply to TCP (not UDP) except for DNS rules",
        f"{PORT_RULE}.ports[1].protocol",
    ):
        validate_port_rule_l7(
            HTTP_RULES,
            [{"port": "80", "protocol": "TCP"}, {"port": "80", "protocol": "UDP"}],
            path=PORT_RULE,
            ingress=False,
        )


def test_http_rules_with_omitted_protocol_count_as_any() -> None:
    with raises_policy(
        "L7 rules can only apply to TCP (not ANY) except for DNS rules",
        f"{PORT_RULE}.ports[0].protocol",
    ):
        validate_port_rule_l7(HTTP_RULES, [{"port": "80"}], path=PORT_RULE, ingress=True)


def test_dns_rules_may_use_any_protocol() -> None:
    validate_port_rule_l7(DNS_RULES, [{"port": "53", "protocol": "ANY"}], path=PORT_RULE, ingress=False)


def test_l7_rules_with_port_zero() -> None:
    with raises_policy("L7 rules can not be used when a port is 0", f"{PORT_RULE}.ports[0].port"):
        validate_port_rule_l7(HTTP_RULES, [{"port": "0", "protocol": "TCP"}], path=PORT_RULE, ingress=True)


def test_dns_rules_without_ports() -> None:
    with raises_policy("port 53 must be specified for DNS rules", f"{PORT_RULE}.ports"):
        validate_port_rule_l7(DNS_RULES, [], path=PORT_RULE, ingress=False)


def test_dns_rules_with_a_port_range() -> None:
    with raises_policy("DNS rules do not support port ranges", f"{PORT_RULE}.ports[0].endPort"):
        validate_port_rule_l7(
            DNS_RULES,
            [{"port": "53", "endPort": 54, "protocol": "UDP"}],
            path=PORT_RULE,
            ingress=False,
        )


def test_http_rules_with_a_port_range_are_fine() -> None:
    validate_port_rule_l7(
        HTTP_RULES,
        [{"port": "8080", "endPort": 8090, "protocol": "TCP"}],
        path=PORT_RULE,
        ingress=True,
    )


def test_named_ports_are_not_port_zero() -> None:
    validate_port_rule_l7(HTTP_RULES, [{"port": "http", "protocol": "TCP"}], path=PORT_RULE, ingress=True)


def test_l7_on_host_ingress() -> None:
    with raises_policy("L7 policy is not supported on host ingress yet", f"{PORT_RULE}.rules"):
        validate_port_rule_l7(
            HTTP_RULES,
            [{"port": "80", "protocol": "TCP"}],
            path=PORT_RULE,
            ingress=True,
            host_policy=True,
        )


def test_http_on_host_egress() -> None:
    with raises_policy("L7 protocol HTTP is not supported on host egress yet", f"{PORT_RULE}.rules"):
        validate_port_rule_l7(
            HTTP_RULES,
            [{"port": "80", "protocol": "TCP"}],
            path=PORT_RULE,
            ingress=False,
            host_policy=True,
        )


def test_l7_with_the_proxy_disabled() -> None:
    with raises_policy("L7 policy is not supported since L7 proxy is not enabled", f"{PORT_RULE}.rules"):
        validate_port_rule_l7(
            DNS_RULES,
            [{"port": "53", "protocol": "UDP"}],
            path=PORT_RULE,
            ingress=False,
            l7_proxy_enabled=False,
        )


def test_empty_rules_need_no_port_checks() -> None:
    validate_port_rule_l7(L7Rules(), [{"port": "0"}], path=PORT_RULE, ingress=True)
    validate_port_rule_l7(None, [], path=PORT_RULE, ingress=True)


# --- HTTP matching -------------------------------------------------------------------------------


def test_path_is_an_anchored_full_match() -> None:
    rule = HTTPRule(path="/public")
    assert match_http(rule, HTTPRequest("GET", "/public"))
    assert not match_http(rule, HTTPRequest("GET", "/public/index.html"))
    assert not match_http(rule, HTTPRequest("GET", "/x/public"))
    assert match_http(HTTPRule(path="/public.*"), HTTPRequest("GET", "/public/index.html"))


def test_path_sees_the_query_string() -> None:
    rule = HTTPRule(method="GET", path="/api/products")
    assert not match_http(rule, HTTPRequest("GET", "/api/products?page=2"))
    assert match_http(
        HTTPRule(method="GET", path="/api/products(\\?.*)?"),
        HTTPRequest("GET", "/api/products?page=2"),
    )


def test_method_regex_is_case_sensitive_and_anchored() -> None:
    rule = HTTPRule(method="GET|HEAD")
    assert match_http(rule, HTTPRequest("HEAD", "/"))
    assert not match_http(rule, HTTPRequest("get", "/"))
    assert not match_http(rule, HTTPRequest("GETX", "/"))


def test_host_is_a_regex_on_the_authority() -> None:
    rule = HTTPRule(host="foo.bar.com")
    assert match_http(rule, HTTPRequest("GET", "/", host="foo.bar.com"))
    # Dots are regex metacharacters.
    assert match_http(rule, HTTPRequest("GET", "/", host="fooXbar.com"))
    # The authority may carry a port, which then has to be matched too.
    assert not match_http(rule, HTTPRequest("GET", "/", host="foo.bar.com:8080"))
    assert match_http(HTTPRule(host="foo\\.bar\\.com(:[0-9]+)?"), HTTPRequest("GET", "/", host="foo.bar.com:8080"))
    # A Host header stands in for a missing explicit authority.
    assert match_http(rule, HTTPRequest("GET", "/", headers={"Host": "foo.bar.com"}))
    assert not match_http(rule, HTTPRequest("GET", "/"))


def test_headers_presence_and_exact_value() -> None:
    rule = HTTPRule(headers=("X-My-Header: true", "X-Present"))
    assert match_http(rule, HTTPRequest("GET", "/", headers={"x-my-header": "true", "X-Present": ""}))
    problems, _ = explain_http(rule, HTTPRequest("GET", "/", headers={"X-My-Header": "false"}))
    assert problems == [
        "header X-My-Header is 'false', needs 'true'",
        "header X-Present missing",
    ]


def test_repeated_headers_are_matched_joined_with_commas() -> None:
    req = HTTPRequest("GET", "/", headers=[("Accept", "a"), ("accept", "b")])
    assert match_http(HTTPRule(headers=("Accept a,b",)), req)
    assert not match_http(HTTPRule(headers=("Accept a",)), req)


def test_header_matches_without_mismatch_action() -> None:
    rule = HTTPRule(header_matches=(HeaderMatch("X-Token", value="s3cr3t"), HeaderMatch("X-Id")))
    assert match_http(rule, HTTPRequest("GET", "/", headers={"X-Token": "s3cr3t", "X-Id": "1"}))
    assert not match_http(rule, HTTPRequest("GET", "/", headers={"X-Token": "nope", "X-Id": "1"}))
    assert not match_http(rule, HTTPRequest("GET", "/", headers={"X-Token": "s3cr3t"}))


def test_header_matches_with_a_mismatch_action_still_match() -> None:
    rule = HTTPRule(
        path="/x",
        header_matches=(
            HeaderMatch("X-Token", value="good", mismatch="LOG"),
            HeaderMatch("X-Tenant", value="acme", mismatch="REPLACE"),
        ),
    )
    problems, actions = explain_http(rule, HTTPRequest("GET", "/x", headers={"X-Token": "bad"}))
    assert problems == []
    assert actions == ["LOG header X-Token", "REPLACE header X-Tenant"]
    decision = evaluate_l7(
        [L7PolicyView({CNP}, L7Rules(http=(rule,)))],
        HTTPRequest("GET", "/x", headers={"X-Token": "bad"}),
    )
    assert decision.allowed
    assert decision.header_actions == ("LOG header X-Token", "REPLACE header X-Tenant")


def test_header_match_secrets() -> None:
    rule = HTTPRule(header_matches=(HeaderMatch("X-Key", secret=HeaderSecret("k", "ns")),))
    req = HTTPRequest("GET", "/", headers={"X-Key": "from-secret"})
    assert match_http(rule, req, secrets={("ns", "k"): "from-secret"})
    assert not match_http(rule, req, secrets={("ns", "k"): "other"})
    # An unavailable secret without a fallback value never matches, even with a mismatch action.
    assert not match_http(rule, req)
    lenient = HTTPRule(header_matches=(HeaderMatch("X-Key", secret=HeaderSecret("k", "ns"), mismatch="LOG"),))
    assert not match_http(lenient, req)
    # A value next to the secret is the fallback.
    fallback = HTTPRule(header_matches=(HeaderMatch("X-Key", value="from-secret", secret=HeaderSecret("k", "ns")),))
    assert match_http(fallback, req)


def test_empty_rule_matches_every_request() -> None:
    assert match_http(HTTPRule(), HTTPRequest("DELETE", "/anything?x=1", host="h"))


# --- gRPC ----------------------------------------------------------------------------------------


def test_grpc_shorthand_is_an_http2_post() -> None:
    req = HTTPRequest.from_mapping({"grpc": "/mypackage.MyService/GetItems"})
    assert req.method == "POST"
    assert req.path == "/mypackage.MyService/GetItems"
    assert req.protocol == "HTTP/2"
    assert req.header("content-type") == "application/grpc"


def test_grpc_method_policy() -> None:
    rules = http_rules({"method": "POST", "path": "/mypackage.MyService/GetItems"})
    views = [L7PolicyView({CNP}, rules)]
    ok = evaluate_l7(views, HTTPRequest.from_mapping({"grpc": "/mypackage.MyService/GetItems"}))
    assert ok.allowed and ok.status == 200
    no = evaluate_l7(views, HTTPRequest.from_mapping({"grpc": "mypackage.MyService/DeleteItems"}))
    assert not no.allowed and no.status == 403


def test_request_from_url_and_unknown_keys() -> None:
    req = HTTPRequest.from_mapping({"method": "GET", "url": "http://api.example.com:8080/a?b=1"})
    assert (req.host, req.path) == ("api.example.com:8080", "/a?b=1")
    with pytest.raises(PolicyError) as info:
        HTTPRequest.from_mapping({"method": "GET", "path": "/", "verb": "x"})
    assert info.value.field == "verb"
    with pytest.raises(PolicyError):
        HTTPRequest.from_mapping({"method": "GET"})


# --- Kafka ---------------------------------------------------------------------------------------


def test_kafka_produce_role() -> None:
    rule = KafkaRule(role="produce", topic="orders")
    assert match_kafka(rule, KafkaRequest("produce", 3, topics=("orders",)))
    assert match_kafka(rule, KafkaRequest("metadata", 1, topics=("orders",)))
    assert match_kafka(rule, KafkaRequest("apiversions"))  # no topic: constraint ignored
    assert not match_kafka(rule, KafkaRequest("fetch", 1, topics=("orders",)))
    assert not match_kafka(rule, KafkaRequest("produce", 3, topics=("payments",)))


def test_kafka_consume_role_and_fields() -> None:
    rule = KafkaRule(role="consume", api_version="4", client_id="billing")
    assert match_kafka(rule, KafkaRequest(1, 4, "billing", ("a",)))
    assert not match_kafka(rule, KafkaRequest(1, 5, "billing", ("a",)))
    assert not match_kafka(rule, KafkaRequest(1, 4, "other", ("a",)))
    assert not match_kafka(rule, KafkaRequest("produce", 4, "billing", ("a",)))


def test_kafka_every_topic_must_be_allowed_possibly_by_different_rules() -> None:
    rules = L7Rules(kafka=(KafkaRule(topic="a"), KafkaRule(topic="b")))
    views = [L7PolicyView({CNP}, rules)]
    assert evaluate_l7(views, KafkaRequest("produce", topics=("a", "b"))).allowed
    denied = evaluate_l7(views, KafkaRequest("produce", topics=("a", "c")))
    assert not denied.allowed and denied.status is None


def test_kafka_request_from_mapping() -> None:
    req = KafkaRequest.from_mapping({"apiKey": "produce", "apiVersion": 2, "topic": "orders"})
    assert req == KafkaRequest(0, 2, "", ("orders",))
    assert req.api_key_name == "produce"


# --- generic proxylib rules ----------------------------------------------------------------------


def test_generic_l7_rules_match_on_key_values() -> None:
    rules = L7Rules.from_manifest({"l7proto": "r2d2", "l7": [{"cmd": "READ"}]}, RULES)
    views = [L7PolicyView({CNP}, rules)]
    assert evaluate_l7(views, GenericL7Request("r2d2", {"cmd": "READ", "file": "x"})).allowed
    assert not evaluate_l7(views, GenericL7Request("r2d2", {"cmd": "WRITE"})).allowed
    assert match_generic(FrozenStrMap(), GenericL7Request("r2d2", {"cmd": "HALT"}))


# --- the L7 stage --------------------------------------------------------------------------------


def test_deny_view_beats_an_l7_allow() -> None:
    views = [
        L7PolicyView({CNP}, http_rules({})),
        L7PolicyView({OTHER}, None, deny=True),
    ]
    decision = evaluate_l7(views, HTTPRequest("GET", "/"))
    assert not decision.allowed
    assert decision.status == 403
    assert decision.matched_origins == {OTHER}
    assert decision.accepts == ()


def test_plain_allow_view_allows_everything() -> None:
    views = [L7PolicyView({CNP}, STAR_WARS), L7PolicyView({OTHER}, None)]
    decision = evaluate_l7(views, HTTPRequest("PUT", "/v1/exhaust-port"))
    assert decision.allowed
    assert decision.matched_origins == {OTHER}
    assert decision.accepts == ("*",)


def test_l3_only_view_allows_everything() -> None:
    views = [L7PolicyView({CNP}, STAR_WARS), L7PolicyView({OTHER}, None, l3_only=True)]
    decision = evaluate_l7(views, HTTPRequest("PUT", "/v1/exhaust-port"))
    assert decision.allowed
    assert "L3-only" in decision.reason


def test_empty_rule_list_restricts_nothing() -> None:
    views = [L7PolicyView({CNP}, L7Rules(http=()))]
    assert evaluate_l7(views, HTTPRequest("DELETE", "/x")).allowed


def test_any_rule_of_any_view_may_allow() -> None:
    views = [
        L7PolicyView({CNP}, http_rules({"method": "GET", "path": "/a"})),
        L7PolicyView({OTHER}, http_rules({"method": "GET", "path": "/b"})),
    ]
    decision = evaluate_l7(views, HTTPRequest("GET", "/b"))
    assert decision.allowed and decision.matched_origins == {OTHER}
    assert decision.accepts == ("GET /a", "GET /b")
    assert not evaluate_l7(views, HTTPRequest("GET", "/c")).allowed


def test_no_views_means_denied() -> None:
    decision = evaluate_l7([], HTTPRequest("GET", "/"))
    assert not decision.allowed and decision.status == 403


def test_dns_requests_through_the_l7_stage() -> None:
    rules = L7Rules(dns=(DNSRule(match_name="api.stripe.com"), DNSRule(match_pattern="*.amazonaws.com")))
    views = [L7PolicyView({CNP}, rules)]
    ok = evaluate_l7(views, DNSQuery("S3.amazonaws.com"))
    assert ok.allowed and ok.matched_rule == DNSRule(match_pattern="*.amazonaws.com")
    denied = evaluate_l7(views, DNSQuery("evil-site.com"))
    assert not denied.allowed and "REFUSED" in denied.reason
    assert denied.accepts == ("matchName api.stripe.com", "matchPattern *.amazonaws.com")


def test_wrong_parser_does_not_match() -> None:
    views = [L7PolicyView({CNP}, STAR_WARS)]
    assert not evaluate_l7(views, DNSQuery("a.com")).allowed


# --- merging -------------------------------------------------------------------------------------


def test_merge_is_a_deduplicated_union() -> None:
    a = http_rules({"method": "GET", "path": "/a"}, {"method": "GET", "path": "/b"})
    b = http_rules({"method": "GET", "path": "/b"}, {"method": "POST", "path": "/c"})
    merged = a.merged(b)
    assert [r.describe() for r in merged.http or ()] == ["GET /a", "GET /b", "POST /c"]
    assert a.merged(L7Rules()) == a


def test_merging_conflicting_parsers_fails() -> None:
    with pytest.raises(PolicyError) as info:
        http_rules({}).merged(L7Rules(kafka=(KafkaRule(),)))
    assert info.value.reason == "cannot merge conflicting L7 parsers (http/kafka)"


def test_allow_all_shapes() -> None:
    assert L7Rules.allow_all("http").to_manifest() == {"http": [{}]}
    assert L7Rules.allow_all("dns").to_manifest() == {"dns": [{"matchPattern": "*"}]}
    assert L7Rules.allow_all("kafka").to_manifest() == {"kafka": [{}]}
    assert L7Rules.allow_all("r2d2").to_manifest() == {"l7proto": "r2d2", "l7": [{}]}
    # Merging the wildcard makes every request pass but keeps the parser.
    merged = STAR_WARS.merged(L7Rules.allow_all("http"))
    assert merged.parser == "http"
    assert evaluate_l7([L7PolicyView({CNP}, merged)], HTTPRequest("PUT", "/x")).allowed


# --- ReDoS-shaped patterns -----------------------------------------------------------------------


def test_catastrophic_backtracking_patterns_run_in_linear_time() -> None:
    # A backtracking engine needs ~2**50000 steps for this; RE2 is linear. The input is
    # large enough that a regression to Python's re would hang the suite.
    evil = "a" * 50_000 + "b"
    rule = HTTPRule(path="(a+)+$", host="(a|aa)+", method="(a*)*")
    assert not match_http(HTTPRule(path="(a+)+$"), HTTPRequest("GET", evil))
    assert match_http(HTTPRule(path="(a+)+$"), HTTPRequest("GET", evil[:-1]))
    assert not match_http(rule, HTTPRequest(evil, evil, host=evil))
    decision = evaluate_l7([L7PolicyView({CNP}, L7Rules(http=(rule,)))], HTTPRequest("GET", evil))
    assert not decision.allowed


# --- Hubble --------------------------------------------------------------------------------------


def test_http_l7_records() -> None:
    req = HTTPRequest("PUT", "/v1/exhaust-port", host="deathstar.default.svc.cluster.local")
    denied = evaluate_l7([L7PolicyView({CNP}, STAR_WARS)], req)
    record = http_l7_record(req, denied)
    assert record == {
        "l7": {
            "type": "REQUEST",
            "http": {
                "code": 403,
                "method": "PUT",
                "url": "http://deathstar.default.svc.cluster.local/v1/exhaust-port",
                "protocol": "HTTP/1.1",
            },
        },
        "verdict": "DROPPED",
        "Summary": "HTTP/1.1 PUT http://deathstar.default.svc.cluster.local/v1/exhaust-port",
    }
    ok_req = HTTPRequest("POST", "/v1/request-landing", host="deathstar", headers={"X-A": "1"})
    ok = http_l7_record(ok_req, evaluate_l7([L7PolicyView({CNP}, STAR_WARS)], ok_req), latency_ns=5)
    assert ok["verdict"] == "FORWARDED"
    assert "code" not in ok["l7"]["http"]
    assert ok["l7"]["latency_ns"] == "5"
    assert ok["l7"]["http"]["headers"] == [{"key": "X-A", "value": "1"}]


# --- properties ----------------------------------------------------------------------------------

_path_text = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00\n"), max_size=30)


@given(_path_text, _path_text)
def test_escaped_literal_paths_match_only_themselves(wanted: str, got: str) -> None:
    rule = HTTPRule(path=re2.escape(wanted))
    assert match_http(rule, HTTPRequest("GET", got)) == (wanted == got)


@given(st.text(alphabet="ab/", max_size=20), st.sampled_from(["a*", "(ab)+", "/a?b*", "[ab/]+"]))
def test_full_match_agrees_with_a_reference_engine_on_safe_patterns(path: str, pattern: str) -> None:
    # These patterns cannot backtrack badly, so Python's re is a fine oracle here.
    assert match_http(HTTPRule(path=pattern), HTTPRequest("GET", path)) == (re.fullmatch(pattern, path) is not None)


# --- seed examples -------------------------------------------------------------------------------


def _seed_port_rules() -> list[tuple[str, bool, dict[str, Any]]]:
    found = []
    for path in sorted(SEED.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for direction in ("ingress", "egress"):
                for i, rule in enumerate(doc.get("spec", {}).get(direction, []) or []):
                    for j, port_rule in enumerate(rule.get("toPorts", []) or []):
                        where = f"{path.name}:{doc['metadata']['name']}.{direction}[{i}].toPorts[{j}]"
                        found.append((where, direction == "ingress", port_rule))
    return found


def test_seed_examples_have_valid_l7_rules() -> None:
    port_rules = _seed_port_rules()
    assert len(port_rules) >= 10
    for where, ingress, port_rule in port_rules:
        if "rules" not in port_rule:
            continue
        rules = L7Rules.from_manifest(port_rule["rules"], f"{where}.rules")
        validate_port_rule_l7(rules, port_rule["ports"], path=where, ingress=ingress)


def test_seed_api_gateway_policy_semantics() -> None:
    doc = next(yaml.safe_load_all((SEED / "03-l7-http.yaml").read_text()))
    rules = L7Rules.from_manifest(doc["spec"]["ingress"][0]["toPorts"][0]["rules"], RULES)
    views = [L7PolicyView({CNP}, rules)]
    allowed = [("GET", "/api/products"), ("POST", "/api/orders"), ("GET", "/api/users/42")]
    denied = [
        ("GET", "/api/products?page=2"),
        ("DELETE", "/api/orders"),
        ("GET", "/api/users/me"),
        ("GET", "/api/users/"),
        ("POST", "/api/products"),
    ]
    for method, path in allowed:
        assert evaluate_l7(views, HTTPRequest(method, path)).allowed, (method, path)
    for method, path in denied:
        assert evaluate_l7(views, HTTPRequest(method, path)).status == 403, (method, path)
