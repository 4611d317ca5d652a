"""DNS names as Cilium matches them: ``matchName``/``matchPattern``, ``toFQDNs`` and the DNS cache.

Everything here follows the 1.19 agent (``pkg/fqdn/matchpattern``, ``pkg/policy/api/fqdn.go``,
``pkg/fqdn/dnsproxy/proxy.go``); docs/semantics.md, "L7 and DNS", records each decision.
Names are compared lower-cased and fully qualified (trailing dot). User patterns become RE2
expressions and are only ever run through ``re2`` (linear time), never Python's ``re``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, Self

import attrs
import re2

from ciliumpy.exceptions import PolicyError

__all__ = [
    "ALLOWED_DNS_CHARS",
    "MATCH_ALL_ANCHORED",
    "MAX_FQDN_LENGTH",
    "Clock",
    "FQDNCache",
    "FQDNCacheEntry",
    "FQDNSelector",
    "ManualClock",
    "SystemClock",
    "compile_re2",
    "dns_allow_regex",
    "dns_name_allowed",
    "go_quote",
    "is_dns_wildcard",
    "match_pattern_to_regex",
    "match_pattern_to_unanchored_regex",
    "normalize_name",
    "validate_match_name",
    "validate_match_pattern",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Characters a wildcard may stand for: one DNS label's worth, never a dot.
ALLOWED_DNS_CHARS = "[-a-zA-Z0-9_]"
#: Regex the DNS proxy uses for "allow every name" (it short-circuits the match).
MATCH_ALL_ANCHORED = "(?:)"
#: Longest matchName/matchPattern the agent and the CRD accept.
MAX_FQDN_LENGTH = 255

# A leading "**." stands for one or more whole labels (1.19).
_SUBDOMAIN_WILDCARD = f"({ALLOWED_DNS_CHARS}+([.]{ALLOWED_DNS_CHARS}+){{0,}})[.]"
# What a bare "*" (or "**", "*.", ...) becomes in a toFQDNs selector: any well-formed FQDN or
# the root. The DNS proxy instead treats it as "allow everything" (MATCH_ALL_ANCHORED).
_MATCH_ALL_NAMES = f"(^({ALLOWED_DNS_CHARS}+[.])+$)|(^[.]$)"
_MATCH_ALL_UNANCHORED = ".*"

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_PATTERN_CHARS = _NAME_CHARS | {"*"}

_RE2_OPTIONS = re2.Options()
# The C++ library would otherwise print every parse error to stderr.
_RE2_OPTIONS.log_errors = False

# RE2 (C++) error texts mapped to the wording of Go's regexp/syntax, which is what the agent
# reports when it validates HTTP regexes; the argument after the colon is RE2's.
_GO_ERROR_CODES = {
    "missing )": "missing closing )",
    "missing ]": "missing closing ]",
    "unexpected )": "unexpected )",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid repetition size": "invalid repeat count",
    "no argument for repetition operator": "missing argument to repetition operator",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid escape sequence": "invalid escape sequence",
    "invalid character class range": "invalid character class range",
    "invalid character class": "invalid character class",
    "trailing \\": "trailing backslash at end of expression",
    "invalid named capture group": "invalid named capture",
    "invalid UTF-8": "invalid UTF-8",
}


@functools.lru_cache(maxsize=4096)
def compile_re2(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 once and cache it (the same regexes are matched repeatedly).

    Raises :class:`PolicyError` with a Go-style message (``error parsing regexp: missing
    closing ): `(```) when RE2 rejects the pattern.
    """
    bad = _go_only_rejects(pattern)
    if bad is not None:
        raise PolicyError(f"error parsing regexp: invalid escape sequence: `{bad}`", value=pattern)
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        raise PolicyError(_go_regex_error(exc, pattern), value=pattern) from exc
    except UnicodeError:
        raise PolicyError("error parsing regexp: invalid UTF-8", value=pattern) from None


def _go_only_rejects(pattern: str) -> str | None:
    r"""The first escape that C++ RE2 takes but Go's ``regexp/syntax`` refuses: ``\C`` (any
    byte), which Go never supported."""
    i = 0
    while i < len(pattern) - 1:
        if pattern[i] == "\\":
            if pattern[i + 1] == "C":
                return "\\C"
            i += 2
        else:
            i += 1
    return None


def _go_regex_error(exc: BaseException, pattern: str) -> str:
    raw = exc.args[0] if exc.args else str(exc)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    code, _, arg = text.partition(": ")
    go_code = _GO_ERROR_CODES.get(code, code)
    return f"error parsing regexp: {go_code}: `{arg or pattern}`"


def go_quote(value: str) -> str:
    """Quote like Go's ``%q``: double quotes, backslash escapes for quotes and controls."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def normalize_name(name: str) -> str:
    """Lower-case ``name`` and make it fully qualified, as the DNS proxy does before matching.

    >>> normalize_name("WWW.Cilium.IO")
    'www.cilium.io.'
    """
    name = name.lower()
    return name if name.endswith(".") else name + "."


def is_dns_wildcard(pattern: str) -> bool:
    """True for patterns made only of ``*`` with at most one trailing dot (``*``, ``**``, ``*.``).

    Cilium 1.19 treats all of them as "every name".
    """
    if pattern.endswith("."):
        pattern = pattern[:-1]
    return bool(pattern) and set(pattern) == {"*"}


def _sanitize_pattern(pattern: str) -> str:
    # Wildcards stay as written; everything else gains the trailing dot of an FQDN.
    return pattern if is_dns_wildcard(pattern) else (pattern if pattern.endswith(".") else pattern + ".")


def _escape_pattern(pattern: str) -> str:
    out: list[str] = []
    start = 0
    lead = len(pattern) - len(pattern.lstrip("*"))
    if lead >= 2 and lead < len(pattern) and pattern[lead] == ".":
        out.append(_SUBDOMAIN_WILDCARD)
        start = lead + 1
    i = start
    while i < len(pattern):
        ch = pattern[i]
        if ch == ".":
            out.append("[.]")
        elif ch == "*":
            # A run of stars anywhere but the leading "**." is one in-label wildcard.
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            out.append(ALLOWED_DNS_CHARS + "*")
        else:
            out.append(re2.escape(ch) if not ch.isalnum() and ch not in "-_" else ch)
        i += 1
    return "".join(out)


def match_pattern_to_regex(pattern: str) -> str:
    """The anchored regex a ``toFQDNs`` ``matchPattern`` selects names with (1.19 semantics).

    The pattern is lower-cased and made fully qualified first. ``.`` is literal; ``*`` is
    ``[-a-zA-Z0-9_]*`` and never crosses a dot; a leading ``**.`` is one or more whole labels;
    a pattern of only stars matches every well-formed name.

    >>> match_pattern_to_regex("*.cilium.io")
    '^[-a-zA-Z0-9_]*[.]cilium[.]io[.]$'
    """
    sanitized = _sanitize_pattern(pattern).strip().lower()
    if is_dns_wildcard(sanitized):
        return _MATCH_ALL_NAMES
    return "^" + _escape_pattern(sanitized) + "$"


def match_pattern_to_unanchored_regex(pattern: str) -> str:
    """The un-anchored form the DNS proxy joins into its allow-regex (``.*`` for wildcards)."""
    sanitized = _sanitize_pattern(pattern).strip().lower()
    if is_dns_wildcard(sanitized):
        return _MATCH_ALL_UNANCHORED
    return _escape_pattern(sanitized)


class _DNSRuleLike(Protocol):
    @property
    def match_name(self) -> str | None: ...

    @property
    def match_pattern(self) -> str | None: ...


def dns_allow_regex(rules: Sequence[_DNSRuleLike] | None) -> str:
    """The DNS proxy's allow-regex for one selector's L7 DNS rules (``GeneratePattern``).

    No rules (``None`` or empty) and any wildcard ``matchPattern`` give
    :data:`MATCH_ALL_ANCHORED`, which allows every name. Otherwise each ``matchName`` (exact)
    and ``matchPattern`` becomes one alternative of ``^(?:alt1|alt2|…)$``. A rule with neither
    field contributes nothing, so a list of only empty rules allows no name at all.

    >>> class R:
    ...     match_name, match_pattern = "api.stripe.com", None
    >>> dns_allow_regex([R()])
    '^(?:api[.]stripe[.]com[.])$'
    """
    if not rules:
        return MATCH_ALL_ANCHORED
    alternatives: list[str] = []
    for rule in rules:
        if rule.match_name:
            alternatives.append(match_pattern_to_unanchored_regex(normalize_name(rule.match_name)))
        if rule.match_pattern:
            alt = match_pattern_to_unanchored_regex(rule.match_pattern)
            if alt == _MATCH_ALL_UNANCHORED:
                return MATCH_ALL_ANCHORED
            alternatives.append(alt)
    return "^(?:" + "|".join(alternatives) + ")$"


def dns_name_allowed(allow_regex: str, name: str) -> bool:
    """Whether the proxy lets ``name`` be queried under an allow-regex from dns_allow_regex."""
    if allow_regex == MATCH_ALL_ANCHORED:
        return True
    return compile_re2(allow_regex).search(normalize_name(name)) is not None


def validate_match_name(value: object, field: str) -> str:
    """Check a ``matchName`` as the 1.19 agent and CRD do; return it unchanged."""
    if not isinstance(value, str):
        raise PolicyError("matchName must be a string", field=field, value=value)
    if len(value.strip()) > MAX_FQDN_LENGTH:
        raise PolicyError(
            f"Invalid MatchName: {go_quote(value)}. Must be <= {MAX_FQDN_LENGTH} characters long.",
            field=field,
        )
    if value and not set(value) <= _NAME_CHARS:
        raise PolicyError(
            f'Invalid characters in MatchName: "{value}". Only 0-9, a-z, A-Z and ., -, _ characters are allowed',
            field=field,
        )
    return value


def validate_match_pattern(value: object, field: str) -> str:
    """Check a ``matchPattern`` as the 1.19 agent and CRD do; return it unchanged."""
    if not isinstance(value, str):
        raise PolicyError("matchPattern must be a string", field=field, value=value)
    if len(value.strip()) > MAX_FQDN_LENGTH:
        raise PolicyError(
            f"Invalid MatchPattern: {go_quote(value)}. Must be <= {MAX_FQDN_LENGTH} characters long.",
            field=field,
        )
    if value and not set(value) <= _PATTERN_CHARS:
        raise PolicyError(
            f'Invalid characters in MatchPattern: "{value}". '
            "Only 0-9, a-z, A-Z and ., -, _ and * characters are allowed",
            field=field,
        )
    return value


# The CRD's patterns (kubebuilder markers on api.FQDNSelector): at least one character.
_CRD_NAME = re.compile(r"^([-a-zA-Z0-9_]+[.]?)+$")
_CRD_PATTERN = re.compile(r"^([-a-zA-Z0-9_*]+[.]?)+$")


def check_one_name_field(data: Mapping[str, object], path: str) -> tuple[str | None, str | None]:
    """``(matchName, matchPattern)`` of a ``toFQDNs`` entry or DNS rule, exactly one set.

    The CRD makes the two fields ``oneOf`` on ``FQDNSelector`` (which ``PortRuleDNS`` is), so
    ``{}`` and both together are rejected by the API server, and each must match its
    pattern, which an empty string does not.
    """
    name = data.get("matchName")
    pattern = data.get("matchPattern")
    if name is not None and pattern is not None:
        raise PolicyError("only one of MatchName or MatchPattern is allowed in an FQDNSelector", field=path)
    if name is None and pattern is None:
        raise PolicyError("one of matchName or matchPattern is required", field=path, value=dict(data))
    if name is not None:
        validate_match_name(name, f"{path}.matchName")
        if not _CRD_NAME.match(str(name)):
            raise PolicyError("matchName must match ^([-a-zA-Z0-9_]+[.]?)+$", field=f"{path}.matchName", value=name)
        return str(name), None
    validate_match_pattern(pattern, f"{path}.matchPattern")
    if not _CRD_PATTERN.match(str(pattern)):
        raise PolicyError(
            "matchPattern must match ^([-a-zA-Z0-9_*]+[.]?)+$", field=f"{path}.matchPattern", value=pattern
        )
    return None, str(pattern)


def _check_keys(data: Mapping[str, object], allowed: Iterable[str], path: str) -> None:
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            raise PolicyError(
                f"unknown field {key!r} (expected one of: {', '.join(allowed)})",
                field=f"{path}.{key}",
            )


@attrs.frozen
class FQDNSelector:
    """One ``toFQDNs`` entry: exactly one of ``matchName`` or ``matchPattern``.

    ``label`` is the ``fqdn:`` label Cilium puts on the IPs it learns for matching names; it
    keeps the string exactly as written (not lower-cased or qualified).

    >>> FQDNSelector(match_pattern="*.cilium.io").matches("WWW.cilium.io")
    True
    """

    match_name: str | None = None
    match_pattern: str | None = None

    @classmethod
    def from_manifest(cls, data: object, path: str) -> Self:
        """Parse a ``toFQDNs`` element; ``path`` is its dotted location for errors."""
        if not isinstance(data, Mapping):
            raise PolicyError("toFQDNs entry must be a mapping", field=path, value=data)
        _check_keys(data, ("matchName", "matchPattern"), path)
        name, pattern = check_one_name_field(data, path)
        return cls(match_name=name, match_pattern=pattern)

    def to_manifest(self) -> dict[str, str]:
        """The CRD form (``{"matchName": …}`` or ``{"matchPattern": …}``)."""
        out: dict[str, str] = {}
        if self.match_name:
            out["matchName"] = self.match_name
        if self.match_pattern:
            out["matchPattern"] = self.match_pattern
        return out

    @property
    def label(self) -> str:
        """``fqdn:<matchName or matchPattern as written>``."""
        return "fqdn:" + (self.match_name or self.match_pattern or "")

    @property
    def regex(self) -> str:
        """The anchored RE2 expression names are matched with."""
        if self.match_name:
            return match_pattern_to_regex(normalize_name(self.match_name))
        return match_pattern_to_regex(self.match_pattern or "")

    def matches(self, name: str) -> bool:
        """Whether a (queried) DNS name is selected; case-insensitive, trailing dot optional."""
        return compile_re2(self.regex).search(normalize_name(name)) is not None

    def __str__(self) -> str:
        if self.match_name:
            return f"matchName: {self.match_name}"
        return f"matchPattern: {self.match_pattern or ''}"


class Clock(Protocol):
    """Source of the current time in seconds; the DNS cache asks it for "now"."""

    def now(self) -> float: ...


@attrs.define
class ManualClock:
    """A clock that only moves when told to, for tests and simulations.

    >>> clock = ManualClock(100.0)
    >>> clock.advance(30)
    130.0
    """

    time: float = 0.0

    def now(self) -> float:
        """The current (manually set) time."""
        return self.time

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self.time += seconds
        return self.time

    def set(self, when: float) -> None:
        """Jump to ``when`` (not earlier than now)."""
        if when < self.time:
            raise ValueError("a clock cannot go backwards")
        self.time = when


@attrs.frozen
class SystemClock:
    """Wall-clock time (``time.time()``), so expiries line up with flow timestamps."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()


def _to_ip(value: str | IPAddress) -> IPAddress:
    return value if not isinstance(value, str) else ipaddress.ip_address(value)


@attrs.frozen
class FQDNCacheEntry:
    """One learned (endpoint, name, IP) with its lookup time, TTL and expiry.

    ``ttl`` is the TTL from the DNS answer; ``expires`` is ``lookup_time + max(ttl, min_ttl)``.
    ``endpoint`` is the key of the endpoint that resolved the name ("" if not tracked).
    """

    name: str
    ip: IPAddress
    lookup_time: float
    ttl: int
    expires: float
    endpoint: str = ""
    cnames: tuple[str, ...] = ()


@attrs.define
class FQDNCache:
    """Names learned through the DNS proxy: name → IPs, each with its own expiry.

    Mirrors the agent's per-endpoint DNS history: every answer's IPs are attributed to the
    question name (CNAME targets are recorded, not given IPs), a newer lookup extends an IP's
    expiry but never shortens it, and IPs missing from a newer answer linger until they
    expire. ``expire`` removes expired entries unless their IP is still in use, in which case
    they become "zombies" that keep the IP allowed until a later ``expire`` finds it unused
    (Cilium keeps such IPs while connections are alive).

    >>> cache = FQDNCache(ManualClock(0), min_ttl=0)
    >>> _ = cache.add("api.github.com", ["203.0.113.20"], ttl=30)
    >>> sorted(str(ip) for ip in cache.lookup("API.github.com"))
    ['203.0.113.20']
    """

    clock: Clock = attrs.field(factory=SystemClock)
    min_ttl: int = 0
    max_ips_per_hostname: int = 1000
    _entries: dict[tuple[str, str, IPAddress], FQDNCacheEntry] = attrs.field(factory=dict, init=False)
    _zombies: dict[tuple[str, str, IPAddress], FQDNCacheEntry] = attrs.field(factory=dict, init=False)

    def add(
        self,
        name: str,
        ips: Iterable[str | IPAddress],
        ttl: int,
        *,
        endpoint: str = "",
        cnames: Sequence[str] = (),
        now: float | None = None,
    ) -> tuple[FQDNCacheEntry, ...]:
        """Record a DNS answer for ``name``; return the entries now held for it."""
        if ttl < 0:
            raise ValueError(f"TTL must not be negative, got {ttl}")
        when = self.clock.now() if now is None else now
        qname = normalize_name(name)
        expires = when + max(ttl, self.min_ttl)
        cname_tuple = tuple(normalize_name(c) for c in cnames)
        for raw in ips:
            ip = _to_ip(raw)
            key = (endpoint, qname, ip)
            self._zombies.pop(key, None)
            old = self._entries.get(key)
            if old is not None and old.expires > expires:
                continue
            self._entries[key] = FQDNCacheEntry(
                name=qname,
                ip=ip,
                lookup_time=when,
                ttl=ttl,
                expires=expires,
                endpoint=endpoint,
                cnames=cname_tuple,
            )
        self._enforce_limit(endpoint, qname)
        return tuple(e for k, e in self._entries.items() if k[0] == endpoint and k[1] == qname)

    def _enforce_limit(self, endpoint: str, qname: str) -> None:
        # Per endpoint and name only the newest max_ips_per_hostname IPs are kept
        # (tofqdns-endpoint-max-ip-per-hostname); the ones expiring first go.
        keys = [k for k in self._entries if k[0] == endpoint and k[1] == qname]
        if len(keys) <= self.max_ips_per_hostname:
            return
        keys.sort(key=lambda k: self._entries[k].expires)
        for key in keys[: len(keys) - self.max_ips_per_hostname]:
            del self._entries[key]

    def lookup(self, name: str, *, endpoint: str | None = None, now: float | None = None) -> frozenset[IPAddress]:
        """IPs currently valid for ``name`` (all endpoints unless ``endpoint`` is given).

        Zombies count: their IPs are still allowed.
        """
        when = self.clock.now() if now is None else now
        qname = normalize_name(name)
        found = {
            e.ip
            for (ep, n, _ip), e in self._entries.items()
            if n == qname and (endpoint is None or ep == endpoint) and e.expires > when
        }
        found.update(
            e.ip for (ep, n, _ip), e in self._zombies.items() if n == qname and (endpoint is None or ep == endpoint)
        )
        return frozenset(found)

    def names_for_ip(
        self, ip: str | IPAddress, *, endpoint: str | None = None, now: float | None = None
    ) -> frozenset[str]:
        """Names (fully qualified, lower case) that currently resolve to ``ip``."""
        when = self.clock.now() if now is None else now
        addr = _to_ip(ip)
        names = {
            e.name
            for (ep, _n, eip), e in self._entries.items()
            if eip == addr and (endpoint is None or ep == endpoint) and e.expires > when
        }
        names.update(
            e.name for (ep, _n, eip), e in self._zombies.items() if eip == addr and (endpoint is None or ep == endpoint)
        )
        return frozenset(names)

    def cnames_for(self, name: str, *, endpoint: str | None = None) -> tuple[str, ...]:
        """The CNAME chain recorded with the most recent answer for ``name``."""
        qname = normalize_name(name)
        best: FQDNCacheEntry | None = None
        for (ep, n, _ip), e in self._entries.items():
            if (
                n == qname
                and (endpoint is None or ep == endpoint)
                and (best is None or e.lookup_time >= best.lookup_time)
            ):
                best = e
        return best.cnames if best is not None else ()

    def entries(self) -> tuple[FQDNCacheEntry, ...]:
        """Every live (not yet expired or collected) entry."""
        return tuple(self._entries.values())

    def zombies(self) -> tuple[FQDNCacheEntry, ...]:
        """Expired entries kept because their IP was in use at the last :meth:`expire`."""
        return tuple(self._zombies.values())

    def expire(self, now: float | None = None, *, in_use: Iterable[str | IPAddress] = ()) -> tuple[FQDNCacheEntry, ...]:
        """Garbage-collect: drop entries whose expiry has passed and return them.

        Entries whose IP is in ``in_use`` (e.g. has live connections) are not returned but
        kept as zombies; zombies whose IP is no longer in use are removed and returned.
        """
        when = self.clock.now() if now is None else now
        busy = {_to_ip(ip) for ip in in_use}
        removed: list[FQDNCacheEntry] = []
        for key, entry in list(self._entries.items()):
            if entry.expires <= when:
                del self._entries[key]
                if entry.ip in busy:
                    self._zombies[key] = entry
                else:
                    removed.append(entry)
        for key, entry in list(self._zombies.items()):
            if entry.ip not in busy:
                del self._zombies[key]
                removed.append(entry)
        return tuple(removed)

    def checkpoint(self) -> tuple[dict[Any, FQDNCacheEntry], dict[Any, FQDNCacheEntry]]:
        """The learned entries and zombies, for :meth:`rollback` (a failed change learns nothing)."""
        return dict(self._entries), dict(self._zombies)

    def rollback(self, state: tuple[dict[Any, FQDNCacheEntry], dict[Any, FQDNCacheEntry]]) -> None:
        """Return to a :meth:`checkpoint`."""
        self._entries, self._zombies = dict(state[0]), dict(state[1])

    def __len__(self) -> int:
        return len(self._entries)
