"""Every error ciliumpy raises.

One root, :class:`CiliumpyError`; each subclass also inherits the builtin it refines, so
callers may catch ``ValueError`` or ``OSError`` without knowing about ciliumpy.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BPFError",
    "BackendUnavailableError",
    "CiliumpyError",
    "FlowFormatError",
    "LabError",
    "MapFullError",
    "PolicyError",
    "UnknownEndpointError",
]

_MISSING: Any = object()


class CiliumpyError(Exception):
    """Root of every ciliumpy error."""


class PolicyError(CiliumpyError, ValueError):
    """Invalid manifest, policy or model input.

    Carries where the problem is (``document``, ``line``, ``kind``, ``namespace``, ``name``,
    ``field`` as a dotted path such as ``spec.ingress[0].toPorts[0].ports[0].port``) and the
    offending ``value``; ``reason`` is the bare message without location.
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
        super().__init__(self._render())

    def _render(self) -> str:
        parts: list[str] = []
        # Location fields come from user documents and may hold any YAML scalar.
        if self.document is not None:
            parts.append(f"{self.document}:{self.line}" if self.line is not None else str(self.document))
        if self.kind is not None or self.name is not None:
            obj = str(self.kind or "object")
            if self.name is not None:
                obj += " " + (f"{self.namespace}/{self.name}" if self.namespace else str(self.name))
            parts.append(obj)
        if self.field:
            parts.append(str(self.field))
        msg = str(self.reason)
        if self.has_value:
            msg += f" (got {self.value!r})"
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


class UnknownEndpointError(CiliumpyError, LookupError):
    """A ``namespace/name`` or address that the cluster does not know."""


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
    """A BPF map has no room for the entries being written; nothing was applied."""


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
