"""Ownership of kernel objects: no fd leaks, idempotent close, warning finalizers, errors."""

from __future__ import annotations

import errno
import gc
import ipaddress
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from ciliumpy._datapath import Direction, EndpointRecord, IPAddress, MapStateKey, Packet, PolicyEntry, Protocol
from ciliumpy.backends import Backend, DatapathUpdate, load_backend
from ciliumpy.backends import _ebpf as ebpf_module
from ciliumpy.backends import _libbpf as L
from ciliumpy.backends._ebpf import OBJECT_PATH, EBPFBackend
from ciliumpy.exceptions import BackendUnavailableError, BPFError, MapFullError

ROOT = Path(__file__).resolve().parents[2]
ING = Direction.INGRESS


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_leak_over_10000_operations(ebpf_available: None) -> None:
    rng = random.Random(1234)
    ep_ip = ipaddress.ip_address("10.0.0.1")
    packets = [Packet(src=f"10.1.0.{i}", dst=ep_ip, protocol=Protocol.TCP, dport=80 + i % 3) for i in range(1, 20)]
    gc.collect()
    before = open_fds()
    # Finalizers would close a forgotten OwnedFd and hide the leak from the fd count: a
    # ResourceWarning from any of them fails the test too.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        _churn(rng, packets, ep_ip)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert open_fds() == before


def _churn(rng: random.Random, packets: list[Packet], ep_ip: IPAddress) -> None:
    ops = 0
    while ops < 10_000:
        # Each backend lives for a while: loading is part of what must not leak.
        with EBPFBackend(policy_map_max_entries=8, ipcache_max_entries=512) as backend:
            backend.apply(DatapathUpdate(endpoints_upsert={1: EndpointRecord(endpoint_id=1, identity=9, ips=(ep_ip,))}))
            for _ in range(1_000):
                ops += 1
                roll = rng.random()
                if roll < 0.04:  # a policy swap (two inner-map fds come and go)
                    port = rng.randrange(1, 1024)
                    key = MapStateKey(rng.choice((0, 300)), ING, Protocol.TCP, port, 16)
                    backend.apply(
                        DatapathUpdate(policy_replace=frozenset({1}), policy_upsert={1: {key: PolicyEntry()}})
                    )
                elif roll < 0.06:  # a failing swap: the staged trie must be closed
                    too_many = {MapStateKey(0, ING, Protocol.UDP, p, 16): PolicyEntry() for p in range(1, 20)}
                    with pytest.raises(MapFullError):
                        backend.apply(DatapathUpdate(policy_replace=frozenset({1}), policy_upsert={1: too_many}))
                elif roll < 0.15:
                    nets = {ipaddress.ip_network(f"10.1.0.{rng.randrange(256)}/32"): 300}
                    backend.apply(DatapathUpdate(ipcache_upsert=nets))
                elif roll < 0.85:
                    backend.evaluate(rng.choice(packets), ING)
                elif roll < 0.92:
                    backend.policy_counters(1)
                elif roll < 0.96:
                    backend.auth_pairs.add((1, 300, 1))
                    backend.auth_pairs.discard((1, 300, 1))
                else:
                    backend.reset_conntrack()


def test_close_is_idempotent_and_closed_backend_refuses_work(ebpf_available: None) -> None:
    before = open_fds()
    backend = EBPFBackend()
    assert open_fds() > before
    backend.close()
    backend.close()
    assert backend.closed
    assert open_fds() == before
    with pytest.raises(ValueError, match="closed"):
        backend.evaluate(Packet(src="10.0.0.1", dst="10.0.0.2", dport=1), ING)
    with pytest.raises(ValueError, match="closed"):
        backend.apply(DatapathUpdate())
    with pytest.raises(ValueError, match="closed"):
        backend.auth_pairs.add((1, 2, 3))


def test_context_manager_closes(ebpf_available: None) -> None:
    with EBPFBackend() as backend:
        assert not backend.closed
    assert backend.closed


def test_unclosed_backend_warns_and_is_released(ebpf_available: None) -> None:
    gc.collect()
    before = open_fds()
    backend = EBPFBackend()
    with pytest.warns(ResourceWarning, match="EBPFBackend was not closed"):
        del backend
        gc.collect()
    assert open_fds() == before


def test_unclosed_owned_fd_warns(ebpf_available: None) -> None:
    before = open_fds()
    owned = L.map_create_lpm(b"cil_leak_test", 8, 4, 1, L.BPF_F_NO_PREALLOC)
    with pytest.warns(ResourceWarning, match="unclosed BPF map cil_leak_test"):
        del owned
        gc.collect()
    assert open_fds() == before


def test_backend_is_registered_under_its_name(ebpf_available: None) -> None:
    backend = load_backend("ebpf")
    try:
        assert isinstance(backend, EBPFBackend)
        assert isinstance(backend, Backend)  # the runtime-checkable protocol
        assert {"conntrack", "counters", "live"} <= backend.capabilities
    finally:
        backend.close()


# ---------------------------------------------------------------- load errors
def _section(elf: bytes, wanted: str) -> tuple[int, int]:
    """(offset, size) of an ELF64 section, by name."""
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name = struct.unpack_from("<I", elf, base)[0]
        offset, size = struct.unpack_from("<QQ", elf, base + 24)
        return name, offset, size

    strtab = header(shstrndx)[1]
    for i in range(shnum):
        name, offset, size = header(i)
        end = elf.index(b"\0", strtab + name)
        if elf[strtab + name : end].decode() == wanted:
            return offset, size
    raise LookupError(wanted)


def test_verifier_rejection_carries_the_log(ebpf_available: None, tmp_path: Path) -> None:
    elf = bytearray(OBJECT_PATH.read_bytes())
    offset, _ = _section(bytes(elf), "tc")
    # Replace cil_from_container's first instruction with `r0 = r3`: only r1 and r10 are set
    # at entry, so the verifier must reject the read of r3, whatever clang emitted there.
    elf[offset : offset + 8] = bytes([0xBF, 0x30, 0, 0, 0, 0, 0, 0])
    broken = tmp_path / "broken.bpf.o"
    broken.write_bytes(bytes(elf))
    gc.collect()
    before = open_fds()
    with pytest.raises(BPFError) as info:
        EBPFBackend(object_path=broken)
    assert info.value.errno == errno.EACCES
    assert info.value.function == "bpf_object__load"
    assert "R3 !read_ok" in info.value.verifier_log
    assert "cil_from_container" in info.value.verifier_log
    assert "verifier log" in str(info.value)
    gc.collect()
    assert open_fds() == before


def test_probe_explains_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libbpf() -> tuple[int, int]:
        raise OSError(errno.ENOENT, "libbpf.so.1: cannot open shared object file")

    monkeypatch.setattr(ebpf_module, "_has_bpf_privileges", lambda: False)
    monkeypatch.setattr(ebpf_module, "_kernel_version", lambda: (5, 4))
    monkeypatch.setattr(L, "version", no_libbpf)
    with pytest.raises(BackendUnavailableError) as info:
        EBPFBackend.probe()
    message = str(info.value)
    assert "CAP_BPF" in message
    assert "apt-get install libbpf1" in message
    assert "Linux >= 5.10" in message


# ---------------------------------------------------------------- live attachment
ATTACH_SCRIPT = textwrap.dedent(
    """
    import subprocess, sys
    from ciliumpy._datapath import Direction
    from ciliumpy.backends._ebpf import EBPFBackend

    def filters(hook):
        return subprocess.run(["tc", "filter", "show", "dev", "cpy0", hook],
                              capture_output=True, text=True, check=True).stdout

    with EBPFBackend() as backend:
        out = backend.attach("cpy0", program=Direction.EGRESS, hook="ingress")
        inn = backend.attach("cpy0", program=Direction.INGRESS, hook="egress")
        print("INGRESS", filters("ingress").replace("\\n", " "))
        print("EGRESS", filters("egress").replace("\\n", " "))
        print("IDS", out.prog_id, inn.prog_id)
        out.detach()
        out.detach()
        print("AFTER_DETACH", repr(filters("ingress")))
    print("AFTER_CLOSE", repr(filters("egress")))
    """
)


def test_attach_and_detach_in_a_network_namespace(ebpf_available: None) -> None:
    ns = f"cpyt{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "cpy0", "type", "veth", "peer", "name", "cpy1"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "cpy0", "up"], check=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        result = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", ATTACH_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
        # The kernel keeps 15 characters of a program name.
        assert "cil_from_contai" in lines["INGRESS"]
        assert "cil_to_containe" in lines["EGRESS"]
        assert "direct-action" in lines["INGRESS"]
        ids = lines["IDS"].split()
        assert all(int(i) > 0 for i in ids)
        assert lines["AFTER_DETACH"] == "''"
        assert lines["AFTER_CLOSE"] == "''"  # close() detached the remaining program
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_detach_from_another_namespace_leaves_an_equal_ifindex_alone(ebpf_available: None) -> None:
    """Two namespaces, each with a cpy0 of the same ifindex and the same filter handle/prio."""
    from ciliumpy.lab._netns import NAME_PREFIX, NetNS, new_token

    def filters(ns: NetNS) -> str:
        return subprocess.run(
            ["tc", "-n", ns.name, "filter", "show", "dev", "cpy0", "ingress"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    token = new_token()
    a, b = NetNS(f"{NAME_PREFIX}{token}-a"), NetNS(f"{NAME_PREFIX}{token}-b")
    try:
        for ns in (a, b):
            ns.ip(batch=["link add cpy0 type veth peer name cpy1", "link set cpy0 up"])
        assert a.call(lambda: socket.if_nametoindex("cpy0")) == b.call(lambda: socket.if_nametoindex("cpy0"))
        gc.collect()
        before = open_fds()
        backend = EBPFBackend()
        try:
            in_a = a.call(lambda: backend.attach("cpy0", program=Direction.EGRESS, hook="ingress"))
            in_b = b.call(lambda: backend.attach("cpy0", program=Direction.EGRESS, hook="ingress"))
            assert (in_a.ifindex, in_a.handle, in_a.priority) == (in_b.ifindex, in_b.handle, in_b.priority)
            b.call(in_a.detach)  # from B's thread: must remove A's filter, not B's
            assert filters(a) == ""
            assert "cil_from_contai" in filters(b)
            in_a.detach()
            assert not in_a.attached and in_b.attached
        finally:
            backend.close()  # from this thread's (root) namespace: detaches in_b in B
        assert filters(b) == ""
        assert not in_b.attached
        gc.collect()
        assert open_fds() == before  # the namespace fds went with the attachments
    finally:
        a.close()
        b.close()
