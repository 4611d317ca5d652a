"""Hubble for ciliumpy: every decision the cluster makes is a flow.

``Cluster.check``/``evaluate``/``resolve`` and lab traffic append to the cluster's event log;
this package decodes them into :class:`Flow` objects shaped exactly like Hubble's
(``api/v1/flow/flow.proto`` as ``hubble observe -o json`` prints it), keeps them in a
bounded ring buffer per cluster, filters them with ``hubble observe``'s flags, prints them
in the CLI's formats and counts them as Hubble's Prometheus metrics.

>>> from ciliumpy import Cluster
>>> c = Cluster.from_manifests("examples/seed")
>>> _ = c.check("production/frontend", "production/database", 5432)
>>> [f.verdict for f in c.observe(verdict="DROPPED")]
['DROPPED', 'DROPPED']
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._build import flows_of
from ._filter import FILTER_FLAGS, FilterError, FlowFilter, build_filters
from ._flow import (
    DNS,
    HTTP,
    ICMP,
    IP,
    L4,
    CiliumEventType,
    Endpoint,
    Ethernet,
    Flow,
    HTTPHeader,
    Kafka,
    Layer4,
    Layer7,
    Policy,
    TCPFlags,
    Workload,
)
from ._metrics import METRICS, Metrics, MetricsError, enabled_from_helm_values
from ._printer import FORMATS, format_flow, format_flows
from ._read import FlowList, read_flows
from ._replay import (
    Observation,
    ReplayedFlow,
    ReplayReport,
    cluster_from_flows,
    read_observations,
    recorded_outcomes,
    replay,
)
from ._store import DEFAULT_CAPACITY, FlowStore, store_of

if TYPE_CHECKING:
    from .._cluster import Cluster

__all__ = [
    "DEFAULT_CAPACITY",
    "DNS",
    "FILTER_FLAGS",
    "FORMATS",
    "HTTP",
    "ICMP",
    "IP",
    "L4",
    "METRICS",
    "CiliumEventType",
    "Endpoint",
    "Ethernet",
    "FilterError",
    "Flow",
    "FlowFilter",
    "FlowList",
    "FlowStore",
    "HTTPHeader",
    "Kafka",
    "Layer4",
    "Layer7",
    "Metrics",
    "MetricsError",
    "Observation",
    "Policy",
    "ReplayReport",
    "ReplayedFlow",
    "TCPFlags",
    "Workload",
    "build_filters",
    "cluster_from_flows",
    "enabled_from_helm_values",
    "flows",
    "flows_of",
    "format_flow",
    "format_flows",
    "observe",
    "read_flows",
    "read_observations",
    "recorded_outcomes",
    "replay",
    "store_of",
]


def observe(cluster: Cluster, **filters: Any) -> list[Flow]:
    """The cluster's stored flows that pass ``hubble observe``-style filters, oldest first.

    Filters are named after ``hubble observe`` flags with ``_`` for ``-``: ``verdict``,
    ``namespace``, ``pod``, ``from_pod``, ``to_pod``, ``label``, ``from_label``,
    ``to_label``, ``identity``, ``protocol``, ``type``, ``port``, ``from_port``,
    ``to_port``, ``http_method``, ``http_path``, ``http_status``, ``fqdn``, ``from_fqdn``,
    ``to_fqdn``, ``traffic_direction`` (and ``ip``, ``from_ip``, ``to_ip``,
    ``from_namespace``, ``to_namespace``, ``drop_reason_desc``, ``tcp_flags``,
    ``http_url``, ``node_name``). A list value is several flags (ORed); different filters
    are ANDed, and ``not_<name>`` is hubble's ``--not --<name>``, combined exactly as
    Hubble does (see ``_filter``). ``since``/``until`` take a time or a duration before
    now (``"5m"``); ``first``/``last`` keep the first or last N matches.
    """
    return store_of(cluster).observe(**filters)


def flows(cluster: Cluster, *, follow: bool = False, timeout: float | None = None, **filters: Any) -> Iterator[Flow]:
    """Iterate the stored flows (filtered as :func:`observe`); with ``follow=True`` keep
    yielding new flows as the cluster makes decisions, until ``timeout`` seconds pass
    without one (``None``: forever)."""
    store = store_of(cluster)
    if follow:
        return store.follow(timeout=timeout, **filters)
    return iter(store.observe(**filters))
