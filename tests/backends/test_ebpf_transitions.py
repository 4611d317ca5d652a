"""What live traffic sees while apply() rewrites the kernel maps: old, new, or a drop.

A reader thread runs the egress program on a frame again and again with BPF_PROG_TEST_RUN,
straight on the program fd and without the backend's lock, exactly as a packet arriving on an
attached interface would, while the writer switches between two policy sets.  The flow is
denied by both sets, so no run may return TC_ACT_OK.

The two sets differ in a way that makes the order of map writes matter: the second one
references the flow's destination prefix, which moves the address from the world identity to
a CIDR identity, and the source's policy changes with it.  Swapping the policy table before
the ipcache (or after) would pair a table with an identity it does not know, and that table's
wildcard port rule would let the packet through.
"""

from __future__ import annotations

import ctypes
import threading

from ebpf_support import require_ebpf

from ciliumpy import Cluster, Packet
from ciliumpy._datapath import Direction
from ciliumpy.backends import _bpfstructs as S
from ciliumpy.backends import _libbpf as L
from ciliumpy.backends._ebpf import EBPFBackend, build_frame

BASE = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: t, labels: {app: a}}
status: {podIP: 10.244.0.10}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-out, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  egressDeny:
  - toEntities: [world]
"""
EXTRA = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-https, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [203.0.113.0/24]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"""
TOGGLES = 20
MAX_RUNS = 200_000
_TC_ACT_OK = 0


def test_a_flow_denied_before_and_after_is_never_let_through_while_maps_change() -> None:
    require_ebpf()
    with Cluster.from_manifests(BASE, backend=EBPFBackend()) as cluster:
        backend = cluster.backend
        assert isinstance(backend, EBPFBackend)
        flow = ("t/a", "203.0.113.5", 80)
        assert cluster.check(*flow).verdict == "DROPPED"
        base_table = cluster.map_state("t/a")
        cluster.apply(EXTRA)
        assert cluster.check(*flow).verdict == "DROPPED"
        # the address moved from world to a CIDR identity, and a's table changed with it
        assert cluster.lookup_ip("203.0.113.5").id != 2
        assert cluster.map_state("t/a") != base_table
        cluster.delete(EXTRA)
        backend.event_mode = S.EventMode.NONE  # the reader judges by the tc return code
        frame = build_frame(Packet(src="10.244.0.10", dst="203.0.113.5", sport=45000, dport=80))
        prog_fd = backend.program_fds[Direction.EGRESS]
        done = threading.Event()
        outcome = {"runs": 0, "passed": 0}

        def reader() -> None:
            data = ctypes.create_string_buffer(frame, len(frame))
            run = L.opts(
                L.bpf_test_run_opts, data_in=ctypes.cast(data, ctypes.c_void_p), data_size_in=len(frame), repeat=1
            )
            while not done.is_set() and outcome["runs"] < MAX_RUNS:
                L.library().bpf_prog_test_run_opts(prog_fd, ctypes.byref(run))
                outcome["runs"] += 1
                outcome["passed"] += run.retval == _TC_ACT_OK

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for _ in range(TOGGLES):
                cluster.apply(EXTRA)
                cluster.delete(EXTRA)
        finally:
            done.set()
            thread.join(60)
        assert outcome["runs"] > 0
        assert outcome["passed"] == 0, f"{outcome['passed']} of {outcome['runs']} runs let the packet through"
        assert cluster.check(*flow).verdict == "DROPPED"
