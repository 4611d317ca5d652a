"""The selector cache answers CIDR selectors by prefix index and stays exact."""

from __future__ import annotations

import ipaddress
import random

from ciliumpy import Cluster
from ciliumpy._identity import Identity, cidr_identity_labels
from ciliumpy._mapstate import PeerSelector, SelectorCache, cidr_selector


def _ident(num: int, net: str) -> Identity:
    n = ipaddress.ip_network(net, strict=False)
    return Identity(num, cidr_identity_labels(n, (), False), n)


def test_cidr_index_matches_brute_force_under_churn() -> None:
    rnd = random.Random(3)
    cache = SelectorCache()
    nets = [
        f"10.{rnd.randrange(4)}.{rnd.randrange(4)}.{rnd.randrange(256)}/{rnd.choice([8, 16, 24, 30, 32])}"
        for _ in range(300)
    ]
    idents = [_ident(0x1000000 + i, n) for i, n in enumerate(nets)]
    sels: list[PeerSelector] = []
    for i in range(80):
        base = ipaddress.ip_network(rnd.choice(nets), strict=False)
        net = base.supernet(new_prefix=min(base.prefixlen, rnd.choice([8, 16, 24, 30, 32])))
        excepts = [ipaddress.ip_network(rnd.choice(nets), strict=False)] if i % 3 == 0 else []
        excepts = [e for e in excepts if e.subnet_of(net) and e != net]
        sels.append(cidr_selector(net, excepts))
    sels.append(cidr_selector(ipaddress.ip_network("0.0.0.0/0")))
    live: list[Identity] = []
    for step, ident in enumerate(idents):
        cache.add_identity(ident)
        live.append(ident)
        if step % 7 == 0:
            gone = live.pop(rnd.randrange(len(live)))
            cache.remove_identity(gone)
        if step in (10, 150, 299):
            for sel in sels:
                expected = frozenset(i.id for i in live if sel.matches(i))
                assert cache.select(sel) == expected, str(sel)


def test_ten_thousand_cidr_rules_compile_quickly() -> None:
    # 10k /32 peers used to take minutes (every selector scanned every CIDR identity).
    c = Cluster()
    c.add_endpoint("a/web", labels={"app": "web"})
    cidrs = [f"10.{(i >> 8) & 255}.{i & 255}.7/32" for i in range(3000)]
    c.apply(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {"endpointSelector": {}, "egress": [{"toCIDR": cidrs}]},
        }
    )
    assert len(c.map_state("a/web")) == 3001
    assert c.check("a/web", "10.1.2.7", 443).allowed
    assert not c.check("a/web", "10.1.2.8", 443).allowed
