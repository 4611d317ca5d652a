"""Changes recompute only what they touch, and end where a fresh build ends."""

from __future__ import annotations

from typing import Any

from ciliumpy import Cluster


def _cnp(name: str, ns: str, app: str, peer: str, port: str) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": app}},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": peer}}],
                    "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}]}],
                }
            ],
        },
    }


def _base() -> Cluster:
    c = Cluster()
    for ns in ("a", "b"):
        for app in ("web", "api", "db"):
            c.add_endpoint(f"{ns}/{app}", labels={"app": app})
    c.apply(_cnp("db", "a", "db", "api", "5432"), _cnp("api", "b", "api", "web", "8080"))
    return c


def _snapshot(c: Cluster) -> dict[str, Any]:
    return {ref: c.endpoint_policy(ref) for ref in c.endpoints}


def test_unrelated_pod_recomputes_nothing_else() -> None:
    c = _base()
    before = _snapshot(c)
    c.add_endpoint("b/worker", labels={"app": "worker"})
    after = _snapshot(c)
    assert all(after[ref] is before[ref] for ref in before)


def test_policy_recomputes_only_selected_endpoints() -> None:
    c = _base()
    before = _snapshot(c)
    c.apply(_cnp("web", "a", "web", "api", "80"))
    after = _snapshot(c)
    changed = {ref for ref in before if after[ref] is not before[ref]}
    assert changed == {"a/web"}


def test_new_identity_updates_endpoints_whose_selectors_select_it() -> None:
    c = _base()
    before = _snapshot(c)
    c.add_endpoint("a/api-canary", labels={"app": "api", "track": "canary"})
    after = _snapshot(c)
    changed = {ref for ref in before if after[ref] is not before[ref]}
    assert changed == {"a/db"}  # its fromEndpoints app=api now selects the canary's identity
    assert c.check("a/api-canary", "a/db", 5432).allowed


def test_incremental_equals_fresh_build() -> None:
    c = _base()
    c.add_endpoint("a/api-canary", labels={"app": "api", "track": "canary"})
    c.apply(_cnp("web", "a", "web", "api", "80"))
    c.remove_endpoint("b/db")
    c.delete(_cnp("api", "b", "api", "web", "8080"))
    fresh = Cluster.from_manifests(*c.to_manifests())
    for ref in c.endpoints:
        assert _by_labels(c, ref) == _by_labels(fresh, ref), ref
        assert c.identity_of(ref).labels == fresh.identity_of(ref).labels


def _by_labels(c: Cluster, ref: str) -> dict[Any, Any]:
    """Map state with identities replaced by their labels (numbers depend on history)."""
    out = {}
    for key, entry in c.map_state(ref).items():
        ident = c.identity(key.identity)
        who = frozenset(ident.labels.strings()) if ident is not None and key.identity else key.identity
        out[(who, key.direction, key.protocol, key.port, key.prefix_len)] = entry
    return out


def test_backend_receives_diffs_not_full_maps() -> None:
    c = _base()
    seen: list[Any] = []
    original = c.backend.apply

    def spy(update: Any) -> None:
        seen.append(update)
        original(update)

    c.backend.apply = spy  # type: ignore[method-assign]
    c.apply(_cnp("web", "a", "web", "api", "80"))
    assert len(seen) == 1
    update = seen[0]
    assert not update.policy_replace and not update.endpoints_upsert and not update.ipcache_upsert
    web_id = c.endpoint_id("a/web")
    assert set(update.policy_upsert) | set(update.policy_delete) == {web_id}
