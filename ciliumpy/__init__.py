"""ciliumpy: Cilium's Kubernetes network-security model in Python.

Load CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and NetworkPolicy manifests, build
identities and per-endpoint map state with Cilium's exact semantics, and ask which flows
are allowed, on a pure-Python simulator or a real eBPF datapath.
"""

from ._cluster import Cluster
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
from ._identity import Identity
from ._labels import Label, LabelSet
from ._mapstate import EndpointPolicy
from ._model import (
    CIDRRule,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    ContainerPort,
    Endpoint,
    Namespace,
    NetworkPolicy,
    Node,
    PeerRule,
    PortProtocol,
    PortRule,
    Rule,
    Service,
)
from ._selectors import EndpointSelector
from ._verdict import HookVerdict, PeerInfo, Verdict
from .exceptions import (
    BackendUnavailableError,
    BPFError,
    CiliumpyError,
    MapFullError,
    PolicyError,
    UnknownEndpointError,
)

__version__ = "0.1.0"

__all__ = [
    "Action",
    "BPFError",
    "BackendUnavailableError",
    "CIDRRule",
    "CTState",
    "CiliumClusterwideNetworkPolicy",
    "CiliumNetworkPolicy",
    "CiliumpyError",
    "Cluster",
    "ContainerPort",
    "DatapathResult",
    "Direction",
    "DropReason",
    "Endpoint",
    "EndpointPolicy",
    "EndpointSelector",
    "HookVerdict",
    "Identity",
    "Label",
    "LabelSet",
    "MapFullError",
    "MapStateKey",
    "MatchType",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "Packet",
    "PeerInfo",
    "PeerRule",
    "PolicyEntry",
    "PolicyError",
    "PortProtocol",
    "PortRule",
    "Protocol",
    "Rule",
    "RuleOrigin",
    "Service",
    "UnknownEndpointError",
    "Verdict",
]
