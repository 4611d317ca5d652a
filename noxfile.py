"""Developer sessions: ``nox -s tests``, ``lint``, ``typing``, ``bpf``, ``bench``, ``fuzz``."""

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


@nox.session
def fuzz(session: nox.Session) -> None:
    """Long fuzz run: ``CILIUMPY_FUZZ_EXAMPLES`` random inputs per fuzz test (default 5000).

    CI runs the same tests with a small derandomized budget as part of ``tests``; this
    session looks further and prints how many inputs it tried and how each ended.
    """
    session.install("-e", ".[dev]")
    examples = session.env.get("CILIUMPY_FUZZ_EXAMPLES") or "5000"
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/fuzz",
        *session.posargs,
        env={"CILIUMPY_FUZZ_EXAMPLES": examples},
    )
