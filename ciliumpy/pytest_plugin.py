"""pytest plugin: run policy tests on every ciliumpy backend, with explaining assertions.

Installed with ciliumpy and loaded by pytest through the ``pytest11`` entry point, so any
project that depends on ciliumpy gets, with no configuration:

* the ``cluster`` fixture, a fresh :class:`~ciliumpy.Cluster` on the backend under test;
* the ``ciliumpy_backend`` fixture, parametrised over
  :func:`ciliumpy.backends.available_backends` (simulator, and eBPF where it can run), so a
  test written once runs on each; ``--ciliumpy-backend NAME`` restricts the run;
* the markers ``ciliumpy_backend(*names)`` (run only on those backends) and
  ``requires_ebpf`` (skip where the eBPF datapath cannot run; with
  ``CILIUMPY_REQUIRE_EBPF=1`` that skip becomes a failure);
* the assertion helpers of :mod:`ciliumpy.testing`, importable from here too::

      from ciliumpy.pytest_plugin import assert_allowed, assert_isolated

      def test_web_reaches_db(cluster):
          cluster.apply("policies/")
          assert_allowed(cluster, "prod/web", "prod/db", 5432)

Importing the plugin never imports Hypothesis or a kernel backend: backends are probed the
first time a test asks for one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import pytest

from ._cluster import Cluster
from .backends import BUILTIN_BACKENDS, _backend_class, default_backend_name
from .exceptions import BackendUnavailableError
from .testing import (
    ClusterSpec,
    Flow,
    assert_allowed,
    assert_denied,
    assert_isolated,
    assert_reachable,
    labelled_map_state,
    port_probes,
)

__all__ = [
    "ClusterSpec",
    "Flow",
    "assert_allowed",
    "assert_denied",
    "assert_isolated",
    "assert_reachable",
    "labelled_map_state",
    "port_probes",
]

REQUIRE_EBPF_ENV = "CILIUMPY_REQUIRE_EBPF"
_OPTION = "--ciliumpy-backend"


# --------------------------------------------------------------------------------------------
# backend discovery


@functools.cache
def _unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can (probed once per process)."""
    try:
        cls = _backend_class(name)
        probe = getattr(cls, "probe", None)
        if probe is not None:
            probe()
    except (BackendUnavailableError, ImportError, OSError) as exc:
        return f"ciliumpy backend {name!r} is unavailable: {exc}"
    return None


def _known_backends() -> list[str]:
    return list(BUILTIN_BACKENDS)


def _require_ebpf() -> bool:
    return os.environ.get(REQUIRE_EBPF_ENV, "").strip() == "1"


def _skip_or_fail(reason: str, backend: str) -> None:
    __tracebackhide__ = True
    if backend == "ebpf" and _require_ebpf():
        pytest.fail(f"{REQUIRE_EBPF_ENV}=1 but {reason}")
    pytest.skip(reason)


def _selected(config: pytest.Config) -> list[str]:
    """Backends a parametrised test runs on: the requested ones, else the available ones."""
    requested: list[str] = list(config.getoption("ciliumpy_backend") or [])
    if requested:
        return list(dict.fromkeys(requested))
    names = [n for n in _known_backends() if _unavailable_reason(n) is None]
    if _require_ebpf() and "ebpf" in _known_backends() and "ebpf" not in names:
        names.append("ebpf")  # so its tests fail instead of silently disappearing
    return names


def _marker_backends(node: pytest.Item | pytest.Function | Any) -> set[str] | None:
    allowed: set[str] | None = None
    for mark in node.iter_markers("ciliumpy_backend"):
        names = {str(a) for a in mark.args}
        if not names:
            raise pytest.UsageError("@pytest.mark.ciliumpy_backend needs at least one backend name")
        allowed = names if allowed is None else allowed & names
    if node.get_closest_marker("requires_ebpf") is not None:
        allowed = {"ebpf"} if allowed is None else allowed & {"ebpf"}
    return allowed


# --------------------------------------------------------------------------------------------
# hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ciliumpy", "ciliumpy policy testing")
    group.addoption(
        _OPTION,
        action="append",
        dest="ciliumpy_backend",
        default=[],
        metavar="NAME",
        help="run backend-parametrised tests (the cluster and ciliumpy_backend fixtures) only "
        "on backend NAME; repeat for several. Default: every backend available here.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ciliumpy_backend(*names): run this test only with the named ciliumpy backends "
        "(e.g. 'simulator', 'ebpf') of the cluster / ciliumpy_backend fixtures",
    )
    config.addinivalue_line(
        "markers",
        "requires_ebpf: the test needs the eBPF backend; skipped where it cannot run, "
        f"a failure when {REQUIRE_EBPF_ENV}=1",
    )
    requested = config.getoption("ciliumpy_backend") or []
    if requested:
        known = _known_backends()
        unknown = [n for n in requested if n not in known]
        if unknown:
            raise pytest.UsageError(f"{_OPTION}: unknown backend {unknown[0]!r}; known: {', '.join(known)}")


def pytest_report_header(config: pytest.Config) -> str:
    names = _selected(config)
    return "ciliumpy backends: " + (", ".join(names) if names else "none")


def _parametrized_by_test(metafunc: pytest.Metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if "ciliumpy_backend" in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ciliumpy_backend" not in metafunc.fixturenames or _parametrized_by_test(metafunc):
        return  # a test that parametrizes ciliumpy_backend itself chooses its own backends
    names = _selected(metafunc.config)
    allowed = _marker_backends(metafunc.definition)
    params: list[Any] = []
    for name in names:
        if allowed is not None and name not in allowed:
            continue
        params.append(pytest.param(name, id=name))
    if not params:
        # Nothing to run on: keep one visible item that says why.
        wanted = sorted(allowed or ()) or ["<none>"]
        params = [
            pytest.param(
                wanted[0],
                id=wanted[0],
                marks=pytest.mark.skip(
                    reason=f"ciliumpy backend(s) {', '.join(wanted)} not selected "
                    f"(selected: {', '.join(names) or 'none'})"
                ),
            )
        ]
    # Session scope: the value is a name, so tests using Hypothesis may take it.
    metafunc.parametrize("ciliumpy_backend", params, scope="session")


def pytest_runtest_setup(item: pytest.Item) -> None:
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("ciliumpy_backend") if callspec is not None else None
    if backend is not None:
        reason = _unavailable_reason(str(backend))
        if reason is not None:
            _skip_or_fail(reason, str(backend))
    if item.get_closest_marker("requires_ebpf") is not None:
        reason = _unavailable_reason("ebpf") if "ebpf" in _known_backends() else "no eBPF backend"
        if reason is not None:
            _skip_or_fail(reason, "ebpf")


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(name="ciliumpy_backend")
def ciliumpy_backend_fixture() -> str:
    """The name of the backend under test.

    Parametrised by the plugin over every available backend (see ``--ciliumpy-backend``);
    this body only runs when a test requests it in a way the plugin could not parametrise.
    """
    return default_backend_name()


@pytest.fixture(name="cluster")
def cluster_fixture(ciliumpy_backend: str) -> Iterator[Cluster]:
    """A fresh, empty :class:`~ciliumpy.Cluster` on the backend under test, closed afterwards.

    ::

        def test_default_allow(cluster):
            cluster.add_endpoint("prod/web")
            assert_allowed(cluster, "world", "prod/web", 80)
    """
    with Cluster(backend=ciliumpy_backend) as c:
        yield c
