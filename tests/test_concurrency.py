"""A Cluster shared between threads: questions see the state before or after a change, never a mix.

Three readers ask questions while a writer applies and deletes a policy set, on every backend.
The flows are chosen so that the answer must not depend on timing: some are denied by every
policy set the writer switches between, some allowed by every one.  Loops are bounded by
counts, not by time, and assertions are about every single answer.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ciliumpy import Cluster
from ciliumpy._rwlock import ReadWriteLock

PODS = """
apiVersion: v1
kind: Namespace
metadata: {name: t}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: t, labels: {app: a}}
spec: {containers: [{name: c, image: x, ports: [{containerPort: 80}, {containerPort: 443}]}]}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: t, labels: {app: b}}
spec: {containers: [{name: c, image: x, ports: [{containerPort: 80}, {containerPort: 443}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: t, labels: {app: c}}
spec: {containers: [{name: c, image: x, ports: [{containerPort: 80}, {containerPort: 443}]}]}
status: {podIP: 10.244.0.12}
"""

BASE = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-in, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: c}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-out, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEndpoints: [{}]
  - toCIDR: [192.0.2.0/24]
  egressDeny:
  - toCIDR: [203.0.113.0/24]
"""

# Toggled: it adds CIDR prefixes inside the ones BASE uses, so every switch also allocates
# or releases CIDR identities and rewrites the ipcache, not only policy maps.
EXTRA = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: extra-b, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: extra-a, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [203.0.113.0/25, 192.0.2.128/25]
  egressDeny:
  - toCIDR: [198.51.100.0/24]
"""

# (src, dst, port): the same answer under BASE and under BASE + EXTRA
DENIED_ALWAYS = [
    ("t/a", "t/b", 80),  # b admits only c on 80
    ("t/c", "t/b", 443),  # nobody admits c on 443
    ("t/a", "203.0.113.5", 80),  # a's deny of 203.0.113.0/24 beats EXTRA's allow of the /25
    ("t/a", "203.0.113.200", 80),
]
ALLOWED_ALWAYS = [
    ("t/c", "t/b", 80),
    ("t/a", "t/c", 80),  # c has no policy; a may reach every pod
    ("t/a", "192.0.2.200", 80),  # inside BASE's /24 and EXTRA's /25
    ("t/a", "192.0.2.7", 80),
]
TOGGLES = 15
READS_PER_READER = 4000  # upper bound; readers stop early once the writer is done


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so interleavings are many."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(writer: Callable[[], None], readers: list[Callable[[threading.Event], None]]) -> list[BaseException]:
    """Run ``writer`` and ``readers`` together; return every exception any of them raised."""
    errors: list[BaseException] = []
    done = threading.Event()

    def guard(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to the test below
                errors.append(exc)

        return run

    def write() -> None:
        try:
            writer()
        finally:
            done.set()

    threads = [threading.Thread(target=guard(write))]
    threads += [threading.Thread(target=guard(lambda r=r: r(done))) for r in readers]  # type: ignore[misc]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_readers_never_see_a_half_applied_policy_set(ciliumpy_backend: str, fast_switching: None) -> None:
    with Cluster.from_manifests(PODS, BASE, backend=ciliumpy_backend) as cluster:
        cluster.apply(EXTRA)
        with_extra = (cluster.map_state("t/b"), frozenset(cluster.ipcache()))
        assert cluster.check("t/a", "t/b", 443).allowed
        cluster.delete(EXTRA)
        base_only = (cluster.map_state("t/b"), frozenset(cluster.ipcache()))
        assert with_extra != base_only and with_extra[1] > base_only[1]
        bad: list[str] = []

        def writer() -> None:
            for _ in range(TOGGLES):
                cluster.apply(EXTRA)
                cluster.delete(EXTRA)

        def checker(done: threading.Event) -> None:
            for i in range(READS_PER_READER):
                if done.is_set() and i > 50:
                    return
                flow = DENIED_ALWAYS[i % len(DENIED_ALWAYS)]
                verdict = cluster.check(*flow)
                if verdict.verdict != "DROPPED":
                    bad.append(f"{flow} denied by every policy set was {verdict.verdict}")
                flow = ALLOWED_ALWAYS[i % len(ALLOWED_ALWAYS)]
                verdict = cluster.check(*flow)
                if verdict.verdict != "FORWARDED":
                    bad.append(f"{flow} allowed by every policy set was {verdict.verdict}")

        def observer(done: threading.Event) -> None:
            for i in range(READS_PER_READER):
                if done.is_set() and i > 50:
                    return
                seen = (cluster.map_state("t/b"), frozenset(cluster.ipcache()))
                if seen[0] not in (with_extra[0], base_only[0]):
                    bad.append(f"map state of t/b is a mix: {seen[0]}")
                if seen[1] not in (with_extra[1], base_only[1]):
                    bad.append(f"ipcache is a mix: {sorted(map(str, seen[1]))}")

        errors = run_threads(writer, [checker, checker, observer])
        assert errors == []
        assert bad == []
        # Afterwards the datapath answers exactly as a cluster built from scratch does.
        with Cluster.from_manifests(PODS, BASE, backend=ciliumpy_backend) as fresh:
            for flow in [*DENIED_ALWAYS, *ALLOWED_ALWAYS, ("t/a", "t/b", 443), ("t/a", "198.51.100.1", 80)]:
                assert cluster.check(*flow).verdict == fresh.check(*flow).verdict, flow
            assert cluster.map_state("t/b") == base_only[0]


def test_concurrent_writers_are_serialised(ciliumpy_backend: str, fast_switching: None) -> None:
    other = EXTRA.replace("name: extra-", "name: other-")
    with Cluster.from_manifests(PODS, BASE, backend=ciliumpy_backend) as cluster:
        barrier = threading.Barrier(2)

        def toggler(doc: str) -> Callable[[], None]:
            def run() -> None:
                barrier.wait()
                for _ in range(TOGGLES):
                    cluster.apply(doc)
                    cluster.delete(doc)

            return run

        errors = run_threads(toggler(EXTRA), [lambda _done: toggler(other)()])
        assert errors == []
        assert sorted(p.name for p in cluster.policies) == ["a-out", "b-in"]
        with Cluster.from_manifests(PODS, BASE, backend=ciliumpy_backend) as fresh:
            assert cluster.map_state("t/b") == fresh.map_state("t/b")
            assert set(cluster.ipcache()) == set(fresh.ipcache())
        assert not cluster.check("t/a", "t/b", 443).allowed
        cluster.apply(other)
        assert cluster.check("t/a", "t/b", 443).allowed


# ---- the lock itself ------------------------------------------------------------------------
def test_readers_share_and_a_writer_waits_for_them() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=10)
    release = threading.Event()
    order: list[str] = []

    def reader() -> None:
        with lock.read():
            inside.wait()  # both readers are inside at once
            release.wait(10)
            order.append("read")

    def writer() -> None:
        with lock.write():
            order.append("write")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    inside.wait()
    w = threading.Thread(target=writer)
    w.start()
    w.join(0.2)
    assert w.is_alive()  # blocked behind the readers
    release.set()
    for t in [*readers, w]:
        t.join(10)
    assert order == ["read", "read", "write"]


def test_a_waiting_writer_blocks_new_readers_but_not_nested_reads() -> None:
    lock = ReadWriteLock()
    got_read = threading.Event()
    proceed = threading.Event()
    events: list[str] = []

    def long_reader() -> None:
        with lock.read():
            got_read.set()
            proceed.wait(10)
            with lock.read():  # nested: must not wait for the queued writer
                events.append("nested read")

    def writer() -> None:
        with lock.write():
            events.append("write")

    def late_reader() -> None:
        with lock.read():
            events.append("late read")

    first = threading.Thread(target=long_reader)
    first.start()
    got_read.wait(10)
    w = threading.Thread(target=writer)
    w.start()
    while not lock._writers_waiting:  # the writer is queued
        threading.Event().wait(0.001)
    late = threading.Thread(target=late_reader)
    late.start()
    late.join(0.1)
    assert late.is_alive()  # writer preference
    proceed.set()
    for t in (first, w, late):
        t.join(10)
    assert events == ["nested read", "write", "late read"]


def test_writing_inside_a_read_is_refused_not_deadlocked() -> None:
    lock = ReadWriteLock()
    with lock.read(), pytest.raises(RuntimeError, match="read side"), lock.write():
        pass
    with lock.write(), lock.read(), lock.write():  # a writer may read and write again
        assert lock.held_for_write
    assert not lock.held_for_write


def test_cluster_questions_wait_for_a_running_apply() -> None:
    cluster = Cluster.from_manifests(PODS, BASE)
    started = threading.Event()
    answers: list[Any] = []
    with cluster._lock.write():
        cluster._store_object(next(iter(Cluster.from_manifests(EXTRA).policies)))
        started.set()
        t = threading.Thread(target=lambda: answers.append(cluster.check("t/a", "t/b", 443).allowed))
        t.start()
        t.join(0.2)
        assert t.is_alive() and answers == []  # the question waits for the writer
        cluster._invalidate()
        cluster._sync()
    t.join(10)
    assert answers == [True]  # answered from the state the writer left: extra-b admits a on 443


def test_backend_evaluations_from_many_threads_each_get_their_own_verdict(ciliumpy_backend: str) -> None:
    with Cluster.from_manifests(PODS, BASE, EXTRA, backend=ciliumpy_backend) as cluster:
        flows = [*DENIED_ALWAYS, *ALLOWED_ALWAYS, ("t/a", "t/b", 443)]
        expected = [cluster.check(*f).verdict for f in flows]
        seen: list[list[str]] = [[] for _ in range(4)]

        def reader(n: int) -> Callable[[threading.Event], None]:
            def run(_done: threading.Event) -> None:
                for _ in range(40):
                    seen[n].extend(cluster.check(*f).verdict for f in flows)

            return run

        errors = run_threads(lambda: None, [reader(n) for n in range(4)])
        assert errors == []
        assert all(s == expected * 40 for s in seen)


DNS = """
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
status: {podIP: 10.244.0.53}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-dns, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
    toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
  - toFQDNs: [{matchName: api.example.com}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"""


# learned by the DNS proxy and selected by toFQDNs / learned but not selected / a name
FQDN_FLOWS = [("203.0.113.7", "FORWARDED"), ("198.18.0.8", "DROPPED"), ("api.example.com", "FORWARDED")]


def test_names_learned_by_one_thread_are_seen_whole_by_others(ciliumpy_backend: str, fast_switching: None) -> None:
    from ciliumpy._fqdn import ManualClock

    with Cluster.from_manifests(PODS, DNS, backend=ciliumpy_backend, clock=ManualClock(1000.0)) as cluster:
        cluster.add_dns_records({"api.example.com": ["203.0.113.7"], "www.example.com": ["198.18.0.8"]}, ttl=3600)
        assert cluster.resolve("t/a", "api.example.com").learned
        bad: list[str] = []

        def writer() -> None:
            for i in range(TOGGLES):
                cluster.resolve("t/a", "www.example.com" if i % 2 else "api.example.com")
                cluster.apply(EXTRA)
                cluster.delete(EXTRA)

        def checker(done: threading.Event) -> None:
            for i in range(READS_PER_READER // 4):
                if done.is_set() and i > 20:
                    return
                for dst, want in FQDN_FLOWS:
                    got = cluster.check("t/a", dst, 443)
                    assert not isinstance(got, list)
                    if got.verdict != want:
                        bad.append(f"t/a -> {dst}:443 was {got.verdict}")

        errors = run_threads(writer, [checker, checker])
        assert errors == []
        assert bad == []


def test_every_decision_of_concurrent_readers_is_logged_once(ciliumpy_backend: str, fast_switching: None) -> None:
    with Cluster.from_manifests(PODS, BASE, backend=ciliumpy_backend) as cluster:
        cluster.events.capacity = 10_000
        start = cluster.events.seq
        per_thread = 150

        def reader(_done: threading.Event) -> None:
            for i in range(per_thread):
                cluster.check(*ALLOWED_ALWAYS[i % len(ALLOWED_ALWAYS)])

        assert run_threads(lambda: None, [reader] * 4) == []
        events, lost, now = cluster.events.since(start)
        assert now - start == 4 * per_thread
        assert (len(events), lost) == (4 * per_thread, 0)
        assert len({id(e) for e in events}) == 4 * per_thread
