"""Label selectors (``matchLabels`` + ``matchExpressions``) over source-qualified labels.

Keys may carry a source (``k8s:app``, ``reserved:host``); a key without one is ``any:``
and matches labels of every source (pkg/policy/api/selector.go).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._labels import (
    SOURCE_ANY,
    LabelSet,
    split_source,
    validate_label_key,
    validate_label_value,
)
from .exceptions import PolicyError

__all__ = ["EndpointSelector", "Operator", "Requirement"]


class Operator(enum.Enum):
    """Set-based selector operators of Kubernetes label selectors."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


def validate_selector_key(key: str, field: str, *, sources: bool = True) -> None:
    """A selector key: an optional Cilium source (``k8s:``, only when ``sources``) and a
    Kubernetes label key."""
    bare = split_source(key)[1] if sources else key
    validate_label_key(bare, field)


@attrs.frozen(order=True)
class Requirement:
    """One selector requirement: ``key`` (with ``source``) ``operator`` ``values``."""

    source: str
    key: str
    operator: Operator = attrs.field(order=lambda op: op.value)
    values: tuple[str, ...] = ()

    def matches(self, labels: LabelSet) -> bool:
        """Whether ``labels`` satisfy this requirement."""
        op = self.operator
        if op is Operator.EXISTS:
            return labels.has_key(self.key, self.source)
        if op is Operator.DOES_NOT_EXIST:
            return not labels.has_key(self.key, self.source)
        present = labels.values_of(self.key, self.source)
        hit = any(v in self.values for v in present)
        return hit if op is Operator.IN else not hit

    @property
    def qualified_key(self) -> str:
        """The key as written in a selector: ``k8s:app``, or ``app`` for the ``any`` source."""
        return self.key if self.source == SOURCE_ANY else f"{self.source}:{self.key}"

    def __str__(self) -> str:
        if self.operator is Operator.EXISTS:
            return self.qualified_key
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.qualified_key}"
        if self.operator is Operator.IN and len(self.values) == 1:
            return f"{self.qualified_key}={self.values[0]}"
        op = "in" if self.operator is Operator.IN else "notin"
        return f"{self.qualified_key} {op} ({','.join(self.values)})"


def _sorted_items(
    items: Iterable[tuple[str, str]] | Mapping[str, str],
) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(dict(items).items()))


def _requirements(items: Iterable[Requirement]) -> tuple[Requirement, ...]:
    return tuple(items)


@attrs.frozen
class EndpointSelector:
    """A Kubernetes label selector as written in a manifest.

    ``match_labels`` and ``match_expressions`` keep the user's form for round trips;
    :attr:`requirements` is the normalised conjunction used for matching. An empty
    selector selects everything.
    """

    match_labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_sorted_items)
    match_expressions: tuple[Requirement, ...] = attrs.field(default=(), converter=_requirements)
    requirements: tuple[Requirement, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        reqs = [Requirement(*split_source(k), Operator.IN, (v,)) for k, v in self.match_labels]
        reqs.extend(self.match_expressions)
        object.__setattr__(self, "requirements", tuple(sorted(set(reqs))))

    @classmethod
    def make(
        cls,
        match_labels: Mapping[str, str] | None = None,
        match_expressions: Iterable[tuple[str, str, Iterable[str]]] = (),
    ) -> EndpointSelector:
        """Build from plain data: ``make({"app": "web"}, [("tier", "In", ["a"])])``."""
        exprs = []
        for key, op, values in match_expressions:
            src, bare = split_source(key)
            exprs.append(Requirement(src, bare, Operator(op), tuple(sorted(values))))
        return cls(tuple((match_labels or {}).items()), tuple(exprs))

    @classmethod
    def from_manifest(cls, data: Any, field: str, *, sources: bool = True) -> EndpointSelector:
        """Parse ``{matchLabels: {...}, matchExpressions: [...]}`` strictly."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise PolicyError("must be of type object", field=field, value=data)
        for key in data:
            if key not in ("matchLabels", "matchExpressions"):
                raise PolicyError(f'unknown field "{key}"', field=f"{field}.{key}", value=data[key])
        labels_raw = data.get("matchLabels")
        if labels_raw is None:
            labels_raw = {}
        if not isinstance(labels_raw, Mapping):
            raise PolicyError("must be of type object", field=f"{field}.matchLabels", value=labels_raw)
        labels: list[tuple[str, str]] = []
        for k, v in labels_raw.items():
            kf = f"{field}.matchLabels.{k}"
            if not isinstance(k, str):
                raise PolicyError("label key must be of type string", field=kf, value=k)
            validate_selector_key(k, kf, sources=sources)
            labels.append((k, validate_label_value(v, kf)))
        exprs_raw = data.get("matchExpressions")
        if exprs_raw is None:
            exprs_raw = []
        if not isinstance(exprs_raw, list):
            raise PolicyError("must be of type array", field=f"{field}.matchExpressions", value=exprs_raw)
        exprs: list[Requirement] = []
        for i, item in enumerate(exprs_raw):
            ef = f"{field}.matchExpressions[{i}]"
            exprs.append(_parse_expression(item, ef, sources))
        return cls(tuple(labels), tuple(exprs))

    def to_manifest(self) -> dict[str, Any]:
        """The selector as written in a manifest."""
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            exprs = []
            for req in self.match_expressions:
                item: dict[str, Any] = {"key": req.qualified_key, "operator": req.operator.value}
                if req.operator in (Operator.IN, Operator.NOT_IN):
                    item["values"] = list(req.values)
                exprs.append(item)
            out["matchExpressions"] = exprs
        return out

    @property
    def is_wildcard(self) -> bool:
        """Whether the selector has no requirement (selects everything)."""
        return not self.requirements

    def matches(self, labels: LabelSet) -> bool:
        """Whether every requirement holds for ``labels``."""
        return all(req.matches(labels) for req in self.requirements)

    def mentions_key(self, key: str, sources: Iterable[str] = ("k8s", SOURCE_ANY)) -> bool:
        """Whether a requirement names ``key`` with one of ``sources``."""
        srcs = set(sources)
        return any(r.key == key and r.source in srcs for r in self.requirements)

    def mentions_key_prefix(self, prefix: str) -> bool:
        """Whether a requirement's key starts with ``prefix``."""
        return any(r.key.startswith(prefix) for r in self.requirements)

    def has_source(self, source: str) -> bool:
        """Whether a requirement uses a key of ``source`` (e.g. ``reserved``)."""
        return any(r.source == source for r in self.requirements)

    def with_requirement(self, req: Requirement) -> EndpointSelector:
        """A copy with ``req`` added to the match expressions."""
        return EndpointSelector(self.match_labels, (*self.match_expressions, req))

    def __str__(self) -> str:
        if not self.requirements:
            return "{}"
        return ", ".join(str(r) for r in self.requirements)


def _parse_expression(item: Any, field: str, sources: bool = True) -> Requirement:
    if not isinstance(item, Mapping):
        raise PolicyError("must be of type object", field=field, value=item)
    for k in item:
        if k not in ("key", "operator", "values"):
            raise PolicyError(f'unknown field "{k}"', field=f"{field}.{k}", value=item[k])
    key = item.get("key")
    if not isinstance(key, str) or not key:
        raise PolicyError("key must be a non-empty string", field=f"{field}.key", value=key)
    validate_selector_key(key, f"{field}.key", sources=sources)
    op_raw = item.get("operator")
    try:
        op = Operator(op_raw)
    except ValueError:
        raise PolicyError(
            "operator must be one of In, NotIn, Exists, DoesNotExist",
            field=f"{field}.operator",
            value=op_raw,
        ) from None
    values = item.get("values")
    if op in (Operator.IN, Operator.NOT_IN):
        if not isinstance(values, list) or not values:
            raise PolicyError(
                f"values must be a non-empty list for operator {op.value}",
                field=f"{field}.values",
                value=values,
            )
        vals = tuple(sorted({validate_label_value(v, f"{field}.values[{j}]") for j, v in enumerate(values)}))
    else:
        if values:
            raise PolicyError(
                f"values must be empty for operator {op.value}",
                field=f"{field}.values",
                value=values,
            )
        vals = ()
    src, bare = split_source(key)
    return Requirement(src, bare, op, vals)
