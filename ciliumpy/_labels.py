"""Labels with sources (``k8s:app=web``) and label sets.

A label's string form is ``source:key=value``; a key without a source has the source
``any``, which matches a label of any source in selectors (pkg/labels/labels.go).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from .exceptions import PolicyError

__all__ = [
    "SOURCE_ANY",
    "SOURCE_CIDR",
    "SOURCE_FQDN",
    "SOURCE_K8S",
    "SOURCE_RESERVED",
    "Label",
    "LabelSet",
    "cidr_label",
]

SOURCE_K8S = "k8s"
SOURCE_RESERVED = "reserved"
SOURCE_ANY = "any"
SOURCE_CIDR = "cidr"
SOURCE_FQDN = "fqdn"
SOURCE_UNSPEC = "unspec"
KNOWN_SOURCES = frozenset(
    {
        SOURCE_K8S,
        SOURCE_RESERVED,
        SOURCE_ANY,
        SOURCE_CIDR,
        SOURCE_FQDN,
        SOURCE_UNSPEC,
        "container",
        "cni",
        "cidrgroup",
        "node",
        "directory",
    }
)

# Keys Cilium derives for every pod (pkg/k8s/apis/cilium.io/const.go). Pod labels whose key
# starts with CILIUM_LABEL_PREFIX are Cilium's own and are dropped from a pod's labels.
CILIUM_LABEL_PREFIX = "io.cilium.k8s"
NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT_KEY = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_KEY = "io.cilium.k8s.policy.cluster"


def split_source(text: str, default: str = SOURCE_ANY) -> tuple[str, str]:
    """Split ``source:key`` into its parts; a key without a known source gets ``default``.

    Only a prefix naming a known source counts as a source, so keys such as
    ``example.com/role`` or values with colons stay intact.
    """
    if text.startswith("$host"):
        return SOURCE_RESERVED, "host"
    head, sep, tail = text.partition(":")
    if sep and head in KNOWN_SOURCES:
        return head, tail
    return default, text


@attrs.frozen(order=True)
class Label:
    """One label: ``source``, ``key`` and (possibly empty) ``value``."""

    source: str
    key: str
    value: str = ""

    @classmethod
    def parse(cls, text: str, default_source: str = SOURCE_ANY) -> Label:
        """Parse ``source:key=value``, ``key=value``, ``reserved:host`` or ``$host``."""
        if not isinstance(text, str) or not text:
            raise PolicyError("label must be a non-empty string", value=text)
        source, rest = split_source(text, default_source)
        if source == SOURCE_CIDR:
            return cls(source, rest, "")
        key, _, value = rest.partition("=")
        if not key:
            raise PolicyError("label key must not be empty", value=text)
        return cls(source, key, value)

    def __str__(self) -> str:
        return f"{self.source}:{self.key}={self.value}" if self.value else f"{self.source}:{self.key}"


def cidr_label(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Label:
    """The ``cidr:`` label of a prefix; IPv6 colons become dashes as Cilium writes them."""
    text = str(net)
    if net.version == 6:
        text = text.replace(":", "-")
    return Label(SOURCE_CIDR, text, "")


def _label_frozenset(items: Iterable[Label]) -> frozenset[Label]:
    return frozenset(items)


@attrs.frozen(eq=False)
class LabelSet:
    """An immutable set of labels indexed by key for fast selector matching."""

    labels: frozenset[Label] = attrs.field(converter=_label_frozenset)
    _by_key: dict[str, tuple[tuple[str, str], ...]] = attrs.field(init=False, repr=False, eq=False)
    _hash: int = attrs.field(init=False, repr=False, eq=False)
    _strings: tuple[str, ...] | None = attrs.field(init=False, repr=False, eq=False, default=None)

    def __attrs_post_init__(self) -> None:
        by_key: dict[str, list[tuple[str, str]]] = {}
        for lbl in self.labels:
            by_key.setdefault(lbl.key, []).append((lbl.source, lbl.value))
        object.__setattr__(self, "_by_key", {k: tuple(v) for k, v in by_key.items()})
        object.__setattr__(self, "_hash", hash(self.labels))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], source: str = SOURCE_K8S) -> LabelSet:
        """Labels from a Kubernetes ``labels`` mapping, all with ``source``."""
        return cls(Label(source, str(k), str(v)) for k, v in mapping.items())

    @classmethod
    def parse(cls, items: Iterable[str]) -> LabelSet:
        """Labels from their string forms (``k8s:app=web``)."""
        return cls(Label.parse(s) for s in items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self.labels == other.labels

    def __hash__(self) -> int:
        return self._hash

    def __iter__(self) -> Iterator[Label]:
        return iter(sorted(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, item: object) -> bool:
        return item in self.labels

    def __or__(self, other: Iterable[Label]) -> LabelSet:
        return LabelSet(self.labels | frozenset(other))

    def values_of(self, key: str, source: str = SOURCE_ANY) -> tuple[str, ...]:
        """Values of ``key`` among labels of ``source`` (``any`` matches every source)."""
        found = self._by_key.get(key, ())
        if source == SOURCE_ANY:
            return tuple(v for _, v in found)
        return tuple(v for s, v in found if s == source)

    def has_key(self, key: str, source: str = SOURCE_ANY) -> bool:
        """Whether a label ``key`` of ``source`` (``any``: of any source) is present."""
        found = self._by_key.get(key, ())
        if source == SOURCE_ANY:
            return bool(found)
        return any(s == source for s, _ in found)

    def get(self, key: str, source: str = SOURCE_ANY) -> str | None:
        """The first value of ``key`` among labels of ``source``, or ``None``."""
        vals = self.values_of(key, source)
        return vals[0] if vals else None

    def keys(self) -> Iterable[str]:
        """The distinct label keys."""
        return self._by_key.keys()

    def strings(self) -> list[str]:
        """Sorted ``source:key=value`` strings, as ``cilium-dbg identity list`` prints."""
        cached = self._strings
        if cached is None:
            cached = tuple(sorted(str(lbl) for lbl in self.labels))
            object.__setattr__(self, "_strings", cached)
        return list(cached)

    def k8s_mapping(self) -> dict[str, str]:
        """The ``k8s:`` labels as a plain mapping."""
        return {lbl.key: lbl.value for lbl in self.labels if lbl.source == SOURCE_K8S}

    def to_json(self) -> list[str]:
        """JSON form: the sorted label strings."""
        return self.strings()


_NAME_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_label_key(key: str, field: str) -> None:
    """Kubernetes qualified-name rules for a label key (``[prefix/]name``), without source."""
    prefix, slash, name = key.rpartition("/")
    if not name or len(name) > 63 or not _NAME_RE.match(name):
        raise PolicyError(
            "invalid label key: name part must be 1-63 characters of [A-Za-z0-9-_.] "
            "starting and ending with an alphanumeric",
            field=field,
            value=key,
        )
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        raise PolicyError(
            "invalid label key prefix: must be a lowercase RFC 1123 subdomain",
            field=field,
            value=key,
        )


def validate_label_value(value: Any, field: str) -> str:
    """A label value: a string of at most 63 characters of ``[A-Za-z0-9-_.]``, may be empty."""
    if not isinstance(value, str):
        raise PolicyError(
            "label value must be of type string (quote numbers and booleans)",
            field=field,
            value=value,
        )
    if len(value) > 63 or not _NAME_RE.match(value):
        raise PolicyError(
            "invalid label value: at most 63 characters of [A-Za-z0-9-_.] starting and ending with an alphanumeric",
            field=field,
            value=value,
        )
    return value


def normalize_label_mapping(value: Any, field: str) -> dict[str, str]:
    """Validate a Kubernetes labels mapping: qualified-name keys, label-value strings."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PolicyError("must be of type object", field=field, value=value)
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise PolicyError("label key must be a non-empty string", field=field, value=k)
        validate_label_key(k, f"{field}.{k}")
        out[k] = validate_label_value(v, f"{field}.{k}")
    return out


def normalize_annotations(value: Any, field: str) -> dict[str, str]:
    """Validate an annotations mapping: string keys and string values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PolicyError("must be of type object", field=field, value=value)
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise PolicyError("annotation key must be a non-empty string", field=field, value=k)
        if not isinstance(v, str):
            raise PolicyError("annotation value must be of type string", field=f"{field}.{k}", value=v)
        out[k] = v
    return out
