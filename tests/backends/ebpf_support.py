"""Helpers shared by the eBPF backend tests (imported by conftest.py and test modules)."""

from __future__ import annotations

import functools
import os

import pytest

from ciliumpy.backends._ebpf import EBPFBackend
from ciliumpy.exceptions import BackendUnavailableError

REQUIRE_ENV = "CILIUMPY_REQUIRE_EBPF"


@functools.cache
def ebpf_unavailable_reason() -> str | None:
    """Why the eBPF backend cannot run here, or None when it can."""
    try:
        EBPFBackend.probe()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def require_ebpf(reason: str | None = None) -> None:
    """Skip the calling test when eBPF is unavailable, or fail it under CILIUMPY_REQUIRE_EBPF=1."""
    if reason is None:
        reason = ebpf_unavailable_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV, "").strip() == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the eBPF backend is unavailable: {reason}")
    pytest.skip(reason)
