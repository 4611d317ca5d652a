"""The pytest plugin: fixtures parametrised over backends, the option, markers, helpers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ciliumpy.pytest_plugin as plugin
import ciliumpy.testing
from ciliumpy.backends import available_backends

pytest_plugins = ["pytester"]

USES_CLUSTER = """
from ciliumpy.pytest_plugin import assert_allowed

def test_world_reaches_a_pod(cluster, ciliumpy_backend):
    cluster.add_endpoint("prod/web")
    assert cluster.backend.name == ciliumpy_backend
    assert_allowed(cluster, "world", "prod/web", 80)
"""


def test_markers_are_registered_with_descriptions(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.ciliumpy_backend(*names): run this test only with the named ciliumpy backends*",
            "@pytest.mark.requires_ebpf: the test needs the eBPF backend*",
        ]
    )


def test_cluster_runs_once_per_available_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_CLUSTER)
    result = pytester.runpytest("-v")
    names = available_backends()
    result.assert_outcomes(passed=len(names))
    result.stdout.fnmatch_lines([f"*test_world_reaches_a_pod[[]{name}[]] PASSED*" for name in names])
    result.stdout.fnmatch_lines(["ciliumpy backends: " + ", ".join(names)])


def test_option_restricts_to_one_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_CLUSTER)
    result = pytester.runpytest("-v", "--ciliumpy-backend", "simulator")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_world_reaches_a_pod[[]simulator[]] PASSED*"])


def test_an_unknown_backend_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_CLUSTER)
    result = pytester.runpytest("--ciliumpy-backend", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ciliumpy-backend: unknown backend 'nope'; known: simulator*"])


def test_a_test_may_parametrize_the_backend_itself(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("ciliumpy_backend", ["simulator"])
        def test_mine(cluster):
            assert cluster.backend.name == "simulator"
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_backend_marker_selects_backends(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ciliumpy_backend("simulator")
        def test_only_simulator(ciliumpy_backend):
            assert ciliumpy_backend == "simulator"
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)


REQUIRES_EBPF = """
import pytest

@pytest.mark.requires_ebpf
def test_kernel(cluster):
    assert cluster.backend.name == "ebpf"

@pytest.mark.requires_ebpf
def test_no_fixture():
    pass
"""


def test_requires_ebpf_skips_where_ebpf_is_unavailable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin, "_unavailable_reason", lambda name: "no kernel here" if name == "ebpf" else None)
    monkeypatch.delenv(plugin.REQUIRE_EBPF_ENV, raising=False)
    pytester.makepyfile(REQUIRES_EBPF)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no kernel here*"])


def test_requires_ebpf_fails_when_ebpf_is_required_but_unavailable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin, "_unavailable_reason", lambda name: "no kernel here" if name == "ebpf" else None)
    monkeypatch.setenv(plugin.REQUIRE_EBPF_ENV, "1")
    pytester.makepyfile(REQUIRES_EBPF)
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*CILIUMPY_REQUIRE_EBPF=1 but no kernel here*"])


@pytest.mark.requires_ebpf
def test_requires_ebpf_runs_on_the_kernel_datapath_where_available(cluster: ciliumpy.Cluster) -> None:
    cluster.add_endpoint("prod/web")
    assert cluster.backend.name == "ebpf"
    assert cluster.check("world", "prod/web", 80).allowed


def test_helpers_are_the_ones_of_ciliumpy_testing() -> None:
    for name in plugin.__all__:
        assert getattr(plugin, name) is getattr(ciliumpy.testing, name)


def test_importing_the_plugin_imports_neither_hypothesis_nor_a_kernel_backend() -> None:
    code = (
        "import sys, ciliumpy.pytest_plugin; "
        "print('hypothesis' in sys.modules, 'ciliumpy.backends._ebpf' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
