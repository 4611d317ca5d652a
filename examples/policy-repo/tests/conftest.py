"""Fixtures of the policy repository's tests."""

from pathlib import Path

import pytest

from ciliumpy import Cluster

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


@pytest.fixture
def shop(cluster: Cluster) -> Cluster:
    """The plugin's fresh ``cluster`` (one per backend) with every manifest of the repo."""
    cluster.apply(MANIFESTS)
    return cluster
