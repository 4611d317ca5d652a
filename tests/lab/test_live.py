"""Live enforcement: real sockets in network namespaces through the tc-attached datapath.

Each live verdict is compared with ``Cluster.check()`` *and* with the expected answer, so a
lab that dropped (or passed) everything could not agree with the model by accident.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ciliumpy import Action, Cluster, CTState, Direction, DropReason, Packet
from ciliumpy.backends._ebpf import EBPFBackend, build_frame
from ciliumpy.lab import HOST, Lab, LiveResult

pytestmark = pytest.mark.usefixtures("ebpf_available")

DENIED_TIMEOUT = 0.4  # a dropped exchange is only seen as silence: keep the wait short

ENDPOINTS = {
    "prod/web": ({"app": "web"}, ["10.244.1.10", "fd00:10:244::a"]),
    "prod/db": ({"app": "db"}, ["10.244.1.11", "fd00:10:244::b"]),
    "prod/other": ({"app": "other"}, ["10.244.1.12", "fd00:10:244::c"]),
}


def _cnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": spec,
    }


WEB = {"matchLabels": {"app": "web"}}
DB_POLICY = _cnp(
    "db",
    {
        "endpointSelector": {"matchLabels": {"app": "db"}},
        "ingress": [
            {
                "fromEndpoints": [WEB],
                "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}, {"port": "53", "protocol": "UDP"}]}],
            },
            {
                "fromEndpoints": [WEB],
                "icmps": [{"fields": [{"family": "IPv4", "type": 8}, {"family": "IPv6", "type": 128}]}],
            },
        ],
        # Egress enforcement on db: only web:9999. Replies to web's connections must pass
        # on conntrack, new connections from db to web on other ports must not.
        "egress": [{"toEndpoints": [WEB], "toPorts": [{"ports": [{"port": "9999", "protocol": "TCP"}]}]}],
    },
)


def _populate(cluster: Cluster) -> None:
    for ref, (labels, ips) in ENDPOINTS.items():
        cluster.add_endpoint(ref, labels=labels, ips=ips)
    cluster.apply(DB_POLICY)


@pytest.fixture
def cluster(ebpf_cluster: Cluster) -> Cluster:
    _populate(ebpf_cluster)
    return ebpf_cluster


@pytest.fixture
def lab(cluster: Cluster) -> Any:
    with Lab(cluster) as lab:
        yield lab


@pytest.fixture(params=[True, False], ids=["local-delivery", "stack-routing"])
def any_lab(request: pytest.FixtureRequest, cluster: Cluster) -> Any:
    """A lab in each of the two ways packets between endpoints can travel."""
    with Lab(cluster, local_delivery=request.param) as lab:
        assert lab.local_delivery is request.param
        yield lab


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def _live(lab: Lab, src: str, dst: str, port: int | None, proto: str, family: int, expected: bool) -> LiveResult:
    return lab.connect(src, dst, port, proto, family=family, timeout=1.0 if expected else DENIED_TIMEOUT)


CASES = [
    # src, dst, port, protocol, family, expected
    ("prod/web", "prod/db", 5432, "TCP", 4, True),
    ("prod/web", "prod/db", 5433, "TCP", 4, False),
    ("prod/other", "prod/db", 5432, "TCP", 4, False),
    ("prod/web", "prod/db", 53, "UDP", 4, True),
    ("prod/web", "prod/db", 54, "UDP", 4, False),
    ("prod/other", "prod/db", 53, "UDP", 4, False),
    ("prod/web", "prod/db", None, "ICMP", 4, True),
    ("prod/other", "prod/db", None, "ICMP", 4, False),
    ("prod/db", "prod/web", 8080, "TCP", 4, False),  # db's egress policy
    ("prod/db", "prod/web", 9999, "TCP", 4, True),
    ("prod/db", "prod/web", None, "ICMP", 4, False),
    ("prod/other", "prod/web", 5000, "UDP", 4, True),  # web has no policy
    (HOST, "prod/db", 5432, "TCP", 4, True),  # allow-localhost
    ("prod/db", HOST, 80, "TCP", 4, False),
    ("prod/web", "prod/db", 5432, "TCP", 6, True),
    ("prod/other", "prod/db", 5432, "TCP", 6, False),
    ("prod/web", "prod/db", 53, "UDP", 6, True),
    ("prod/web", "prod/db", None, "ICMP", 6, True),
    ("prod/other", "prod/db", None, "ICMP", 6, False),
]


def test_live_verdicts_equal_check(cluster: Cluster, any_lab: Lab) -> None:
    lab = any_lab
    mismatches = []
    for src, dst, port, proto, family, expected in CASES:
        live = _live(lab, src, dst, port, proto, family, expected)
        model = cluster.check(str(live.src_ip), str(live.dst_ip), port, proto)
        assert live.src_ip.version == family
        if (live.allowed, model.allowed) != (expected, expected):
            mismatches.append(f"{live.explain()}\n  check(): {model.verdict} expected allowed={expected}")
            continue
        if expected:
            assert live.reached, live.explain()
        else:
            # The drop happened in the datapath, for the reason the model gives.
            assert live.drop_reason is not None, live.explain()
            assert live.drop_reason == model.drop_reason, live.explain()
    assert not mismatches, "\n".join(mismatches)


def test_policy_change_flips_verdict_live(cluster: Cluster, lab: Lab) -> None:
    denied = lab.connect("prod/web", "prod/db", 6000, timeout=DENIED_TIMEOUT)
    assert not denied.allowed and not cluster.check("prod/web", "prod/db", 6000).allowed

    allow = _cnp(
        "db-6000",
        {
            "endpointSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"fromEndpoints": [WEB], "toPorts": [{"ports": [{"port": "6000", "protocol": "TCP"}]}]}],
        },
    )
    cluster.apply(allow)
    opened = lab.connect("prod/web", "prod/db", 6000)
    assert opened.allowed, opened.explain()
    assert cluster.check("prod/web", "prod/db", 6000).allowed

    deny = _cnp(
        "db-deny-web",
        {"endpointSelector": {"matchLabels": {"app": "db"}}, "ingressDeny": [{"fromEndpoints": [WEB]}]},
    )
    cluster.apply(deny)
    for port, proto in ((6000, "TCP"), (5432, "TCP"), (53, "UDP")):
        live = lab.connect("prod/web", "prod/db", port, proto, timeout=DENIED_TIMEOUT)
        assert not live.allowed, live.explain()
        assert live.drop_reason == DropReason.POLICY_DENY, live.explain()
        assert cluster.check("prod/web", "prod/db", port, proto).drop_reason == DropReason.POLICY_DENY

    cluster.delete(deny)
    cluster.delete(allow)
    assert lab.connect("prod/web", "prod/db", 5432).allowed
    assert not lab.connect("prod/web", "prod/db", 6000, timeout=DENIED_TIMEOUT).allowed


@pytest.mark.parametrize("proto,port", [("TCP", 5432), ("UDP", 53), ("ICMP", None)])
def test_replies_pass_on_conntrack_while_reverse_is_denied(
    cluster: Cluster, any_lab: Lab, proto: str, port: int | None
) -> None:
    lab = any_lab
    forward = lab.connect("prod/web", "prod/db", port, proto)
    assert forward.allowed, forward.explain()
    db_id = cluster.endpoint_id("prod/db")
    # db's egress policy allows only web:9999, so its answers left through from-container
    # as conntrack replies, without a policy lookup.
    answers = [e for e in forward.events if e.endpoint_id == db_id and e.direction == Direction.EGRESS]
    assert answers, forward.explain()
    assert all(e.ct_state == CTState.REPLY and e.action == Action.ALLOW for e in answers), forward.explain()

    reverse_port = None if proto == "ICMP" else forward.sport
    reverse = lab.connect("prod/db", "prod/web", reverse_port, proto, timeout=DENIED_TIMEOUT)
    assert not reverse.allowed and not reverse.reached, reverse.explain()
    assert reverse.drop_reason == DropReason.POLICY_DENIED
    assert not cluster.check("prod/db", "prod/web", reverse_port, proto).allowed


def test_detached_datapath_enforces_nothing(cluster: Cluster, lab: Lab) -> None:
    assert not lab.connect("prod/other", "prod/db", 5432, timeout=DENIED_TIMEOUT).allowed
    lab.detach()
    assert not lab.attached
    passed = lab.connect("prod/other", "prod/db", 5432)
    assert passed.allowed and passed.events == ()
    lab.attach()
    assert not lab.connect("prod/other", "prod/db", 5432, timeout=DENIED_TIMEOUT).allowed


def test_l7_redirect_passes_at_l3_l4(cluster: Cluster, lab: Lab) -> None:
    cluster.apply(
        _cnp(
            "db-http",
            {
                "endpointSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {
                        "fromEndpoints": [WEB],
                        "toPorts": [
                            {"ports": [{"port": "8080", "protocol": "TCP"}], "rules": {"http": [{"method": "GET"}]}}
                        ],
                    }
                ],
            },
        )
    )
    assert cluster.check("prod/web", "prod/db", 8080).verdict == "REDIRECTED"
    live = lab.connect("prod/web", "prod/db", 8080)
    assert live.allowed, live.explain()
    assert any(e.action == Action.REDIRECT for e in live.events), live.explain()


def test_sync_plugs_endpoints_in_and_out(cluster: Cluster, lab: Lab) -> None:
    cluster.add_endpoint("prod/late", labels={"app": "web"}, ips=["10.244.1.20"])
    live = lab.connect("prod/late", "prod/db", 5432)  # connect() syncs first
    assert live.allowed, live.explain()
    late_ns = lab.namespace("prod/late")
    assert late_ns in _netns_names()

    cluster.remove_endpoint("prod/late")
    lab.sync()
    assert "prod/late" not in lab.endpoints
    assert late_ns not in _netns_names()
    assert lab.connect("prod/web", "prod/db", 5432).allowed


def test_close_removes_namespaces_and_links(cluster: Cluster) -> None:
    links_before = _root_links()
    lab = Lab(cluster)
    names = set(lab.namespaces)
    assert len(names) == 1 + len(ENDPOINTS)
    assert names <= _netns_names()
    assert lab.connect("prod/web", "prod/db", 5432).allowed
    node = lab.namespace(HOST)
    lab.close()
    lab.close()  # idempotent
    assert not names & _netns_names()
    assert _root_links() == links_before
    assert not any(name.startswith("lxc") for name in _root_links())
    with pytest.raises(ValueError, match="closed"):
        lab.connect("prod/web", "prod/db", 5432)
    assert subprocess.run(["ip", "-n", node, "link"], capture_output=True).returncode != 0


def test_failed_construction_removes_everything(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from ciliumpy.lab import _lab

    mine = f"ciliumpy-{os.getpid()}-"
    before = {n for n in _netns_names() if n.startswith(mine)}
    calls = []
    real_attach = _lab._tc_attach

    def failing_attach(ifname: str, fds: dict[str, int]) -> None:
        calls.append(ifname)
        if len(calls) == 2:
            raise OSError(5, "injected failure")
        real_attach(ifname, fds)

    monkeypatch.setattr(_lab, "_tc_attach", failing_attach)
    with pytest.raises(OSError, match="injected failure"):
        Lab(cluster)
    assert len(calls) == 2
    assert {n for n in _netns_names() if n.startswith(mine)} == before


def test_unclosed_lab_is_cleaned_up_with_a_warning(cluster: Cluster) -> None:
    lab = Lab(cluster)
    names = set(lab.namespaces)
    with pytest.warns(ResourceWarning, match="Lab was not closed"):
        del lab
        gc.collect()
    assert not names & _netns_names()


def test_lab_needs_the_ebpf_backend() -> None:
    with Cluster() as simulated, pytest.raises(TypeError, match="eBPF backend"):
        Lab(simulated)


def test_connect_validates_its_arguments(lab: Lab) -> None:
    with pytest.raises(ValueError, match="port"):
        lab.connect("prod/web", "prod/db", None, "TCP")
    with pytest.raises(ValueError, match="protocol"):
        lab.connect("prod/web", "prod/db", 80, "SCTP")
    with pytest.raises(ValueError, match="echo"):
        lab.connect("prod/web", "prod/db", 0, "ICMP")


def test_remove_stale_deletes_only_namespaces_of_dead_processes(lab: Lab) -> None:
    from ciliumpy.lab import remove_stale

    dead = next(pid for pid in range(4_000_000, 2, -7919) if not os.path.exists(f"/proc/{pid}"))
    stale = f"ciliumpy-{dead}-abcdef-node"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in remove_stale()
        assert stale not in _netns_names()
        assert set(lab.namespaces) <= _netns_names()  # this process's lab is alive: kept
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True, check=False)


def test_connect_needs_a_common_address_family(cluster: Cluster, lab: Lab) -> None:
    from ciliumpy.exceptions import LabError

    cluster.add_endpoint("prod/v4only", labels={"app": "web"}, ips=["10.244.1.30"])
    with pytest.raises(LabError, match="IPv6"):
        lab.connect("prod/v4only", "prod/db", 5432, family=6)
    assert lab.connect("prod/v4only", "prod/db", 5432).allowed


def test_command_and_socket_run_inside_the_endpoint_namespace(lab: Lab) -> None:
    import socket

    out = subprocess.run(lab.command("prod/web", "ip", "-o", "address"), capture_output=True, text=True, check=True)
    assert "10.244.1.10/32" in out.stdout and "10.244.1.11" not in out.stdout
    assert lab.interface("prod/web").startswith("lxc")
    with lab.socket("prod/web", socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("10.244.1.10", 0))  # only this namespace owns the address
    with socket.socket() as root_sock, pytest.raises(OSError):
        root_sock.bind(("10.244.1.10", 0))


# ---------------------------------------------------------------- local delivery
_IP_RECVTTL = 12  # <linux/in.h>; Python's socket module does not export it
_IP_TTL_CMSG = 2
_IPV6_HOPLIMIT_CMSG = 52


def _node_forwarded(lab: Lab) -> int:
    """Datagrams the node namespace's IP stack forwarded, IPv4 plus IPv6 (kernel SNMP counters)."""

    def read() -> int:
        # thread-self: this worker thread's namespace (/proc/net is the process leader's)
        snmp = Path("/proc/thread-self/net/snmp").read_text().splitlines()
        names, values = (line.split()[1:] for line in snmp if line.startswith("Ip:"))
        v4 = int(values[names.index("ForwDatagrams")])
        snmp6 = dict(line.split() for line in Path("/proc/thread-self/net/snmp6").read_text().splitlines())
        return v4 + int(snmp6["Ip6OutForwDatagrams"])

    return lab.node.call(read)


def _udp_arrival(lab: Lab, src: str, dst: str, family: int, ttl: int = 64) -> int | None:
    """Send one UDP datagram with ``ttl``; the TTL / hop limit it arrived with (None: lost)."""
    src_ip, dst_ip = next(
        (a, b) for a in lab.addresses(src) for b in lab.addresses(dst) if a.version == b.version == family
    )
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    with lab.socket(dst, af, socket.SOCK_DGRAM) as server, lab.socket(src, af, socket.SOCK_DGRAM) as client:
        if family == 4:
            server.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
            client.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        else:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        server.bind((str(dst_ip), 0))
        server.settimeout(DENIED_TIMEOUT)
        client.bind((str(src_ip), 0))
        client.sendto(b"ttl", (str(dst_ip), server.getsockname()[1]))
        try:
            _, ancillary, _, _ = server.recvmsg(16, socket.CMSG_SPACE(4))
        except TimeoutError:
            return None
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, _IP_TTL_CMSG), (socket.IPPROTO_IPV6, _IPV6_HOPLIMIT_CMSG)):
            return int.from_bytes(data[:4], sys.byteorder)
    raise AssertionError(f"no TTL in {ancillary!r}")


@pytest.mark.parametrize("family", [4, 6])
def test_local_delivery_skips_the_node_stack_and_enforces_both_sides(any_lab: Lab, family: int) -> None:
    lab = any_lab
    before = _node_forwarded(lab)
    live = lab.connect("prod/web", "prod/db", 53, "UDP", family=family)
    assert live.allowed, live.explain()
    forwarded = _node_forwarded(lab) - before
    # Request and answer each judged once per side: egress of the sender, ingress of the receiver.
    hooks = sorted((e.endpoint_id, e.direction.name, e.ct_state.name) for e in live.events)
    web, db = lab.cluster.endpoint_id("prod/web"), lab.cluster.endpoint_id("prod/db")
    assert hooks == sorted(
        [(web, "EGRESS", "NEW"), (db, "INGRESS", "NEW"), (db, "EGRESS", "REPLY"), (web, "INGRESS", "REPLY")]
    ), live.explain()
    if lab.local_delivery:
        assert forwarded == 0, "the node's IP stack forwarded packets the datapath should have delivered"
    else:
        assert forwarded >= 2
    # Either way the receiver sees one router hop, and a packet that cannot take one more
    # is not delivered by the datapath: the stack drops it (ICMP time exceeded).
    assert _udp_arrival(lab, "prod/other", "prod/web", family) == 63
    assert _udp_arrival(lab, "prod/other", "prod/web", family, ttl=2) == 1
    assert _udp_arrival(lab, "prod/other", "prod/web", family, ttl=1) is None


def test_local_delivery_drops_on_the_destination_policy(cluster: Cluster, lab: Lab) -> None:
    before = _node_forwarded(lab)
    denied = lab.connect("prod/other", "prod/db", 53, "UDP", timeout=DENIED_TIMEOUT)
    assert not denied.allowed and not denied.reached, denied.explain()
    # The source's egress allowed it; the destination's ingress, run by the same program, did not.
    assert [(e.direction, e.action) for e in denied.events] == [
        (Direction.EGRESS, Action.ALLOW),
        (Direction.INGRESS, Action.DROP),
    ], denied.explain()
    assert denied.drop_reason == DropReason.POLICY_DENIED
    assert _node_forwarded(lab) == before


def test_devices_follow_the_lab(cluster: Cluster) -> None:
    backend = cluster.backend
    assert isinstance(backend, EBPFBackend)
    with Lab(cluster) as lab:
        devices = backend.endpoint_devices
        assert set(devices) == {cluster.endpoint_id(ref) for ref in ENDPOINTS}
        web = devices[cluster.endpoint_id("prod/web")]
        assert web.ifindex == lab.node.call(lambda: socket.if_nametoindex(lab.interface("prod/web")))
        # Test runs are not live packets on an endpoint's device: each hook keeps its scope.
        frame = build_frame(Packet(src="10.244.1.10", dst="10.244.1.11", dport=5432))
        retval, events = backend.test_run(frame, Direction.EGRESS)
        # (test_run also returns what live traffic emitted meanwhile: a pod's own IGMP/ND)
        mine = [e for e in events if (str(e.src), str(e.dst), e.dport) == ("10.244.1.10", "10.244.1.11", 5432)]
        assert retval == 0 and [e.direction for e in mine] == [Direction.EGRESS]
        assert cluster.check("prod/web", "prod/db", 5432).allowed
        cluster.remove_endpoint("prod/other")
        lab.sync()
        assert cluster.endpoint_id("prod/web") in backend.endpoint_devices
    assert backend.endpoint_devices == {}
    with Lab(cluster, local_delivery=False):
        assert backend.endpoint_devices == {}
