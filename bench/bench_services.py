"""Service translation benchmark: eBPF tc load balancer vs kube-proxy's iptables NAT chains.

Both measured in the same run, for 10 / 1,000 / 10,000 Services (one port, one backend each),
as ratios to sending the same packet without translation (needs root; see docs/services.md):

(a) ``ebpf``: kernel-reported time of ``cil_from_container`` per packet (``BPF_PROG_TEST_RUN``,
    events off) for an established connection from a pod to a ClusterIP -- the service map
    lookup, the slot's backend, the DNAT with checksum updates, then conntrack and policy on
    the backend -- against the same pod sending to the backend's address directly with the
    same maps loaded.  Each sample is one run (``repeat=1``): the program rewrites the packet,
    and test_run would run later repeats on the already translated bytes; the median of many
    samples is reported.

(b) ``iptables``: kube-proxy's iptables mode as it programs the nat table (KUBE-SERVICES ->
    KUBE-SVC-* -> KUBE-SEP-* with DNAT) loaded with ``iptables-nft-restore`` (nf_tables
    backend) into a network namespace created here.  kube-proxy's chains are walked by the
    first packet of every connection (later packets follow conntrack), so each measured
    packet opens a new UDP flow: the time per ``sendto`` from a fresh socket to the ClusterIP
    of the middle Service, against the same send to the backend's address with an empty
    KUBE-SERVICES chain.  This is user-space wall time per new connection (the Python send
    loop is part of both sides), so its ratios understate the chain's own cost; the added
    microseconds per connection are printed too.

``--quick`` uses fewer samples.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import os
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ciliumpy import Direction, MapStateKey, Packet, PolicyEntry, Protocol
from ciliumpy._datapath import EndpointRecord, IPAddress, LBBackend, LBService
from ciliumpy.backends import DatapathUpdate
from ciliumpy.backends import _bpfstructs as S
from ciliumpy.backends import _libbpf as L
from ciliumpy.backends._ebpf import EBPFBackend, build_frame
from ciliumpy.exceptions import BackendUnavailableError
from ciliumpy.lab._netns import NAME_PREFIX, NetNS, new_token

SIZES = (10, 1_000, 10_000)
CLIENT = ipaddress.ip_address("10.0.0.1")
CLIENT_ID, BACKEND_IDENTITY = 1, 2000
SVC_PORT, BACKEND_PORT = 80, 8080


def cluster_ip(i: int) -> IPAddress:
    return ipaddress.ip_address(f"10.96.{i >> 8 & 255}.{i & 255}")


def backend_ip(i: int) -> IPAddress:
    return ipaddress.ip_address(f"10.244.{i >> 8 & 255}.{i & 255}")


# ====================================================================== (a) eBPF
def run_once(prog_fd: int, frame: bytes) -> int:
    """Kernel-reported ns of one run of ``frame`` (a fresh copy of the bytes each call)."""
    data = ctypes.create_string_buffer(frame, len(frame))
    run = L.opts(L.bpf_test_run_opts, data_in=ctypes.cast(data, ctypes.c_void_p), data_size_in=len(frame), repeat=1)
    L.library().bpf_prog_test_run_opts(prog_fd, ctypes.byref(run))
    if run.retval != 0:
        raise RuntimeError(f"the datapath dropped the benchmark packet (tc verdict {run.retval})")
    return int(run.duration)


def median_ns(prog_fd: int, frame: bytes, samples: int) -> float:
    for _ in range(100):  # warm up: conntrack entry, caches
        run_once(prog_fd, frame)
    return float(statistics.median(run_once(prog_fd, frame) for _ in range(samples)))


def bench_ebpf(sizes: Sequence[int], samples: int, rounds: int) -> dict[int, tuple[float, float]]:
    """Services -> (ns with translation, ns without), medians over ``rounds`` alternating rounds."""
    out: dict[int, tuple[float, float]] = {}
    with EBPFBackend(event_mode=S.EventMode.NONE) as dp:
        prog = dp.program_fds[Direction.EGRESS]
        allow_all = {MapStateKey(0, Direction.EGRESS): PolicyEntry()}
        dp.apply(
            DatapathUpdate(
                endpoints_upsert={CLIENT_ID: EndpointRecord(CLIENT_ID, 1000, (CLIENT,))},
                policy_upsert={CLIENT_ID: allow_all},
            )
        )
        loaded = 0
        for n in sizes:
            services = {
                i + 1: LBService(
                    i + 1, cluster_ip(i), SVC_PORT, Protocol.TCP, (LBBackend(i + 1, backend_ip(i), BACKEND_PORT),)
                )
                for i in range(loaded, n)
            }
            dp.apply(
                DatapathUpdate(
                    services_upsert=services,
                    ipcache_upsert={ipaddress.ip_network(backend_ip(i)): BACKEND_IDENTITY for i in range(loaded, n)},
                )
            )
            loaded = n
            target = n // 2
            via_service = build_frame(
                Packet(CLIENT, cluster_ip(target), Protocol.TCP, sport=40000, dport=SVC_PORT, tcp_flags=0x10)
            )
            direct = build_frame(
                Packet(CLIENT, backend_ip(target), Protocol.TCP, sport=40001, dport=BACKEND_PORT, tcp_flags=0x10)
            )
            with_xlate, without = [], []
            for _ in range(rounds):
                with_xlate.append(median_ns(prog, via_service, samples))
                without.append(median_ns(prog, direct, samples))
            out[n] = (statistics.median(with_xlate), statistics.median(without))
    return out


# ====================================================================== (b) iptables
def kube_proxy_rules(count: int) -> str:
    """The nat table kube-proxy's iptables mode writes for ``count`` one-backend Services."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]"]
    for i in range(count):
        lines += [f":KUBE-SVC-{i:08X} - [0:0]", f":KUBE-SEP-{i:08X} - [0:0]"]
    lines += ["-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES"]
    for i in range(count):
        lines.append(f"-A KUBE-SERVICES -d {cluster_ip(i)}/32 -p udp -m udp --dport {SVC_PORT} -j KUBE-SVC-{i:08X}")
        lines.append(f"-A KUBE-SVC-{i:08X} -j KUBE-SEP-{i:08X}")
        lines.append(f"-A KUBE-SEP-{i:08X} -p udp -m udp -j DNAT --to-destination {backend_ip(i)}:{BACKEND_PORT}")
    lines += ["COMMIT", ""]
    return "\n".join(lines)


@contextmanager
def nat_namespace(count: int) -> Iterator[NetNS]:
    """A namespace with a veth towards the backends and kube-proxy's chains for ``count`` Services."""
    ns = NetNS(f"{NAME_PREFIX}{new_token()}-svcbench")
    try:
        ns.ip(
            "-batch",
            "-",
            batch=[
                "link set lo up",
                "link add sb0 type veth peer name sb1",
                "link set sb0 up",
                "link set sb1 up",
                f"addr add {CLIENT}/32 dev sb0",
                # Everything goes to one gateway with a static neighbour: no ARP per address.
                "neigh add 10.0.0.2 lladdr 02:00:00:00:00:02 dev sb0 nud permanent",
                "route add 10.244.0.0/16 via 10.0.0.2 dev sb0 onlink",
                "route add 10.96.0.0/16 via 10.0.0.2 dev sb0 onlink",
            ],
        )
        subprocess.run(
            ["ip", "netns", "exec", ns.name, "iptables-nft-restore"],
            input=kube_proxy_rules(count),
            text=True,
            check=True,
            timeout=600,
        )
        yield ns
    finally:
        ns.close()


def send_new_flows(ns: NetNS, dst: IPAddress, port: int, packets: int) -> float:
    """Seconds per packet: each from a fresh socket, so each is a new conntrack flow."""

    def run() -> float:
        payload = b"x" * 32
        start = time.perf_counter()
        for _ in range(packets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(payload, (str(dst), port))
            except OSError:
                pass  # an unanswered neighbour queue may refuse; the chains were walked anyway
            finally:
                s.close()
        return (time.perf_counter() - start) / packets

    return ns.call(run)


def bench_iptables(sizes: Sequence[int], packets: int, rounds: int) -> dict[int, tuple[float, float]]:
    """Services -> (s per new flow via the ClusterIP, s per new flow to the backend directly)."""
    out: dict[int, tuple[float, float]] = {}
    for n in sizes:
        # Fresh namespaces per size: every measured packet leaves a conntrack entry behind.
        with nat_namespace(0) as empty, nat_namespace(n) as ns:
            target = n // 2
            with_xlate, without = [], []
            for _ in range(rounds):
                with_xlate.append(send_new_flows(ns, cluster_ip(target), SVC_PORT, packets))
                without.append(send_new_flows(empty, backend_ip(target), BACKEND_PORT, packets))
            out[n] = (statistics.median(with_xlate), statistics.median(without))
    return out


# ====================================================================== report
def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    return "\n".join([line, *("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args(argv)
    samples, packets, rounds = (2_000, 1_000, 3) if args.quick else (20_000, 2_000, 5)
    try:
        EBPFBackend.probe()
    except BackendUnavailableError as exc:
        print(f"bench_services: skipped: {exc}")
        return 0
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"kernel {platform.release()}, {os.cpu_count()} CPUs, load average {load}")
    ebpf = bench_ebpf(SIZES, samples, rounds)
    ipt = bench_iptables(SIZES, packets, rounds)
    rows = []
    for n in SIZES:
        e_with, e_without = ebpf[n]
        i_with, i_without = ipt[n]
        rows.append(
            [
                f"{n:,}",
                f"{e_with:.0f}",
                f"{e_without:.0f}",
                f"{e_with / e_without:.2f}x",
                f"{i_with * 1e6:.2f}",
                f"{i_without * 1e6:.2f}",
                f"{(i_with - i_without) * 1e6:+.2f}",
                f"{i_with / i_without:.2f}x",
            ]
        )
    print()
    print(
        f"Service translation per packet, ratios to no translation (medians of {rounds} rounds; "
        f"eBPF: {samples:,} test_run samples each, iptables-nft: {packets:,} new flows each)"
    )
    print()
    print(
        table(
            [
                "services",
                "eBPF ns",
                "eBPF direct ns",
                "eBPF ratio",
                "iptables us/flow",
                "direct us/flow",
                "added us",
                "iptables ratio",
            ],
            rows,
        )
    )
    flat = max(ebpf[n][0] / ebpf[n][1] for n in SIZES) / min(ebpf[n][0] / ebpf[n][1] for n in SIZES)
    print()
    print(f"eBPF ratio spread over {SIZES[0]:,}..{SIZES[-1]:,} services: {flat:.2f}x (flat: close to 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
