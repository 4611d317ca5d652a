"""Load the inputs the way the agent takes policies: each policy on its own, invalid ones kept aside.

Cilium accepts a CiliumNetworkPolicy the API server admits and then reports it invalid in
its status (``kubectl get cnp`` shows ``VALID False``) instead of refusing the others. ``get``
and ``validate`` need that view: every object that is valid is applied, and each policy gets
its validity and, when invalid, its problems with file:line.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import click

from .._cluster import Cluster
from .._manifests import Document, manifest_files, read_documents
from ..exceptions import PolicyError
from ._inputs import Inputs

__all__ = ["POLICY_KINDS", "PolicyState", "load_checked"]

POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy")


@attrs.frozen
class PolicyState:
    """One policy document and whether the cluster took it."""

    kind: str
    namespace: str
    name: str
    source: str
    errors: tuple[PolicyError, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.errors


def _documents(paths: list[str], recursive: bool, errors: list[PolicyError]) -> Iterator[Document]:
    for path in paths:
        p = Path(path)
        files = manifest_files(p, recursive=recursive) if p.is_dir() else [p]
        for f in files:
            try:
                yield from list(read_documents(str(f)))
            except PolicyError as exc:
                errors.extend(exc.errors)


def _meta(doc: Document) -> tuple[str, str, str]:
    data: Any = doc.data
    meta = data.get("metadata") if isinstance(data, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    kind = str(data.get("kind", "")) if isinstance(data, dict) else ""
    namespace = "" if kind == "CiliumClusterwideNetworkPolicy" else str(meta.get("namespace") or "default")
    return kind, namespace, str(meta.get("name", ""))


def load_checked(inputs: Inputs, extra: Sequence[str] = ()) -> tuple[Cluster, list[PolicyState], list[PolicyError]]:
    """The cluster of every valid object, each policy's state, and every problem found (in order).

    Objects other than policies are applied together (one at a time when that fails, so one
    broken Pod does not hide the rest); then each policy on its own.
    """
    paths = [*inputs.paths, *extra]
    if not paths:
        raise click.UsageError("no manifests given: name files or directories with -f PATH")
    errors: list[PolicyError] = []
    docs = list(_documents(paths, inputs.recursive, errors))
    policies = [d for d in docs if _meta(d)[0] in POLICY_KINDS]
    others = [d for d in docs if _meta(d)[0] not in POLICY_KINDS]
    cluster = Cluster(backend=inputs.backend)
    try:
        cluster.apply(*others, strict=inputs.strict)
    except PolicyError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # already shown by the first attempt
            for doc in others:
                try:
                    cluster.apply(doc, strict=inputs.strict)
                except PolicyError as exc:
                    errors.extend(exc.errors)
    states = []
    for doc in policies:
        kind, namespace, name = _meta(doc)
        try:
            cluster.apply(doc, strict=inputs.strict)
            problems: tuple[PolicyError, ...] = ()
        except PolicyError as exc:
            problems = exc.errors
            errors.extend(problems)
        line = getattr(doc.data, "line", None)
        where = f"{doc.source}:{line}" if doc.source and line else str(doc.source or "<manifest>")
        states.append(PolicyState(kind, namespace, name, where, problems))
    return cluster, states, errors
