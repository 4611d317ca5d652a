"""``ciliumpy validate FILES...``: the preflight check (``cilium-dbg preflight validate-cnp``).

Every policy is validated the way the agent takes it (schema, sanitizing, selectors, L7
parsers, against the objects beside it); every problem is printed at once with file:line.
Exit status 1 when any policy (or other object) is invalid.
"""

from __future__ import annotations

import sys

import click

from ._inputs import Inputs, input_options, pass_inputs
from ._root import ExitCode

__all__ = ["validate"]


@click.command()
@click.argument("files", nargs=-1, type=click.Path())
@input_options
@pass_inputs
def validate(inputs: Inputs, files: tuple[str, ...]) -> int:
    """Validate the policies of FILES (and -f PATH); every error at once with file:line."""
    from ._policies import load_checked

    cluster, states, errors = load_checked(inputs, files)
    cluster.close()
    for state in states:
        where = f"{state.kind} {state.namespace + '/' if state.namespace else ''}{state.name}"
        if state.valid:
            sys.stdout.write(f"ok       {where} ({state.source})\n")
        else:
            sys.stdout.write(f"invalid  {where} ({state.source})\n")
    for err in errors:
        sys.stderr.write(f"ciliumpy: error: {err}\n")
    bad = sum(1 for s in states if not s.valid)
    other = len(errors) - sum(len(s.errors) for s in states)
    summary = f"{len(states)} policies: {len(states) - bad} valid, {bad} invalid"
    if other:
        summary += f"; {other} problems in other objects"
    sys.stdout.write(summary + "\n")
    return int(ExitCode.NO if errors else ExitCode.OK)
