"""Entry points that ``Cluster`` offers into the faces (subpackages built on it).

Each is a plain function taking the cluster first, bound into the class with one line
(``reachability = _faces.reachability``), so the façade stays thin and ``import ciliumpy``
does not import the subpackage: it is imported on the first call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cluster import Cluster
    from .reach import Reachability

__all__ = ["reachability"]


def reachability(
    self: Cluster,
    port: int | None = None,
    protocol: str | None = None,
    http: Mapping[str, Any] | None = None,
    namespaces: Iterable[str] | None = None,
) -> Reachability:
    """Who may open new connections to whom: a :class:`ciliumpy.reach.Reachability`.

    Computed at identity granularity over the map state's port partitions; ``port`` and
    ``protocol`` narrow it, ``http`` judges that request at the L7 proxy (as
    ``check(..., http=...)``), ``namespaces`` limits the endpoints shown.

    >>> import ciliumpy
    >>> c = ciliumpy.Cluster()
    >>> _ = c.add_endpoint("prod/web")
    >>> c.reachability().allowed("world", "prod/web", 80)
    True
    """
    from .reach import compute

    return compute(self, port=port, protocol=protocol, http=http, namespaces=namespaces)
