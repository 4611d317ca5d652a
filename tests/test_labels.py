"""Labels with sources, label sets and Kubernetes label validation (pkg/labels/labels.go)."""

from __future__ import annotations

import ipaddress

import pytest

from ciliumpy import Label, LabelSet, PolicyError
from ciliumpy._labels import (
    cidr_label,
    normalize_label_mapping,
    split_source,
    validate_label_key,
    validate_label_value,
)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("k8s:app=web", Label("k8s", "app", "web")),
        ("app=web", Label("any", "app", "web")),
        ("reserved:host", Label("reserved", "host", "")),
        ("$host", Label("reserved", "host", "")),
        ("cidr:10.0.0.0/8", Label("cidr", "10.0.0.0/8", "")),
        ("k8s:io.kubernetes.pod.namespace=prod", Label("k8s", "io.kubernetes.pod.namespace", "prod")),
        ("example.com/role=db", Label("any", "example.com/role", "db")),
    ],
)
def test_parse(text: str, label: Label) -> None:
    assert Label.parse(text) == label


def test_unknown_prefix_is_part_of_the_key() -> None:
    assert split_source("notasource:key") == ("any", "notasource:key")
    assert split_source("container:key") == ("container", "key")


@pytest.mark.parametrize("text", ["", "k8s:=x"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(PolicyError):
        Label.parse(text)


def test_str_round_trips() -> None:
    for text in ("k8s:app=web", "reserved:world", "cidr:10.0.0.0/8"):
        assert str(Label.parse(text)) == text


def test_ipv6_cidr_label_uses_dashes() -> None:
    assert str(cidr_label(ipaddress.ip_network("2001:db8::/32"))) == "cidr:2001-db8--/32"
    assert str(cidr_label(ipaddress.ip_network("::1/128"))) == "cidr:--1/128"


def test_any_source_lookup_sees_every_source() -> None:
    ls = LabelSet.parse(["k8s:app=web", "container:app=legacy", "reserved:host"])
    assert sorted(ls.values_of("app")) == ["legacy", "web"]
    assert ls.values_of("app", "k8s") == ("web",)
    assert ls.has_key("host", "reserved") and not ls.has_key("host", "k8s")
    assert ls.get("missing") is None


def test_label_sets_compare_by_content() -> None:
    a = LabelSet.from_mapping({"app": "web", "tier": "front"})
    b = LabelSet.parse(["k8s:tier=front", "k8s:app=web"])
    assert a == b and hash(a) == hash(b)
    assert a.strings() == ["k8s:app=web", "k8s:tier=front"]
    assert a.k8s_mapping() == {"app": "web", "tier": "front"}
    assert len(a | [Label("k8s", "x", "y")]) == 3


@pytest.mark.parametrize("key", ["app", "app.kubernetes.io/name", "a" * 63, "example.com/" + "b" * 63, "A_b-c.d"])
def test_valid_label_keys(key: str) -> None:
    validate_label_key(key, "f")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "name part"),
        ("-app", "name part"),
        ("app-", "name part"),
        ("a" * 64, "name part"),
        ("Example.com/app", "prefix"),
        ("/app", "prefix"),
        ("a/b/c", "prefix"),
        ("app name", "name part"),
    ],
)
def test_invalid_label_keys(key: str, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason) as info:
        validate_label_key(key, "metadata.labels")
    assert info.value.value == key


@pytest.mark.parametrize("value", ["", "web", "v1.2_3-x", "a" * 63])
def test_valid_label_values(value: str) -> None:
    assert validate_label_value(value, "f") == value


@pytest.mark.parametrize("value", ["-web", "web server", "a" * 64, 3, True, None])
def test_invalid_label_values(value: object) -> None:
    with pytest.raises(PolicyError):
        validate_label_value(value, "f")


def test_normalize_label_mapping() -> None:
    assert normalize_label_mapping(None, "f") == {}
    assert normalize_label_mapping({"app": "web"}, "f") == {"app": "web"}
    with pytest.raises(PolicyError, match="must be of type object"):
        normalize_label_mapping(["app"], "f")
    with pytest.raises(PolicyError) as info:
        normalize_label_mapping({"app": 1}, "metadata.labels")
    assert info.value.field == "metadata.labels.app"
