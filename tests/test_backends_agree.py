"""The upstream-expectation suites and the seed demo agree on the simulator and on eBPF.

``tests/test_distillery.py`` (Cilium's 256 ``Test_MergeRules`` cases and the auth cases of
``Test_MergeL3``) and ``tests/test_distillery_cidr.py`` (CIDR, world and port-range cases)
check ciliumpy against upstream expectations.  Here every one of their tests runs again with
its clusters mirrored (:class:`cluster_pairs.MirroredCluster`): each cluster exists on the
simulator and on one shared :class:`~ciliumpy.backends._ebpf.EBPFBackend`, every call goes to
both, every verdict (and map state, identity, error) must be equal, the kernel maps must hold
what was compiled, and the tests' own assertions -- the upstream expectations -- are made on
the eBPF cluster's answers.  The seed demo (``ciliumpy.SEED_FLOWS`` on ``examples/seed``)
is compared flow by flow, and its table printed by both backends.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import test_distillery
import test_distillery_cidr
from cluster_pairs import MirroredCluster, SharedDatapath

from ciliumpy.backends._ebpf import EBPFBackend
from ciliumpy.cli.demo import run_demo
from ciliumpy.examples import SEED_DNS_RECORDS, SEED_FLOWS, seed_path

pytestmark = pytest.mark.requires_ebpf

UPSTREAM_SUITES = (test_distillery, test_distillery_cidr)


@pytest.fixture(scope="module")
def datapath() -> Iterator[SharedDatapath]:
    with EBPFBackend() as backend:
        yield SharedDatapath(backend)


class _MirrorFactory:
    """Stands in for ``Cluster`` in the replayed suites: each cluster they build is mirrored."""

    def __init__(self, datapath: SharedDatapath) -> None:
        self.datapath = datapath
        self.made: list[MirroredCluster] = []

    def __call__(self, *args: Any, **options: Any) -> MirroredCluster:
        mirror = MirroredCluster(self.datapath, *args, **options)
        self.made.append(mirror)
        return mirror


_ParameterSet = type(pytest.param())


def _replays(module: ModuleType) -> list[Any]:
    """One parameter per test function of ``module`` and per case of its ``parametrize``."""
    out = []
    for name, fn in vars(module).items():
        if not name.startswith("test_") or not inspect.isfunction(fn):
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        assert len(marks) <= 1, f"{name}: replaying stacked parametrize marks is not supported"
        cases: list[tuple[dict[str, Any], str]] = [({}, "")]
        if marks:
            argnames, argvalues = marks[0].args[:2]
            names = [n.strip() for n in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
            ids = marks[0].kwargs.get("ids")
            cases = []
            for i, value in enumerate(argvalues):
                values = value.values if isinstance(value, _ParameterSet) else value if len(names) > 1 else (value,)
                label = ids(value) if callable(ids) else ids[i] if ids else str(i)
                cases.append((dict(zip(names, values, strict=True)), f"[{label}]"))
        for kwargs, label in cases:
            out.append(pytest.param(fn, kwargs, id=f"{module.__name__}::{name}{label}"))
    return out


@pytest.mark.parametrize(("test", "kwargs"), [p for suite in UPSTREAM_SUITES for p in _replays(suite)])
def test_upstream_expectations_hold_on_ebpf(
    test: Callable[..., None], kwargs: dict[str, Any], datapath: SharedDatapath, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = set(inspect.signature(test).parameters)
    assert wanted == set(kwargs), f"{test.__name__} needs fixtures {sorted(wanted - set(kwargs))}: replay them here"
    mirrors = _MirrorFactory(datapath)
    for suite in UPSTREAM_SUITES:
        monkeypatch.setattr(suite, "Cluster", mirrors)
    test(**kwargs)
    assert mirrors.made, f"{test.__name__} built no cluster"
    mirrors.made[-1].check_kernel()  # earlier ones were checked before they were superseded
    assert sum(m.verdicts for m in mirrors.made) or all(m.kernel_checks for m in mirrors.made), "nothing compared"


def test_replays_cover_the_upstream_suites() -> None:
    # Guard for the parametrization above: every case of both suites is replayed.
    replayed = {p.id for suite in UPSTREAM_SUITES for p in _replays(suite)}
    merge = {i for i in replayed if "::test_merge_rules_case[" in i}
    assert len(merge) == len(test_distillery.MERGE["cases"]) == 256
    assert sum("::test_merge_l3_auth_case_all_orders[" in i for i in replayed) == len(test_distillery.AUTH["cases"])
    assert sum(i.startswith("test_distillery_cidr::") for i in replayed) >= 10


# ---------------------------------------------------------------- authentication
def test_an_authenticated_pair_passes_on_both_backends(datapath: SharedDatapath) -> None:
    c = MirroredCluster(datapath, allow_localhost=False)
    c.add_endpoint("a/foo", labels={"id": "foo"})
    c.add_endpoint("a/bar", labels={"id": "bar"})
    c.apply(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "auth", "namespace": "a"},
            "spec": {
                "endpointSelector": {"matchLabels": {"id": "foo"}},
                "ingress": [
                    {"fromEndpoints": [{"matchLabels": {"id": "bar"}}], "authentication": {"mode": "required"}}
                ],
            },
        }
    )
    assert c.check("a/bar", "a/foo", 80).drop_reason.value == 189
    # Keyed by the two security identities, as Cilium's auth map (on both backends)
    c.backend.auth_pairs.add((c.identity_of("a/foo").id, c.identity_of("a/bar").id, 1))
    v = c.check("a/bar", "a/foo", 80)
    assert v.verdict == "FORWARDED" and v.egress is not None and v.ingress is not None
    assert v.ingress.result.auth_type == 1
    assert c.verdicts == 2


# ---------------------------------------------------------------- the seed demo
def test_seed_demo_flows_agree(datapath: SharedDatapath) -> None:
    c = MirroredCluster(datapath)
    c.apply(seed_path())
    c.add_dns_records(SEED_DNS_RECORDS, ttl=300)
    verdicts = [c.check(src, dst, port, proto, http=http) for src, dst, port, proto, http, _ in SEED_FLOWS]
    c.check_kernel()  # with the addresses the DNS lookups learned
    assert c.verdicts == len(SEED_FLOWS)
    # The demo shows every outcome: all three verdicts, L7 denials and refused DNS lookups.
    assert {v.verdict for v in verdicts} == {"FORWARDED", "DROPPED", "REDIRECTED"}
    assert any(v.http_status == 403 for v in verdicts)
    assert any(v.dns is not None and v.dns.rcode == "REFUSED" for v in verdicts)


def test_demo_prints_the_same_table_on_both_backends() -> None:
    tables = {}
    for backend in ("simulator", "ebpf"):
        out = io.StringIO()
        assert run_demo(out, backend) == 0
        tables[backend] = out.getvalue().replace(f"on the {backend} backend", "on the <backend> backend")
    assert tables["ebpf"] == tables["simulator"]
