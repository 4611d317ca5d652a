"""``ciliumpy service list`` prints frontends and backends as ``cilium-dbg service list`` does."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import CLI

MANIFESTS = """\
apiVersion: v1
kind: Pod
metadata: {name: orders-1, namespace: shop, labels: {app: orders}}
spec: {containers: [{name: app, image: x, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: orders-2, namespace: shop, labels: {app: orders}}
spec: {containers: [{name: app, image: x, ports: [{name: http, containerPort: 8081}]}]}
status: {podIP: 10.244.0.12}
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  selector: {app: orders}
  ports: [{name: web, port: 80, targetPort: http}]
  clusterIP: 10.96.0.10
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  ports: [{port: 53, protocol: UDP}]
  clusterIPs: ["fd00:10:96::53"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-a, namespace: shop, labels: {kubernetes.io/service-name: ext}}
addressType: IPv6
endpoints:
- addresses: ["fd00::53"]
- addresses: ["fd00::54"]
  conditions: {ready: false, serving: true, terminating: true}
ports: [{port: 5353, protocol: UDP}]
"""


def test_service_list_table_and_json(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(MANIFESTS)
    proc = cli("service", "list", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ID", "Frontend", "Service", "Type", "Backend"]
    assert lines[1].split() == [
        "1",
        "[fd00:10:96::53]:53/UDP",
        "ClusterIP",
        "1",
        "=>",
        "[fd00::53]:5353/UDP",
        "(active)",
    ]
    assert lines[2].split() == ["2", "=>", "[fd00::54]:5353/UDP", "(terminating)"]
    assert lines[3].split() == ["2", "10.96.0.10:80/TCP", "ClusterIP", "1", "=>", "10.244.0.11:8080/TCP", "(active)"]
    assert lines[4].split() == ["2", "=>", "10.244.0.12:8081/TCP", "(active)"]
    records = json.loads(cli("service", "list", "-f", str(path), "-o", "json").stdout)
    assert [(r["id"], r["service"], len(r["backends"])) for r in records] == [(1, "shop/ext", 2), (2, "shop/orders", 2)]
