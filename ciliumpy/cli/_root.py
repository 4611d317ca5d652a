"""The root ``ciliumpy`` group: lazy command loading, error reporting and exit codes."""

from __future__ import annotations

import enum
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import click

from ._inputs import input_options

__all__ = ["ExitCode", "main", "root"]


class ExitCode(enum.IntEnum):
    """What ``ciliumpy``'s exit status means (documented in ``docs/cli.md``)."""

    OK = 0
    #: The answer is no: a denied ``check``, an invalid policy, a failed connectivity test.
    NO = 1
    #: Bad invocation or input: unknown flag, unreadable or invalid manifests, unknown pod.
    USAGE = 2
    #: The environment cannot run it: backend unavailable, the kernel refused.
    ENVIRONMENT = 3
    #: A bug in ciliumpy.
    INTERNAL = 4
    INTERRUPTED = 130
    #: Standard output was closed before everything was written (``| head``), as SIGPIPE would.
    CLOSED_PIPE = 141


def _load(target: str) -> click.Command:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    command = getattr(module, attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"COMMANDS entry {target!r} is not a click command")
    return command


def _subcommands(prefix: tuple[str, ...]) -> dict[str, str]:
    """The registry's entries one word below ``prefix``: name -> ``module:attribute``."""
    from . import COMMANDS

    out: dict[str, str] = {}
    for words, target in COMMANDS.items():
        path = tuple(words.split())
        if len(path) == len(prefix) + 1 and path[: len(prefix)] == prefix:
            out[path[-1]] = target
    return out


def _attach(group: click.Command, path: tuple[str, ...]) -> click.Command:
    """Add the registry's subcommands of ``path`` (from any module) to a loaded group."""
    if isinstance(group, click.Group):
        for name, target in _subcommands(path).items():
            if name not in group.commands:
                group.add_command(_attach(_load(target), (*path, name)), name)
    return group


class _ClosedPipe(Exception):
    """Standard output was closed by its reader; raised past click, which would exit 1 itself."""


class RegistryGroup(click.Group):
    """The root group: commands come from :data:`ciliumpy.cli.COMMANDS`, imported on first use."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _ClosedPipe from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_subcommands(()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _subcommands(()).get(cmd_name)
        if target is None:
            return None
        return _attach(_load(target), (cmd_name,))


def _version() -> str:
    from .. import __version__

    return __version__


@click.group(
    cls=RegistryGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(version=_version(), prog_name="ciliumpy", message="%(prog)s %(version)s")
@input_options
def root() -> None:
    """Cilium network policy, offline: the operator's commands on clusters read from manifests.

    Every command reads the cluster from manifests given with -f (before or after the command
    name) and runs it on the simulator or, with --backend ebpf, on real eBPF programs.
    """


def _fail(message: str, code: ExitCode) -> int:
    for line in message.strip().splitlines() or [""]:
        sys.stderr.write(f"ciliumpy: error: {line}\n")
    return int(code)


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _usage_message(exc: click.UsageError) -> str:
    where = exc.ctx.command_path if exc.ctx is not None else "ciliumpy"
    return f"{where}: {exc.format_message()} (see '{where} --help')"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ciliumpy`` with ``argv`` (default ``sys.argv[1:]``) and return its exit status.

    Never lets an exception escape: errors become one line each on standard error
    (``ciliumpy: error: ...``) and an :class:`ExitCode`. ``CILIUMPY_DEBUG=1`` re-raises
    unexpected exceptions with their traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Warnings (skipped kinds, notes on the input) as one line each on stderr."""
    sys.stderr.write(f"ciliumpy: warning: {message}\n")


def _run(args: list[str]) -> int:
    from ..exceptions import BackendUnavailableError, BPFError, CiliumpyError, LabError

    try:
        try:
            result: Any = root.main(args=args, prog_name="ciliumpy", standalone_mode=False)
        finally:
            sys.stdout.flush()
    except (_ClosedPipe, BrokenPipeError):
        _silence_stdout()
        return int(ExitCode.CLOSED_PIPE)
    except OSError as exc:
        if isinstance(exc, BPFError | LabError):
            return _fail(str(exc), ExitCode.ENVIRONMENT)
        if isinstance(exc, CiliumpyError):
            return _fail(str(exc), ExitCode.USAGE)
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}", ExitCode.USAGE)
    except click.exceptions.NoArgsIsHelpError as exc:
        sys.stderr.write(exc.format_message() + "\n")
        return int(ExitCode.USAGE)
    except click.UsageError as exc:
        return _fail(_usage_message(exc), ExitCode.USAGE)
    except click.ClickException as exc:
        return _fail(exc.format_message(), ExitCode.USAGE)
    except (click.Abort, KeyboardInterrupt):
        sys.stderr.write("ciliumpy: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except BackendUnavailableError as exc:
        return _fail(str(exc), ExitCode.ENVIRONMENT)
    except CiliumpyError as exc:
        return _fail(str(exc), ExitCode.USAGE)
    except Exception as exc:
        if os.environ.get("CILIUMPY_DEBUG"):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return _fail(
            f"internal error: {type(exc).__name__}: {detail} (set CILIUMPY_DEBUG=1 for the traceback)",
            ExitCode.INTERNAL,
        )
    if isinstance(result, int):
        return result
    return int(ExitCode.OK)
