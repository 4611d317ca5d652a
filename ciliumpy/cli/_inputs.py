"""What every command reads: manifests (``-f``, ``-R``), Helm values and the backend.

The options may be given before the command (``ciliumpy -f DIR get pods``) or after it
(``ciliumpy get pods -f DIR``); both land in the one :class:`Inputs` of the invocation, and
``-f`` accumulates across both places.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import click

if TYPE_CHECKING:
    from .._cluster import Cluster

__all__ = ["BACKENDS", "Inputs", "input_options", "pass_inputs"]

F = TypeVar("F", bound=Callable[..., Any])

BACKENDS = ("simulator", "ebpf")


@attrs.define
class Inputs:
    """The manifests, Helm values and backend one invocation works on."""

    paths: list[str] = attrs.Factory(list)
    recursive: bool = False
    strict: bool = False
    values: str | None = None
    backend: str | None = None

    def cluster(self) -> Cluster:
        """Build the cluster the command looks at; ``-f`` is required.

        Raises :class:`click.UsageError` when no manifests were given.
        """
        from .._cluster import Cluster

        if not self.paths:
            raise click.UsageError("no manifests given: name files or directories with -f PATH")
        kwargs: dict[str, Any] = {}
        if self.recursive:
            kwargs["recursive"] = True
        if self.strict:
            kwargs["strict"] = True
        if self.values is not None:
            kwargs["values"] = self.values
        return Cluster.from_manifests(*self.paths, backend=self.backend, **kwargs)


def _inputs(ctx: click.Context) -> Inputs:
    return ctx.ensure_object(Inputs)


def _add_paths(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    _inputs(ctx).paths.extend(value)


def _set_recursive(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _inputs(ctx).recursive = True


def _set_strict(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _inputs(ctx).strict = True


def _set_values(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _inputs(ctx).values = value


def _set_backend(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _inputs(ctx).backend = value


def input_options(func: F) -> F:
    """Give a command (or group) ``-f PATH`` (repeatable), ``-R``, ``--strict``, ``--values FILE``, ``--backend``.

    The command reads them with :func:`pass_inputs`; ``Inputs.cluster()`` builds the cluster.
    """
    options = [
        click.option(
            "-f",
            "--filename",
            "paths",
            multiple=True,
            expose_value=False,
            callback=_add_paths,
            metavar="PATH",
            help="Manifest file or directory (repeatable), read like kubectl apply -f.",
        ),
        click.option(
            "-R",
            "--recursive",
            is_flag=True,
            default=False,
            expose_value=False,
            callback=_set_recursive,
            help="Read directories given with -f recursively.",
        ),
        click.option(
            "--strict",
            is_flag=True,
            default=False,
            expose_value=False,
            callback=_set_strict,
            help="Reject kinds that do not bear on network policy instead of skipping them.",
        ),
        click.option(
            "--values",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_set_values,
            metavar="FILE",
            help="Cilium Helm values file.",
        ),
        click.option(
            "--backend",
            type=click.Choice(BACKENDS),
            default=None,
            expose_value=False,
            callback=_set_backend,
            help="Datapath backend (default: $CILIUMPY_BACKEND or simulator).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


#: Decorator passing the invocation's :class:`Inputs` as the first argument.
pass_inputs = click.make_pass_decorator(Inputs, ensure=True)
