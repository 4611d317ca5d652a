"""What ``Cluster.delete`` removes: objects named by kind and name, as ``kubectl delete`` names them.

A manifest needs only its kind and metadata to be deleted (the spec is not read, so deleting
a policy whose spec no longer validates works); ``kind`` may be any word kubectl accepts
(``cnp``, ``ccnp``, ``netpol``, ``po``, ``ns``, ``svc``, ``no``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._manifests import line_of, read_documents
from ._model import MODEL_TYPES
from .exceptions import NotFoundError, PolicyError

__all__ = ["KIND_WORDS", "ObjectKey", "deletion_keys", "find_objects", "kind_of"]

#: ``(kind, namespace or "", name)``, the key every stored object has.
ObjectKey = tuple[str, str, str]

#: kubectl's words for the kinds a cluster holds, lower-case.
KIND_WORDS: dict[str, str] = {
    "ciliumnetworkpolicy": "CiliumNetworkPolicy",
    "ciliumnetworkpolicies": "CiliumNetworkPolicy",
    "cnp": "CiliumNetworkPolicy",
    "ciliumclusterwidenetworkpolicy": "CiliumClusterwideNetworkPolicy",
    "ciliumclusterwidenetworkpolicies": "CiliumClusterwideNetworkPolicy",
    "ccnp": "CiliumClusterwideNetworkPolicy",
    "networkpolicy": "NetworkPolicy",
    "networkpolicies": "NetworkPolicy",
    "netpol": "NetworkPolicy",
    "pod": "Pod",
    "pods": "Pod",
    "po": "Pod",
    "namespace": "Namespace",
    "namespaces": "Namespace",
    "ns": "Namespace",
    "node": "Node",
    "nodes": "Node",
    "no": "Node",
    "service": "Service",
    "services": "Service",
    "svc": "Service",
    "endpointslice": "EndpointSlice",
    "endpointslices": "EndpointSlice",
    "ciliumcidrgroup": "CiliumCIDRGroup",
    "ciliumcidrgroups": "CiliumCIDRGroup",
    "ccg": "CiliumCIDRGroup",
}

_CLUSTER_SCOPED = ("CiliumClusterwideNetworkPolicy", "CiliumCIDRGroup", "Namespace", "Node")


def kind_of(word: str) -> str:
    """The kind kubectl means by ``word`` (``cnp`` -> ``CiliumNetworkPolicy``); raises PolicyError."""
    kind = KIND_WORDS.get(word.lower())
    if kind is None:
        raise PolicyError(
            f"unknown kind; expected one of {', '.join(sorted(set(KIND_WORDS.values())))} or kubectl's short names",
            field="kind",
            value=word,
        )
    return kind


def _key(kind: str, namespace: Any, name: Any) -> ObjectKey:
    if kind in _CLUSTER_SCOPED:
        return (kind, "", str(name))
    return (kind, str(namespace or "default"), str(name))


def deletion_keys(manifests: Iterable[Any], kind: str | None = None, name: str | None = None) -> list[ObjectKey]:
    """The keys of the objects to delete: from manifests or model objects, or ``kind`` and ``name``.

    ``name`` is ``namespace/name`` for namespaced kinds (``default`` when no namespace is given).
    """
    keys: list[ObjectKey] = []
    if (kind is None) != (name is None):
        raise TypeError("delete() needs both kind= and name=, or manifests")
    if kind is not None and name is not None:
        real = kind_of(kind)
        namespace, sep, bare = name.rpartition("/")
        if real in _CLUSTER_SCOPED and sep:
            raise PolicyError(f"a {real} has no namespace", field="name", value=name)
        keys.append(_key(real, namespace if sep else None, bare))
    for source in manifests:
        if isinstance(source, MODEL_TYPES):
            keys.append(_key(source.KIND, getattr(source, "namespace", ""), source.name))
            continue
        for doc in read_documents(source):
            data = doc.data
            where = doc.source or "<manifest>"
            meta = data.get("metadata") if isinstance(data, Mapping) else None
            doc_kind = data.get("kind") if isinstance(data, Mapping) else None
            if not isinstance(doc_kind, str) or not isinstance(meta, Mapping) or not meta.get("name"):
                raise PolicyError(
                    "to delete an object its manifest needs kind and metadata.name",
                    document=where,
                    line=line_of(data, "metadata"),
                    value=doc_kind,
                )
            real = kind_of(doc_kind) if doc_kind.lower() in KIND_WORDS else doc_kind
            keys.append(_key(real, meta.get("namespace"), meta["name"]))
    return keys


def find_objects(
    keys: Iterable[ObjectKey],
    *,
    namespaces: Mapping[str, Any],
    pods: Mapping[str, Any],
    nodes: Mapping[str, Any],
    services: Mapping[tuple[str, str], Any],
    slices: Mapping[tuple[str, str], Any],
    cidr_groups: Mapping[str, Any],
    policies: Mapping[ObjectKey, Any],
) -> list[Any]:
    """The stored object of every key; raises :class:`NotFoundError` for the first one missing."""
    found = []
    for kind, namespace, name in keys:
        if kind == "Namespace":
            obj = namespaces.get(name)
        elif kind == "Pod":
            obj = pods.get(f"{namespace}/{name}")
        elif kind == "Node":
            obj = nodes.get(name)
        elif kind == "Service":
            obj = services.get((namespace, name))
        elif kind == "EndpointSlice":
            obj = slices.get((namespace, name))
        elif kind == "CiliumCIDRGroup":
            obj = cidr_groups.get(name)
        else:
            obj = policies.get((kind, namespace, name))
        if obj is None:
            raise NotFoundError(kind, name, namespace or None)
        found.append(obj)
    return found
