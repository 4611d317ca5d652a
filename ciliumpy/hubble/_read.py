"""Reading flows recorded with ``hubble observe -o json`` / ``-o jsonpb``."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from ..exceptions import FlowFormatError
from ._flow import Flow

__all__ = ["FlowList", "read_flows"]


class FlowList(list[Flow]):
    """The flows read from a source; ``skipped`` counts malformed lines left out
    (``errors="skip"``) and ``problems`` keeps the first few errors."""

    skipped: int = 0
    problems: list[FlowFormatError]

    def __init__(self, flows: Iterable[Flow] = ()) -> None:
        super().__init__(flows)
        self.skipped = 0
        self.problems = []


def _lines(source: Any) -> tuple[Iterable[str | bytes], str | None, IO[Any] | None]:
    if isinstance(source, str | Path):
        path = Path(source)
        with path.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        opened = cast(IO[Any], gzip.open(path, "rb") if gz else path.open("rb"))  # noqa: SIM115 - read_flows closes it
        return opened, str(path), opened
    if isinstance(source, io.IOBase) or hasattr(source, "read"):
        return source, getattr(source, "name", None), None
    return source, None, None


def read_flows(source: Any, *, errors: str = "raise") -> FlowList:
    """Flows from a path (plain or ``.gz``), a file object or an iterable of lines in
    ``hubble observe -o json``/``-o jsonpb`` form (``GetFlowsResponse`` lines or bare
    legacy flows; blank lines are ignored).

    A malformed line raises :class:`~ciliumpy.exceptions.FlowFormatError` naming the file
    and line number; with ``errors="skip"`` it is left out and counted in ``skipped``.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    lines, document, opened = _lines(source)
    out = FlowList()
    try:
        for num, line in _numbered(lines):
            try:
                out.append(Flow.from_json(line))
            except FlowFormatError as exc:
                located = exc.located(document=document, line=num)
                assert isinstance(located, FlowFormatError)
                if errors == "raise":
                    raise located from None
                out.skipped += 1
                if len(out.problems) < 20:
                    out.problems.append(located)
    finally:
        if opened is not None:
            opened.close()
    return out


def _numbered(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | bytes]]:
    for num, line in enumerate(lines, 1):
        if line.strip():
            yield num, line
