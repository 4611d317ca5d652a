"""Workload controllers (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) as pods.

Cilium never sees a Deployment: it sees the pods the controllers create from the workload's pod
template, each with the template's labels and ports. A manifest directory usually holds the
workloads and no pods, a cluster snapshot (``kubectl get pods,deploy,... -o yaml``) both; so a
workload becomes pods only when the input holds none of its pods. Pods remember their
controller chain (``Endpoint.owners``, nearest first), which makes workload refs such as
``shop/deployment/frontend`` resolvable.

Generated pods are named the way the controllers name them: ``web-<template hash>-<suffix>``
for a Deployment (through its ReplicaSet ``web-<template hash>``), ``db-0``, ``db-1`` for a
StatefulSet, ``<name>-<suffix>`` for the others; the hashes are derived from the manifest, so a
load is reproducible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._model import Endpoint, _metadata, controller_owner
from .exceptions import PolicyError, UnknownEndpointError

__all__ = ["WORKLOAD_API_VERSIONS", "Workload", "complete_owners", "expand", "workload_pods"]

#: Workload kinds and the API versions ``kubectl get -o yaml`` has written for them.
WORKLOAD_API_VERSIONS: dict[str, tuple[str, ...]] = {
    "Deployment": ("apps/v1", "apps/v1beta1", "apps/v1beta2", "extensions/v1beta1"),
    "StatefulSet": ("apps/v1", "apps/v1beta1", "apps/v1beta2"),
    "DaemonSet": ("apps/v1", "apps/v1beta2", "extensions/v1beta1"),
    "ReplicaSet": ("apps/v1", "apps/v1beta2", "extensions/v1beta1"),
    "Job": ("batch/v1",),
    "CronJob": ("batch/v1", "batch/v1beta1"),
}

#: The words kubectl accepts for each kind (``kubectl get deploy``), as used in workload refs.
REF_KINDS: dict[str, str] = {
    "pod": "Pod",
    "pods": "Pod",
    "po": "Pod",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "deploy": "Deployment",
    "statefulset": "StatefulSet",
    "statefulsets": "StatefulSet",
    "sts": "StatefulSet",
    "daemonset": "DaemonSet",
    "daemonsets": "DaemonSet",
    "ds": "DaemonSet",
    "replicaset": "ReplicaSet",
    "replicasets": "ReplicaSet",
    "rs": "ReplicaSet",
    "job": "Job",
    "jobs": "Job",
    "cronjob": "CronJob",
    "cronjobs": "CronJob",
    "cj": "CronJob",
}

# Characters Kubernetes uses in generated names (no vowels, no look-alikes).
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _suffix(seed: str, length: int) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:length])


@attrs.frozen(kw_only=True)
class Workload:
    """A workload controller: its pod template and how many pods it runs."""

    kind: str
    namespace: str
    name: str
    replicas: int
    template: Mapping[str, Any] = attrs.field(hash=False)
    #: Where the template sits in the manifest (``spec.template``, ``spec.jobTemplate.spec.template``).
    template_field: str
    #: The workload's own controller chain (a ReplicaSet owned by a Deployment).
    owners: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> Workload:
        """Read a workload manifest; the template must be a mapping, ``replicas`` a count."""
        kind = str(data.get("kind"))
        name, ns, _, _ = _metadata(data, True)
        spec = data.get("spec")
        if not isinstance(spec, Mapping):
            raise PolicyError("Required value: spec must be an object", field="spec", value=spec)
        holder, field = spec, "spec"
        if kind == "CronJob":
            job = spec.get("jobTemplate")
            job_spec = job.get("spec") if isinstance(job, Mapping) else None
            if not isinstance(job_spec, Mapping):
                raise PolicyError("Required value: jobTemplate.spec", field="spec.jobTemplate.spec", value=job)
            holder, field = job_spec, "spec.jobTemplate.spec"
        template = holder.get("template")
        if not isinstance(template, Mapping):
            raise PolicyError("Required value: a pod template", field=f"{field}.template", value=template)
        count_key = "parallelism" if kind in ("Job", "CronJob") else "replicas"
        count = holder.get(count_key, 1)
        if count is None:
            count = 1
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise PolicyError("must be a non-negative integer", field=f"{field}.{count_key}", value=count)
        return cls(
            kind=kind,
            namespace=ns,
            name=name,
            replicas=count,
            template=template,
            template_field=f"{field}.template",
            owners=controller_owner(data),
        )

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.kind, self.name)

    def pods(self, nodes: Sequence[str] = ()) -> list[Endpoint]:
        """The pods the controller creates: ``replicas`` of them (at least one; a DaemonSet one per node).

        Raises :class:`PolicyError` located in the template (``spec.template.spec...``).
        """
        meta = self.template.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise PolicyError("must be of type object", field=f"{self.template_field}.metadata", value=meta)
        labels = meta.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise PolicyError("must be of type object", field=f"{self.template_field}.metadata.labels", value=labels)
        seed = json.dumps([self.kind, self.namespace, self.name, self.template], sort_keys=True, default=str)
        labels = dict(labels)
        owners: tuple[tuple[str, str], ...]
        if self.kind == "Deployment":
            template_hash = _suffix(seed, 10)
            labels["pod-template-hash"] = template_hash
            owners = (("ReplicaSet", f"{self.name}-{template_hash}"), ("Deployment", self.name))
        elif self.kind == "CronJob":
            # The CronJob controller names a Job after its scheduled time in minutes.
            minute = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % 10**8
            owners = (("Job", f"{self.name}-{minute}"), ("CronJob", self.name))
        else:
            owners = ((self.kind, self.name), *self.owners)
        count = max(1, self.replicas)
        node_names: list[str | None] = [None]
        if self.kind == "DaemonSet":
            count = max(1, len(nodes))
            node_names = list(nodes) or [None]
        out = []
        for i in range(count):
            if self.kind == "StatefulSet":
                pod_name = f"{self.name}-{i}"
            else:
                pod_name = f"{owners[0][1]}-{_suffix(f'{seed}/{i}', 5)}"
            spec = dict(self.template.get("spec") or {}) if isinstance(self.template.get("spec"), Mapping) else None
            if spec is None:
                raise PolicyError(
                    "Required value: spec must be an object",
                    field=f"{self.template_field}.spec",
                    value=self.template.get("spec"),
                )
            node = node_names[i % len(node_names)]
            if node is not None and not spec.get("nodeName"):
                spec["nodeName"] = node
            manifest = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": self.namespace, "labels": labels},
                "spec": spec,
            }
            try:
                pod = Endpoint.from_manifest(manifest)
            except PolicyError as exc:
                field = exc.field or ""
                if field.startswith(("spec", "metadata")):
                    field = f"{self.template_field}.{field}"
                raise PolicyError(
                    exc.reason, field=field or self.template_field, value=exc.value if exc.has_value else None
                ) from None
            out.append(attrs.evolve(pod, owners=owners))
        return out


def complete_owners(pod: Endpoint, workloads: Mapping[tuple[str, str, str], Workload]) -> Endpoint:
    """Extend a pod's controller chain through the workloads of the input.

    A ReplicaSet that is not in the input is still known to belong to Deployment ``web`` when
    its name is ``web-<pod-template-hash>``, the name the Deployment controller gives it.
    """
    if not pod.owners:
        return pod
    chain = list(pod.owners)
    seen = set(chain)
    while True:
        kind, name = chain[-1]
        parent: tuple[str, str] | None = None
        workload = workloads.get((pod.namespace, kind, name))
        if workload is not None and workload.owners:
            parent = workload.owners[0]
        elif kind == "ReplicaSet" and workload is None:
            template_hash = pod.labels.get("pod-template-hash")
            if template_hash and name.endswith(f"-{template_hash}") and len(name) > len(template_hash) + 1:
                parent = ("Deployment", name[: -len(template_hash) - 1])
        if parent is None or parent in seen:
            break
        chain.append(parent)
        seen.add(parent)
    return pod if len(chain) == len(pod.owners) else attrs.evolve(pod, owners=tuple(chain))


def expand(
    workloads: Iterable[Workload], pods: Iterable[Endpoint], nodes: Sequence[str] = ()
) -> tuple[list[tuple[Workload, list[Endpoint]]], list[tuple[Workload, PolicyError]]]:
    """Pods for the workloads that have none among ``pods``, and the workloads whose template failed.

    A ReplicaSet or Job in the input that belongs to another input workload makes the pods
    (its owner is then covered by them), so a Deployment and its ReplicaSet are not doubled.
    """
    by_key = {w.key: w for w in workloads}
    covered = {(p.namespace, kind, name) for p in pods for kind, name in p.owners}
    made: list[tuple[Workload, list[Endpoint]]] = []
    failed: list[tuple[Workload, PolicyError]] = []
    # Owned workloads (a ReplicaSet of a Deployment) first: their pods cover their owners.
    for workload in sorted(by_key.values(), key=lambda w: (-len(w.owners), w.key)):
        if workload.key in covered:
            continue
        try:
            new = [complete_owners(p, by_key) for p in workload.pods(nodes)]
        except PolicyError as exc:
            failed.append((workload, exc))
            continue
        covered.update((workload.namespace, kind, name) for p in new for kind, name in p.owners)
        made.append((workload, new))
    return made, failed


def workload_pods(endpoints: Mapping[str, Endpoint], ref: str) -> list[str]:
    """The pods (``namespace/name`` refs, sorted) of a workload ref ``namespace/kind/name``.

    ``kind`` is any word kubectl accepts (``deployment``, ``deploy``, ``sts``, ``rs``, ...).
    Raises :class:`UnknownEndpointError` for an unknown kind or a workload without pods.
    """
    namespace, word, name = ref.split("/", 2)
    kind = REF_KINDS.get(word.lower())
    if kind is None:
        raise UnknownEndpointError(
            f"{ref!r}: unknown workload kind {word!r}; expected one of {', '.join(sorted(set(REF_KINDS)))}"
        )
    if kind == "Pod":
        found = [f"{namespace}/{name}"] if f"{namespace}/{name}" in endpoints else []
    else:
        found = sorted(r for r, ep in endpoints.items() if ep.namespace == namespace and (kind, name) in ep.owners)
    if not found:
        raise UnknownEndpointError(f"{ref!r}: no pods of {kind} {namespace}/{name} in the cluster")
    return found
