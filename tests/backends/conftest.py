"""Fixtures for the eBPF backend tests.

eBPF tests skip only when :meth:`EBPFBackend.probe` says the backend cannot run here; with
``CILIUMPY_REQUIRE_EBPF=1`` (set by .ci/run) that skip becomes a failure, so CI cannot go
green by silently skipping the kernel datapath.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ebpf_support import require_ebpf

from ciliumpy.backends._ebpf import EBPFBackend


@pytest.fixture(scope="session")
def ebpf_available() -> None:
    """Depend on this to skip (or fail, see module doc) where eBPF cannot run."""
    require_ebpf()


@pytest.fixture
def ebpf(ebpf_available: None) -> Iterator[EBPFBackend]:
    """A freshly loaded backend with small maps, closed after the test."""
    with EBPFBackend(ct_max_entries=4096) as backend:
        yield backend
