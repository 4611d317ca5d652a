"""Policy reach: who may reach whom, why, what a change would alter, and policy lint.

Built on a :class:`~ciliumpy.Cluster` and read through its public surface only:
``endpoints``, ``endpoint_policy(ref)`` (map state, L4 filters), ``identities()``,
``ipcache()``, ``lookup_ip()``, ``namespaces``, ``services``, ``policies``, ``config`` and
``check()`` (for Service addresses and host names, which it translates first). The backend's
``auth_pairs`` (authenticated identity pairs) are read when the backend has them.

``import ciliumpy`` does not import this package; ``ciliumpy.diff`` and friends load it
on first use.
"""

from ._diff import Change, Connection, Containment, ReachDiff, contains, diff, equivalent
from ._engine import ConnectionSet, HookOutcome
from ._explain import Explanation, Fix
from ._lint import Finding, LintReport, lint
from ._reachability import Reachability, compute

__all__ = [
    "Change",
    "Connection",
    "ConnectionSet",
    "Containment",
    "Explanation",
    "Finding",
    "Fix",
    "HookOutcome",
    "LintReport",
    "ReachDiff",
    "Reachability",
    "compute",
    "contains",
    "diff",
    "equivalent",
    "lint",
]
