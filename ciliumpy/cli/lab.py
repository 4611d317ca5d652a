"""``ciliumpy lab ...``: the cluster for real, in network namespaces behind the eBPF datapath.

``lab up -f DIR`` builds a serving :class:`~ciliumpy.lab.Lab` (servers in every pod, the L7
proxies, the cluster DNS), prints how to reach the pods and keeps running until it is told
to stop (``lab down``, SIGTERM or Ctrl-C), then removes everything it created.  While it
runs, a state file (``$CILIUMPY_LAB_STATE_DIR``, default ``/run/ciliumpy/lab``, one per
``--name``) says which namespace is which pod, so ``lab exec POD -- CMD`` runs a command
there (``ip netns exec``, with the pod's resolv.conf) from any shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from ._inputs import Inputs, input_options, pass_inputs

__all__ = ["lab"]

_DOWN_TIMEOUT_S = 30.0


def state_dir() -> Path:
    """Where running labs leave their state files."""
    return Path(os.environ.get("CILIUMPY_LAB_STATE_DIR", "/run/ciliumpy/lab"))


def _state_path(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise click.UsageError(f"invalid lab name {name!r}")
    return state_dir() / f"{name}.json"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _read_state(name: str) -> dict[str, Any]:
    path = _state_path(name)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise click.UsageError(f"no lab named {name!r} is running (start one with 'ciliumpy lab up -f DIR')") from None
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"cannot read lab state {path}: {exc}") from None
    return state


_NAME_OPTION = click.option("--name", default="default", show_default=True, help="Which lab (several may run).")


@click.group()
def lab() -> None:
    """Run the cluster for real: namespaces, the eBPF datapath, servers and L7 proxies."""


@lab.command("up")
@_NAME_OPTION
@click.option("--no-ipv6", is_flag=True, default=False, help="IPv4 only.")
@input_options
@pass_inputs
def lab_up(inputs: Inputs, name: str, no_ipv6: bool) -> None:
    """Start a lab from -f manifests and keep it running until 'lab down' (or Ctrl-C)."""
    from ..lab import Lab

    path = _state_path(name)
    if path.exists():
        old = _read_state(name)
        if _alive(int(old.get("pid", 0))):
            raise click.UsageError(f"lab {name!r} is running (pid {old['pid']}); stop it with 'ciliumpy lab down'")
        path.unlink(missing_ok=True)
    if inputs.backend not in (None, "ebpf"):
        raise click.UsageError("a lab runs on the eBPF backend; drop --backend or pass --backend ebpf")
    inputs.backend = "ebpf"
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with inputs.cluster() as cluster, Lab(cluster, serve=True, ipv6=not no_ipv6) as running:
            pods = {
                ref: {"netns": running.namespace(ref), "ips": [str(ip) for ip in running.addresses(ref)]}
                for ref in sorted(running.endpoints)
            }
            state = {"name": name, "pid": os.getpid(), "node": running.namespace("host"), "pods": pods}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            tmp.replace(path)
            width = max((len(ref) for ref in pods), default=3)
            click.echo(f"lab {name!r} is up: {len(pods)} pods behind the eBPF datapath, L7 proxies running")
            click.echo(f"{'POD':<{width}}  {'IP':<16}  NETNS")
            for ref, pod in pods.items():
                click.echo(f"{ref:<{width}}  {', '.join(pod['ips']):<16}  {pod['netns']}")
            dns = cluster.dns_server()
            click.echo(
                f"reach a pod:  ciliumpy lab exec{'' if name == 'default' else f' --name {name}'} POD -- CMD"
                + ("  (resolv.conf points at the cluster DNS)" if dns else "")
            )
            click.echo("stop:         ciliumpy lab down" + ("" if name == "default" else f" --name {name}"))
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"lab {name!r} is down")


@lab.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_NAME_OPTION
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_exec(name: str, pod: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside POD's network namespace (POD: namespace/pod, or 'host')."""
    state = _read_state(name)
    if not _alive(int(state.get("pid", 0))):
        raise click.UsageError(f"lab {name!r} is not running any more (its process exited); run 'ciliumpy lab down'")
    pods = state.get("pods", {})
    netns = state.get("node") if pod == "host" else pods.get(pod, {}).get("netns")
    if not netns:
        known = ", ".join(sorted(pods)[:10])
        raise click.UsageError(f"no pod {pod!r} in lab {name!r}; known: {known}")
    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        raise click.UsageError("no command given: ciliumpy lab exec POD -- CMD [ARGS...]")
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", str(netns), *argv])


@lab.command("down")
@_NAME_OPTION
def lab_down(name: str) -> None:
    """Stop a running lab and remove everything it created."""
    from ..lab import remove_stale

    state = _read_state(name)
    pid = int(state.get("pid", 0))
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _DOWN_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            raise click.ClickException(f"lab {name!r} (pid {pid}) did not stop within {_DOWN_TIMEOUT_S:.0f} s")
    # A lab whose process died without cleaning up: its namespaces are stale now.
    removed = remove_stale()
    _state_path(name).unlink(missing_ok=True)
    extra = f" (removed {len(removed)} leftover namespaces)" if removed else ""
    click.echo(f"lab {name!r} stopped{extra}")
