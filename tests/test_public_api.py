"""The public surface: ``ciliumpy/__init__.py`` only re-exports, with a sorted ``__all__``."""

from __future__ import annotations

import subprocess
import sys

import ciliumpy


def test_all_is_sorted_and_complete() -> None:
    assert list(ciliumpy.__all__) == sorted(ciliumpy.__all__)
    for name in ciliumpy.__all__:
        assert getattr(ciliumpy, name) is not None
        assert getattr(ciliumpy, name).__doc__, f"{name} has no docstring"


def test_issue_contract_names_exist() -> None:
    c = ciliumpy.Cluster(backend="simulator")
    for name in ("add_namespace", "add_endpoint", "apply", "add_dns_records", "check", "resolve"):
        assert callable(getattr(c, name))
    assert callable(ciliumpy.Cluster.from_manifests)
    assert issubclass(ciliumpy.PolicyError, ValueError)


def test_import_does_not_touch_libbpf_or_hypothesis() -> None:
    heavy = ("hypothesis", "ciliumpy.backends._libbpf", "ciliumpy.lab")
    code = f"import sys, ciliumpy; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_backend_chosen_by_environment(monkeypatch: object) -> None:
    import pytest

    mp = monkeypatch
    assert isinstance(mp, pytest.MonkeyPatch)
    mp.setenv("CILIUMPY_BACKEND", "nope")
    with pytest.raises(ciliumpy.BackendUnavailableError, match="unknown backend 'nope'"):
        ciliumpy.Cluster()
    mp.setenv("CILIUMPY_BACKEND", "simulator")
    assert ciliumpy.Cluster().backend.name == "simulator"
