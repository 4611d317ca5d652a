"""Verdicts: what ``Cluster.check`` answers, with everything a Hubble flow needs."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import attrs

from ._datapath import (
    Action,
    DatapathResult,
    Direction,
    DropReason,
    IPAddress,
    MapStateKey,
    Packet,
    PolicyEntry,
    Protocol,
    RuleOrigin,
)

__all__ = ["HookVerdict", "PeerInfo", "Verdict"]


@attrs.frozen
class PeerInfo:
    """One side of a flow as Hubble describes it (endpoint or external address)."""

    ip: IPAddress
    identity: int
    labels: tuple[str, ...] = ()
    namespace: str = ""
    pod_name: str = ""
    endpoint_id: int = 0
    identity_name: str = ""
    names: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        if self.pod_name:
            return f"{self.namespace}/{self.pod_name}"
        return str(self.ip)

    def to_hubble(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.endpoint_id:
            out["ID"] = self.endpoint_id
        out["identity"] = self.identity
        if self.namespace:
            out["namespace"] = self.namespace
        if self.labels:
            out["labels"] = list(self.labels)
        if self.pod_name:
            out["pod_name"] = self.pod_name
        return out


@attrs.frozen
class HookVerdict:
    """The result of one policy hook with the map entry that decided it."""

    result: DatapathResult
    entry: PolicyEntry | None = None
    l7: Any = None  # an L7Decision when the hook redirected and a request was judged
    accepts: tuple[str, ...] = ()  # what the proxy would accept, when no request was given
    parser: str | None = None  # the L7 parser of the proxy the hook redirected to

    @property
    def direction(self) -> Direction:
        return self.result.direction

    @property
    def key(self) -> MapStateKey | None:
        return self.result.key

    @property
    def allowed(self) -> bool:
        if self.l7 is not None and not self.l7.allowed:
            return False
        return self.result.allowed

    @property
    def origins(self) -> frozenset[RuleOrigin]:
        if self.l7 is not None and getattr(self.l7, "matched_origins", None):
            return frozenset(self.l7.matched_origins)
        return self.entry.origins if self.entry is not None else frozenset()


@attrs.frozen(kw_only=True)
class Verdict:
    """The answer to "can ``src`` reach ``dst`` on ``port``?" and why.

    ``verdict`` is Hubble's FORWARDED / DROPPED / REDIRECTED; ``direction`` is the hook
    that decided (the one that dropped, else ingress when it ran, else egress).
    """

    src: PeerInfo
    dst: PeerInfo
    packet: Packet
    egress: HookVerdict | None
    ingress: HookVerdict | None
    request: Any = None
    notes: tuple[str, ...] = ()
    failure: str | None = None  # set when the flow could not start (e.g. DNS lookup failed)
    dns: Any = None  # the Resolution that preceded the connection, for hostname checks
    service: Any = None  # the ServiceTranslation, when the destination was a Service
    time: float | None = None  # when the packet was evaluated (the cluster's clock)
    transit: Any = None  # ciliumpy.encryption.Transit: nodes crossed, WireGuard (when nodes are declared)

    # -- headline fields -----------------------------------------------------------------
    @property
    def deciding(self) -> HookVerdict | None:
        for hook in (self.egress, self.ingress):
            if hook is not None and not hook.allowed:
                return hook
        for hook in (self.ingress, self.egress):
            if hook is not None and hook.result.enforced:
                return hook
        return self.ingress or self.egress

    @property
    def allowed(self) -> bool:
        if self.failure is not None:
            return False
        return all(h.allowed for h in (self.egress, self.ingress) if h is not None)

    @property
    def l7(self) -> Any:
        for hook in (self.egress, self.ingress):
            if hook is not None and hook.l7 is not None and not hook.l7.allowed:
                return hook.l7
        for hook in (self.ingress, self.egress):
            if hook is not None and hook.l7 is not None:
                return hook.l7
        return None

    @property
    def redirected(self) -> bool:
        return any(h is not None and h.result.action == Action.REDIRECT for h in (self.egress, self.ingress))

    @property
    def verdict(self) -> str:
        if not self.allowed:
            return "DROPPED"
        if self.redirected and self.l7 is None:
            return "REDIRECTED"
        return "FORWARDED"

    @property
    def drop_reason(self) -> DropReason | None:
        hook = self.deciding
        if hook is None or self.allowed:
            return None
        return hook.result.drop_reason

    @property
    def http_status(self) -> int | None:
        l7 = self.l7
        return getattr(l7, "status", None) if l7 is not None else None

    @property
    def direction(self) -> Direction | None:
        hook = self.deciding
        return hook.direction if hook is not None else None

    @property
    def entry(self) -> tuple[MapStateKey, PolicyEntry] | None:
        """The deciding map key and entry, or None when no entry matched."""
        hook = self.deciding
        if hook is None or hook.key is None or hook.entry is None:
            return None
        return hook.key, hook.entry

    @property
    def policies(self) -> tuple[RuleOrigin, ...]:
        """The policies and rules responsible for the decision (deciding hook first)."""
        out: list[RuleOrigin] = []
        hook = self.deciding
        hooks = [hook] + [h for h in (self.egress, self.ingress) if h is not hook]
        if not self.allowed:
            hooks = [hook]
        for h in hooks:
            if h is None:
                continue
            for o in sorted(h.origins):
                if o not in out:
                    out.append(o)
        return tuple(out)

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(str(o) for o in self.policies)

    @property
    def match_type(self) -> str:
        hook = self.deciding
        return hook.result.match_type.label if hook is not None else "none"

    def __bool__(self) -> bool:
        return self.allowed

    # -- explanation -----------------------------------------------------------------------
    def explain(self) -> str:
        """A readable account of the whole decision, hook by hook."""
        proto = _proto_name(self.packet.protocol)
        port = self.packet.policy_port
        lines = [
            f"{self.src.ref} (identity {self.src.identity_name or self.src.identity}) -> "
            f"{self.dst.ref} (identity {self.dst.identity_name or self.dst.identity}) "
            f"{proto}/{port}: {self.verdict}"
            + (f" ({self.drop_reason.value} {self.drop_reason.text})" if self.drop_reason else "")
            + (f" HTTP {self.http_status}" if self.http_status else ""),
        ]
        for name, hook, who in (("egress", self.egress, self.src), ("ingress", self.ingress, self.dst)):
            if hook is None:
                if self.egress is not None or self.failure is not None:
                    lines.append(f"  {name}: not evaluated (an earlier hook dropped the packet)")
                continue
            res = hook.result
            if not res.enforced:
                lines.append(f"  {name}: {who.ref} is not a local Cilium endpoint; no policy applies")
                continue
            head = f"  {name} at {who.ref} (endpoint {res.endpoint_id}), remote identity {res.remote_identity}:"
            if res.ct_state.name == "REPLY":
                lines.append(f"{head} reply of a tracked connection, passes without policy lookup")
                continue
            if hook.key is None and res.allowed:
                lines.append(
                    f"{head} passes without a policy lookup (IPv4 ICMP fragmentation-needed is always allowed)"
                )
                continue
            if hook.key is None and res.drop_reason == DropReason.NO_SERVICE:
                lines.append(
                    f"{head} the service frontend {_addr_port(self.packet.dst, self.packet.dport)} has no backend "
                    f"-> drop {res.drop_reason.value} ({res.drop_reason.text})"
                )
                continue
            if hook.key is None:
                lines.append(
                    f"{head} no map entry matches -> drop {res.drop_reason.value if res.drop_reason else ''} "
                    f"({res.drop_reason.text if res.drop_reason else ''}); the direction is default-deny"
                )
                continue
            assert hook.entry is not None
            lines.append(
                f"{head} entry [{_key_text(hook.key)}] {hook.entry.describe()} "
                f"(match {res.match_type.label}, precedence {hook.entry.precedence:#x})"
            )
            for origin in sorted(hook.entry.origins):
                lines.append(f"    from {origin}")
            if res.action == Action.DROP and res.drop_reason is not None:
                lines.append(f"    -> drop {res.drop_reason.value} ({res.drop_reason.text})")
            elif res.action == Action.REDIRECT:
                proxy = f"{hook.parser} proxy" if hook.parser else "L7 proxy"
                lines.append(f"    -> redirected to the {proxy} on port {res.proxy_port}")
                if hook.l7 is not None:
                    lines.append(f"    L7: {'allowed' if hook.l7.allowed else 'denied'}: {hook.l7.reason}")
                    if getattr(hook.l7, "status", None):
                        lines.append(f"    proxy answered HTTP {hook.l7.status}" if not hook.l7.allowed else "")
                else:
                    accepts = self._accepts(hook)
                    if accepts:
                        lines.append(f"    proxy would accept: {'; '.join(accepts)}")
            else:
                lines.append("    -> allowed")
        if self.service is not None:
            lines.insert(1, f"  {self.service.describe()}")
        if self.dns is not None:
            lines.insert(1, f"  DNS: {self.dns.explain().splitlines()[0]}")
        if self.failure is not None:
            lines.insert(1, f"  {self.failure}")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.transit is not None:
            lines.append(f"  {self.transit.explain()}")
        return "\n".join(line for line in lines if line)

    def _accepts(self, hook: HookVerdict) -> Sequence[str]:
        return hook.accepts

    def to_hubble(self, *, node_name: str = "ciliumpy") -> list[dict[str, Any]]:
        """The Hubble flows of this decision (policy-verdict, drop and L7 events), as dicts
        in the field order and naming of ``hubble observe -o json``."""
        from ._flow import verdict_flows

        return verdict_flows(self, node_name=node_name)

    def __str__(self) -> str:
        return self.explain().splitlines()[0]

    def _repr_html_(self) -> str:
        text = html.escape(self.explain()[:20000])
        color = "#2e7d32" if self.allowed else "#c62828"
        return f'<pre style="border-left:4px solid {color};padding-left:6px">{text}</pre>'


def _proto_name(proto: int) -> str:
    try:
        return Protocol(proto).label
    except ValueError:
        return str(proto)


def _addr_port(addr: IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def _key_text(key: MapStateKey) -> str:
    ident = "ANY" if key.identity == 0 else str(key.identity)
    return f"{key.direction.label} {ident} {key.port_proto_text()}"
