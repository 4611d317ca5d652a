"""Developer sessions: ``nox -s tests``, ``lint``, ``typing``, ``bpf``, ``bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typing", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (eBPF tests need root; see README)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff, and that the code is ruff-formatted."""
    session.install("ruff")
    session.run("ruff", "check", "ciliumpy", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "ciliumpy", "tests", "bench", "noxfile.py")


@nox.session
def typing(session: nox.Session) -> None:
    """Type-check the package with mypy --strict."""
    session.install("-e", ".[dev]")
    session.run("mypy", "ciliumpy")


@nox.session
def bpf(session: nox.Session) -> None:
    """Rebuild the eBPF objects with clang; ``-- --check`` fails if committed ones are stale."""
    session.run("python", "bpf/build.py", *session.posargs, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks under bench/ and print their tables."""
    session.install("-e", ".[dev]")
    session.run("python", "bench/run_all.py", *session.posargs)
