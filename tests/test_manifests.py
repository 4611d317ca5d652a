"""Reading manifests, atomic apply and manifest round trips."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ciliumpy import (
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    Cluster,
    Endpoint,
    EndpointSlice,
    Namespace,
    NetworkPolicy,
    Node,
    PolicyError,
    Service,
)
from ciliumpy._manifests import load_objects, read_documents

WORLD = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {team: web}
---
apiVersion: v1
kind: Pod
metadata:
  name: front
  namespace: shop
  labels: {app: front}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: shop
  labels: {app: api}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 8080}]
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata:
  name: db
  namespace: shop
  labels: {app: db}
status: {podIP: 10.244.0.12}
"""

POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: front}}]
    toPorts: [{ports: [{port: http, protocol: TCP}]}]
"""

BAD_POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "99999", protocol: TCP}]}]
"""

PAIRS = [
    (src, dst, port)
    for src in ("shop/front", "shop/api", "shop/db", "world")
    for dst in ("shop/front", "shop/api", "shop/db")
    for port in (8080, 5432)
]


def _state(c: Cluster) -> tuple[Any, ...]:
    """Everything observable: objects, identities, every map state and a verdict matrix."""
    manifests = sorted(json.dumps(m, sort_keys=True) for m in c.to_manifests())
    maps = {ref: c.map_state(ref) for ref in c.endpoints}
    idents = {ref: c.identity_of(ref) for ref in c.endpoints}
    verdicts = [c.check(s, d, p).verdict for s, d, p in PAIRS]
    return manifests, maps, idents, verdicts


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster.from_manifests(WORLD, POLICY)
    assert c.check("shop/front", "shop/api", 8080).allowed
    return c


# ---- atomic apply -----------------------------------------------------------------------------
def test_bad_document_after_good_ones_changes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    before = _state(cluster)
    new_pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: cache, namespace: shop}\n"
    allow_all = POLICY.replace("name: api,", "name: open,").replace(
        "fromEndpoints: [{matchLabels: {app: front}}]", "fromEntities: [all]"
    )
    path = tmp_path / "change.yaml"
    path.write_text(new_pod + "---\n" + allow_all + "---\n" + BAD_POLICY)
    with pytest.raises(PolicyError) as info:
        cluster.apply(path)
    assert info.value.name == "db"
    assert info.value.document == str(path)
    assert _state(cluster) == before
    assert "shop/cache" not in cluster.endpoints


def test_list_with_one_bad_item_changes_nothing(cluster: Cluster) -> None:
    before = _state(cluster)
    good = yaml.safe_load(POLICY.replace("name: api,", "name: api2,"))
    bad = yaml.safe_load(BAD_POLICY)
    with pytest.raises(PolicyError, match="value out of range"):
        cluster.apply({"apiVersion": "v1", "kind": "List", "items": [good, bad]})
    assert _state(cluster) == before


def test_failure_while_storing_restores_the_cluster(cluster: Cluster) -> None:
    before = _state(cluster)
    clash = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "shop"}},
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "y", "namespace": "shop"},
                "status": {"podIP": "10.244.0.10"},  # front's address
            },
        ],
    }
    with pytest.raises(PolicyError, match="address already used"):
        cluster.apply(clash)
    assert _state(cluster) == before


def test_failure_while_resolving_restores_the_cluster(cluster: Cluster) -> None:
    # Two rules put different L7 parsers on the same selector and port: the policy is
    # accepted by the API server but the agent cannot resolve it.
    def l7(name: str, rules: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "api"}},
                "ingress": [
                    {
                        "fromEndpoints": [{"matchLabels": {"app": "front"}}],
                        "toPorts": [{"ports": [{"port": "9092", "protocol": "TCP"}], "rules": rules}],
                    }
                ],
            },
        }

    before = _state(cluster)
    with pytest.raises(PolicyError, match="conflicting L7 parsers"):
        cluster.apply(l7("http", {"http": [{"method": "GET"}]}), l7("kafka", {"kafka": [{"topic": "t"}]}))
    assert _state(cluster) == before


def test_apply_after_a_failure_still_works(cluster: Cluster) -> None:
    with pytest.raises(PolicyError):
        cluster.apply(BAD_POLICY)
    cluster.apply(BAD_POLICY.replace('"99999"', '"5432"'))
    assert cluster.check("shop/api", "shop/db", 5432).allowed
    assert not cluster.check("shop/front", "shop/db", 5432).allowed


# ---- reading sources ----------------------------------------------------------------------------
def test_reads_paths_directories_text_dicts_and_objects(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(WORLD)
    (tmp_path / "sub" / "b.yml").write_text(POLICY)
    (tmp_path / "ignored.txt").write_text("not: a manifest")
    # Like kubectl apply -f DIR: subdirectories only with recursive (-R).
    assert [type(o).__name__ for o in load_objects([tmp_path])] == ["Namespace", "Endpoint", "Endpoint", "Endpoint"]
    objs = load_objects([tmp_path], recursive=True)
    assert [type(o).__name__ for o in objs] == ["Namespace", "Endpoint", "Endpoint", "Endpoint", "CiliumNetworkPolicy"]
    policy = objs[-1]
    assert load_objects([policy]) == [policy]
    assert load_objects([POLICY]) == [policy]
    assert load_objects([yaml.safe_load(POLICY)]) == [policy]
    assert load_objects([json.dumps(yaml.safe_load(POLICY))]) == [policy]


def test_empty_documents_are_skipped() -> None:
    assert len(load_objects(["---\n---\n" + POLICY + "---\n"])) == 1


def test_typed_list_as_kubectl_writes_it() -> None:
    item = yaml.safe_load(POLICY)
    objs = load_objects([{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicyList", "items": [item]}])
    assert [o.name for o in objs] == ["api"]


def test_list_without_items_is_an_error() -> None:
    with pytest.raises(PolicyError, match="List must have items") as info:
        load_objects([{"apiVersion": "v1", "kind": "List"}])
    assert info.value.field == "items"


def test_missing_file_is_named() -> None:
    with pytest.raises(PolicyError, match="no such file") as info:
        load_objects(["does-not-exist.yaml"])
    assert info.value.document == "does-not-exist.yaml"


def test_documents_remember_their_file(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(WORLD)
    docs = list(read_documents(path))
    assert [d.source for d in docs] == [str(path)] * 4
    assert [d.index for d in docs] == [0, 1, 2, 3]


def test_text_errors_name_a_placeholder_document() -> None:
    with pytest.raises(PolicyError) as info:
        load_objects([BAD_POLICY])
    assert info.value.document == "<manifest>"
    assert info.value.line == 8


# ---- round trips ------------------------------------------------------------------------------
ROUND_TRIP = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: everything
  namespace: shop
  labels: {owner: team-a}
  annotations: {note: "kept"}
specs:
- endpointSelector:
    matchLabels: {app: api, k8s:tier: backend}
    matchExpressions:
    - {key: env, operator: In, values: [prod, staging]}
    - {key: canary, operator: DoesNotExist}
  description: all the fields
  enableDefaultDeny: {ingress: true, egress: false}
  log: {value: audit-api}
  labels: [{key: rule, value: one, source: k8s}]
  ingress:
  - fromEndpoints: [{}, {matchLabels: {io.kubernetes.pod.namespace: other}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}, {port: "8000", endPort: 8100, protocol: TCP}]
      rules:
        http: [{method: GET, path: /v1/.*}]
    authentication: {mode: required}
  - fromCIDR: [10.0.0.0/8]
  - fromCIDRSet: [{cidr: 192.0.2.0/24, except: [192.0.2.128/25]}]
  - fromEntities: [world, cluster, host, kube-apiserver]
  - icmps: [{fields: [{family: IPv4, type: 8}, {family: IPv6, type: EchoRequest}]}]
  - fromEndpoints: []
  ingressDeny:
  - fromEntities: [world]
    toPorts: [{ports: [{port: "22", protocol: ANY}]}]
  egress:
  - toFQDNs: [{matchName: api.example.com}, {matchPattern: "*.example.org"}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toEndpoints: [{matchLabels: {k8s-app: kube-dns, io.kubernetes.pod.namespace: kube-system}}]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules: {dns: [{matchPattern: "*"}]}
  - toServices: [{k8sService: {serviceName: db, namespace: shop}}]
  - toPorts:
    - ports: [{port: "8443", protocol: TCP}]
      serverNames: [secure.example.com]
      listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: cec}, name: l1, priority: 5}
  egressDeny:
  - toCIDRSet: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]
- endpointSelector: {}
  ingress: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: host-fw}
spec:
  nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: ""}}
  ingress:
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: "10250", protocol: TCP}]}]
  egress:
  - toPorts:
    - ports: [{port: "53", protocol: UDP}]
      rules: {dns: [{matchName: cluster.local}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
    - namespaceSelector: {matchLabels: {team: ops}}
      podSelector: {}
    - ipBlock: {cidr: 172.16.0.0/12, except: [172.16.1.0/24]}
    ports: [{port: 5432}, {port: metrics, protocol: TCP}, {port: 9000, endPort: 9100}]
  egress:
  - ports: [{protocol: UDP, port: 53}]
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: web}}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  serviceAccountName: api-sa
  nodeName: node-1
  containers:
  - name: app
    image: registry.k8s.io/pause:3.9
    ports: [{name: http, containerPort: 8080, protocol: TCP}, {containerPort: 9000, protocol: UDP}]
status: {podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}, {ip: "fd00:10:244::5"}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: 5432, protocol: TCP}]
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]
  clusterIPs: [10.96.0.21, "fd00:10:96::21"]
  ipFamilies: [IPv4, IPv6]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  internalTrafficPolicy: Local
---
apiVersion: v1
kind: Service
metadata: {name: peers, namespace: shop}
spec:
  clusterIP: None
  ports: [{port: 7000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints:
- addresses: [192.0.2.10]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-1
  targetRef: {kind: Pod, namespace: shop, name: api}
- addresses: [192.0.2.11]
ports: [{name: https, port: 8443, protocol: TCP}]
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {zone: a}}
status:
  addresses: [{type: InternalIP, address: 172.18.0.2}]
"""

MODEL_TYPES = (
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    NetworkPolicy,
    Namespace,
    Endpoint,
    Service,
    EndpointSlice,
    Node,
)


@pytest.mark.parametrize("obj", load_objects([ROUND_TRIP]), ids=lambda o: type(o).__name__)
def test_round_trip(obj: Any) -> None:
    manifest = obj.to_manifest()
    again = type(obj).from_manifest(manifest)
    assert again == obj
    assert again.to_manifest() == manifest
    # and through YAML text, as kubectl would see it
    assert load_objects([yaml.safe_dump(manifest)]) == [obj]


def test_every_kind_is_covered_by_the_round_trip() -> None:
    assert {type(o) for o in load_objects([ROUND_TRIP])} == set(MODEL_TYPES)


def test_cluster_to_manifests_rebuilds_the_same_cluster() -> None:
    c = Cluster.from_manifests(WORLD, POLICY)
    again = Cluster.from_manifests(c.to_manifests())
    assert _state(again) == _state(c)


# The field names of the real schemas (Cilium CRD pkg/k8s/apis/cilium.io/client/crds/v2/,
# Kubernetes core/v1 and networking/v1), by position in the document.
SELECTOR = {"matchLabels": "*", "matchExpressions": [{"key": None, "operator": None, "values": [None]}]}
PORTS = [{"port": None, "endPort": None, "protocol": None}]
ICMPS = [{"fields": [{"family": None, "type": None}]}]
CIDR_SET = [{"cidr": None, "except": [None], "cidrGroupRef": None, "cidrGroupSelector": SELECTOR}]
TLS = {"secret": {"name": None, "namespace": None}, "trustedCA": None, "certificate": None, "privateKey": None}
PORT_RULE = {
    "ports": PORTS,
    "rules": {"http": "*", "dns": "*"},
    "serverNames": [None],
    "terminatingTLS": TLS,
    "originatingTLS": TLS,
    "listener": {"envoyConfig": {"kind": None, "name": None}, "name": None, "priority": None},
}
COMMON_IN = {
    "fromEndpoints": [SELECTOR],
    "fromCIDR": [None],
    "fromCIDRSet": CIDR_SET,
    "fromEntities": [None],
    "fromGroups": "*",
    "fromNodes": [SELECTOR],
    "fromRequires": [None],
    "icmps": ICMPS,
}
COMMON_OUT = {
    "toEndpoints": [SELECTOR],
    "toCIDR": [None],
    "toCIDRSet": CIDR_SET,
    "toEntities": [None],
    "toGroups": "*",
    "toNodes": [SELECTOR],
    "toRequires": [None],
    "toServices": [
        {
            "k8sService": {"serviceName": None, "namespace": None},
            "k8sServiceSelector": {"selector": SELECTOR, "namespace": None},
        }
    ],
    "icmps": ICMPS,
}
AUTH = {"mode": None}
RULE = {
    "endpointSelector": SELECTOR,
    "nodeSelector": SELECTOR,
    "ingress": [{**COMMON_IN, "toPorts": [PORT_RULE], "authentication": AUTH}],
    "ingressDeny": [{**COMMON_IN, "toPorts": [{"ports": PORTS}]}],
    "egress": [
        {
            **COMMON_OUT,
            "toFQDNs": [{"matchName": None, "matchPattern": None}],
            "toPorts": [PORT_RULE],
            "authentication": AUTH,
        }
    ],
    "egressDeny": [{**COMMON_OUT, "toPorts": [{"ports": PORTS}]}],
    "labels": [{"key": None, "value": None, "source": None}],
    "description": None,
    "enableDefaultDeny": {"ingress": None, "egress": None},
    "log": {"value": None},
}
META = {"name": None, "namespace": None, "labels": "*", "annotations": "*"}
K8S_PEER = {"podSelector": SELECTOR, "namespaceSelector": SELECTOR, "ipBlock": {"cidr": None, "except": [None]}}
K8S_PORTS = [{"protocol": None, "port": None, "endPort": None}]
SCHEMAS: dict[str, Any] = {
    "CiliumNetworkPolicy": {"apiVersion": None, "kind": None, "metadata": META, "spec": RULE, "specs": [RULE]},
    "CiliumClusterwideNetworkPolicy": {
        "apiVersion": None,
        "kind": None,
        "metadata": META,
        "spec": RULE,
        "specs": [RULE],
    },
    "NetworkPolicy": {
        "apiVersion": None,
        "kind": None,
        "metadata": META,
        "spec": {
            "podSelector": SELECTOR,
            "policyTypes": [None],
            "ingress": [{"from": [K8S_PEER], "ports": K8S_PORTS}],
            "egress": [{"to": [K8S_PEER], "ports": K8S_PORTS}],
        },
    },
    "Namespace": {"apiVersion": None, "kind": None, "metadata": META},
    "Pod": {
        "apiVersion": None,
        "kind": None,
        "metadata": META,
        "spec": {
            "containers": [
                {"name": None, "image": None, "ports": [{"name": None, "containerPort": None, "protocol": None}]}
            ],
            "serviceAccountName": None,
            "nodeName": None,
            "hostNetwork": None,
        },
        "status": {"podIP": None, "podIPs": [{"ip": None}]},
    },
    "Service": {
        "apiVersion": None,
        "kind": None,
        "metadata": META,
        "spec": {
            "type": None,
            "selector": "*",
            "ports": [{"name": None, "port": None, "targetPort": None, "protocol": None}],
            "clusterIP": None,
            "clusterIPs": [None],
            "ipFamilies": [None],
            "sessionAffinity": None,
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": None}},
            "internalTrafficPolicy": None,
        },
    },
    "EndpointSlice": {
        "apiVersion": None,
        "kind": None,
        "metadata": META,
        "addressType": None,
        "endpoints": [
            {
                "addresses": [None],
                "conditions": {"ready": None, "serving": None, "terminating": None},
                "nodeName": None,
                "targetRef": {"kind": None, "namespace": None, "name": None},
            }
        ],
        "ports": [{"name": None, "port": None, "protocol": None}],
    },
    "Node": {
        "apiVersion": None,
        "kind": None,
        "metadata": META,
        "status": {"addresses": [{"type": None, "address": None}]},
    },
}


def _unknown_fields(value: Any, schema: Any, path: str) -> Iterator[str]:
    if schema == "*" or (schema is None and not isinstance(value, Mapping | list)):
        return
    if isinstance(value, Mapping):
        if not isinstance(schema, Mapping):
            yield path
            return
        for key, sub in value.items():
            if key not in schema:
                yield f"{path}.{key}"
            else:
                yield from _unknown_fields(sub, schema[key], f"{path}.{key}")
    elif isinstance(value, list):
        if not isinstance(schema, list):
            yield path
            return
        for i, item in enumerate(value):
            yield from _unknown_fields(item, schema[0], f"{path}[{i}]")
    elif schema is not None:
        yield path


@pytest.mark.parametrize("obj", load_objects([ROUND_TRIP]), ids=lambda o: type(o).__name__)
def test_to_manifest_uses_only_schema_fields(obj: Any) -> None:
    manifest = obj.to_manifest()
    assert list(_unknown_fields(manifest, SCHEMAS[manifest["kind"]], manifest["kind"])) == []


def test_schema_check_can_fail() -> None:
    bad = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "uid": "x"}}
    assert list(_unknown_fields(bad, SCHEMAS["Namespace"], "Namespace")) == ["Namespace.metadata.uid"]


def test_named_port_is_lower_cased_once() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: p, namespace: a}
        spec:
          endpointSelector: {}
          ingress: [{toPorts: [{ports: [{port: HTTP}]}]}]
        """
    )
    (obj,) = load_objects([text])
    assert obj.to_manifest()["spec"]["ingress"][0]["toPorts"][0]["ports"][0] == {"port": "http", "protocol": "ANY"}
