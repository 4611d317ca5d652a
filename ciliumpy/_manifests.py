"""Reading manifests: YAML/JSON text, files, directories, dicts, ``kind: List``.

Documents are parsed with a loader that remembers the line of every mapping key and list
item, so a :class:`~ciliumpy.exceptions.PolicyError` raised deep inside a policy can name
``file:line``, the object and the field path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from ._model import API_VERSIONS, KINDS, MODEL_TYPES, ModelObject, path_steps
from .exceptions import PolicyError

__all__ = ["Document", "load_objects", "read_documents"]


class _LineDict(dict[Any, Any]):
    """A dict that remembers the line of each key (1-based) and its own start line."""

    line: int = 0
    key_lines: dict[Any, int]


class _LineList(list[Any]):
    line: int = 0
    item_lines: list[int]


# libyaml's parser when available: same nodes and marks, several times faster.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_BaseLoader):  # type: ignore[misc]
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found unhashable key",
                key_node.start_mark,
            ) from None
        if key in out:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LineList:
    out = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def line_of(root: Any, field: str | None) -> int | None:
    """Line of the deepest element of ``field`` (e.g. ``spec.ingress[0].toPorts``) in ``root``.

    A field that does not exist (a missing required key) points at its closest parent.
    """
    line = getattr(root, "line", None)
    for container, key in path_steps(root, field or ""):
        if isinstance(key, int):
            lines = getattr(container, "item_lines", None)
            if lines:
                line = lines[key]
        else:
            line = getattr(container, "key_lines", {}).get(key, line)
    return line


@attrs.frozen
class Document:
    """One parsed object with where it came from."""

    data: Any
    source: str | None = None
    index: int = 0


def _is_path_like(source: str) -> bool:
    if "\n" in source:
        return False
    return os.path.exists(source) or source.endswith((".yaml", ".yml", ".json"))


def read_documents(source: Any) -> Iterator[Document]:
    """Yield the documents of a path, directory, text, dict or list of dicts."""
    if isinstance(source, Path) or (isinstance(source, str) and _is_path_like(source)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
            for f in files:
                yield from _read_text(f.read_text(encoding="utf-8"), str(f))
            return
        if not path.exists():
            raise PolicyError("no such file", document=str(path), value=str(path))
        yield from _read_text(path.read_text(encoding="utf-8"), str(path))
        return
    if isinstance(source, str):
        yield from _read_text(source, None)
        return
    if isinstance(source, Mapping):
        yield from _expand_lists(Document(source, None, 0))
        return
    if isinstance(source, list | tuple):
        for i, item in enumerate(source):
            for doc in read_documents(item):
                yield attrs.evolve(doc, index=i if doc.source is None else doc.index)
        return
    raise PolicyError(f"cannot read manifests from a {type(source).__name__}", value=source)


def _read_text(text: str, name: str | None) -> Iterator[Document]:
    try:
        docs = list(yaml.load_all(text, Loader=_LineLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"malformed YAML: {problem}", document=name or "<text>", line=line) from None
    for i, data in enumerate(docs):
        if data is None:
            continue
        yield from _expand_lists(Document(data, name, i))


def _expand_lists(doc: Document) -> Iterator[Document]:
    data = doc.data
    kind = data.get("kind") if isinstance(data, Mapping) else None
    # ``kind: List`` and typed lists (``CiliumNetworkPolicyList``) as ``kubectl get -o yaml``
    # writes them.
    if isinstance(kind, str) and (kind == "List" or (kind.endswith("List") and kind[:-4] in KINDS)):
        items = data.get("items")
        if not isinstance(items, list):
            raise PolicyError(
                f"{kind} must have items",
                document=doc.source,
                line=getattr(data, "line", None),
                field="items",
                value=items,
            )
        for item in items:
            yield from _expand_lists(Document(item, doc.source, doc.index))
        return
    yield doc


def parse_object(doc: Document) -> ModelObject:
    """Turn one document into a model object, with located errors."""
    data = doc.data
    where = doc.source or "<manifest>"
    if not isinstance(data, Mapping):
        raise PolicyError(
            "a manifest must be a mapping",
            document=where,
            line=getattr(data, "line", None),
            value=data,
        )
    kind = data.get("kind")
    meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    if not isinstance(kind, str) or kind not in KINDS:
        raise PolicyError(
            "unknown kind; expected one of " + ", ".join(sorted(KINDS)),
            document=where,
            line=line_of(data, "kind"),
            field="kind",
            value=kind,
        )
    api = data.get("apiVersion")
    if api not in API_VERSIONS[kind]:
        raise PolicyError(
            f"apiVersion must be {' or '.join(API_VERSIONS[kind])} for {kind}",
            document=where,
            line=line_of(data, "apiVersion"),
            kind=kind,
            namespace=namespace,
            name=name,
            field="apiVersion",
            value=api,
        )
    try:
        obj: ModelObject = KINDS[kind].from_manifest(data)
    except PolicyError as exc:
        if kind in ("CiliumNetworkPolicy", "NetworkPolicy", "Pod", "Service") and not namespace:
            namespace = "default"
        raise exc.located(
            document=where,
            line=line_of(data, exc.field),
            kind=kind,
            namespace=namespace if kind not in ("CiliumClusterwideNetworkPolicy", "Namespace", "Node") else None,
            name=name,
        ) from None
    return obj


def load_objects(sources: Iterable[Any]) -> list[ModelObject]:
    """Parse every source; model objects pass through unchanged."""
    return [obj for obj, _ in load_located(sources)]


def load_located(sources: Iterable[Any]) -> list[tuple[ModelObject, Document | None]]:
    """Like :func:`load_objects`, keeping each object's document for later error locations."""
    out: list[tuple[ModelObject, Document | None]] = []
    for source in sources:
        if isinstance(source, MODEL_TYPES):
            out.append((source, None))
            continue
        for doc in read_documents(source):
            out.append((parse_object(doc), doc))
    return out
