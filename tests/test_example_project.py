"""examples/policy-repo, the documented example of a policy repository, runs green in its own
pytest session, and a policy that breaks its isolation is caught, shrunk and attributed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ciliumpy.backends import available_backends

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy-repo"
EXAMPLE_TESTS = 7  # test functions in examples/policy-repo/tests/test_policies.py

# An allow rule that looks local (it lives in payments) but selects pods labelled team=x in
# every namespace: the matchExpression on the namespace key stops Cilium from adding
# "namespace = payments" to the peer selector.
PLANTED = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: db-from-team-x
  namespace: payments
spec:
  endpointSelector:
    matchLabels: {app: db}
  ingress:
    - fromEndpoints:
        - matchLabels: {team: x}
          matchExpressions:
            - {key: io.kubernetes.pod.namespace, operator: Exists}
      toPorts:
        - ports:
            - {port: "5432", protocol: TCP}
"""


@pytest.fixture
def policy_repo(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copytree(
        EXAMPLE,
        pytester.path,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".hypothesis", "__pycache__", ".pytest_cache"),
    )
    return pytester


def test_the_example_repository_passes_on_every_backend(policy_repo: pytest.Pytester) -> None:
    result = policy_repo.runpytest_subprocess("-p", "no:cacheprovider", "--hypothesis-seed", "0")
    result.assert_outcomes(passed=EXAMPLE_TESTS * len(available_backends()))


def test_a_planted_violation_is_found_shrunk_and_names_the_policy(policy_repo: pytest.Pytester) -> None:
    (policy_repo.path / "manifests" / "99-planted.yaml").write_text(PLANTED)
    result = policy_repo.runpytest_subprocess(
        "-p", "no:cacheprovider", "--hypothesis-seed", "0", "--ciliumpy-backend", "simulator"
    )
    result.assert_outcomes(passed=EXAMPLE_TESTS - 1, failed=1)
    failing = "test_no_pod_we_might_deploy_breaks_the_isolation_of_payments"
    result.stdout.fnmatch_lines([f"FAILED tests/test_policies.py::{failing}[[]simulator[]]*"])
    out = result.stdout.str()
    # Hypothesis has called the shrunk input "Falsifying example" and, more recently,
    # "Failing test case".
    assert "Falsifying example" in out or "Failing test case" in out
    # Shrunk to the first namespace tried, no ports and the one label that matters.
    assert "namespace='dev'" in out
    assert "ports=()" in out
    assert "labels={'team': 'x'}" in out
    # The failure names the offending policy and rule, and the flow it lets through.
    assert "allowed by CiliumNetworkPolicy payments/db-from-team-x spec.ingress[0]" in out
    assert "-> payments/db (identity payments/app=db,team=payments) TCP/5432: FORWARDED" in out
