"""Live enforcement: the cluster's endpoints as network namespaces behind the eBPF datapath.

:class:`Lab` builds one network namespace per endpoint and a node namespace routing between
them, attaches the eBPF backend's tc programs to the node side of every veth, and runs real
TCP, UDP and ICMP exchanges with :meth:`Lab.connect`.  Needs root and the eBPF backend; see
docs/lab.md.
"""

from ._lab import HOST, Lab, LiveResult
from ._netns import remove_stale

__all__ = ["HOST", "Lab", "LiveResult", "remove_stale"]
