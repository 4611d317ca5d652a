"""Every error ciliumpy raises.

One root, :class:`CiliumpyError`; each subclass also inherits the builtin it refines, so
callers may catch ``ValueError`` or ``OSError`` without knowing about ciliumpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "BPFError",
    "BackendUnavailableError",
    "CiliumpyError",
    "FlowFormatError",
    "IgnoredKindsWarning",
    "LabError",
    "MapFullError",
    "NotFoundError",
    "PolicyError",
    "UnknownEndpointError",
]

_MISSING: Any = object()

#: At most this many characters of a value (or of a location field) appear in a message.
MAX_SHOWN = 200


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def bounded_repr(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to ``limit`` characters, without ever building the full text.

    Containers are walked only as far as the budget allows, so a YAML alias bomb (a list
    whose expansion has billions of items), a very deep or a self-referencing structure
    costs as little as a short string. Other objects fall back to their own ``repr``, cut.
    """
    parts: list[str] = []
    budget = [limit + 1]  # one over the limit tells us to add the ellipsis

    def put(text: str) -> bool:
        parts.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(obj: Any, depth: int) -> bool:
        if isinstance(obj, str | bytes | bool | int | float) or obj is None:
            if isinstance(obj, int) and not isinstance(obj, bool) and obj.bit_length() > 256:
                return put(f"<int of {obj.bit_length()} bits>")
            if isinstance(obj, str | bytes) and len(obj) > budget[0]:
                obj = obj[: budget[0]]
            return put(repr(obj))
        if depth > 8:
            return put("...")
        if isinstance(obj, Mapping):
            if not put("{"):
                return False
            for i, (k, v) in enumerate(obj.items()):
                if (i and not put(", ")) or not walk(k, depth + 1) or not put(": ") or not walk(v, depth + 1):
                    return False
            return put("}")
        if isinstance(obj, list | tuple | set | frozenset):
            opener, closer = ("[", "]") if isinstance(obj, list) else ("(", ")")
            if not put(opener):
                return False
            for i, item in enumerate(obj):
                if (i and not put(", ")) or not walk(item, depth + 1):
                    return False
            return put(closer)
        try:
            text = repr(obj)
        except Exception as exc:  # a value's own repr must not replace the real error
            text = f"<{type(obj).__name__}: repr failed: {type(exc).__name__}>"
        return put(text)

    if walk(value, 0):
        return "".join(parts)
    return _clip("".join(parts), limit)


class CiliumpyError(Exception):
    """Root of every ciliumpy error."""


class PolicyError(CiliumpyError, ValueError):
    """Invalid manifest, policy or model input.

    Carries where the problem is (``document``, ``line``, ``kind``, ``namespace``, ``name``,
    ``field`` as a dotted path such as ``spec.ingress[0].toPorts[0].ports[0].port``) and the
    offending ``value``; ``reason`` is the bare message without location.

    A load that finds several problems raises one error whose ``errors`` holds each of them
    (in input order) and whose message has one line per problem; the location fields are the
    first problem's. A single problem's ``errors`` is ``(itself,)``.
    """

    def __init__(
        self,
        reason: str,
        *,
        document: str | None = None,
        line: int | None = None,
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        field: str | None = None,
        value: Any = _MISSING,
    ) -> None:
        self.reason = reason
        self.document = document
        self.line = line
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.field = field
        self.value = None if value is _MISSING else value
        self.has_value = value is not _MISSING
        self.errors: tuple[PolicyError, ...] = (self,)
        super().__init__(self._render())

    @classmethod
    def combine(cls, errors: Sequence[PolicyError]) -> PolicyError:
        """One error for several problems: ``errors`` holds them, the message lists one per line."""
        if not errors:
            raise ValueError("combine() needs at least one error")
        if len(errors) == 1:
            return errors[0]
        combined = errors[0].located()
        combined.errors = tuple(e for err in errors for e in err.errors)
        combined.args = ("\n".join(str(e) for e in combined.errors),)
        return combined

    def _render(self) -> str:
        parts: list[str] = []
        # Location fields come from user documents and may hold any YAML scalar; every
        # piece is bounded so that no input can make a message larger than a few KB.
        if self.document is not None:
            doc = _shown(self.document)
            parts.append(f"{doc}:{self.line}" if self.line is not None else doc)
        if self.kind is not None or self.name is not None:
            obj = _shown(self.kind or "object")
            if self.name is not None:
                obj += " " + (f"{_shown(self.namespace)}/{_shown(self.name)}" if self.namespace else _shown(self.name))
            parts.append(obj)
        if self.field:
            parts.append(_shown(self.field, 2 * MAX_SHOWN))
        msg = _shown(self.reason, 4 * MAX_SHOWN)
        if self.has_value:
            msg += f" (got {bounded_repr(self.value)})"
        parts.append(msg)
        return ": ".join(parts)

    def located(self, **where: Any) -> PolicyError:
        """Return a copy with location fields filled in where they are still unknown."""
        fields: dict[str, Any] = {
            "document": self.document,
            "line": self.line,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "field": self.field,
        }
        for key, val in where.items():
            if fields.get(key) is None:
                fields[key] = val
        err = type(self)(self.reason, value=self.value if self.has_value else _MISSING, **fields)
        return err


def _shown(value: Any, limit: int = MAX_SHOWN) -> str:
    return _clip(value, limit) if isinstance(value, str) else bounded_repr(value, limit)


class UnknownEndpointError(CiliumpyError, LookupError):
    """A ``namespace/name`` or address that the cluster does not know."""


class NotFoundError(CiliumpyError, LookupError):
    """An object to delete (kind, namespace and name) that the cluster does not hold.

    ``kind``, ``namespace`` and ``name`` say which; the message reads like kubectl's
    ``Error from server (NotFound)``.
    """

    def __init__(self, kind: str, name: str, namespace: str | None = None) -> None:
        self.kind = kind
        self.name = name
        self.namespace = namespace
        where = f" in namespace {namespace!r}" if namespace else ""
        super().__init__(f"{kind} {name!r} not found{where}")


class IgnoredKindsWarning(UserWarning):
    """Objects the loader skipped because they do not bear on network policy (ConfigMap, Route, ...).

    Issued once per load, listing each kind and how many; ``strict=True`` makes them errors.
    """


class BackendUnavailableError(CiliumpyError, RuntimeError):
    """A backend cannot run on this machine; the message says what is missing and how to get it."""


class BPFError(CiliumpyError, OSError):
    """A libbpf or kernel call failed.

    ``errno`` is the kernel error number, ``function`` the libbpf function and
    ``verifier_log`` the verifier's output when a program failed to load.
    """

    def __init__(self, errno: int, message: str, *, function: str = "", verifier_log: str = "") -> None:
        super().__init__(errno, message)
        self.function = function
        self.verifier_log = verifier_log

    def __str__(self) -> str:
        head = f"{self.function}: " if self.function else ""
        text = f"{head}[Errno {self.errno}] {self.strerror}"
        if self.verifier_log:
            tail = "\n".join(self.verifier_log.strip().splitlines()[-20:])
            text += f"\nverifier log (tail):\n{tail}"
        return text


class MapFullError(BPFError):
    """A BPF map has no room for the entries being written; nothing was applied.

    ``map_name`` names the map that filled (``cil_ipcache``, ``cil_lxc``, ``cil_policy`` or
    an endpoint's policy map ``cil_policy_NNNNN``) when the backend knows it.
    """

    def __init__(self, errno: int, message: str, *, function: str = "", map_name: str = "") -> None:
        super().__init__(errno, message, function=function)
        self.map_name = map_name


class LabError(CiliumpyError, OSError):
    """Building or driving a live lab (network namespaces, veths, traffic) failed.

    ``command`` is the external command that failed (``ip ...``), when there was one; the
    message carries its error output.
    """

    def __init__(self, errno: int, message: str, *, command: list[str] | None = None) -> None:
        super().__init__(errno, message)
        self.command = list(command) if command else []

    def __str__(self) -> str:
        head = f"{' '.join(self.command)}: " if self.command else ""
        return f"{head}{self.strerror}"


class FlowFormatError(PolicyError):
    """A Hubble flow record (``hubble observe -o json``/``jsonpb`` line) that cannot be read.

    ``document`` is the file, ``line`` the 1-based line number and ``field`` the dotted path of
    the offending field inside the record (``flow.l4.TCP.source_port``).
    """
