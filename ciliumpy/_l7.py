"""Layer-7 rules (``toPorts[].rules``) and the proxy's verdict on requests.

Rules enter through ``from_manifest`` (strict: unknown keys and wrong types are errors, and
every check the agent does on the rule itself is done here) and leave through
``to_manifest`` in the CRD's camelCase. :func:`evaluate_l7` is the L7 stage of the verdict
recipe: given every per-selector policy that selects the remote identity on a redirected port
it says whether one request is allowed and why. HTTP regexes are RE2 full matches
(Envoy ``safe_regex``); DNS names follow :mod:`ciliumpy._fqdn`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Self, TypeAlias

import attrs

from ciliumpy._datapath import RuleOrigin
from ciliumpy._fqdn import (
    check_one_name_field,
    compile_re2,
    dns_allow_regex,
    dns_name_allowed,
    go_quote,
    is_dns_wildcard,
    normalize_name,
)
from ciliumpy.exceptions import PolicyError

__all__ = [
    "KAFKA_API_KEYS",
    "LISTENER_PRIORITY",
    "DNSQuery",
    "DNSRule",
    "FrozenStrMap",
    "GenericL7Request",
    "HTTPRequest",
    "HTTPRule",
    "HeaderMatch",
    "HeaderSecret",
    "KafkaRequest",
    "KafkaRule",
    "L7Decision",
    "L7PolicyView",
    "L7Request",
    "L7Rules",
    "evaluate_l7",
    "explain_http",
    "http_l7_record",
    "match_dns",
    "match_generic",
    "match_http",
    "match_kafka",
    "validate_port_rule_l7",
]

#: Default proxy listener priority per parser (pkg/policy/types; lower = preferred).
LISTENER_PRIORITY: Final[Mapping[str, int]] = {"http": 101, "kafka": 106, "dns": 121}
_PROXYLIB_PRIORITY: Final = 111

_MISMATCH_ACTIONS: Final = ("LOG", "ADD", "DELETE", "REPLACE")

#: Kafka API key names (lower case) → numbers, as the agent accepts them in ``apiKey``.
KAFKA_API_KEYS: Final[Mapping[str, int]] = {
    "produce": 0,
    "fetch": 1,
    "offsets": 2,
    "metadata": 3,
    "leaderandisr": 4,
    "stopreplica": 5,
    "updatemetadata": 6,
    "controlledshutdown": 7,
    "offsetcommit": 8,
    "offsetfetch": 9,
    "findcoordinator": 10,
    "joingroup": 11,
    "heartbeat": 12,
    "leavegroup": 13,
    "syncgroup": 14,
    "describegroups": 15,
    "listgroups": 16,
    "saslhandshake": 17,
    "apiversions": 18,
    "createtopics": 19,
    "deletetopics": 20,
    "deleterecords": 21,
    "initproducerid": 22,
    "offsetforleaderepoch": 23,
    "addpartitionstotxn": 24,
    "addoffsetstotxn": 25,
    "endtxn": 26,
    "writetxnmarkers": 27,
    "txnoffsetcommit": 28,
    "describeacls": 29,
    "createacls": 30,
    "deleteacls": 31,
    "describeconfigs": 32,
    "alterconfigs": 33,
}
_KAFKA_KEY_NAMES: Final = {v: k for k, v in KAFKA_API_KEYS.items()}
# The API keys a role expands to (pkg/policy/api/kafka GetAPIKeys).
_KAFKA_ROLES: Final[Mapping[str, frozenset[int]]] = {
    "produce": frozenset({0, 3, 18}),
    "consume": frozenset({1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18}),
}
_KAFKA_MAX_TOPIC_LEN: Final = 255
# Go's pattern is the raw string `^[a-zA-Z0-9\\._\\-]+$`; the doubled backslashes make a
# literal backslash part of the class, so the agent accepts it too.
_KAFKA_TOPIC_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-\\")


# --------------------------------------------------------------------------------------------
# small helpers


def _mapping(data: object, path: str, what: str) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise PolicyError(f"{what} must be a mapping", field=path, value=data)
    for key in data:
        if not isinstance(key, str):
            raise PolicyError(f"{what} keys must be strings", field=path, value=key)
    return data


def _check_keys(data: Mapping[str, object], allowed: Sequence[str], path: str) -> None:
    for key in data:
        if key not in allowed:
            raise PolicyError(
                f"unknown field {key!r} (expected one of: {', '.join(allowed)})",
                field=f"{path}.{key}",
            )


def _opt_str(data: Mapping[str, object], key: str, path: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PolicyError(f"{key} must be a string", field=f"{path}.{key}", value=value)
    # The agent treats an empty string exactly like an omitted field.
    return value or None


def _opt_list(data: Mapping[str, object], key: str, path: str) -> list[object] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise PolicyError(f"{key} must be a list", field=f"{path}.{key}", value=value)
    return list(value)


def _check_regex(pattern: str | None, field: str) -> None:
    if pattern is None:
        return
    try:
        compile_re2(pattern)
    except PolicyError as err:
        raise PolicyError(err.reason, field=field) from err


def _full_match(pattern: str, value: str) -> bool:
    return compile_re2(pattern).fullmatch(value) is not None


def _dedup(items: Iterable[Any]) -> tuple[Any, ...]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return tuple(seen)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _origin_set(value: Iterable[RuleOrigin]) -> frozenset[RuleOrigin]:
    return frozenset(value)


class FrozenStrMap(Mapping[str, str]):
    """An immutable, hashable ``str → str`` mapping (one generic ``l7`` rule or header set)."""

    __slots__ = ("_items",)

    def __init__(self, data: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        items = dict(data.items() if isinstance(data, Mapping) else data)
        self._items: dict[str, str] = dict(sorted(items.items()))

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenStrMap({self._items!r})"


# --------------------------------------------------------------------------------------------
# HTTP rules


@attrs.frozen
class HeaderSecret:
    """A Kubernetes Secret holding the value a header must have (one key in the Secret)."""

    name: str
    namespace: str | None = None

    def to_manifest(self) -> dict[str, str]:
        """``{namespace, name}`` as in the CRD."""
        out = {"name": self.name}
        if self.namespace:
            out = {"namespace": self.namespace, "name": self.name}
        return out


@attrs.frozen
class HeaderMatch:
    """One ``headerMatches`` entry.

    Without ``mismatch`` the header must be present and, if ``value`` (or the Secret) is set,
    equal to it; otherwise the rule does not match. With a ``mismatch`` action (``LOG``,
    ``ADD``, ``DELETE``, ``REPLACE``) the rule still matches and the proxy logs, adds, deletes
    or replaces the header.
    """

    name: str
    value: str | None = None
    secret: HeaderSecret | None = None
    mismatch: str | None = None

    @classmethod
    def from_manifest(cls, data: object, path: str) -> Self:
        """Parse ``{name, value, secret: {namespace, name}, mismatch}``."""
        d = _mapping(data, path, "headerMatches entry")
        _check_keys(d, ("mismatch", "name", "secret", "value"), path)
        name = _opt_str(d, "name", path)
        value = _opt_str(d, "value", path)
        mismatch = _opt_str(d, "mismatch", path)
        secret: HeaderSecret | None = None
        raw_secret = d.get("secret")
        if raw_secret is not None:
            s = _mapping(raw_secret, f"{path}.secret", "secret")
            _check_keys(s, ("name", "namespace"), f"{path}.secret")
            secret = HeaderSecret(
                name=_opt_str(s, "name", f"{path}.secret") or "",
                namespace=_opt_str(s, "namespace", f"{path}.secret"),
            )
        # Same order of checks as PortRuleHTTP.Sanitize.
        if not name:
            raise PolicyError("Header name missing", field=f"{path}.name")
        if mismatch is not None and mismatch not in _MISMATCH_ACTIONS:
            raise PolicyError(f"Invalid header action: {mismatch}", field=f"{path}.mismatch")
        if secret is not None and not secret.name:
            raise PolicyError("Secret name missing", field=f"{path}.secret.name")
        return cls(name=name, value=value, secret=secret, mismatch=mismatch)

    def to_manifest(self) -> dict[str, Any]:
        """The CRD form; empty fields are omitted."""
        out: dict[str, Any] = {"name": self.name}
        if self.value is not None:
            out["value"] = self.value
        if self.secret is not None:
            out["secret"] = self.secret.to_manifest()
        if self.mismatch is not None:
            out["mismatch"] = self.mismatch
        return out


def _match_tuple(value: Iterable[HeaderMatch]) -> tuple[HeaderMatch, ...]:
    return tuple(value)


@attrs.frozen
class HTTPRule:
    """One ``rules.http`` entry; all given fields must match (an empty rule matches all).

    ``method``, ``path`` and ``host`` are RE2 regexes matched against the whole value
    (anchored); ``path`` sees the request path including any query string. ``headers`` are
    ``"Name"`` (must be present) or ``"Name value"`` (must equal ``value`` exactly).
    """

    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    header_matches: tuple[HeaderMatch, ...] = attrs.field(default=(), converter=_match_tuple)

    @classmethod
    def from_manifest(cls, data: object, path: str) -> Self:
        """Parse ``{method, path, host, headers, headerMatches}``; regexes must compile."""
        d = _mapping(data, path, "http rule")
        _check_keys(d, ("headerMatches", "headers", "host", "method", "path"), path)
        rule_path = _opt_str(d, "path", path)
        method = _opt_str(d, "method", path)
        host = _opt_str(d, "host", path)
        headers: list[str] = []
        for i, item in enumerate(_opt_list(d, "headers", path) or ()):
            if not isinstance(item, str):
                raise PolicyError("headers entries must be strings", field=f"{path}.headers[{i}]", value=item)
            headers.append(item)
        matches = tuple(
            HeaderMatch.from_manifest(item, f"{path}.headerMatches[{i}]")
            for i, item in enumerate(_opt_list(d, "headerMatches", path) or ())
        )
        # The agent validates path and method; Envoy would reject a bad host regex when the
        # policy is pushed, so it is checked here too.
        _check_regex(rule_path, f"{path}.path")
        _check_regex(method, f"{path}.method")
        _check_regex(host, f"{path}.host")
        return cls(method=method, path=rule_path, host=host, headers=headers, header_matches=matches)

    def to_manifest(self) -> dict[str, Any]:
        """The CRD form; ``{}`` for the allow-everything rule."""
        out: dict[str, Any] = {}
        if self.method is not None:
            out["method"] = self.method
        if self.path is not None:
            out["path"] = self.path
        if self.host is not None:
            out["host"] = self.host
        if self.headers:
            out["headers"] = list(self.headers)
        if self.header_matches:
            out["headerMatches"] = [m.to_manifest() for m in self.header_matches]
        return out

    def describe(self) -> str:
        """Short text such as ``GET /api/products`` (``*`` for an omitted method or path)."""
        text = f"{self.method or '*'} {self.path or '*'}"
        extra = []
        if self.host is not None:
            extra.append(f"host {self.host}")
        extra.extend(f"header {h}" for h in self.headers)
        for m in self.header_matches:
            if m.mismatch:
                extra.append(f"header {m.name} ({m.mismatch} on mismatch)")
            elif m.secret is not None:
                extra.append(f"header {m.name}=<secret {m.secret.name}>")
            elif m.value is not None:
                extra.append(f"header {m.name}={m.value}")
            else:
                extra.append(f"header {m.name}")
        return text + (f" ({', '.join(extra)})" if extra else "")


# --------------------------------------------------------------------------------------------
# Kafka, DNS and generic rules


@attrs.frozen
class KafkaRule:
    """One ``rules.kafka`` entry (deprecated upstream; removed from 1.20 development).

    ``role`` (``produce``/``consume``) expands to a set of API keys; ``api_key`` names one key;
    they are mutually exclusive. Omitted fields match anything.
    """

    role: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    client_id: str | None = None
    topic: str | None = None

    @classmethod
    def from_manifest(cls, data: object, path: str) -> Self:
        """Parse ``{role, apiKey, apiVersion, clientID, topic}`` with the agent's checks."""
        d = _mapping(data, path, "kafka rule")
        _check_keys(d, ("apiKey", "apiVersion", "clientID", "role", "topic"), path)
        role = _opt_str(d, "role", path)
        api_key = _opt_str(d, "apiKey", path)
        version = _opt_str(d, "apiVersion", path)
        client_id = _opt_str(d, "clientID", path)
        topic = _opt_str(d, "topic", path)
        if api_key and role:
            raise PolicyError(
                f"cannot set both Role {go_quote(role)} and APIKey {go_quote(api_key)} together",
                field=path,
            )
        if api_key and api_key.lower() not in KAFKA_API_KEYS:
            raise PolicyError(f"invalid Kafka APIKey {go_quote(api_key)}", field=f"{path}.apiKey")
        if role and role.lower() not in _KAFKA_ROLES:
            raise PolicyError(f"invalid Kafka Role {go_quote(role)}", field=f"{path}.role")
        if version is not None and not (version.isdigit() and int(version) <= 0x7FFF):
            raise PolicyError(f"invalid Kafka APIVersion {go_quote(version)}", field=f"{path}.apiVersion")
        if topic is not None:
            if len(topic) > _KAFKA_MAX_TOPIC_LEN:
                raise PolicyError(
                    f"kafka topic exceeds maximum len of {_KAFKA_MAX_TOPIC_LEN}",
                    field=f"{path}.topic",
                )
            if not set(topic) <= _KAFKA_TOPIC_CHARS:
                raise PolicyError(f"invalid Kafka Topic name {go_quote(topic)}", field=f"{path}.topic")
        return cls(role=role, api_key=api_key, api_version=version, client_id=client_id, topic=topic)

    def to_manifest(self) -> dict[str, str]:
        """The CRD form; omitted fields are left out."""
        out: dict[str, str] = {}
        for key, value in (
            ("role", self.role),
            ("apiKey", self.api_key),
            ("apiVersion", self.api_version),
            ("clientID", self.client_id),
            ("topic", self.topic),
        ):
            if value is not None:
                out[key] = value
        return out

    @property
    def api_keys(self) -> frozenset[int] | None:
        """API key numbers this rule allows; ``None`` means every key."""
        if self.role:
            return _KAFKA_ROLES[self.role.lower()]
        if self.api_key:
            return frozenset({KAFKA_API_KEYS[self.api_key.lower()]})
        return None

    def describe(self) -> str:
        """Short text such as ``role=produce topic=orders``."""
        parts = [
            f"{k}={v}"
            for k, v in (
                ("role", self.role),
                ("apiKey", self.api_key),
                ("apiVersion", self.api_version),
                ("clientID", self.client_id),
                ("topic", self.topic),
            )
            if v is not None
        ]
        return "kafka " + (" ".join(parts) if parts else "*")


@attrs.frozen
class DNSRule:
    """One ``rules.dns`` entry: which names may be *queried* through the DNS proxy.

    Like a ``toFQDNs`` selector it has exactly one of ``matchName`` and ``matchPattern``
    (the CRD's ``oneOf``); each rule adds one alternative to the proxy's allow-regex.
    """

    match_name: str | None = None
    match_pattern: str | None = None

    @classmethod
    def from_manifest(cls, data: object, path: str) -> Self:
        """Parse ``{matchName, matchPattern}`` with the 1.19 character and length checks."""
        d = _mapping(data, path, "dns rule")
        _check_keys(d, ("matchName", "matchPattern"), path)
        name, pattern = check_one_name_field(d, path)
        return cls(match_name=name, match_pattern=pattern)

    def to_manifest(self) -> dict[str, str]:
        """The CRD form."""
        out: dict[str, str] = {}
        if self.match_name:
            out["matchName"] = self.match_name
        if self.match_pattern:
            out["matchPattern"] = self.match_pattern
        return out

    def describe(self) -> str:
        """Short text such as ``matchPattern *.amazonaws.com``."""
        parts = []
        if self.match_name:
            parts.append(f"matchName {self.match_name}")
        if self.match_pattern:
            parts.append(f"matchPattern {self.match_pattern}")
        return " + ".join(parts) if parts else "no name (empty DNS rule)"


L7Rule: TypeAlias = HTTPRule | KafkaRule | DNSRule | FrozenStrMap


def _matches_everything(rule: L7Rule) -> bool:
    # The allow-all rule of each parser (see L7Rules.allow_all): no field constrains anything.
    if isinstance(rule, DNSRule):
        return is_dns_wildcard(rule.match_pattern or "")
    if isinstance(rule, FrozenStrMap):
        return not rule
    return rule == type(rule)()


def _counts_as_wildcard(rule: L7Rule) -> bool:
    # pkg/policy/l4.go hasWildcard: what already makes the default-allow wildcard redundant.
    # Narrower than _matches_everything for Kafka (any rule without a topic) and DNS (only
    # the literal pattern "*").
    if isinstance(rule, DNSRule):
        return rule.match_pattern == "*"
    if isinstance(rule, KafkaRule):
        return not rule.topic
    return _matches_everything(rule)


def _l7_entry(item: object, path: str) -> FrozenStrMap:
    entry = _mapping(item, path, "l7 rule")
    for key, value in entry.items():
        if key == "":
            raise PolicyError("Empty key not allowed", field=path)
        if not isinstance(value, str):
            raise PolicyError("l7 rule values must be strings", field=f"{path}.{key}", value=value)
    return FrozenStrMap({str(k): str(v) for k, v in entry.items()})


def _to_opt_tuple(value: Iterable[Any] | None) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


def _to_l7_entries(value: Iterable[Mapping[str, str]] | None) -> tuple[FrozenStrMap, ...] | None:
    if value is None:
        return None
    return tuple(v if isinstance(v, FrozenStrMap) else FrozenStrMap(v) for v in value)


@attrs.frozen
class L7Rules:
    """The ``rules`` of one ``toPorts`` entry: at most one L7 protocol.

    ``None`` means the field was absent; an empty tuple means it was given as an empty list
    (which selects the parser but restricts nothing). ``l7`` holds generic proxylib
    key/value rules for the parser named by ``l7proto``.
    """

    http: tuple[HTTPRule, ...] | None = attrs.field(default=None, converter=_to_opt_tuple)
    kafka: tuple[KafkaRule, ...] | None = attrs.field(default=None, converter=_to_opt_tuple)
    dns: tuple[DNSRule, ...] | None = attrs.field(default=None, converter=_to_opt_tuple)
    l7proto: str | None = None
    l7: tuple[Mapping[str, str], ...] | None = attrs.field(default=None, converter=_to_l7_entries)

    @classmethod
    def from_manifest(cls, data: object, path: str) -> Self:
        """Parse and validate ``rules`` (``path`` is e.g. ``spec.egress[0].toPorts[0].rules``).

        Checks done here are the ones about the rules themselves; those that depend on the
        surrounding ports and direction are in :func:`validate_port_rule_l7`.
        """
        d = _mapping(data, path, "rules")
        _check_keys(d, ("dns", "http", "kafka", "l7", "l7proto"), path)
        n_types = 0
        http = kafka = dns = None
        raw_http = _opt_list(d, "http", path)
        if raw_http is not None:
            n_types += 1
            http = tuple(HTTPRule.from_manifest(item, f"{path}.http[{i}]") for i, item in enumerate(raw_http))
        raw_kafka = _opt_list(d, "kafka", path)
        if raw_kafka is not None:
            n_types += 1
            kafka = tuple(KafkaRule.from_manifest(item, f"{path}.kafka[{i}]") for i, item in enumerate(raw_kafka))
        raw_dns = _opt_list(d, "dns", path)
        if raw_dns is not None:
            n_types += 1
            dns = tuple(DNSRule.from_manifest(item, f"{path}.dns[{i}]") for i, item in enumerate(raw_dns))
        l7proto = _opt_str(d, "l7proto", path)
        raw_l7 = _opt_list(d, "l7", path)
        if raw_l7 is not None and l7proto is None:
            raise PolicyError(
                "'l7' may only be specified when a 'l7proto' is also specified",
                field=f"{path}.l7",
            )
        l7: list[FrozenStrMap] | None = None
        if l7proto is not None:
            n_types += 1
            if raw_l7 is not None:
                l7 = [_l7_entry(item, f"{path}.l7[{i}]") for i, item in enumerate(raw_l7)]
        if n_types > 1:
            raise PolicyError("multiple L7 protocol rule types specified in single rule", field=path)
        return cls(http=http, kafka=kafka, dns=dns, l7proto=l7proto, l7=l7)

    def to_manifest(self) -> dict[str, Any]:
        """The CRD form (``{}`` when no protocol is set)."""
        out: dict[str, Any] = {}
        if self.http is not None:
            out["http"] = [r.to_manifest() for r in self.http]
        if self.kafka is not None:
            out["kafka"] = [r.to_manifest() for r in self.kafka]
        if self.dns is not None:
            out["dns"] = [r.to_manifest() for r in self.dns]
        if self.l7proto is not None:
            out["l7proto"] = self.l7proto
        if self.l7 is not None:
            out["l7"] = [dict(r) for r in self.l7]
        return out

    @property
    def parser(self) -> str | None:
        """``"http"``, ``"kafka"``, ``"dns"``, the ``l7proto`` name, or ``None`` (no L7)."""
        if self.http is not None:
            return "http"
        if self.kafka is not None:
            return "kafka"
        if self.dns is not None:
            return "dns"
        return self.l7proto

    @property
    def is_empty(self) -> bool:
        """True when no L7 protocol is given (``rules: {}``): the port is plain L4."""
        return self.parser is None

    @property
    def rules(self) -> tuple[L7Rule, ...]:
        """The rules of the active protocol, in order."""
        if self.http is not None:
            return self.http
        if self.kafka is not None:
            return self.kafka
        if self.dns is not None:
            return self.dns
        if self.l7 is not None:
            return tuple(FrozenStrMap(e) for e in self.l7)
        return ()

    @property
    def restricts(self) -> bool:
        """Whether any request can be refused.

        False without a parser, with an empty rule list, and when one rule matches every
        request: HTTP ``{}``, Kafka ``{}``, generic ``{}`` or a DNS wildcard ``matchPattern``
        (``*``). These are what a plain allow on the same selector/port merges in
        (:meth:`allow_all`): the port is still redirected, but the proxy refuses nothing.
        """
        if self.parser is None:
            return False
        rules = self.rules
        return bool(rules) and not any(_matches_everything(r) for r in rules)

    @property
    def listener_priority(self) -> int:
        """Proxy listener priority: HTTP 101, Kafka 106, proxylib 111, DNS 121, none 0."""
        parser = self.parser
        if parser is None:
            return 0
        return LISTENER_PRIORITY.get(parser, _PROXYLIB_PRIORITY)

    def merged(self, other: L7Rules) -> L7Rules:
        """Union of two rule sets for the same selector and port (de-duplicated, in order).

        Raises :class:`PolicyError` when both name different parsers, like the agent's
        ``cannot merge conflicting L7 parsers (http/kafka)``.
        """
        mine, theirs = self.parser, other.parser
        if mine is not None and theirs is not None and mine != theirs:
            raise PolicyError(f"cannot merge conflicting L7 parsers ({mine}/{theirs})")

        def union(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
            if a is None and b is None:
                return None
            return _dedup((*(a or ()), *(b or ())))

        return L7Rules(
            http=union(self.http, other.http),
            kafka=union(self.kafka, other.kafka),
            dns=union(self.dns, other.dns),
            l7proto=self.l7proto or other.l7proto,
            l7=union(self.l7, other.l7),
        )

    @classmethod
    def allow_all(cls, parser: str) -> L7Rules:
        """The wildcard rule set Cilium adds when a plain allow meets L7 rules on a port.

        HTTP ``{}``, DNS ``matchPattern: "*"``, Kafka ``{}``, proxylib ``{}``.
        """
        if parser == "http":
            return cls(http=(HTTPRule(),))
        if parser == "dns":
            return cls(dns=(DNSRule(match_pattern="*"),))
        if parser == "kafka":
            return cls(kafka=(KafkaRule(),))
        if not parser:
            raise ValueError("allow_all needs a parser name")
        return cls(l7proto=parser, l7=(FrozenStrMap(),))

    def with_wildcard(self) -> L7Rules:
        """These rules plus their parser's allow-all rule, unless one is already present.

        What Cilium (>= 1.18) does to the L7 rules of an allow when the direction is not
        default-deny (``enableDefaultDeny: false``): the port is still redirected, so the
        requests are visible, but every request is allowed.
        """
        parser = self.parser
        if parser is None or not self.rules or any(_counts_as_wildcard(r) for r in self.rules):
            return self
        return self.merged(L7Rules.allow_all(parser))

    def describe(self) -> tuple[str, ...]:
        """One short description per rule (``("*",)`` when nothing is restricted)."""
        if not self.restricts:
            return ("*",)
        out = []
        for rule in self.rules:
            if isinstance(rule, FrozenStrMap):
                body = " ".join(f"{k}={v}" for k, v in rule.items()) or "*"
                out.append(f"{self.l7proto} {body}")
            else:
                out.append(rule.describe())
        return tuple(out)


# --------------------------------------------------------------------------------------------
# port-context validation


def _is_service_name(port: str) -> bool:
    # IANA service name (RFC 6335): 1-15 of [a-zA-Z0-9-], a letter somewhere, no leading,
    # trailing or doubled hyphen. Such "ports" are named ports, never numbers.
    if not 1 <= len(port) <= 15 or port.startswith("-") or port.endswith("-") or "--" in port:
        return False
    if not all(c.isascii() and (c.isalnum() or c == "-") for c in port):
        return False
    return any(c.isalpha() for c in port)


def _parse_port_number(port: str) -> int | None:
    # strconv.ParseUint(port, 0, 16): decimal, 0x.., 0o.., 0b.. and leading-0 octal.
    try:
        value = int(port, 8) if len(port) > 1 and port[0] == "0" and port[1].isdigit() else int(port, 0)
    except ValueError:
        return None
    return value if 0 <= value <= 0xFFFF else None


def validate_port_rule_l7(
    rules: L7Rules | None,
    ports: Sequence[Mapping[str, object]],
    *,
    path: str,
    ingress: bool,
    host_policy: bool = False,
    l7_proxy_enabled: bool = True,
) -> None:
    """Check the L7 ``rules`` of one ``toPorts`` entry against its ports and direction.

    ``ports`` is the raw ``ports`` list of that entry and ``path`` its location (e.g.
    ``spec.egress[0].toPorts[0]``). Mirrors ``PortRule.Validate``: DNS only on egress, no
    port ranges and at least one port for DNS, L7 other than DNS only on TCP, no port 0 with
    L7 rules, no L7 on host ingress (or host egress except DNS), none when the proxy is off.
    Malformed ports are the caller's to report; they are skipped here.
    """
    if rules is None or rules.is_empty:
        return
    rules_path = f"{path}.rules"
    if not l7_proxy_enabled:
        raise PolicyError("L7 policy is not supported since L7 proxy is not enabled", field=rules_path)
    if host_policy:
        if ingress:
            raise PolicyError("L7 policy is not supported on host ingress yet", field=rules_path)
        if rules.parser != "dns":
            proto = {"http": "HTTP", "kafka": "Kafka"}.get(rules.parser or "", rules.parser)
            raise PolicyError(f"L7 protocol {proto} is not supported on host egress yet", field=rules_path)
    has_dns_rules = bool(rules.dns)
    if ingress and has_dns_rules:
        raise PolicyError("DNS rules are not allowed on ingress", field=f"{rules_path}.dns")
    zero_port: str | None = None
    for i, port in enumerate(ports):
        if not isinstance(port, Mapping):
            continue
        raw = port.get("port")
        text = "" if raw is None else str(raw)
        if text and not _is_service_name(text):
            number = _parse_port_number(text)
            if number is not None:
                if number == 0 and zero_port is None:
                    zero_port = f"{path}.ports[{i}].port"
                end = port.get("endPort")
                if has_dns_rules and isinstance(end, int) and end > number:
                    raise PolicyError("DNS rules do not support port ranges", field=f"{path}.ports[{i}].endPort")
        proto = str(port.get("protocol") or "ANY").upper()
        if not has_dns_rules and proto != "TCP":
            raise PolicyError(
                f"L7 rules can only apply to TCP (not {proto}) except for DNS rules",
                field=f"{path}.ports[{i}].protocol",
            )
    if zero_port is not None:
        raise PolicyError("L7 rules can not be used when a port is 0", field=zero_port)
    if rules.dns is not None and not ports:
        raise PolicyError("port 53 must be specified for DNS rules", field=f"{path}.ports")


# --------------------------------------------------------------------------------------------
# requests


def _to_headers(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        pairs: Iterable[Any] = value.items()
    elif isinstance(value, list | tuple):
        pairs = value
    else:
        raise TypeError(f"headers must be a mapping or a list of (name, value) pairs: {value!r}")
    out: list[tuple[str, str]] = []
    for pair in pairs:
        name, val = pair
        if isinstance(val, list | tuple):
            out.extend((str(name), str(v)) for v in val)
        else:
            out.append((str(name), str(val)))
    return tuple(out)


@attrs.frozen
class HTTPRequest:
    """An HTTP request as the proxy sees it: ``:method``, ``:path`` (with query), ``:authority``.

    ``headers`` keeps every (name, value) pair in order; names compare case-insensitively.

    >>> HTTPRequest.from_mapping({"grpc": "/pkg.Svc/Get"}).method
    'POST'
    """

    method: str
    path: str
    host: str | None = None
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_to_headers)
    protocol: str = "HTTP/1.1"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Build from ``{"method", "path", "host", "headers", "protocol"}``.

        Shorthands: ``{"grpc": "/pkg.Service/Method"}`` is an HTTP/2 ``POST`` with
        ``content-type: application/grpc``; ``{"url": "http://host/path?q"}`` sets host and
        path. Unknown keys raise :class:`PolicyError`.
        """
        allowed = ("grpc", "headers", "host", "method", "path", "protocol", "url")
        for key in data:
            if key not in allowed:
                raise PolicyError(
                    f"unknown HTTP request field {key!r} (expected one of: {', '.join(allowed)})",
                    field=str(key),
                )
        headers = list(_to_headers(data.get("headers")))
        host = data.get("host")
        path = data.get("path")
        method = data.get("method")
        protocol = data.get("protocol")
        if data.get("url") is not None:
            url = urllib.parse.urlsplit(str(data["url"]))
            host = host or url.netloc or None
            path = path or ((url.path or "/") + (f"?{url.query}" if url.query else ""))
        if data.get("grpc") is not None:
            grpc = str(data["grpc"])
            path = grpc if grpc.startswith("/") else "/" + grpc
            method = method or "POST"
            protocol = protocol or "HTTP/2"
            if not any(n.lower() == "content-type" for n, _ in headers):
                headers.append(("content-type", "application/grpc"))
        if path is None:
            raise PolicyError("an HTTP request needs a path (or grpc/url)", field="path")
        return cls(
            method=str(method or "GET"),
            path=str(path),
            host=None if host is None else str(host),
            headers=tuple(headers),
            protocol=str(protocol or "HTTP/1.1"),
        )

    @property
    def authority(self) -> str | None:
        """``:authority``: the explicit host, else a ``Host`` header."""
        return self.host if self.host is not None else self.header("host")

    def header(self, name: str) -> str | None:
        """The header's value; repeated headers are joined with ``,`` as Envoy matches them."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ",".join(values) if values else None

    @property
    def url(self) -> str:
        """``http://<authority><path>`` as Hubble prints it."""
        return f"http://{self.authority or ''}{self.path}"

    def describe(self) -> str:
        """``GET /path`` plus the host when known."""
        host = f" (host {self.authority})" if self.authority else ""
        return f"{self.method} {self.path}{host}"


def _to_api_key(value: int | str) -> int:
    if isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    try:
        return KAFKA_API_KEYS[value.lower()]
    except KeyError:
        raise ValueError(f"unknown Kafka API key {value!r}") from None


@attrs.frozen
class KafkaRequest:
    """A Kafka request: API key (number or name), version, client id and topics."""

    api_key: int = attrs.field(converter=_to_api_key)
    api_version: int = 0
    client_id: str = ""
    topics: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    correlation_id: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Build from ``{"apiKey", "apiVersion", "clientID", "topic" | "topics"}``."""
        allowed = ("apiKey", "apiVersion", "clientID", "correlationID", "topic", "topics")
        for key in data:
            if key not in allowed:
                raise PolicyError(f"unknown Kafka request field {key!r}", field=str(key))
        topics = list(data.get("topics") or ())
        if data.get("topic") is not None:
            topics.append(str(data["topic"]))
        return cls(
            api_key=data.get("apiKey", 0),
            api_version=int(data.get("apiVersion", 0)),
            client_id=str(data.get("clientID", "")),
            topics=tuple(topics),
            correlation_id=int(data.get("correlationID", 0)),
        )

    @property
    def api_key_name(self) -> str:
        """The API key's name (``produce``) or its number as text."""
        return _KAFKA_KEY_NAMES.get(self.api_key, str(self.api_key))

    def describe(self) -> str:
        """``kafka produce v3 topics=orders``."""
        topics = f" topics={','.join(self.topics)}" if self.topics else ""
        return f"kafka {self.api_key_name} v{self.api_version}{topics}"


@attrs.frozen
class DNSQuery:
    """A DNS question (name and type) as the DNS proxy checks it."""

    name: str
    qtype: str = "A"

    @property
    def fqdn(self) -> str:
        """Lower-case, fully qualified name."""
        return normalize_name(self.name)

    def describe(self) -> str:
        """``DNS A api.stripe.com.``."""
        return f"DNS {self.qtype} {self.fqdn}"


@attrs.frozen
class GenericL7Request:
    """A request for a proxylib parser (``l7proto``), given as the parser's key/value fields."""

    proto: str
    fields: Mapping[str, str] = attrs.field(factory=FrozenStrMap, converter=FrozenStrMap)

    def describe(self) -> str:
        """``<proto> k=v …``."""
        return f"{self.proto} " + " ".join(f"{k}={v}" for k, v in self.fields.items())


L7Request: TypeAlias = HTTPRequest | KafkaRequest | DNSQuery | GenericL7Request


# --------------------------------------------------------------------------------------------
# matching


def explain_http(
    rule: HTTPRule, request: HTTPRequest, *, secrets: Mapping[tuple[str, str], str] | None = None
) -> tuple[list[str], list[str]]:
    """Why ``rule`` does not match ``request``, and the header actions it would take.

    Returns ``(mismatches, actions)``: an empty first list means the rule matches.
    ``secrets`` maps ``(namespace, name)`` of a Secret to its value; a ``headerMatches``
    entry whose Secret is unknown and has no fallback ``value`` never matches (Envoy is
    given a never-matching header rule in that case).
    """
    problems: list[str] = []
    actions: list[str] = []
    if rule.method is not None and not _full_match(rule.method, request.method):
        problems.append(f"method {request.method!r} does not match {rule.method!r}")
    if rule.path is not None and not _full_match(rule.path, request.path):
        problems.append(f"path {request.path!r} does not match {rule.path!r}")
    if rule.host is not None:
        authority = request.authority
        if authority is None:
            problems.append(f"no host (:authority) to match {rule.host!r}")
        elif not _full_match(rule.host, authority):
            problems.append(f"host {authority!r} does not match {rule.host!r}")
    for spec in rule.headers:
        name, sep, wanted = spec.partition(" ")
        if sep:
            name = name.rstrip(":")
            got = request.header(name)
            if got != wanted:
                problems.append(
                    f"header {name} is {got!r}, needs {wanted!r}"
                    if got is not None
                    else f"header {name} missing (needs {wanted!r})"
                )
        elif request.header(name) is None:
            problems.append(f"header {name} missing")
    for match in rule.header_matches:
        value = match.value
        secret_missing = False
        if match.secret is not None:
            key = (match.secret.namespace or "", match.secret.name)
            secret_value = (secrets or {}).get(key)
            if secret_value:
                value = secret_value
            elif not value:
                secret_missing = True
        if secret_missing:
            problems.append(f"header {match.name}: secret {match.secret!s} is not available")
            continue
        got = request.header(match.name)
        ok = got is not None and (not value or got == value)
        if match.mismatch is None:
            if got is None:
                problems.append(f"header {match.name} missing")
            elif not ok:
                problems.append(f"header {match.name} has the wrong value")
        elif not ok:
            actions.append(f"{match.mismatch} header {match.name}")
    return problems, actions


def match_http(rule: HTTPRule, request: HTTPRequest, *, secrets: Mapping[tuple[str, str], str] | None = None) -> bool:
    """Whether one HTTP rule allows ``request`` (every given field matches)."""
    return not explain_http(rule, request, secrets=secrets)[0]


def _kafka_rule_mismatches(rule: KafkaRule, request: KafkaRequest) -> list[str]:
    problems = []
    keys = rule.api_keys
    if keys is not None and request.api_key not in keys:
        problems.append(f"API key {request.api_key_name} not in {rule.role or rule.api_key}")
    if rule.api_version is not None and int(rule.api_version) != request.api_version:
        problems.append(f"API version {request.api_version} is not {rule.api_version}")
    if rule.client_id is not None and rule.client_id != request.client_id:
        problems.append(f"client id {request.client_id!r} is not {rule.client_id!r}")
    return problems


def match_kafka(rule: KafkaRule, request: KafkaRequest) -> bool:
    """Whether one Kafka rule allows the whole request (all its topics, if the rule has one).

    A topic constraint is ignored for requests that carry no topic.
    """
    if _kafka_rule_mismatches(rule, request):
        return False
    return rule.topic is None or all(t == rule.topic for t in request.topics)


def _kafka_rules_allow(rules: Sequence[KafkaRule], request: KafkaRequest) -> KafkaRule | None:
    # Each topic of the request may be allowed by a different rule; all must be allowed.
    if not request.topics:
        return next((r for r in rules if match_kafka(r, request)), None)
    first: KafkaRule | None = None
    for topic in request.topics:
        single = attrs.evolve(request, topics=(topic,))
        found = next((r for r in rules if match_kafka(r, single)), None)
        if found is None:
            return None
        first = first or found
    return first


def match_dns(rules: Sequence[DNSRule] | None, name: str) -> bool:
    """Whether DNS ``rules`` (one selector's list) let ``name`` be queried."""
    return dns_name_allowed(dns_allow_regex(rules), name)


def match_generic(rule: Mapping[str, str], request: GenericL7Request) -> bool:
    """Generic proxylib rule: every key/value of the rule equals the request's field.

    Real proxylib parsers interpret their keys themselves; this is their common core.
    """
    return all(request.fields.get(k) == v for k, v in rule.items())


# --------------------------------------------------------------------------------------------
# the L7 stage


@attrs.frozen
class L7PolicyView:
    """One per-selector policy that selects the remote identity on the redirected port.

    ``rules`` is ``None`` for a plain allow (no L7 restrictions); ``l3_only`` marks the
    port-0 allows that the proxy also consults; ``deny`` marks a deny on that selector.
    ``proxy_parser`` is the parser of the proxy the packet was redirected to, when known;
    ``foreign_parser`` names the parser of a selector whose rules that proxy does not
    enforce (its ``rules`` are then ``None``).
    """

    origins: frozenset[RuleOrigin] = attrs.field(converter=_origin_set)
    rules: L7Rules | None = None
    deny: bool = False
    l3_only: bool = False
    proxy_parser: str | None = None
    foreign_parser: str | None = None


@attrs.frozen(kw_only=True)
class L7Decision:
    """What the proxy does with one request (or, without a request, what it would accept).

    ``status`` is the HTTP status (200 or 403) for HTTP requests, else ``None``.
    ``header_actions`` lists header-match side effects (``LOG header X-Token``).
    """

    allowed: bool
    status: int | None
    matched_rule: L7Rule | None
    matched_origins: frozenset[RuleOrigin]
    reason: str
    accepts: tuple[str, ...]
    parser: str | None = None
    header_actions: tuple[str, ...] = ()
    proxy_parser: str | None = None


def _origins_text(origins: Iterable[RuleOrigin]) -> str:
    names = sorted(str(o) for o in origins)
    return ", ".join(names) if names else "(unnamed rule)"


def _request_parser(request: L7Request) -> str:
    if isinstance(request, HTTPRequest):
        return "http"
    if isinstance(request, KafkaRequest):
        return "kafka"
    if isinstance(request, DNSQuery):
        return "dns"
    return request.proto


def _describe(request: L7Request) -> str:
    return request.describe()


def _try_view(
    view: L7PolicyView,
    request: L7Request,
    secrets: Mapping[tuple[str, str], str] | None,
) -> tuple[L7Rule | None, list[str], list[str]]:
    """(matched rule, why-not notes, header actions) for one view with restrictions."""
    rules = view.rules
    assert rules is not None
    notes: list[str] = []
    if rules.parser != _request_parser(request):
        notes.append(f"{rules.parser} rules cannot match a {_request_parser(request)} request")
        return None, notes, []
    if isinstance(request, HTTPRequest):
        for rule in rules.http or ():
            problems, actions = explain_http(rule, request, secrets=secrets)
            if not problems:
                return rule, [], actions
            notes.append(f"{rule.describe()}: {'; '.join(problems)}")
    elif isinstance(request, KafkaRequest):
        kafka_rules = rules.kafka or ()
        found = _kafka_rules_allow(kafka_rules, request)
        if found is not None:
            return found, [], []
        for krule in kafka_rules:
            problems = _kafka_rule_mismatches(krule, request)
            if not problems and krule.topic is not None:
                problems = [f"topics {','.join(request.topics)} not all {krule.topic!r}"]
            notes.append(f"{krule.describe()}: {'; '.join(problems) or 'topics not all allowed'}")
    elif isinstance(request, DNSQuery):
        dns_rules = rules.dns or ()
        if match_dns(dns_rules, request.name):
            for drule in dns_rules:
                if match_dns((drule,), request.name):
                    return drule, [], []
        notes.append(f"{request.fqdn} matches none of: {', '.join(r.describe() for r in dns_rules)}")
    else:
        for entry in rules.l7 or ():
            if match_generic(entry, request):
                return FrozenStrMap(entry), [], []
            notes.append(f"{dict(entry)} does not match {dict(request.fields)}")
    return None, notes, []


def evaluate_l7(
    views: Sequence[L7PolicyView],
    request: L7Request | None,
    *,
    secrets: Mapping[tuple[str, str], str] | None = None,
) -> L7Decision:
    """The proxy's verdict for ``request`` given every view selecting the peer (§3.9 step 5).

    Deny if any view is a deny; allow if any view has no L7 restrictions or any rule of any
    view matches; otherwise refuse (HTTP 403, DNS REFUSED, Kafka error). With
    ``request=None`` the decision describes the port instead: ``allowed`` is True only if
    every request would be allowed, and ``accepts`` lists what would be.

    >>> from ciliumpy._datapath import RuleOrigin
    >>> o = RuleOrigin("CiliumNetworkPolicy", "default", "rule1")
    >>> rules = L7Rules(http=(HTTPRule(method="POST", path="/v1/request-landing"),))
    >>> evaluate_l7([L7PolicyView({o}, rules)], HTTPRequest("PUT", "/v1/exhaust-port")).status
    403
    """
    is_http = isinstance(request, HTTPRequest)
    parser = None if request is None else _request_parser(request)
    proxy_parser = next((v.proxy_parser for v in views if v.proxy_parser), None)
    denies = [v for v in views if v.deny]
    if denies:
        origins = frozenset().union(*(v.origins for v in denies))
        return L7Decision(
            allowed=False,
            status=403 if is_http else None,
            matched_rule=None,
            matched_origins=origins,
            reason=f"denied: {_origins_text(origins)} denies this peer on this port",
            accepts=(),
            parser=parser,
            proxy_parser=proxy_parser,
        )
    open_views = [v for v in views if v.rules is None or not v.rules.restricts]
    accepts: list[str] = []
    if open_views:
        accepts = ["*"]
    else:
        for v in views:
            assert v.rules is not None
            accepts.extend(v.rules.describe())
    accepts_t = _dedup(accepts)
    if not views:
        return L7Decision(
            allowed=False,
            status=403 if is_http else None,
            matched_rule=None,
            matched_origins=frozenset(),
            reason="denied: no policy selects this peer on this port",
            accepts=(),
            parser=parser,
            proxy_parser=proxy_parser,
        )
    if open_views:
        origins = frozenset().union(*(v.origins for v in open_views))
        kinds = (
            "an L3-only rule allows all traffic from this peer"
            if all(v.l3_only for v in open_views)
            else "no L7 restrictions for this peer on this port"
        )
        foreign = sorted({v.foreign_parser for v in open_views if v.foreign_parser})
        if foreign and all(v.foreign_parser for v in open_views):
            kinds = f"the {'/'.join(foreign)} rules for this peer are not enforced by the {proxy_parser} proxy"
        return L7Decision(
            allowed=True,
            status=200 if is_http else None,
            matched_rule=None,
            matched_origins=origins,
            reason=f"allowed: {kinds} ({_origins_text(origins)})",
            accepts=accepts_t,
            parser=parser,
            proxy_parser=proxy_parser,
        )
    if request is None:
        return L7Decision(
            allowed=False,
            status=None,
            matched_rule=None,
            matched_origins=frozenset().union(*(v.origins for v in views)),
            reason="redirected to the proxy; only requests matching an L7 rule are allowed",
            accepts=accepts_t,
            parser=proxy_parser or (views[0].rules.parser if views[0].rules is not None else None),
            proxy_parser=proxy_parser,
        )
    tried: list[str] = []
    matched: L7Rule | None = None
    matched_origins: set[RuleOrigin] = set()
    actions: list[str] = []
    for view in views:
        rule, notes, acts = _try_view(view, request, secrets)
        if rule is not None:
            matched = matched if matched is not None else rule
            matched_origins.update(view.origins)
            actions.extend(acts)
        else:
            tried.extend(f"{n} [{_origins_text(view.origins)}]" for n in notes)
    if matched is not None:
        desc = matched.describe() if not isinstance(matched, FrozenStrMap) else dict(matched)
        return L7Decision(
            allowed=True,
            status=200 if is_http else None,
            matched_rule=matched,
            matched_origins=frozenset(matched_origins),
            reason=f"allowed: {_describe(request)} matches {desc} ({_origins_text(matched_origins)})",
            accepts=accepts_t,
            parser=parser,
            proxy_parser=proxy_parser,
            header_actions=tuple(actions),
        )
    refusal = {"http": "403 Forbidden", "dns": "REFUSED"}.get(parser or "", "refused")
    return L7Decision(
        allowed=False,
        status=403 if is_http else None,
        matched_rule=None,
        matched_origins=frozenset(),
        reason=f"denied ({refusal}): {_describe(request)} matches no L7 rule; tried: " + "; ".join(tried),
        accepts=accepts_t,
        parser=parser,
        proxy_parser=proxy_parser,
    )


# --------------------------------------------------------------------------------------------
# Hubble


def http_l7_record(request: HTTPRequest, decision: L7Decision, *, latency_ns: int = 0) -> dict[str, Any]:
    """The L7 part of a Hubble flow for an HTTP request the proxy handled.

    Returns ``{"l7": {...}, "verdict": ..., "Summary": ...}`` with proto field names: a
    request record (``type: REQUEST``, no ``code``) when forwarded, and for a denied request
    the proxy's access-log entry, still ``type: REQUEST``, with ``code: 403`` and verdict
    ``DROPPED``. Zero values are omitted as in Hubble's JSON.
    """
    http: dict[str, Any] = {}
    if not decision.allowed:
        http["code"] = decision.status or 403
    http["method"] = request.method
    http["url"] = request.url
    http["protocol"] = request.protocol
    if request.headers:
        http["headers"] = [{"key": k, "value": v} for k, v in request.headers]
    l7: dict[str, Any] = {"type": "REQUEST"}
    if latency_ns:
        l7["latency_ns"] = str(latency_ns)
    l7["http"] = http
    return {
        "l7": l7,
        "verdict": "FORWARDED" if decision.allowed else "DROPPED",
        "Summary": f"{request.protocol} {request.method} {urllib.parse.unquote(request.url)}",
    }
