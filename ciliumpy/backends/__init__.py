"""Pluggable datapath backends.

A backend receives compiled map state, ipcache and endpoint records (never policies) and
evaluates packets at one of two hooks: the egress hook of the endpoint that owns
``packet.src`` or the ingress hook of the endpoint that owns ``packet.dst``. Built-ins are
looked up by name and imported lazily, so ``import ciliumpy`` never touches libbpf.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import ClassVar, Protocol, runtime_checkable

import attrs

from .._datapath import (
    DatapathResult,
    Direction,
    EndpointRecord,
    IPNetwork,
    LBService,
    MapStateKey,
    Packet,
    PolicyEntry,
)
from ..exceptions import BackendUnavailableError

__all__ = [
    "BUILTIN_BACKENDS",
    "Backend",
    "DatapathUpdate",
    "available_backends",
    "default_backend_name",
    "load_backend",
]


@attrs.frozen
class DatapathUpdate:
    """One atomic change of datapath state.

    ``policy_replace`` lists endpoints whose whole map is replaced by their
    ``policy_upsert`` entries; for other endpoints the upserts and deletes are applied
    to the existing map. Deleting an endpoint deletes its map. ``services_upsert`` adds or
    replaces service frontends (with their backends) by service ID.
    """

    endpoints_upsert: Mapping[int, EndpointRecord] = attrs.field(factory=dict)
    endpoints_delete: frozenset[int] = frozenset()
    ipcache_upsert: Mapping[IPNetwork, int] = attrs.field(factory=dict)
    ipcache_delete: frozenset[IPNetwork] = frozenset()
    policy_upsert: Mapping[int, Mapping[MapStateKey, PolicyEntry]] = attrs.field(factory=dict)
    policy_delete: Mapping[int, frozenset[MapStateKey]] = attrs.field(factory=dict)
    policy_replace: frozenset[int] = frozenset()
    services_upsert: Mapping[int, LBService] = attrs.field(factory=dict)
    services_delete: frozenset[int] = frozenset()

    def is_empty(self) -> bool:
        return not (
            self.endpoints_upsert
            or self.endpoints_delete
            or self.ipcache_upsert
            or self.ipcache_delete
            or any(self.policy_upsert.values())
            or any(self.policy_delete.values())
            or self.policy_replace
            or self.services_upsert
            or self.services_delete
        )


@runtime_checkable
class Backend(Protocol):
    """What every datapath backend implements."""

    name: ClassVar[str]

    @property
    def capabilities(self) -> frozenset[str]:
        """Feature names such as ``"conntrack"``, ``"counters"``, ``"live"``."""
        ...

    def apply(self, update: DatapathUpdate) -> None:
        """Apply ``update`` atomically: on error the previous state is kept intact."""
        ...

    def evaluate(self, packet: Packet, direction: Direction) -> DatapathResult:
        """Run the hook for ``direction`` on ``packet`` (creating conntrack state)."""
        ...

    def policy_counters(self, endpoint_id: int) -> Mapping[MapStateKey, tuple[int, int]]:
        """Packets and bytes accounted per policy key of one endpoint."""
        ...

    def reset_conntrack(self) -> None:
        """Forget every tracked connection."""
        ...

    def close(self) -> None:
        """Release every resource; idempotent."""
        ...


BUILTIN_BACKENDS: dict[str, str] = {
    "simulator": "ciliumpy.backends._simulator:SimulatorBackend",
    "ebpf": "ciliumpy.backends._ebpf:EBPFBackend",
}


def default_backend_name() -> str:
    """``$CILIUMPY_BACKEND`` if set, else ``"simulator"``."""
    return os.environ.get("CILIUMPY_BACKEND", "").strip() or "simulator"


def _backend_class(name: str) -> type[Backend]:
    try:
        target = BUILTIN_BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_BACKENDS))
        raise BackendUnavailableError(f"unknown backend {name!r}; known backends: {known}") from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Backend] = getattr(module, attr)
    return cls


def load_backend(name: str | None = None) -> Backend:
    """Instantiate the backend called ``name`` (default: :func:`default_backend_name`)."""
    cls = _backend_class(name or default_backend_name())
    return cls()


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine, simulator first."""
    out = []
    for name in BUILTIN_BACKENDS:
        try:
            cls = _backend_class(name)
            probe = getattr(cls, "probe", None)
            if probe is not None:
                probe()
        except (BackendUnavailableError, ImportError, OSError):
            continue
        out.append(name)
    return out
