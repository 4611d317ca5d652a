"""Reading what ``kubectl get -o yaml`` writes, and application directories as they are.

A :class:`Snapshot` takes documents one at a time and sorts them: policies, pods, namespaces,
nodes and services become model objects; workloads (:mod:`ciliumpy._workloads`) become pods
when the input holds none of theirs; kinds that do not bear on network policy (ConfigMap,
Route, ServiceAccount, RoleBinding, ...) are skipped and listed once in an
:class:`~ciliumpy.exceptions.IgnoredKindsWarning` (errors with ``strict=True``). Every problem
in every document is kept, and :meth:`Snapshot.result` raises them together as one
:class:`~ciliumpy.exceptions.PolicyError`, so nothing is applied from a broken input.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._model import API_VERSIONS, KINDS, Endpoint, ModelObject, Node
from ._workloads import WORKLOAD_API_VERSIONS, Workload, complete_owners, expand
from .exceptions import IgnoredKindsWarning, PolicyError

__all__ = ["POLICY_API_GROUPS", "Snapshot"]

#: API groups whose unknown kinds are errors: a misspelt policy kind must not pass unnoticed.
POLICY_API_GROUPS = ("cilium.io", "networking.k8s.io")

#: Kinds of those groups that are not network policy and are skipped like any other kind.
OTHER_POLICY_GROUP_KINDS = frozenset(
    {
        "Ingress",
        "IngressClass",
        "IPAddress",
        "ServiceCIDR",
        "CiliumBGPAdvertisement",
        "CiliumBGPClusterConfig",
        "CiliumBGPNodeConfig",
        "CiliumBGPNodeConfigOverride",
        "CiliumBGPPeerConfig",
        "CiliumBGPPeeringPolicy",
        "CiliumClusterwideEnvoyConfig",
        "CiliumEgressGatewayPolicy",
        "CiliumEndpoint",
        "CiliumEndpointSlice",
        "CiliumEnvoyConfig",
        "CiliumExternalWorkload",
        "CiliumIdentity",
        "CiliumL2AnnouncementPolicy",
        "CiliumLoadBalancerIPPool",
        "CiliumLocalRedirectPolicy",
        "CiliumNode",
        "CiliumNodeConfig",
        "CiliumPodIPPool",
    }
)

#: Core kinds whose wrong ``apiVersion`` is read with a note rather than rejected (policies
#: and Cilium kinds stay strict: a wrong version there may mean a different schema).
_CORE_KINDS = ("Pod", "Namespace", "Node", "Service")


def _group(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def _ignored(kind: Any, api_version: Any) -> bool:
    if not isinstance(kind, str) or not kind or not isinstance(api_version, str) or not api_version:
        return False
    if kind in KINDS or kind in WORKLOAD_API_VERSIONS:
        return False
    return kind in OTHER_POLICY_GROUP_KINDS or _group(api_version) not in POLICY_API_GROUPS


def _where(data: Mapping[str, Any]) -> tuple[Any, Any]:
    meta = data.get("metadata")
    if not isinstance(meta, Mapping):
        return None, None
    return meta.get("namespace"), meta.get("name")


def _stacklevel() -> int:
    """The warning's stack level that points at the first caller outside ciliumpy."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


#: ``line_of(document data, field path)``: the line of a field in a parsed document.
LineOf = Callable[[Any, "str | None"], "int | None"]


def _copy(data: Mapping[str, Any], **changes: Any) -> Any:
    """A copy of a parsed mapping with some keys changed, keeping its line information."""
    out = copy.copy(data)  # a parsed mapping's class and its line attributes come along
    out.update(changes)  # type: ignore[attr-defined]
    return out


def _portless(
    data: Mapping[str, Any], spec_path: str, where: str, line_of: LineOf
) -> tuple[Mapping[str, Any], list[str]]:
    """The object without container ports that lack ``containerPort`` (a misspelt key), and notes.

    The API server rejects such a port; ``kubectl get`` output never has one, but hand-written
    manifests do (``containerport:``). Nothing can match a port without a number, so a lenient
    load drops it and says so.
    """
    holder: Any = data
    steps = spec_path.split(".")
    for step in steps:
        holder = holder.get(step) if isinstance(holder, Mapping) else None
    containers = holder.get("containers") if isinstance(holder, Mapping) else None
    if not isinstance(containers, list):
        return data, []
    notes: list[str] = []
    new_containers: list[Any] = []
    for ci, container in enumerate(containers):
        ports = container.get("ports") if isinstance(container, Mapping) else None
        if not isinstance(ports, list) or all(not isinstance(p, Mapping) or "containerPort" in p for p in ports):
            new_containers.append(container)
            continue
        kept = []
        for pi, port in enumerate(ports):
            if isinstance(port, Mapping) and "containerPort" not in port:
                field = f"{spec_path}.containers[{ci}].ports[{pi}]"
                line = line_of(data, field)
                notes.append(f"{where}{f':{line}' if line else ''}: {field} has no containerPort; port ignored")
                continue
            kept.append(port)
        new_containers.append(_copy(container, ports=kept))
    if not notes:
        return data, []

    # Rebuild the path down to the containers, each level a copy.
    def rebuild(node: Mapping[str, Any], rest: list[str]) -> Any:
        if not rest:
            return _copy(node, containers=new_containers)
        return _copy(node, **{rest[0]: rebuild(node[rest[0]], rest[1:])})

    return rebuild(data, steps), notes


@attrs.define
class Snapshot:
    """Documents sorted into model objects, workloads and skipped kinds, with every problem kept.

    The loader (:mod:`ciliumpy._manifests`) hands it documents (``data``, ``source``) and its
    own ``parse`` (document -> model object, raising located errors) and ``line_of``.
    """

    parse: Callable[[Any], ModelObject]
    line_of: LineOf
    strict: bool = False
    objects: list[tuple[ModelObject, Any]] = attrs.Factory(list)
    #: Each workload with its document and how many errors came before it (to report in order).
    workloads: list[tuple[Workload, Any, int]] = attrs.Factory(list)
    skipped: Counter[str] = attrs.Factory(Counter)
    notes: list[str] = attrs.Factory(list)
    errors: list[PolicyError] = attrs.Factory(list)

    def add_object(self, obj: ModelObject) -> None:
        """A model object given directly (no document)."""
        self.objects.append((obj, None))

    def add(self, doc: Any) -> None:
        """Sort one document; a problem is kept for :meth:`result`, not raised."""
        try:
            self._add(doc)
        except PolicyError as exc:
            self.errors.append(exc)

    def _add(self, doc: Any) -> None:
        data = doc.data
        if not isinstance(data, Mapping):
            self.objects.append((self.parse(doc), doc))  # raises the located error
            return
        kind, api = data.get("kind"), data.get("apiVersion")
        where = doc.source or "<manifest>"
        namespace, name = _where(data)
        if isinstance(kind, str) and kind in WORKLOAD_API_VERSIONS:
            if api not in WORKLOAD_API_VERSIONS[kind]:
                raise PolicyError(
                    f"apiVersion must be {' or '.join(WORKLOAD_API_VERSIONS[kind])} for {kind}",
                    document=where,
                    line=self.line_of(data, "apiVersion"),
                    kind=kind,
                    namespace=namespace,
                    name=name,
                    field="apiVersion",
                    value=api,
                )
            if not self.strict:
                spec = data.get("spec")
                path = "spec.jobTemplate.spec.template.spec" if kind == "CronJob" else "spec.template.spec"
                if isinstance(spec, Mapping):
                    data, notes = _portless(data, path, where, self.line_of)
                    self.notes.extend(notes)
            try:
                workload = Workload.from_manifest(data)
            except PolicyError as exc:
                raise exc.located(
                    document=where,
                    line=self.line_of(data, exc.field),
                    kind=kind,
                    namespace=namespace or "default",
                    name=name,
                ) from None
            self.workloads.append((workload, doc, len(self.errors)))
            return
        if _ignored(kind, api):
            if self.strict:
                raise PolicyError(
                    "does not bear on network policy; strict loading rejects it",
                    document=where,
                    line=self.line_of(data, "kind"),
                    field="kind",
                    value=kind,
                )
            self.skipped[str(kind)] += 1
            return
        if (
            not self.strict
            and isinstance(kind, str)
            and kind in _CORE_KINDS
            and isinstance(api, str)
            and api not in API_VERSIONS[kind]
        ):
            # A slip such as ``apiVersion: apps/v1`` on a Pod: read it, and say so.
            fixed = _copy(data, apiVersion=API_VERSIONS[kind][0])
            line = self.line_of(data, "apiVersion")
            self.notes.append(
                f"{where}{f':{line}' if line else ''}: {kind} {name}: apiVersion {api} read as {API_VERSIONS[kind][0]}"
            )
            doc = attrs.evolve(doc, data=fixed)
        if kind == "Pod" and not self.strict:
            cleaned, notes = _portless(doc.data, "spec", where, self.line_of)
            if notes:
                self.notes.extend(notes)
                doc = attrs.evolve(doc, data=cleaned)
        self.objects.append((self.parse(doc), doc))

    def result(self) -> list[tuple[ModelObject, Any]]:
        """Every object, with workloads expanded into pods; raises all problems as one PolicyError."""
        by_key = {w.key: w for w, _, _ in self.workloads}
        docs = {w.key: doc for w, doc, _ in self.workloads}
        positions = {w.key: before for w, _, before in self.workloads}
        objects = [
            (complete_owners(obj, by_key) if isinstance(obj, Endpoint) else obj, doc) for obj, doc in self.objects
        ]
        pods = [obj for obj, _ in objects if isinstance(obj, Endpoint)]
        nodes = sorted(obj.name for obj, _ in objects if isinstance(obj, Node))
        made, failed = expand(by_key.values(), pods, nodes)
        # A template's problem is found only now; report it where its document was read.
        for workload, exc in sorted(failed, key=lambda item: -positions[item[0].key]):
            doc = docs[workload.key]
            self.errors.insert(
                positions[workload.key],
                exc.located(
                    document=doc.source or "<manifest>",
                    line=self.line_of(doc.data, exc.field),
                    kind=workload.kind,
                    namespace=workload.namespace,
                    name=workload.name,
                ),
            )
        if self.errors:
            raise PolicyError.combine(self.errors)
        for workload, new in made:
            objects.extend((pod, docs[workload.key]) for pod in new)
        if self.skipped or self.notes:
            parts = []
            if self.skipped:
                kinds = ", ".join(f"{kind} ({count})" for kind, count in sorted(self.skipped.items()))
                parts.append(f"skipped objects that do not bear on network policy: {kinds}")
            parts.extend(self.notes)
            warnings.warn(IgnoredKindsWarning("; ".join(parts)), stacklevel=_stacklevel())
        return objects
