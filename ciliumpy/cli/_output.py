"""Listings as tables (in cilium-dbg's column layout), JSON or YAML: ``-o table|json|yaml``.

A listing command builds plain records (dicts of JSON-able values) and the columns a table
shows; :func:`emit` prints them in the format the user chose. Table cells holding a list
(labels, say) print one item per line, as cilium-dbg does.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO, TypeVar

import attrs
import click

__all__ = ["FORMATS", "Column", "emit", "output_option", "render_table"]

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "json", "yaml")


@attrs.frozen
class Column:
    """One table column: its header, the record key it shows, and whether only ``-o wide`` shows it."""

    header: str
    key: str
    wide: bool = False


def output_option(*, wide: bool = False) -> Callable[[F], F]:
    """Give a listing command ``-o/--output table|json|yaml`` (and ``wide`` when it has wide columns)."""
    choices = [*FORMATS, "wide"] if wide else list(FORMATS)
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Choice(choices),
        default="table",
        show_default=True,
        help="Output format.",
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns, no borders or colour; multi-line cells stack their lines."""
    from rich.console import Console
    from rich.table import Table

    # cilium-dbg prints Go tabwriter tables with three spaces between columns.
    table = Table(box=None, padding=(0, 3, 0, 0), pad_edge=False, show_header=True, header_style=None, show_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ignore", vertical="top")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    buf = io.StringIO()
    # A wide virtual console: lines are never wrapped, so output stays greppable in pipes.
    console = Console(
        file=buf, width=100_000, color_system=None, highlight=False, markup=False, emoji=False, soft_wrap=True
    )
    console.print(table)
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


def emit(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    output: str,
    *,
    file: TextIO | None = None,
) -> None:
    """Print ``records`` as ``output`` (``table``, ``wide``, ``json`` or ``yaml``) on ``file`` (stdout)."""
    out = file if file is not None else sys.stdout
    if output == "json":
        out.write(json.dumps(list(records), indent=2, default=str) + "\n")
    elif output == "yaml":
        import yaml

        out.write(yaml.safe_dump(json.loads(json.dumps(list(records), default=str)), sort_keys=False))
    else:
        shown = [c for c in columns if output == "wide" or not c.wide]
        out.write(render_table([c.header for c in shown], [[r.get(c.key) for c in shown] for r in records]))
