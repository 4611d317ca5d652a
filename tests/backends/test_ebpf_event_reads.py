"""Flow events and threads: a test run reads its own event, live traffic's events are kept,
and an observer waiting for events holds nobody up."""

from __future__ import annotations

import ctypes
import threading
import time

from ciliumpy import Packet
from ciliumpy._datapath import Direction, EndpointRecord, MapStateKey, PolicyEntry
from ciliumpy.backends import DatapathUpdate
from ciliumpy.backends import _libbpf as L
from ciliumpy.backends._ebpf import EBPFBackend, build_frame

EP = EndpointRecord(endpoint_id=1, identity=300, ips=(Packet(src="10.0.0.1", dst="10.0.0.2").src,))
SETUP = DatapathUpdate(endpoints_upsert={1: EP}, policy_upsert={1: {MapStateKey(0, Direction.EGRESS): PolicyEntry()}})


def live_packet(backend: EBPFBackend, packet: Packet) -> None:
    """Run the egress program as traffic through an attached interface would: no lock."""
    frame = build_frame(packet)
    data = ctypes.create_string_buffer(frame, len(frame))
    run = L.opts(L.bpf_test_run_opts, data_in=ctypes.cast(data, ctypes.c_void_p), data_size_in=len(frame), repeat=1)
    L.library().bpf_prog_test_run_opts(backend.program_fds[Direction.EGRESS], ctypes.byref(run))


def test_events_of_live_traffic_survive_an_evaluation(ebpf: EBPFBackend) -> None:
    ebpf.apply(SETUP)
    live = Packet(src="10.0.0.1", dst="192.0.2.1", sport=1111, dport=80)
    probe = Packet(src="10.0.0.1", dst="192.0.2.2", sport=2222, dport=443)
    live_packet(ebpf, live)
    assert ebpf.evaluate(probe, Direction.EGRESS).allowed
    kept = ebpf.drain_events()
    assert [(e.dst, e.sport) for e in kept] == [(live.dst, 1111)]


def test_an_observer_waiting_for_events_does_not_block_evaluations(ebpf: EBPFBackend) -> None:
    ebpf.apply(SETUP)
    got: list[int] = []
    entered = threading.Event()

    def observe() -> None:
        entered.set()
        got.append(len(ebpf.poll_events(timeout_ms=5000)))

    observer = threading.Thread(target=observe)
    observer.start()
    entered.wait(5)
    time.sleep(0.2)  # let it reach the wait; the wait itself lasts 5 s
    for port in range(10):
        assert ebpf.evaluate(Packet(src="10.0.0.1", dst="192.0.2.9", sport=3000 + port, dport=80), Direction.EGRESS)
    assert observer.is_alive()  # the evaluations did not wait for the observer's 5 s
    live_packet(ebpf, Packet(src="10.0.0.1", dst="192.0.2.1", sport=1111, dport=80))
    observer.join(10)
    assert got and got[0] >= 1  # woken by the live packet's event, which it received
