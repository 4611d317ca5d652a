"""Cilium Helm values: the keys that change what ciliumpy models.

A Cilium installation is described by a Helm values file (``helm install cilium ... -f
values.yaml``).  Most of its keys size or place the agent's pods and mean nothing to a
policy model; a few change behaviour.  :func:`load_values` reads a values file (a path,
YAML text or a mapping), keeps those keys typed in :class:`HelmValues` and lists every
other key once in :attr:`HelmValues.ignored`.  A known key with a value of the wrong type
is a :class:`~ciliumpy.exceptions.PolicyError` naming the key.

The chart's defaults (``install/kubernetes/cilium/values.yaml`` upstream) apply to keys the
file does not set: encryption off, type ``ipsec``, no node encryption, Hubble on with no
metrics, ``policyEnforcementMode: default``, no audit mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from .exceptions import PolicyError

__all__ = ["EncryptionValues", "HelmValues", "HubbleValues", "load_values"]

_MAX_SHOWN = 200


@attrs.frozen(kw_only=True)
class EncryptionValues:
    """``encryption.*``: transparent encryption between nodes."""

    enabled: bool = False
    type: str = "ipsec"  # the chart's default; WireGuard needs ``type: wireguard``
    node_encryption: bool = False
    strict_mode: bool = False
    opt_out_labels: str = "node-role.kubernetes.io/control-plane"

    @property
    def wireguard(self) -> bool:
        """Whether WireGuard transparent encryption is on."""
        return self.enabled and self.type == "wireguard"


@attrs.frozen(kw_only=True)
class HubbleValues:
    """``hubble.*``: the observability layer."""

    enabled: bool = True
    metrics_enabled: tuple[str, ...] = ()
    event_buffer_capacity: int = 4095


@attrs.frozen(kw_only=True)
class HelmValues:
    """The behaviour-relevant part of a Cilium Helm values file."""

    encryption: EncryptionValues = EncryptionValues()
    hubble: HubbleValues = HubbleValues()
    kube_proxy_replacement: bool = False
    policy_enforcement_mode: str = "default"
    policy_audit_mode: bool = False
    source: str | None = None
    ignored: tuple[str, ...] = ()  # dotted paths of keys read but not modelled


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


class _Reader:
    def __init__(self, data: Mapping[str, Any], source: str | None) -> None:
        self.data = data
        self.source = source
        self.used: set[str] = set()

    def fail(self, path: str, reason: str, value: Any) -> PolicyError:
        return PolicyError(reason, document=self.source, field=path, value=_shown(value))

    def get(self, path: str) -> Any:
        node: Any = self.data
        parts = path.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, Mapping):
                raise self.fail(".".join(parts[:i]), "must be a mapping", node)
            if part not in node:
                return None
            node = node[part]
        self.used.add(path)
        return node

    def boolean(self, path: str, default: bool) -> bool:
        value = self.get(path)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(path, "must be a boolean (true or false)", value)
        return value

    def string(self, path: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self.get(path)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(path, "must be a string", value)
        if choices and value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)}", value)
        return value

    def integer(self, path: str, default: int) -> int:
        value = self.get(path)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, "must be an integer", value)
        return value


def _leaves(data: Any, prefix: str = "") -> list[str]:
    if not isinstance(data, Mapping) or not data:
        return [prefix] if prefix else []
    out: list[str] = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out += _leaves(value, path)
    return out


def load_values(source: Any) -> HelmValues:
    """Read a Cilium Helm values file: a path, YAML text, a mapping or a :class:`HelmValues`.

    >>> v = load_values({"encryption": {"enabled": True, "type": "wireguard"}})
    >>> v.encryption.wireguard
    True
    >>> load_values({"encryption": {"enabled": "yes"}})
    Traceback (most recent call last):
    ...
    ciliumpy.exceptions.PolicyError: encryption.enabled: must be a boolean (true or false) (got "'yes'")
    """
    if isinstance(source, HelmValues):
        return source
    if source is None:
        return HelmValues()
    name: str | None = None
    if isinstance(source, (str, os.PathLike)) and (isinstance(source, os.PathLike) or "\n" not in source):
        path = Path(source)
        if not path.is_file():
            raise PolicyError("no such file or directory", document=str(path))
        name = str(path)
        text = path.read_text(encoding="utf-8")
    elif isinstance(source, str):
        text = source
    elif isinstance(source, Mapping):
        text = None
    else:
        raise TypeError(f"values must be a path, YAML text or a mapping, not {type(source).__name__}")
    if text is not None:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise PolicyError(
                f"invalid YAML: {getattr(exc, 'problem', exc)}",
                document=name,
                line=mark.line + 1 if mark is not None else None,
            ) from None
        except RecursionError:
            raise PolicyError("invalid YAML: nested too deeply", document=name) from None
    else:
        data = source
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise PolicyError("a values file must be a mapping", document=name, value=_shown(data))
    r = _Reader(data, name)
    enforcement = r.string("policyEnforcementMode", "default", ("default", "always", "never"))
    kpr = r.get("kubeProxyReplacement")
    # The chart took "strict"/"partial"/"disabled" before 1.14; "true"/"false" strings are
    # what `--set kubeProxyReplacement=true` writes.
    if kpr is None:
        kube_proxy_replacement = False
    elif isinstance(kpr, bool):
        kube_proxy_replacement = kpr
    elif isinstance(kpr, str) and kpr in ("true", "strict"):
        kube_proxy_replacement = True
    elif isinstance(kpr, str) and kpr in ("false", "disabled", "partial"):
        kube_proxy_replacement = False
    else:
        raise r.fail("kubeProxyReplacement", "must be true or false", kpr)
    enc_type = r.string("encryption.type", "ipsec", ("ipsec", "wireguard"))
    encryption = EncryptionValues(
        enabled=r.boolean("encryption.enabled", False),
        type=enc_type,
        node_encryption=r.boolean("encryption.nodeEncryption", False),
        strict_mode=r.boolean("encryption.strictMode.enabled", False),
        opt_out_labels=r.string(
            "encryption.wireguard.nodeEncryptionOptOutLabels",
            r.string("encryption.nodeEncryptionOptOutLabels", "node-role.kubernetes.io/control-plane"),
        ),
    )
    metrics = r.get("hubble.metrics.enabled")
    if metrics is None:
        metrics = []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise r.fail("hubble.metrics.enabled", "must be a list of strings", metrics)
    hubble = HubbleValues(
        enabled=r.boolean("hubble.enabled", True),
        metrics_enabled=tuple(metrics),
        event_buffer_capacity=r.integer("hubble.eventBufferCapacity", 4095),
    )
    values = HelmValues(
        encryption=encryption,
        hubble=hubble,
        kube_proxy_replacement=kube_proxy_replacement,
        policy_enforcement_mode=enforcement,
        policy_audit_mode=r.boolean("policyAuditMode", False),
        source=name,
    )
    ignored = tuple(p for p in _leaves(data) if p not in r.used and not any(p.startswith(u + ".") for u in r.used))
    return attrs.evolve(values, ignored=ignored)
