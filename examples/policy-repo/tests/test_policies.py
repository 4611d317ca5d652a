"""What the shop's network policies must guarantee.

Every test runs once per ciliumpy backend (the simulator, and the eBPF datapath where it can
run) because it uses the ``cluster`` fixture of the ciliumpy pytest plugin.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciliumpy import Cluster, Endpoint
from ciliumpy.pytest_plugin import assert_allowed, assert_denied, assert_isolated, assert_reachable
from ciliumpy.strategies import endpoints, flows, label_sets

CHARGE = {"method": "POST", "path": "/v1/charges"}
REFUND = {"method": "POST", "path": "/v1/refunds"}


def test_the_storefront_is_public(shop: Cluster) -> None:
    assert_reachable(shop, "world", "shop/frontend")


def test_checkout_can_charge_a_card(shop: Cluster) -> None:
    assert_allowed(shop, "shop/checkout", "payments/api", 8443, http=CHARGE)


def test_checkout_cannot_refund(shop: Cluster) -> None:
    assert_denied(shop, "shop/checkout", "payments/api", 8443, http=REFUND)


def test_only_the_payments_api_reaches_the_database(shop: Cluster) -> None:
    assert_allowed(shop, "payments/api", "payments/db", 5432)
    assert_denied(shop, "shop/checkout", "payments/db", 5432)
    assert_denied(shop, "shop/frontend", "payments/db", 5432)


def test_the_sandbox_and_payments_are_isolated(shop: Cluster) -> None:
    assert_isolated(shop, "dev", "payments")


# Labels our teams put on pods; the property below tries every combination of a few.
TEAM_LABELS = label_sets(
    keys=st.sampled_from(["app", "team", "tier"]),
    values=st.sampled_from(["web", "worker", "db", "payments", "x"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pod=endpoints(namespaces=st.sampled_from(["dev", "shop"]), names=st.just("candidate"), labels=TEAM_LABELS))
def test_no_pod_we_might_deploy_breaks_the_isolation_of_payments(shop: Cluster, pod: Endpoint) -> None:
    """Whatever labels a new pod in dev or shop carries, it and payments cannot reach each other
    (on any port, in either direction) -- except checkout, whose labels we do not hand out."""
    shop.apply(pod)
    try:
        assert_isolated(shop, [pod.ref], "payments")
    finally:
        shop.remove_endpoint(pod.ref)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_flow_from_the_sandbox_gets_into_payments(shop: Cluster, data: st.DataObject) -> None:
    payments = st.sampled_from(["payments/api", "payments/db"])
    flow = data.draw(flows(shop, sources=st.just("dev/debug"), destinations=payments))
    verdict = flow.check(shop)
    assert not verdict.allowed, verdict.explain()
