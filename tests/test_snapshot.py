"""Real cluster snapshots and application directories load as they are (issue 10, part 2)."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest

from ciliumpy import Cluster, IgnoredKindsWarning, PolicyError, UnknownEndpointError
from ciliumpy._manifests import load_objects

DEPLOYMENT = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: frontend, namespace: shop}
    spec:
      replicas: 3
      selector: {matchLabels: {app: frontend}}
      template:
        metadata: {labels: {app: frontend}}
        spec:
          containers:
          - name: web
            image: nginx
            ports: [{name: http, containerPort: 8080}]
    """
)
STATEFULSET = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db, namespace: shop}
    spec:
      replicas: 2
      template:
        metadata: {labels: {app: db}}
        spec:
          containers: [{name: pg, image: postgres, ports: [{name: pg, containerPort: 5432}]}]
    """
)
OTHERS = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: agent, namespace: ops}
    spec:
      template:
        metadata: {labels: {app: agent}}
        spec: {containers: [{name: a, image: a}]}
    ---
    apiVersion: batch/v1
    kind: Job
    metadata: {name: migrate, namespace: shop}
    spec:
      template:
        metadata: {labels: {app: migrate}}
        spec: {containers: [{name: m, image: m}]}
    ---
    apiVersion: batch/v1
    kind: CronJob
    metadata: {name: report, namespace: shop}
    spec:
      schedule: "0 * * * *"
      jobTemplate:
        spec:
          template:
            metadata: {labels: {app: report}}
            spec: {containers: [{name: r, image: r}]}
    ---
    apiVersion: apps/v1
    kind: ReplicaSet
    metadata: {name: web-5d9f, namespace: shop}
    spec:
      replicas: 0
      template:
        metadata: {labels: {app: legacy}}
        spec: {containers: [{name: w, image: w}]}
    """
)
POLICY = textwrap.dedent(
    """\
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: db, namespace: shop}
    spec:
      endpointSelector: {matchLabels: {app: db}}
      ingress:
      - fromEndpoints: [{matchLabels: {app: frontend}}]
        toPorts: [{ports: [{port: pg, protocol: TCP}]}]
    """
)
UNRELATED = textwrap.dedent(
    """\
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings, namespace: shop}
    data: {a: b}
    ---
    apiVersion: route.openshift.io/v1
    kind: Route
    metadata: {name: web, namespace: shop}
    spec: {to: {kind: Service, name: web}}
    ---
    apiVersion: v1
    kind: ServiceAccount
    metadata: {name: web, namespace: shop}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: other, namespace: shop}
    """
)


def _write(directory: Path, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("__", ".")).write_text(text)
    return directory


def test_workloads_become_the_pods_their_controllers_would_create() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cluster = Cluster.from_manifests(DEPLOYMENT, STATEFULSET, OTHERS, POLICY)
    pods = cluster.endpoints
    frontend = sorted(ref for ref in pods if ref.startswith("shop/frontend-"))
    assert len(frontend) == 3
    # Deployment pods are named <deployment>-<template hash>-<suffix> and owned through the ReplicaSet.
    rs_name, deployment = pods[frontend[0]].owners
    assert deployment == ("Deployment", "frontend") and rs_name[0] == "ReplicaSet"
    assert all(ref.startswith(f"shop/{rs_name[1]}-") for ref in frontend)
    assert {ref for ref in pods if ref.startswith("shop/db")} == {"shop/db-0", "shop/db-1"}
    assert pods["shop/db-0"].owners == (("StatefulSet", "db"),)
    assert pods["shop/db-0"].named_port("pg") == 5432
    # replicas: 0 still gives one pod, so that the workload can be checked.
    assert [p.owners for p in pods.values() if p.labels.get("app") == "legacy"] == [(("ReplicaSet", "web-5d9f"),)]
    cron = next(p for p in pods.values() if p.labels.get("app") == "report")
    assert cron.owners[0][0] == "Job" and cron.owners[1] == ("CronJob", "report")
    assert len([p for p in pods.values() if p.labels.get("app") == "agent"]) == 1
    assert cluster.check(frontend[0], "shop/db-1", 5432).allowed
    assert not cluster.check("shop/db-0", "shop/db-1", 5432).allowed


def test_workload_refs_mean_any_of_their_pods() -> None:
    cluster = Cluster.from_manifests(DEPLOYMENT, STATEFULSET, OTHERS, POLICY)
    for src in ("shop/deployment/frontend", "shop/deploy/frontend", "shop/Deployment/frontend"):
        assert cluster.check(src, "shop/statefulset/db", 5432).allowed
        assert cluster.check(src, "shop/sts/db", "pg").allowed
    assert not cluster.check("shop/replicaset/web-5d9f", "shop/statefulset/db", 5432).allowed
    assert not cluster.check("shop/job/migrate", "shop/db-0", 5432).allowed
    assert not cluster.check("shop/cronjob/report", "shop/db-0", 5432).allowed
    with pytest.raises(UnknownEndpointError, match="no pods of Deployment shop/nope"):
        cluster.check("shop/deployment/nope", "shop/db-0", 5432)
    with pytest.raises(UnknownEndpointError, match="unknown workload kind 'lambda'"):
        cluster.check("shop/lambda/frontend", "shop/db-0", 5432)


def test_a_snapshot_with_pods_does_not_double_them() -> None:
    # kubectl get pods,rs,deploy -o yaml: the pods are there, owned by the ReplicaSet.
    snapshot = textwrap.dedent(
        """\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Pod
          metadata:
            name: frontend-7c9d6b8f5-x2x4z
            namespace: shop
            labels: {app: frontend, pod-template-hash: 7c9d6b8f5}
            ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: frontend-7c9d6b8f5, controller: true}]
          spec: {containers: [{name: web, image: nginx}]}
          status: {podIP: 10.244.1.5}
        """
    )
    cluster = Cluster.from_manifests(snapshot, DEPLOYMENT)
    assert list(cluster.endpoints) == ["shop/frontend-7c9d6b8f5-x2x4z"]
    # The ReplicaSet is not in the input; its name says which Deployment made it.
    assert cluster.endpoints["shop/frontend-7c9d6b8f5-x2x4z"].owners == (
        ("ReplicaSet", "frontend-7c9d6b8f5"),
        ("Deployment", "frontend"),
    )
    assert cluster.check("shop/deploy/frontend", "world", 443).allowed


def test_typed_lists_items_without_kind_are_read() -> None:
    pod_list = textwrap.dedent(
        """\
        apiVersion: v1
        kind: PodList
        items:
        - metadata: {name: a, namespace: shop, labels: {app: a}}
          spec: {containers: [{name: a, image: a}]}
        ---
        apiVersion: apps/v1
        kind: DeploymentList
        items:
        - metadata: {name: b, namespace: shop}
          spec:
            template:
              metadata: {labels: {app: b}}
              spec: {containers: [{name: b, image: b}]}
        ---
        apiVersion: v1
        kind: ConfigMapList
        items: [{metadata: {name: c, namespace: shop}}]
        """
    )
    with pytest.warns(IgnoredKindsWarning, match=r"ConfigMap \(1\)"):
        objects = load_objects([pod_list])
    assert sorted(o.name for o in objects)[0] == "a"
    assert any(o.name.startswith("b-") for o in objects)


def test_other_kinds_are_skipped_and_listed_once_or_rejected_when_strict(tmp_path: Path) -> None:
    app = _write(tmp_path / "app", deploy__yaml=DEPLOYMENT, extra__yaml=UNRELATED, kustomization__yaml="resources: [a]")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cluster = Cluster.from_manifests(app)
    assert [str(w.message) for w in caught] == [
        "skipped objects that do not bear on network policy: ConfigMap (2), Route (1), ServiceAccount (1)"
    ]
    assert caught[0].category is IgnoredKindsWarning
    assert caught[0].filename == __file__  # points at the caller, not into ciliumpy
    assert len(cluster.endpoints) == 3
    with pytest.raises(PolicyError) as info:
        Cluster.from_manifests(app, strict=True)
    assert [(e.line, e.value) for e in info.value.errors] == [
        (2, "ConfigMap"),
        (7, "Route"),
        (12, "ServiceAccount"),
        (16, "ConfigMap"),
    ]
    assert all(e.document == str(app / "extra.yaml") for e in info.value.errors)


def test_an_unknown_kind_of_a_policy_api_group_is_still_an_error() -> None:
    with pytest.raises(PolicyError, match="unknown kind") as info:
        load_objects(["apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicyy\nmetadata: {name: p}\n"])
    assert info.value.field == "kind" and info.value.line == 2


def test_directories_are_read_like_kubectl_apply(tmp_path: Path) -> None:
    root = _write(tmp_path / "app", deploy__yaml=DEPLOYMENT, notes__txt="not: read")
    _write(
        root / "db",
        sts__yml=STATEFULSET,
        policy__json='{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}',
    )
    flat = Cluster.from_manifests(root)
    assert {ep.labels["app"] for ep in flat.endpoints.values()} == {"frontend"}
    deep = Cluster.from_manifests(root, recursive=True)
    assert {ep.labels["app"] for ep in deep.endpoints.values()} == {"frontend", "db"}
    assert "x" in deep.namespaces


def test_every_problem_in_every_file_is_reported_at_once_and_nothing_is_applied(tmp_path: Path) -> None:
    bad_port = POLICY.replace("port: pg", "port: '70000'")
    bad_template = DEPLOYMENT.replace("containerPort: 8080", "containerPort: '8080'")
    app = _write(tmp_path / "app", a__yaml=bad_port, b__yaml=bad_template, c__yaml="kind: [unclosed\n")
    cluster = Cluster.from_manifests(STATEFULSET)
    before = dict(cluster.endpoints)
    with pytest.raises(PolicyError) as info:
        cluster.apply(app)
    errors = info.value.errors
    assert [(Path(str(e.document)).name, e.line, e.field) for e in errors] == [
        ("a.yaml", 8, "spec.ingress[0].toPorts[0].ports[0].port"),
        ("b.yaml", 13, "spec.template.spec.containers[0].ports[0].containerPort"),
        ("c.yaml", 2, None),
    ]
    assert str(info.value).count("\n") == 2  # one line per problem
    assert dict(cluster.endpoints) == before


def test_host_network_pods_are_not_endpoints_and_speak_as_their_node() -> None:
    manifests = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Pod
        metadata: {name: exporter, namespace: mon, labels: {app: exporter}}
        spec: {hostNetwork: true, nodeName: n1, containers: [{name: e, image: e}]}
        status: {podIP: 192.168.1.11}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: agent, namespace: mon, labels: {app: exporter}}
        spec: {hostNetwork: true, nodeName: n2, containers: [{name: e, image: e}]}
        status: {podIP: 192.168.1.12}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: twin, namespace: mon, labels: {app: exporter}}
        spec: {hostNetwork: true, nodeName: n2, containers: [{name: e, image: e}]}
        status: {podIP: 192.168.1.12}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web, namespace: shop, labels: {app: web}}
        spec: {nodeName: n1, containers: [{name: w, image: w}]}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: only-exporter, namespace: shop}
        spec:
          podSelector: {}
          ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: exporter}}}]}]
        """
    )
    cluster = Cluster.from_manifests(manifests)  # two pods sharing a node address load fine
    assert list(cluster.endpoints) == ["shop/web"]
    # Same node: the host identity, which Cilium allows into local pods by default.
    same = cluster.check("mon/exporter", "shop/web", 80)
    assert same.allowed and same.src.identity == 1
    # Another node: remote-node, which the pod selector of the policy does not select.
    remote = cluster.check("mon/agent", "shop/web", 80)
    assert not remote.allowed and remote.src.identity == 6
    # As a destination it is not enforced by policy (no endpoint).
    assert cluster.check("shop/web", "mon/twin", 9100).allowed
    assert cluster.lookup_ip("192.168.1.12").id == 6


def test_kubectl_get_all_output_of_a_cluster() -> None:
    # What `kubectl get ns,pods,nodes,svc,deploy,sts,ds,rs,job,cronjob,netpol -A -o yaml` writes:
    # one List, controllers next to the pods they made, a DaemonSet on the host network.
    def meta(name: str, ns: str | None = None, owner: tuple[str, str] | None = None, **labels: str) -> dict:
        out: dict = {"name": name, "labels": labels}
        if ns:
            out["namespace"] = ns
        if owner:
            out["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": True}]
        return out

    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "w", "image": "w"}]}}
    agent = {"metadata": {"labels": {"app": "agent"}}, "spec": {"hostNetwork": True, "containers": [{"name": "a"}]}}
    db = {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "d", "image": "d"}]}}

    def pod(name: str, owner: tuple[str, str], node: str, ip: str, labels: dict, host: bool = False) -> dict:
        spec = {"nodeName": node, "containers": [{"name": "c", "image": "c"}], "hostNetwork": host}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta(name, "shop", owner, **labels),
            "spec": spec,
            "status": {"podIP": ip},
        }

    items = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta("shop")},
        *(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": meta(n),
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
            }
            for n, ip in (("n1", "192.168.0.1"), ("n2", "192.168.0.2"))
        ),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta("web", "shop"),
            "spec": {"replicas": 2, "template": template},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": meta("web-6b9f8", "shop", ("Deployment", "web")),
            "spec": {"replicas": 2, "template": template},
        },
        pod("web-6b9f8-a1", ("ReplicaSet", "web-6b9f8"), "n1", "10.244.1.2", {"app": "web"}),
        pod("web-6b9f8-b2", ("ReplicaSet", "web-6b9f8"), "n2", "10.244.2.2", {"app": "web"}),
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("agent", "shop"), "spec": {"template": agent}},
        pod("agent-x1", ("DaemonSet", "agent"), "n1", "192.168.0.1", {"app": "agent"}, host=True),
        pod("agent-x2", ("DaemonSet", "agent"), "n2", "192.168.0.2", {"app": "agent"}, host=True),
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta("db", "shop"),
            "spec": {"replicas": 1, "template": db},
        },
        pod("db-0", ("StatefulSet", "db"), "n2", "10.244.2.3", {"app": "db"}),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("db", "shop"),
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        },
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is skipped: every kind here is read
        cluster = Cluster.from_manifests({"apiVersion": "v1", "kind": "List", "items": items})
    assert sorted(cluster.endpoints) == ["shop/db-0", "shop/web-6b9f8-a1", "shop/web-6b9f8-b2"]
    assert sorted(cluster.host_network_pods) == ["shop/agent-x1", "shop/agent-x2"]
    assert cluster.endpoints["shop/web-6b9f8-a1"].owners == (("ReplicaSet", "web-6b9f8"), ("Deployment", "web"))
    assert cluster.check("shop/deployment/web", "shop/statefulset/db", 5432).allowed
    assert cluster.check("shop/rs/web-6b9f8", "shop/sts/db", 5432).allowed
    # The DaemonSet's pods act as their nodes: agent-x2 shares db-0's node (host), agent-x1 not.
    assert not cluster.check("shop/agent-x1", "shop/db-0", 5432).allowed
    assert cluster.check("shop/agent-x2", "shop/db-0", 5432).allowed
    assert cluster.check("shop/daemonset/agent", "shop/web-6b9f8-a1", 80).src.identity == 1
