"""eBPF datapath benchmark: kernel per-packet cost, and throughput through the live lab.

Two parts, each with its baselines measured in the same run (needs root; see docs/ebpf-bench.md):

(a) ``test_run``: the kernel-reported time per packet of ``cil_to_container`` under
    ``BPF_PROG_TEST_RUN`` (events off), for 10 / 10k / 1M ipcache prefixes x 10 / 1k / 100k
    policy entries, on four frames -- an allowed established flow (``hit``), a known peer
    without a matching entry (``deny``), an unknown peer (``world``) and ARP (``non-IP``, the
    program's minimal path) -- against ``bench/tc_pass.bpf.c`` (``return TC_ACT_OK``,
    compiled here with clang), whose time is the harness overhead every program pays.

(b) ``throughput``: iperf3 between two endpoints of a :class:`ciliumpy.lab.Lab` (client
    netns -> node netns routing -> server netns), TCP and 64-byte UDP (``-u -l 64 -b 0``),
    with no filter, with ``tc_pass`` on the same tc hooks as the datapath (the hook's own cost,
    the floor of any tc datapath), with the eBPF datapath attached while the server's policy
    map holds 10 / 1k / 10k entries (local delivery, as Cilium with BPF host routing: one
    program enforces both sides and hands the packet to the server's namespace), the same at
    10k entries with the node's IP stack routing between the veths (two programs per
    packet, Cilium's legacy host routing), and with an iptables chain (nf_tables backend, loaded by
    ``iptables-nft-restore`` into the node's FORWARD chain) of 10 / 1k / 10k non-matching
    rules.  Conditions run in alternating order over several passes; medians are reported
    as ratios to "no filter".  Target: eBPF at 10k entries keeps >= 0.9x of the unfiltered
    small-packet rate.

``--quick`` shrinks the grid, the repeat count and the iperf3 time for a smoke run.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import ipaddress
import json
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ciliumpy import Cluster, Direction, MapStateKey, Packet, PolicyEntry, Protocol
from ciliumpy._datapath import EndpointRecord, IPAddress
from ciliumpy.backends import DatapathUpdate
from ciliumpy.backends import _bpfstructs as S
from ciliumpy.backends import _libbpf as L
from ciliumpy.backends._ebpf import EBPFBackend, build_frame
from ciliumpy.exceptions import BackendUnavailableError
from ciliumpy.lab import HOST, Lab
from ciliumpy.lab._lab import _tc_attach

HERE = Path(__file__).resolve().parent
BASELINE_SOURCE = HERE / "tc_pass.bpf.c"


# ====================================================================== (a) test_run
EP_ID, EP_IDENTITY = 100, 1000
EP_IP = ipaddress.ip_address("192.168.0.10")
PEER_IP = ipaddress.ip_address("10.1.2.3")  # inside the ipcache filler range, /32 of its own
PEER_IDENTITY = 5000
WORLD_IP = ipaddress.ip_address("198.51.100.1")
ALLOWED_PORT, DENIED_PORT = 80, 81


def _frame(src: IPAddress, dport: int) -> bytes:
    return build_frame(Packet(src, EP_IP, int(Protocol.TCP), sport=40000, dport=dport, length=64))


ARP_FRAME = bytes.fromhex("ffffffffffff02000000000108060001080006040001") + bytes(28)

FRAMES: dict[str, tuple[bytes, int]] = {  # name: (frame, expected tc verdict)
    "hit": (_frame(PEER_IP, ALLOWED_PORT), 0),
    "deny": (_frame(PEER_IP, DENIED_PORT), 2),
    "world": (_frame(WORLD_IP, ALLOWED_PORT), 2),
    "non-IP": (ARP_FRAME, 0),
}


def run_ns(prog_fd: int, frame: bytes, repeat: int) -> tuple[float, int]:
    """Kernel-reported mean ns per run of ``frame`` over ``repeat`` runs, and the verdict."""
    data = ctypes.create_string_buffer(frame, len(frame))
    run = L.opts(
        L.bpf_test_run_opts,
        data_in=ctypes.cast(data, ctypes.c_void_p),
        data_size_in=len(frame),
        repeat=repeat,
    )
    L.library().bpf_prog_test_run_opts(prog_fd, ctypes.byref(run))
    return float(run.duration), int(run.retval)


@contextmanager
def baseline_program() -> Iterator[int | None]:
    """The fd of ``tc_pass`` compiled from bench/tc_pass.bpf.c, or None without clang."""
    clang = shutil.which("clang")
    if clang is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ciliumpy-bench-") as tmp:
        obj_path = Path(tmp) / "tc_pass.o"
        subprocess.run(
            [clang, "-O2", "-g", "-target", "bpf", "-c", str(BASELINE_SOURCE), "-o", str(obj_path)],
            check=True,
            timeout=60,
        )
        lib = L.library()
        data = obj_path.read_bytes()
        buf = ctypes.create_string_buffer(data, len(data))  # libbpf reads it until close
        open_opts = L.opts(L.bpf_object_open_opts, object_name=b"tc_pass")
        obj = lib.bpf_object__open_mem(buf, len(data), ctypes.byref(open_opts))
        try:
            lib.bpf_object__load(obj)
            yield int(lib.bpf_program__fd(lib.bpf_object__find_program_by_name(obj, b"tc_pass")))
        finally:
            lib.bpf_object__close(obj)


def fill_ipcache(backend: EBPFBackend, offsets: Sequence[int]) -> None:
    """Write /32 prefixes 10.0.0.0 + offset straight into cil_ipcache (batched).

    The backend's own sync diffs against what it applied, so filler written here is left
    alone by later ``apply()`` calls; going through ``apply()`` would convert the whole
    ipcache in Python on every policy change of the grid.
    """
    fd = backend.map_fd("cil_ipcache")
    key_size, value_size = ctypes.sizeof(S.IpcacheKey), ctypes.sizeof(S.IpcacheEntry)
    template = bytes(S.ipcache_key_to_c(ipaddress.ip_network("10.0.0.0/32")))
    head, tail = template[:8], template[12:]  # prefixlen/cluster/family, then addr bytes 4..15
    base = int(ipaddress.ip_address("10.0.0.0"))
    value = bytes(S.IpcacheEntry(sec_identity=PEER_IDENTITY + 1))
    chunk = 100_000
    for start in range(0, len(offsets), chunk):
        part = offsets[start : start + chunk]
        raw = b"".join(head + struct.pack("!I", base + off) + tail for off in part)
        keys = (S.IpcacheKey * len(part)).from_buffer_copy(raw)
        values = (S.IpcacheEntry * len(part)).from_buffer_copy(value * len(part))
        assert ctypes.sizeof(keys) == key_size * len(part) and ctypes.sizeof(values) == value_size * len(part)
        L.map_update_batch(fd, keys, values)


def policy_table(entries: int, rng: random.Random) -> dict[MapStateKey, PolicyEntry]:
    """The endpoint's ingress table: the allow for PEER tcp/80 plus random L3/L4 filler."""
    table = {MapStateKey(PEER_IDENTITY, Direction.INGRESS, int(Protocol.TCP), ALLOWED_PORT, 16): PolicyEntry()}
    while len(table) < entries:
        ident = rng.randrange(256, 1 << 24)
        if ident == PEER_IDENTITY:
            continue
        key = MapStateKey(ident, Direction.INGRESS, int(Protocol.TCP), rng.randrange(1, 65536), 16)
        table[key] = PolicyEntry()
    return table


@dataclasses.dataclass
class CostCell:
    ipcache: int
    policy: int
    ns: dict[str, float]


def bench_test_run(
    ipcache_sizes: Sequence[int], policy_sizes: Sequence[int], repeat: int, runs: int, object_path: Path | None
) -> tuple[dict[str, float], list[CostCell]]:
    """Baselines (ns) and the per-packet cost of every grid cell."""
    rng = random.Random(1)
    peer_offset = int(PEER_IP) - int(ipaddress.ip_address("10.0.0.0"))
    population = [o for o in rng.sample(range(1 << 24), max(ipcache_sizes) + 1) if o != peer_offset]
    results: list[CostCell] = []
    baselines: dict[str, float] = {}

    def median_ns(prog_fd: int, name: str, frame: bytes, verdict: int) -> float:
        samples = []
        for _ in range(runs):
            ns, retval = run_ns(prog_fd, frame, repeat)
            if retval != verdict:
                raise SystemExit(f"test_run of {name!r} returned {retval}, expected {verdict}: wrong path measured")
            samples.append(ns)
        return statistics.median(samples)

    with EBPFBackend(
        object_path=object_path,
        policy_map_max_entries=max(16384, 2 * max(policy_sizes)),
        ipcache_max_entries=max(ipcache_sizes) + 4096,
        event_mode=S.EventMode.NONE,
    ) as backend:
        backend.apply(
            DatapathUpdate(
                endpoints_upsert={EP_ID: EndpointRecord(EP_ID, EP_IDENTITY, (EP_IP,))},
                ipcache_upsert={
                    ipaddress.ip_network(EP_IP): EP_IDENTITY,
                    ipaddress.ip_network(PEER_IP): PEER_IDENTITY,
                },
                policy_upsert={EP_ID: policy_table(1, rng)},
                policy_replace=frozenset({EP_ID}),
            )
        )
        prog = backend.program_fds[Direction.INGRESS]
        with baseline_program() as pass_fd:
            if pass_fd is not None:
                baselines["tc_pass (return TC_ACT_OK)"] = median_ns(pass_fd, "tc_pass", ARP_FRAME, 0)
        baselines["ciliumpy, non-IP frame"] = median_ns(prog, "non-IP", ARP_FRAME, 0)
        filled = 2  # the endpoint's and the peer's /32
        for ipc in ipcache_sizes:
            fill_ipcache(backend, population[max(0, filled - 2) : max(0, ipc - 2)])
            filled = max(filled, ipc)
            for pol in policy_sizes:
                backend.apply(
                    DatapathUpdate(policy_upsert={EP_ID: policy_table(pol, rng)}, policy_replace=frozenset({EP_ID}))
                )
                backend.reset_conntrack()
                ns = {name: median_ns(prog, name, frame, verdict) for name, (frame, verdict) in FRAMES.items()}
                results.append(CostCell(ipc, pol, ns))
                print(
                    f"  test_run ipcache={ipc:>9,} policy={pol:>7,}: "
                    + "  ".join(f"{k} {v:.0f} ns" for k, v in ns.items()),
                    flush=True,
                )
    return baselines, results


# ====================================================================== (b) throughput
CLIENT, SERVER = "bench/client", "bench/server"
CLIENT_IP, SERVER_IP = "10.244.9.10", "10.244.9.11"
IPERF_PORT = 5201


def _cnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": spec,
    }


def bench_cluster(entries: int, object_path: Path | None) -> Cluster:
    """Client and server endpoints; the server's policy map holds ``entries`` entries.

    The server admits the client on 5201/TCP+UDP; filler rules admit the client on other TCP
    ports (one entry each, in the same identity's part of the trie as the hit).
    """
    backend = EBPFBackend(
        object_path=object_path, event_mode=S.EventMode.NONE, policy_map_max_entries=max(16384, 2 * entries)
    )
    cluster = Cluster(backend=backend)
    cluster.add_endpoint(CLIENT, labels={"app": "client"}, ips=[CLIENT_IP])
    cluster.add_endpoint(SERVER, labels={"app": "server"}, ips=[SERVER_IP])
    client = {"matchLabels": {"app": "client"}}
    selector = {"matchLabels": {"app": "server"}}
    iperf = [{"port": str(IPERF_PORT), "protocol": p} for p in ("TCP", "UDP")]
    cluster.apply(
        _cnp(
            "iperf",
            {"endpointSelector": selector, "ingress": [{"fromEndpoints": [client], "toPorts": [{"ports": iperf}]}]},
        )
    )
    filler = max(0, entries - len(cluster.map_state(SERVER)))
    if filler:
        ports = [{"port": str(10000 + i), "protocol": "TCP"} for i in range(filler)]
        # The CRD allows at most 40 ports per toPorts item.
        to_ports = [{"ports": ports[i : i + 40]} for i in range(0, len(ports), 40)]
        cluster.apply(
            _cnp(
                "filler", {"endpointSelector": selector, "ingress": [{"fromEndpoints": [client], "toPorts": to_ports}]}
            )
        )
    return cluster


@dataclasses.dataclass(frozen=True)
class Condition:
    name: str
    # "none" | "hook" (tc_pass on the datapath's hooks) | "ebpf" (local delivery, Cilium's BPF
    # host routing) | "ebpf-stack" (the node's IP stack forwards; each veth's program judges
    # its side, Cilium's legacy host routing) | "nft"
    kind: str
    size: int = 0


def nft_rules(count: int) -> str:
    """A filter table whose FORWARD chain walks ``count`` non-matching rules, then accepts."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for i in range(count):
        lines.append(f"-A FORWARD -s 198.18.{i >> 8 & 255}.{i & 255}/32 -p tcp -m tcp --dport {10000 + i} -j DROP")
    lines += ["-A FORWARD -j ACCEPT", "COMMIT", ""]
    return "\n".join(lines)


def _listening(pid: int, port: int) -> bool:
    # /proc/<pid>/net shows the sockets of that process's network namespace.
    want = f":{port:04X} "
    for table in ("tcp6", "tcp"):
        try:
            text = Path(f"/proc/{pid}/net/{table}").read_text()
        except OSError:
            return False
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and (fields[1] + " ").endswith(want) and fields[3] == "0A":
                return True
    return False


@contextmanager
def iperf_server(lab: Lab) -> Iterator[subprocess.Popen[bytes]]:
    """``iperf3 -s`` in the server's netns, pinned to CPU 1; stopped by PID on exit."""
    proc = subprocess.Popen(
        lab.command(SERVER, "iperf3", "-s", "-A", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(proc.pid, IPERF_PORT):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"iperf3 server did not start (exit status {proc.poll()})")
            time.sleep(0.02)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def iperf_client(lab: Lab, duration: float, *extra: str) -> dict[str, Any]:
    cmd = lab.command(CLIENT, "iperf3", "-c", SERVER_IP, "-A", "0", "-J", "-t", str(duration), *extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=False)
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"iperf3 client failed: {proc.stderr.strip() or proc.stdout[:200]}") from None
    if "error" in data:
        raise SystemExit(f"iperf3 client failed: {data['error']}")
    return data


@dataclasses.dataclass
class Sample:
    tcp_gbps: float
    udp_sent_pps: float
    udp_recv_pps: float
    softirq_ns: float  # CPU0 softirq time per sent UDP packet


METRICS = ("tcp_gbps", "udp_sent_pps", "udp_recv_pps", "softirq_ns")


def cpu0_softirq_ns() -> float:
    """CPU 0's cumulative softirq time (/proc/stat, USER_HZ ticks) in ns.

    The client is pinned to CPU 0 and veth hands packets to the backlog of the sending CPU,
    so the whole receive/forward path -- where tc programs and netfilter run -- is softirq
    work on CPU 0.  Unlike the packet rate, its time per packet does not depend on how much
    CPU other processes on the machine took during the run.
    """
    fields = Path("/proc/stat").read_text().splitlines()[1].split()
    assert fields[0] == "cpu0", fields[0]
    return int(fields[7]) * 1e9 / os.sysconf("SC_CLK_TCK")


def run_condition(
    cond: Condition,
    clusters: dict[int, Cluster],
    duration: float,
    counts_optional: bool = False,
    pass_fd: int | None = None,
) -> Sample:
    filtered = cond.kind in ("ebpf", "ebpf-stack")
    cluster = clusters[cond.size] if filtered else next(iter(clusters.values()))
    backend = cluster.backend
    assert isinstance(backend, EBPFBackend)
    server_id = cluster.endpoint_id(SERVER)

    def counted() -> int:
        return sum(p for p, _b in backend.policy_counters(server_id).values())

    before = counted()
    with Lab(cluster, attach=filtered, ipv6=False, local_delivery=cond.kind == "ebpf") as lab:
        if cond.kind == "hook":
            assert pass_fd is not None
            hooks = {"ingress": pass_fd, "egress": pass_fd}
            for ref in lab.endpoints:
                host_if = lab.interface(ref)
                lab.node.call(lambda host_if=host_if: _tc_attach(host_if, hooks))
        if cond.kind == "nft":
            subprocess.run(
                lab.command(HOST, "iptables-nft-restore"),
                input=nft_rules(cond.size),
                text=True,
                check=True,
                timeout=120,
            )
            listed = subprocess.run(
                lab.command(HOST, "iptables-nft", "-S", "FORWARD"), capture_output=True, text=True, check=True
            ).stdout
            assert listed.count("-A FORWARD") == cond.size + 1, "iptables rules were not loaded"
        with iperf_server(lab):
            tcp = iperf_client(lab, duration)
            soft_before = cpu0_softirq_ns()
            udp = iperf_client(lab, duration, "-u", "-l", "64", "-b", "0")
            softirq = cpu0_softirq_ns() - soft_before
    # The datapath must have seen the traffic exactly when it was attached (a build given with
    # --object may not count packets at all: then only the "not attached" half is checked).
    seen = counted() - before
    if (seen > 0) != filtered and not (seen == 0 and counts_optional):
        raise SystemExit(f"{cond.name}: the datapath counted {seen} packets; the wrong path was measured")
    sent, received = udp["end"]["sum_sent"], udp["end"]["sum_received"]
    return Sample(
        tcp_gbps=tcp["end"]["sum_received"]["bits_per_second"] / 1e9,
        udp_sent_pps=sent["packets"] / sent["seconds"],
        udp_recv_pps=(received["packets"] - received["lost_packets"]) / received["seconds"],
        softirq_ns=softirq / sent["packets"],
    )


def bench_throughput(
    sizes: Sequence[int], duration: float, passes: int, object_path: Path | None, focus: bool = False
) -> dict[Condition, list[Sample]]:
    """Samples per condition, pass by pass; "no filter" runs at both ends of every pass.

    ``focus`` keeps only what the target is about: no filter, the bare tc hooks and the
    datapath at the largest size, delivered locally and stack-routed (no iptables rows).
    """
    if focus:
        sizes = sizes[-1:]
    for tool in ("iperf3", "iptables-nft-restore", "iptables-nft"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y --no-install-recommends iperf3 iptables")
    with baseline_program() as pass_fd:
        conditions = [Condition("no filter", "none")]
        if pass_fd is not None:  # without clang there is no tc_pass, hence no hook-only row
            conditions.append(Condition("tc hooks, return TC_ACT_OK", "hook"))
        conditions += [Condition(f"eBPF, {n:,} entries", "ebpf", n) for n in sizes]
        conditions.append(Condition(f"eBPF stack-routed, {sizes[-1]:,} entries", "ebpf-stack", sizes[-1]))
        if not focus:
            conditions += [Condition(f"iptables-nft, {n:,} rules", "nft", n) for n in sizes]
        clusters = {n: bench_cluster(n, object_path) for n in sizes}
        for n, c in clusters.items():
            print(f"  server policy map for {n:,}: {len(c.map_state(SERVER)):,} entries", flush=True)
        samples: dict[Condition, list[Sample]] = {c: [] for c in conditions}
        try:
            for p in range(passes):
                # Alternate the order so drift over the run does not favour one end of the list;
                # the baseline brackets each pass, so every condition has one measured near it.
                middle = conditions[1:] if p % 2 == 0 else conditions[:0:-1]
                for cond in [conditions[0], *middle, conditions[0]]:
                    s = run_condition(
                        cond, clusters, duration, counts_optional=object_path is not None, pass_fd=pass_fd
                    )
                    samples[cond].append(s)
                    print(
                        f"  pass {p + 1} {cond.name:<26} TCP {s.tcp_gbps:6.2f} Gbps"
                        f"  UDP-64B sent {s.udp_sent_pps:>9,.0f} pps  received {s.udp_recv_pps:>9,.0f} pps"
                        f"  softirq {s.softirq_ns:,.0f} ns/pkt",
                        flush=True,
                    )
        finally:
            for c in clusters.values():
                c.close()
    return samples


# ====================================================================== output
def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, rule, *body])


def report_test_run(baselines: dict[str, float], results: list[CostCell], repeat: int, runs: int) -> str:
    base_name, base = next(iter(baselines.items()))
    out = [f"(a) BPF_PROG_TEST_RUN, cil_to_container, events off, median of {runs} x {repeat:,} repeats", ""]
    out.append(
        table(["baseline", "ns/packet", "ratio"], [[k, f"{v:.0f}", f"{v / base:.2f}x"] for k, v in baselines.items()])
    )
    out.append("")
    kinds = list(FRAMES)
    rows = []
    for r in results:
        row = [f"{r.ipcache:,}", f"{r.policy:,}"]
        for k in kinds:
            row.append(f"{r.ns[k]:.0f} ({r.ns[k] / base:.1f}x)")
        rows.append(row)
    out.append(table(["ipcache prefixes", "policy entries", *[f"{k} ns" for k in kinds]], rows))
    out.append(f"\nratios are to {base_name} = {base:.0f} ns, the harness overhead included in every number")
    return "\n".join(out)


def report_throughput(samples: dict[Condition, list[Sample]], duration: float, passes: int) -> str:
    none = next(c for c in samples if c.kind == "none")
    # The baseline of each pass is the mean of its two "no filter" runs (start and end).
    runs = samples[none]
    per_pass = [
        Sample(*((getattr(a, f) + getattr(b, f)) / 2 for f in METRICS))
        for a, b in zip(runs[::2], runs[1::2], strict=True)
    ]
    med = {c: Sample(*(statistics.median(getattr(s, f) for s in ss) for f in METRICS)) for c, ss in samples.items()}
    base = med[none]

    def paired(c: Condition) -> tuple[float, float, float]:
        ratios = [s.udp_sent_pps / b.udp_sent_pps for s, b in zip(samples[c], per_pass, strict=True)]
        return statistics.median(ratios), min(ratios), max(ratios)

    rows = []
    for c, m in med.items():
        if c is none:
            spread = "-"
        else:
            mid, lo, hi = paired(c)
            spread = f"{mid:.2f}x [{lo:.2f}-{hi:.2f}]"
        rows.append(
            [
                c.name,
                f"{m.tcp_gbps:.2f}",
                f"{m.tcp_gbps / base.tcp_gbps:.2f}x",
                f"{m.udp_sent_pps:,.0f}",
                f"{m.udp_sent_pps / base.udp_sent_pps:.2f}x",
                spread,
                f"{m.udp_recv_pps:,.0f}",
                f"{m.udp_recv_pps / base.udp_recv_pps:.2f}x",
                f"{m.softirq_ns:,.0f}",
                f"{m.softirq_ns / base.softirq_ns:.2f}x",
            ]
        )
    headers = [
        "condition",
        "TCP Gbps",
        "ratio",
        "UDP-64B sent pps",
        "ratio",
        "per-pass ratio [min-max]",
        "UDP-64B recv pps",
        "ratio",
        "CPU0 softirq ns/pkt",
        "x no filter",
    ]
    out = [
        f"(b) iperf3 through the lab (client netns -> node netns -> server netns), medians of {passes} passes"
        f" x {duration:g} s; ratios to no filter (higher is better, except softirq cost per packet)",
        "",
        table(headers, rows),
    ]
    ebpf = [c for c in med if c.kind == "ebpf"]
    if ebpf:
        top = max(ebpf, key=lambda c: c.size)
        mid, lo, hi = paired(top)
        verdict = "met" if mid >= 0.9 else "NOT met"
        extra = med[top].softirq_ns - base.softirq_ns
        out.append(
            f"\ntarget (eBPF at {top.size:,} entries >= 0.9x the unfiltered small-packet rate): per-pass median "
            f"{mid:.2f}x [{lo:.2f}-{hi:.2f}], ratio of medians {med[top].udp_sent_pps / base.udp_sent_pps:.2f}x: "
            f"{verdict}; softirq time per packet {extra:+,.0f} ns against no filter (one program per packet "
            f"with both decisions, and no routing in the node)"
        )

        def against_base(c: Condition) -> str:
            cmid, clo, chi = paired(c)
            added = med[c].softirq_ns - base.softirq_ns
            return f"per-pass median {cmid:.2f}x [{clo:.2f}-{chi:.2f}], {added:+,.0f} ns of softirq per packet"

        stack = next((c for c in med if c.kind == "ebpf-stack"), None)
        if stack is not None:
            out.append(f"stack-routed (the node routes; two programs per packet): {against_base(stack)}")
        hook = next((c for c in med if c.kind == "hook"), None)
        if hook is not None:
            out.append(
                f"tc hooks alone (tc_pass where the datapath is attached): {against_base(hook)}; "
                "the stack-routed programs' own share is "
                f"{med[stack or top].softirq_ns - med[hook].softirq_ns:,.0f} ns"
            )
    return "\n".join(out)


def environment() -> str:
    cpus = os.cpu_count()
    lib = ".".join(map(str, L.version()))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"kernel {platform.release()}, {cpus} CPUs, Python {platform.python_version()}, libbpf {lib}; "
        f"load average {load} (other work on the machine shows up as noise)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, short runs (a smoke test)")
    parser.add_argument("--part", choices=("all", "test-run", "throughput"), default="all")
    parser.add_argument("--repeat", type=int, help="test_run repeats per measurement (default 1e6, quick 1e5)")
    parser.add_argument("--runs", type=int, help="test_run measurements per cell (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="iperf3 seconds per run (default 3, quick 1)")
    parser.add_argument("--passes", type=int, help="passes over the throughput conditions (default 5, quick 1)")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--object", type=Path, help="measure this build of the datapath instead of the packaged one")
    parser.add_argument(
        "--focus",
        action="store_true",
        help="throughput of the target's conditions only (no filter, tc hooks, eBPF at 10k both ways): "
        "more passes in the same time, for a tighter paired ratio",
    )
    args = parser.parse_args(argv)
    try:
        EBPFBackend.probe()
    except BackendUnavailableError as exc:
        print(f"skipped: {exc}")
        return 0
    quick = args.quick
    repeat = args.repeat or (100_000 if quick else 1_000_000)
    runs = args.runs or (1 if quick else 3)
    duration = args.duration or (1.0 if quick else 3.0)
    passes = args.passes or (1 if quick else 5)
    ipcache_sizes = (10, 10_000, 100_000) if quick else (10, 10_000, 1_000_000)
    policy_sizes = (10, 1_000, 10_000) if quick else (10, 1_000, 100_000)
    sizes = (10, 1_000, 10_000)

    started = time.monotonic()
    parts = [environment()]
    print(parts[0], flush=True)
    sections: list[Callable[[], str]] = []
    if args.part in ("all", "test-run"):

        def part_a() -> str:
            baselines, results = bench_test_run(ipcache_sizes, policy_sizes, repeat, runs, args.object)
            return report_test_run(baselines, results, repeat, runs)

        sections.append(part_a)
    if args.part in ("all", "throughput"):

        def part_b() -> str:
            samples = bench_throughput(sizes, duration, passes, args.object, focus=args.focus)
            return report_throughput(samples, duration, passes)

        sections.append(part_b)
    for section in sections:
        text = section()
        parts.append(text)
        print("\n" + text + "\n", flush=True)
    elapsed = time.monotonic() - started
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"total {elapsed:.0f} s; load average now {load}")
    if args.markdown:
        args.markdown.write_text("\n\n".join(parts) + f"\n\n(run took {elapsed:.0f} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
