"""Fixtures for the live-lab tests: gated like the eBPF backend tests (see tests/backends).

The tests skip only when :meth:`EBPFBackend.probe` says the datapath cannot run here, and
fail instead under ``CILIUMPY_REQUIRE_EBPF=1``.  Namespaces left by crashed earlier runs are
removed first, so a leak check here only sees this run's leaks.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from ciliumpy import Cluster


def _ebpf_support() -> ModuleType:
    # One module object shared with tests/backends (its probe result is cached there).
    loaded = sys.modules.get("ebpf_support")
    if loaded is not None:
        return loaded
    path = Path(__file__).resolve().parent.parent / "backends" / "ebpf_support.py"
    spec = importlib.util.spec_from_file_location("ebpf_support", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ebpf_support"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ebpf_available() -> None:
    """Depend on this to skip (or fail under CILIUMPY_REQUIRE_EBPF=1) where eBPF cannot run."""
    _ebpf_support().require_ebpf()
    from ciliumpy.lab import remove_stale

    remove_stale()


@pytest.fixture
def ebpf_cluster(ebpf_available: None) -> Iterator[Cluster]:
    """An empty cluster on a freshly loaded eBPF backend, closed after the test."""
    with Cluster(backend="ebpf") as cluster:
        yield cluster
