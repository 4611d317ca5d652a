"""Traffic to observe: the connections a scenario makes, run through ``Cluster.check``.

``ciliumpy hubble observe -f DIR`` needs decisions to show. A scenario is a list of
:class:`Connection` s: given in a file (YAML or JSON list of ``{from, to, port, protocol,
http}``), the seed scenario's tour when the manifests are the seed's, or else every
(source pod, destination pod, declared container port) pair plus ``world`` to each port.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..exceptions import PolicyError

if TYPE_CHECKING:
    from .._cluster import Cluster
    from .._verdict import Verdict

__all__ = ["Connection", "load_connections", "run_connections", "scenario_connections"]


@attrs.frozen
class Connection:
    """One connection attempt: ``src`` to ``dst`` on ``port``/``protocol``, with an optional
    HTTP request (``{"method": ..., "path": ...}``) for the L7 proxy."""

    src: str
    dst: str
    port: int | None
    protocol: str = "TCP"
    http: Mapping[str, Any] | None = None


def load_connections(path: str | Path) -> list[Connection]:
    """Read connections from a YAML or JSON list of ``{from, to, port, protocol, http}``."""
    import yaml

    text = Path(path).read_text()
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read connections: {exc}", document=str(path)) from exc
    if not isinstance(data, list):
        raise PolicyError("expected a list of connections", document=str(path), value=type(data).__name__)
    out = []
    for i, item in enumerate(data):
        where = f"[{i}]"
        if not isinstance(item, Mapping):
            raise PolicyError("expected a mapping", document=str(path), field=where, value=item)
        unknown = set(item) - {"from", "to", "port", "protocol", "http"}
        if unknown:
            raise PolicyError("unknown keys", document=str(path), field=where, value=sorted(unknown))
        if "from" not in item or "to" not in item:
            raise PolicyError("a connection needs 'from' and 'to'", document=str(path), field=where)
        port = item.get("port")
        if port is not None and (not isinstance(port, int) or isinstance(port, bool)):
            raise PolicyError("port must be a number", document=str(path), field=f"{where}.port", value=port)
        out.append(
            Connection(str(item["from"]), str(item["to"]), port, str(item.get("protocol", "TCP")), item.get("http"))
        )
    return out


def _is_seed(paths: Sequence[str | Path]) -> bool:
    from ..examples import seed_path

    seed = {p.name: p.read_bytes() for p in seed_path().glob("*.yaml")}
    files: dict[str, bytes] = {}
    for path in paths:
        p = Path(path)
        for f in sorted(p.glob("*.yaml")) if p.is_dir() else [p]:
            files[f.name] = f.read_bytes()
    return bool(files) and files == seed


def scenario_connections(cluster: Cluster, paths: Sequence[str | Path] = ()) -> list[Connection]:
    """The connections a scenario makes (see the module docstring)."""
    if paths and _is_seed(paths):
        from ..examples import SEED_DNS_RECORDS, SEED_FLOWS

        cluster.add_dns_records(SEED_DNS_RECORDS)
        return [Connection(s, d, port, proto, http) for s, d, port, proto, http, _ in SEED_FLOWS]
    refs = sorted(cluster.endpoints)
    out: list[Connection] = []
    for dst in refs:
        ports = sorted({(p.port, p.protocol) for p in cluster.endpoints[dst].ports if p.protocol in ("TCP", "UDP")})
        for src in ["world", *refs]:
            if src == dst:
                continue
            out.extend(Connection(src, dst, port, proto) for port, proto in ports)
    return out


def run_connections(cluster: Cluster, connections: Iterable[Connection]) -> list[Verdict]:
    """``cluster.check`` each connection (the cluster's flow store records the flows)."""
    return [cluster.check(c.src, c.dst, c.port, c.protocol, http=c.http) for c in connections]
