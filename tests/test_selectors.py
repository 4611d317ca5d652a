"""Label selectors over source-qualified labels (pkg/policy/api/selector.go)."""

from __future__ import annotations

from typing import Any

import pytest

from ciliumpy import EndpointSelector, LabelSet, PolicyError

POD = LabelSet.parse(["k8s:app=web", "k8s:tier=front", "k8s:io.kubernetes.pod.namespace=prod"])
HOST = LabelSet.parse(["reserved:host"])


def sel(data: dict[str, Any]) -> EndpointSelector:
    return EndpointSelector.from_manifest(data, "sel")


@pytest.mark.parametrize(
    ("data", "pod", "host"),
    [
        ({}, True, True),
        ({"matchLabels": {"app": "web"}}, True, False),
        ({"matchLabels": {"k8s:app": "web"}}, True, False),
        ({"matchLabels": {"container:app": "web"}}, False, False),
        ({"matchLabels": {"any:app": "web"}}, True, False),
        ({"matchLabels": {"reserved:host": ""}}, False, True),
        ({"matchLabels": {"app": "web", "tier": "back"}}, False, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]}, True, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, False, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True, False),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False, True),
        (
            {"matchExpressions": [{"key": "k8s:io.kubernetes.pod.namespace", "operator": "In", "values": ["prod"]}]},
            True,
            False,
        ),
    ],
)
def test_matching(data: dict[str, Any], pod: bool, host: bool) -> None:
    s = sel(data)
    assert s.matches(POD) is pod
    assert s.matches(HOST) is host


def test_requirements_are_anded_and_normalised() -> None:
    a = sel({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]})
    b = sel({"matchExpressions": [{"key": "tier", "operator": "Exists"}], "matchLabels": {"app": "web"}})
    assert a == b
    assert str(a) == "app=web, tier"
    assert not a.is_wildcard and sel({}).is_wildcard


def test_values_are_sorted_and_deduplicated() -> None:
    s = sel({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db", "web"]}]})
    assert s.to_manifest() == {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"matchLabels": {"k8s:app": "web", "io.cilium.k8s.namespace.labels.team": "a"}},
        {"matchExpressions": [{"key": "reserved:host", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev", "qa"]}]},
    ],
)
def test_round_trip(data: dict[str, Any]) -> None:
    s = sel(data)
    assert sel(s.to_manifest()) == s


def test_make_builds_the_same_selector() -> None:
    made = EndpointSelector.make({"app": "web"}, [("k8s:tier", "In", ["front"])])
    parsed = sel(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "k8s:tier", "operator": "In", "values": ["front"]}],
        }
    )
    assert made == parsed


def test_key_queries() -> None:
    s = sel({"matchLabels": {"k8s:io.kubernetes.pod.namespace": "prod", "io.cilium.k8s.namespace.labels.team": "a"}})
    assert s.mentions_key("io.kubernetes.pod.namespace")
    assert not s.mentions_key("io.kubernetes.pod.namespace", sources=("any",))
    assert s.mentions_key_prefix("io.cilium.k8s.namespace.labels.")
    assert sel({"matchLabels": {"reserved:world": ""}}).has_source("reserved")


def test_null_selector_is_empty() -> None:
    assert EndpointSelector.from_manifest(None, "sel").is_wildcard


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"matchLabels": {"app": 1}}, "sel.matchLabels.app"),
        ({"matchLabels": "app=web"}, "sel.matchLabels"),
        ({"matchExpressions": {"key": "app"}}, "sel.matchExpressions"),
        ({"matchExpressions": ["app"]}, "sel.matchExpressions[0]"),
        ({"matchExpressions": [{"key": "", "operator": "Exists"}]}, "sel.matchExpressions[0].key"),
        ({"matchExpressions": [{"key": "app", "operator": "Exists", "value": ["x"]}]}, "sel.matchExpressions[0].value"),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]}, "sel.matchExpressions[0].values"),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a b"]}]},
            "sel.matchExpressions[0].values[0]",
        ),
    ],
)
def test_rejections_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as info:
        sel(data)
    assert info.value.field == field


def test_plain_kubernetes_selectors_refuse_cilium_sources() -> None:
    with pytest.raises(PolicyError, match="invalid label key"):
        EndpointSelector.from_manifest({"matchLabels": {"k8s:app": "web"}}, "sel", sources=False)
