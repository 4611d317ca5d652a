"""Reachability on the seed scenario and small hand-made clusters: the API, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

import ciliumpy
from ciliumpy import Cluster, PolicyError, UnknownEndpointError

SEED = Path(__file__).parents[2] / "examples" / "seed"


@pytest.fixture(scope="module")
def seed() -> Cluster:
    return Cluster.from_manifests(SEED)


def test_import_ciliumpy_does_not_import_reach() -> None:
    code = "import sys, ciliumpy; ciliumpy.Cluster(); print('ciliumpy.reach' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_allowed_matches_check_on_every_seed_pair_and_port(seed: Cluster) -> None:
    reach = seed.reachability()
    peers = [*sorted(seed.endpoints), "world", "host"]
    ports = (53, 80, 443, 5432, 8080, 9090, 50051)
    for src in peers:
        for dst in peers:
            if src == dst or "/" not in src + dst:
                continue
            for port in ports:
                for proto in ("TCP", "UDP"):
                    seed.backend.reset_conntrack()
                    assert reach.allowed(src, dst, port, proto) is seed.check(src, dst, port, proto).allowed, (
                        src,
                        dst,
                        port,
                        proto,
                    )


def test_graph_nodes_and_edges_carry_the_documented_attributes(seed: Cluster) -> None:
    graph = seed.reachability().to_networkx()
    assert isinstance(graph, nx.DiGraph)
    node = graph.nodes["production/backend"]
    assert node["kind"] == "endpoint"
    assert node["namespace"] == "production"
    assert node["labels"]["app"] == "backend"
    assert node["identity"] == seed.identity_of("production/backend").id
    assert graph.nodes["world"]["kind"] == "entity"
    edge = graph.edges["production/frontend", "production/backend"]
    assert edge["ports"] == {"TCP": ((8080, 8080), (50051, 50051))}
    assert any("GetItems" in rule for rule in edge["l7"])
    assert "CiliumNetworkPolicy production/backend-allow-frontend" in edge["policies"]
    assert "CiliumNetworkPolicy production/frontend-egress-to-backend" in edge["policies"]
    gateway = graph.edges["production/frontend", "production/api-gateway"]
    assert any("POST /api/orders" in rule for rule in gateway["l7"])
    assert not graph.has_edge("production/frontend", "production/database")
    # the graph is a copy: changing it leaves the reachability alone
    graph.edges["production/frontend", "production/backend"]["ports"] = {}
    assert seed.reachability().to_networkx().edges["production/frontend", "production/backend"]["ports"]


def test_http_request_narrows_redirected_connections(seed: Cluster) -> None:
    get = seed.reachability(port=8080, http={"method": "GET", "path": "/api/products"})
    delete = seed.reachability(port=8080, http={"method": "DELETE", "path": "/api/products"})
    assert get.allowed("production/frontend", "production/api-gateway", 8080)
    assert not delete.allowed("production/frontend", "production/api-gateway", 8080)
    assert delete.allowed("production/frontend", "production/backend", 8080)  # plain L4 allow
    check = seed.check("production/frontend", "production/api-gateway", 8080, http={"method": "DELETE", "path": "/"})
    assert not check.allowed


def test_port_protocol_and_namespace_scope(seed: Cluster) -> None:
    reach = seed.reachability(port=5432, protocol="TCP", namespaces=["production"])
    endpoints = [n for n in reach.nodes if "/" in n]
    assert endpoints and all(n.startswith("production/") for n in endpoints)
    assert reach.connections("production/backend", "production/database").ports == {"TCP": ((5432, 5432),)}
    assert not reach.connections("production/frontend", "production/backend")
    # questions outside the scope are still answered like check
    assert reach.allowed("production/frontend", "production/backend", 8080)
    assert (
        reach.allowed("monitoring/prometheus", "production/backend", 9090)
        is seed.check("monitoring/prometheus", "production/backend", 9090).allowed
    )


def test_bad_arguments_raise_precise_errors(seed: Cluster) -> None:
    with pytest.raises(PolicyError, match="protocol"):
        seed.reachability(protocol="GRE")
    with pytest.raises(PolicyError, match="port"):
        seed.reachability(port=70000)
    with pytest.raises(PolicyError, match="unknown namespaces"):
        seed.reachability(namespaces=["nope"])
    reach = seed.reachability()
    with pytest.raises(UnknownEndpointError):
        reach.allowed("production/nope", "world", 80)
    for port in (None, 70000):
        with pytest.raises(Exception, match="port") as raised:
            seed.check("production/frontend", "world", port)
        with pytest.raises(raised.type, match="port"):
            reach.allowed("production/frontend", "world", port)
    with pytest.raises(UnknownEndpointError):
        reach.reachable_from("nowhere/x")


def test_blast_radius_follows_multi_hop_paths_not_through_world() -> None:
    c = Cluster()
    for name in ("a", "b", "c", "d"):
        c.add_endpoint(f"prod/{name}", labels={"app": name})
    # a -> b -> c only; d accepts nothing
    chain = {"a": "b", "b": "c"}
    for dst in ("b", "c", "d"):
        src = [s for s, t in chain.items() if t == dst]
        ingress = [{"fromEndpoints": [{"matchLabels": {"app": s}}]} for s in src]
        c.apply(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": f"to-{dst}", "namespace": "prod"},
                "spec": {"endpointSelector": {"matchLabels": {"app": dst}}, "ingress": ingress or [{}]},
            }
        )
    reach = c.reachability()
    radius = reach.reachable_from("prod/a")
    assert radius["prod/b"] == 1 and radius["prod/c"] == 2
    assert "prod/d" not in radius
    assert reach.reachable_from("prod/a", hops=1).keys() == {"prod/b", "world", "host"}
    assert reach.paths("prod/a", "prod/c") == [["prod/a", "prod/b", "prod/c"]]
    assert reach.paths("prod/a", "prod/d") == []
    assert reach.isolated("prod/b", "prod/d")  # b only accepts a, d accepts nobody
    assert [(s, d) for s, d, _ in reach.crossing("prod/a", "prod/d")] == [("prod/d", "prod/a")]
    c.apply(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "d-out", "namespace": "prod"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "d"}}, "egress": [{}]},
        }
    )
    assert c.reachability().isolated("prod/a", "prod/d")
    assert not reach.isolated("app=a", "app=b")
    assert [(s, d) for s, d, _ in reach.crossing("prod:app=b", "prod/c")] == [("prod/b", "prod/c")]


def test_endpoints_sharing_an_identity_are_decided_once() -> None:
    c = Cluster()
    for i in range(20):
        c.add_endpoint(f"prod/web-{i}", labels={"app": "web"})
    c.add_endpoint("prod/db", labels={"app": "db"})
    reach = c.reachability()
    assert len([u for u in reach._units if not u.external]) == 2  # two identities
    assert len(reach) == len(list(reach.edges())) == reach.to_networkx().number_of_edges()
    assert reach.allowed("prod/web-3", "prod/web-7", 80)


def test_cidr_peers_become_nodes_and_answer_like_check() -> None:
    c = Cluster()
    c.add_endpoint("prod/app", labels={"app": "x"})
    c.apply(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "out", "namespace": "prod"},
            "spec": {
                "endpointSelector": {},
                "egress": [
                    {
                        "toCIDRSet": [{"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}],
                        "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                    }
                ],
            },
        }
    )
    reach = c.reachability()
    graph = reach.to_networkx()
    assert graph.nodes["203.0.113.0/24"]["kind"] == "cidr"
    assert graph.edges["prod/app", "203.0.113.0/24"]["ports"] == {"TCP": ((443, 443),)}
    assert not graph.has_edge("prod/app", "world")
    for ip in ("203.0.113.5", "203.0.113.200", "198.51.100.1"):
        for port in (443, 80):
            assert reach.allowed("prod/app", ip, port) is c.check("prod/app", ip, port).allowed


def test_exports_matrix_dot_and_notebook_reprs(seed: Cluster) -> None:
    reach = seed.reachability(namespaces=["production"])
    mat = reach.matrix()
    assert mat["production/backend"]["production/database"] == "TCP 5432"
    assert mat["production/database"]["production/backend"] == ""
    dot = reach.to_dot()
    assert dot.startswith("digraph reachability {")
    assert '"production/backend" -> "production/database" [label="TCP 5432"];' in dot
    bundle = reach._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert "<table>" in bundle["text/html"] and "production/database" in bundle["text/html"]
    assert "<script>" not in Cluster().reachability()._repr_html_()


def test_notebook_repr_is_size_capped() -> None:
    c = Cluster()
    for i in range(120):
        c.add_endpoint(f"ns-{i % 3}/p-{i}", labels={"i": str(i)})
    html_text = c.reachability()._repr_html_()
    assert len(html_text) <= 100_000
    assert "more pairs" in html_text


def test_to_pandas_is_the_matrix(seed: Cluster) -> None:
    pd = pytest.importorskip("pandas")
    frame = seed.reachability(namespaces=["production"]).to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert frame.loc["production/backend", "production/database"] == "TCP 5432"


def test_optional_extras_name_themselves_when_missing(seed: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    monkeypatch.setitem(sys.modules, "pandas", None)
    reach = seed.reachability()
    with pytest.raises(ImportError, match=r"ciliumpy\[plot\]"):
        reach.plot()
    with pytest.raises(ImportError, match=r"ciliumpy\[pandas\]"):
        reach.to_pandas()


def test_reachability_entry_point_is_on_cluster() -> None:
    assert ciliumpy.Cluster.reachability.__doc__
