"""ciliumpy: Cilium's Kubernetes network-security model in Python.

Load CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and NetworkPolicy manifests, build
identities and per-endpoint map state with Cilium's exact semantics, and ask which flows
are allowed, on a pure-Python simulator or a real eBPF datapath.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._cluster import Cluster, Resolution
from ._datapath import (
    Action,
    CTState,
    DatapathResult,
    Direction,
    DropReason,
    MapStateKey,
    MatchType,
    Packet,
    PolicyEntry,
    Protocol,
    RuleOrigin,
)
from ._fqdn import FQDNSelector, ManualClock, SystemClock
from ._identity import Identity
from ._l7 import DNSQuery, DNSRule, HTTPRequest, HTTPRule, KafkaRequest, KafkaRule, L7Decision, L7Rules
from ._labels import Label, LabelSet
from ._mapstate import EndpointPolicy
from ._model import (
    CIDRRule,
    CiliumCIDRGroup,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    ContainerPort,
    Endpoint,
    EndpointConditions,
    EndpointSlice,
    Namespace,
    NetworkPolicy,
    Node,
    PeerRule,
    PortProtocol,
    PortRule,
    Rule,
    Service,
    ServicePort,
    SliceEndpoint,
    SlicePort,
)
from ._selectors import EndpointSelector
from ._services import BackendState, Frontend, ServiceBackend, ServiceFrontend, ServiceTable, ServiceTranslation
from ._verdict import HookVerdict, PeerInfo, Verdict
from .exceptions import (
    BackendUnavailableError,
    BPFError,
    CiliumpyError,
    IgnoredKindsWarning,
    LabError,
    MapFullError,
    NotFoundError,
    PolicyError,
    UnknownEndpointError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .advisor import advise
    from .reach import contains, diff, equivalent, lint

# Functions of the faces (subpackages built on Cluster), imported on first use so that
# ``import ciliumpy`` stays light: name -> subpackage.
_LAZY = {"advise": "advisor", "contains": "reach", "diff": "reach", "equivalent": "reach", "lint": "reach"}


def __getattr__(name: str) -> Any:
    """Load ``ciliumpy.diff`` & co. from their subpackage when first asked for."""
    face = _LAZY.get(name)
    if face is None:
        raise AttributeError(f"module 'ciliumpy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{face}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Action",
    "BPFError",
    "BackendState",
    "BackendUnavailableError",
    "CIDRRule",
    "CTState",
    "CiliumCIDRGroup",
    "CiliumClusterwideNetworkPolicy",
    "CiliumNetworkPolicy",
    "CiliumpyError",
    "Cluster",
    "ContainerPort",
    "DNSQuery",
    "DNSRule",
    "DatapathResult",
    "Direction",
    "DropReason",
    "Endpoint",
    "EndpointConditions",
    "EndpointPolicy",
    "EndpointSelector",
    "EndpointSlice",
    "FQDNSelector",
    "Frontend",
    "HTTPRequest",
    "HTTPRule",
    "HookVerdict",
    "Identity",
    "IgnoredKindsWarning",
    "KafkaRequest",
    "KafkaRule",
    "L7Decision",
    "L7Rules",
    "LabError",
    "Label",
    "LabelSet",
    "ManualClock",
    "MapFullError",
    "MapStateKey",
    "MatchType",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "NotFoundError",
    "Packet",
    "PeerInfo",
    "PeerRule",
    "PolicyEntry",
    "PolicyError",
    "PortProtocol",
    "PortRule",
    "Protocol",
    "Resolution",
    "Rule",
    "RuleOrigin",
    "Service",
    "ServiceBackend",
    "ServiceFrontend",
    "ServicePort",
    "ServiceTable",
    "ServiceTranslation",
    "SliceEndpoint",
    "SlicePort",
    "SystemClock",
    "UnknownEndpointError",
    "Verdict",
    "advise",
    "contains",
    "diff",
    "equivalent",
    "lint",
]
