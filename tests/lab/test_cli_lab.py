"""``ciliumpy lab up / exec / down`` as a user runs them, in subprocesses."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import ciliumpy
from ciliumpy.lab._netns import list_namespaces

PACKAGE_ROOT = str(Path(ciliumpy.__file__).resolve().parent.parent)
SEED = str(Path(ciliumpy.__file__).resolve().parent.parent / "examples" / "seed")


def _env(state: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT
    env["CILIUMPY_LAB_STATE_DIR"] = str(state)
    env.pop("CILIUMPY_BACKEND", None)
    return env


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ciliumpy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(state),
        stdin=subprocess.DEVNULL,
    )


def test_lab_up_exec_down(ebpf_available: None, tmp_path: Path) -> None:
    name = f"t{secrets.token_hex(3)}"
    up = subprocess.Popen(
        [sys.executable, "-m", "ciliumpy", "lab", "up", "-f", SEED, "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        assert up.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("stop:"):
                break
        assert any("is up" in line for line in lines), "".join(lines) + up.stderr.read() if up.stderr else ""
        assert any(line.startswith("production/frontend") and "10.0.1.10" in line for line in lines)
        assert (tmp_path / f"{name}.json").exists()
        mine = [ns for ns in list_namespaces() if ns.startswith(f"ciliumpy-{up.pid}-")]
        assert mine

        denied = _cli(tmp_path, "lab", "exec", "--name", name, "production/frontend", "--", "curl", "-s", "-m", "3",
                      "http://10.0.1.40:8080/admin")  # fmt: skip
        assert (denied.returncode, denied.stdout) == (0, "Access denied\n")
        allowed = _cli(tmp_path, "lab", "exec", "--name", name, "production/frontend", "--", "curl", "-s", "-m", "3",
                       "-o", "/dev/null", "-w", "%{http_code}", "http://10.0.1.40:8080/api/products")  # fmt: skip
        assert allowed.stdout == "200"
        unknown = _cli(tmp_path, "lab", "exec", "--name", name, "production/nope", "--", "true")
        assert unknown.returncode == 2 and "no pod 'production/nope'" in unknown.stderr

        down = _cli(tmp_path, "lab", "down", "--name", name)
        assert down.returncode == 0, down.stderr
        assert up.wait(timeout=30) == 0
        assert up.stdout.read().strip().endswith("is down")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert not (tmp_path / f"{name}.json").exists()
    assert not [ns for ns in list_namespaces() if ns.startswith(f"ciliumpy-{up.pid}-")]
    assert not [p for p in Path("/etc/netns").glob(f"ciliumpy-{up.pid}-*")] if Path("/etc/netns").exists() else True
    again = _cli(tmp_path, "lab", "down", "--name", name)
    assert again.returncode == 2 and "no lab named" in again.stderr


def test_lab_up_needs_the_ebpf_backend(tmp_path: Path) -> None:
    wrong = _cli(tmp_path, "lab", "up", "-f", SEED, "--backend", "simulator")
    assert wrong.returncode == 2 and "eBPF backend" in wrong.stderr


def test_lab_down_without_a_running_lab_says_so(tmp_path: Path) -> None:
    result = _cli(tmp_path, "lab", "down")
    assert result.returncode == 2 and "no lab named 'default' is running" in result.stderr
