"""Live enforcement: the cluster's endpoints as network namespaces behind the eBPF datapath.

:class:`Lab` builds one network namespace per endpoint and a node namespace routing between
them, attaches the eBPF backend's tc programs to the node side of every veth, and runs real
TCP, UDP and ICMP exchanges with :meth:`Lab.connect`.  ``Lab(cluster, serve=True)`` also runs
real servers in the endpoints and the L7 proxies (HTTP, gRPC, DNS) behind the datapath's
redirects: :meth:`Lab.http`, :meth:`Lab.resolve`, real clients with :meth:`Lab.run`.  Needs
root and the eBPF backend (the proxies: the ``lab`` extra); see docs/lab.md.
"""

from ._client import LabHTTPResult, ProxyLimits
from ._lab import HOST, Lab, LiveResult
from ._multinode import Capture, MultiNodeLab
from ._netns import remove_stale

__all__ = ["HOST", "Capture", "Lab", "LabHTTPResult", "LiveResult", "MultiNodeLab", "ProxyLimits", "remove_stale"]
