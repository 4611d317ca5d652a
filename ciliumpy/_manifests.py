"""Reading manifests: YAML/JSON text, files, directories, dicts, ``kind: List``.

Documents are parsed with a loader that remembers the line of every mapping key and list
item, so a :class:`~ciliumpy.exceptions.PolicyError` raised deep inside a policy can name
``file:line``, the object and the field path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from ._model import API_VERSIONS, KINDS, MODEL_TYPES, ModelObject, path_steps
from ._snapshot import Snapshot
from .exceptions import PolicyError

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "Document",
    "check_shape",
    "load_located",
    "load_objects",
    "locate_error",
    "manifest_files",
    "read_documents",
]

#: Deepest nesting of mappings and lists a document may have (aliases followed). Cilium's
#: YAML and JSON decoders stop at 10000; Python's recursion stops well before that.
MAX_DEPTH = 200
#: Most values a document may expand to when every alias is followed (an "alias bomb" of a
#: few hundred bytes can expand to billions).
MAX_NODES = 1_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    # One line without a colon cannot be a manifest, so it is a path (perhaps a missing one).
    return os.path.exists(source) or source.endswith((".yaml", ".yml", ".json")) or ":" not in source


def read_documents(source: Any, *, recursive: bool = False) -> Iterator[Document]:
    """Yield the documents of a path, directory, text, dict or list of dicts.

    A directory is read like ``kubectl apply -f DIR``: its ``.yaml``, ``.yml`` and ``.json``
    files in name order, subdirectories only with ``recursive``, ``kustomization.yaml`` never.
    """
    if isinstance(source, Mapping | list | tuple):
        check_shape(source)
    return _read_documents(source, recursive)


def _path_kind(path: Path) -> str | None:
    """``"dir"``, ``"file"`` or None (missing); a path the OS refuses (too long) is a PolicyError."""
    try:
        if path.is_dir():
            return "dir"
        return "file" if path.exists() else None
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror or exc}", document=str(path)) from None


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", document=str(path)) from None
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror or exc}", document=str(path)) from None


def _read_documents(source: Any, recursive: bool = False) -> Iterator[Document]:
    if isinstance(source, Document):  # already read (the CLI applies documents one by one)
        yield source
        return
    if isinstance(source, Path) or (isinstance(source, str) and _is_path_like(source)):
        path = Path(source)
        kind = _path_kind(path)
        if kind == "dir":
            for f in manifest_files(path, recursive=recursive):
                yield from _read_text(_read_file(f), str(f))
            return
        if kind is None:
            raise PolicyError("no such file or directory", document=str(path), value=str(path))
        yield from _read_text(_read_file(path), str(path))
        return
    if isinstance(source, str):
        yield from _read_text(source, None)
        return
    if isinstance(source, Mapping):
        yield from _expand_lists(Document(source, None, 0))
        return
    if isinstance(source, list | tuple):
        for i, item in enumerate(source):
            for doc in _read_documents(item, recursive):
                yield attrs.evolve(doc, index=i if doc.source is None else doc.index)
        return
    raise PolicyError(f"cannot read manifests from a {type(source).__name__}", value=source)


def _read_text(text: str, name: str | None) -> Iterator[Document]:
    where = name or "<text>"
    if _SURROGATE.search(text):
        raise PolicyError("text holds a lone UTF-16 surrogate, which is not a character", document=where)
    try:
        _scan_events(text, where)
        docs = list(yaml.load_all(text, Loader=_LineLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"malformed YAML: {problem}", document=where, line=line) from None
    except PolicyError:
        raise
    except (ValueError, OverflowError) as exc:
        # Scalars YAML's resolver types by their look (a timestamp with month 13, an
        # integer of more digits than Python converts) fail after parsing.
        raise PolicyError(f"malformed YAML: {exc}", document=where) from None
    for i, data in enumerate(docs):
        if data is None:
            continue
        yield from _expand_lists(Document(data, name, i))


def _scan_events(text: str, where: str) -> None:
    """Reject a document nested deeper than :data:`MAX_DEPTH` or expanding to more than
    :data:`MAX_NODES` values before it is composed.

    libyaml composes recursively in C (a few hundred thousand ``[`` crash the interpreter),
    so the check runs on the parser's flat event stream. Each collection's height and
    expanded size are computed when it closes; an alias counts as its anchor's.
    """
    loader = yaml.CSafeLoader(text) if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader(text)
    try:
        stack: list[list[Any]] = []  # [height, size, anchor] of each open collection
        anchors: dict[str, tuple[int, int]] = {}
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append([0, 1, event.anchor])
                if len(stack) > MAX_DEPTH:
                    _too_big(f"nested deeper than {MAX_DEPTH} levels", where, event)
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                height, size, anchor = stack.pop()
                shape = (height + 1, size)
                if anchor is not None:
                    anchors[anchor] = shape
            elif isinstance(event, yaml.ScalarEvent):
                shape = (0, 1)
                if event.anchor is not None:
                    anchors[event.anchor] = shape
            elif isinstance(event, yaml.AliasEvent):
                shape = anchors.get(event.anchor or "", (0, 1))
            else:
                continue
            if stack:
                top = stack[-1]
                top[0] = max(top[0], shape[0])
                top[1] += shape[1]
                if len(stack) + shape[0] > MAX_DEPTH:
                    _too_big(f"nested deeper than {MAX_DEPTH} levels (through aliases)", where, event)
                if top[1] > MAX_NODES:
                    _too_big(f"expands to more than {MAX_NODES} values (through aliases)", where, event)
    finally:
        loader.dispose()


def _too_big(reason: str, where: str, event: Any) -> None:
    raise PolicyError(f"document {reason}", document=where, line=event.start_mark.line + 1)


def check_shape(data: Any, where: str | None = None) -> None:
    """The checks of :func:`_scan_events` for data given as Python objects, plus what only
    Python objects can hold: cycles and strings with lone surrogates (which no UTF-8 text,
    so no API server, can carry).
    """
    seen: dict[int, tuple[int, int]] = {}  # id -> (height, size) of finished containers
    open_ids: set[int] = set()
    # Iterative post-order walk: (object, path, children iterator or None)
    stack: list[tuple[Any, str, Iterator[tuple[str, Any]] | None, list[int]]] = []

    def fail(reason: str, path: str, value: Any = None) -> None:
        raise PolicyError(reason, document=where, field=path or None, value=value)

    def visit(obj: Any, path: str) -> tuple[int, int] | None:
        if isinstance(obj, str):
            # The same long string may be referenced many times; scan it once.
            if len(obj) < 64 or id(obj) not in seen:
                if _SURROGATE.search(obj):
                    fail("string holds a lone UTF-16 surrogate, which is not a character", path, obj)
                if len(obj) >= 64:
                    seen[id(obj)] = (0, 1)
            return (0, 1)
        if isinstance(obj, Mapping | list | tuple):
            done = seen.get(id(obj))
            if done is not None:
                return done
            if id(obj) in open_ids:
                fail("data contains itself (a reference cycle)", path)
            if len(stack) >= MAX_DEPTH:
                fail(f"data nested deeper than {MAX_DEPTH} levels", path)
            open_ids.add(id(obj))
            if isinstance(obj, Mapping):
                items: Iterator[tuple[str, Any]] = _mapping_items(obj, path)
            else:
                items = ((f"{path}[{i}]", v) for i, v in enumerate(obj))
            stack.append((obj, path, items, [0, 1]))
            return None
        return (0, 1)

    def add(shape: tuple[int, int]) -> None:
        acc = stack[-1][3]
        acc[0] = max(acc[0], shape[0])
        acc[1] += shape[1]
        if acc[1] > MAX_NODES:
            fail(f"data expands to more than {MAX_NODES} values", stack[-1][1])
        if len(stack) + shape[0] > MAX_DEPTH:
            fail(f"data nested deeper than {MAX_DEPTH} levels", stack[-1][1])

    first = visit(data, "")
    if first is not None:
        return
    while stack:
        obj, _path, items, acc = stack[-1]
        assert items is not None
        nxt = next(items, None)
        if nxt is None:
            stack.pop()
            open_ids.discard(id(obj))
            shape = (acc[0] + 1, acc[1])
            seen[id(obj)] = shape
            if stack:
                add(shape)
            continue
        sub_path, value = nxt
        shape_or_none = visit(value, sub_path)
        if shape_or_none is not None:
            add(shape_or_none)


def _mapping_items(obj: Mapping[Any, Any], path: str) -> Iterator[tuple[str, Any]]:
    for k, v in obj.items():
        if isinstance(k, str) and _SURROGATE.search(k):
            raise PolicyError(
                "key holds a lone UTF-16 surrogate, which is not a character", field=path or None, value=k
            )
        yield (f"{path}.{k}" if path else str(k)), v


def _expand_lists(doc: Document) -> Iterator[Document]:
    # ``kind: List`` and typed lists (``CiliumNetworkPolicyList``) as ``kubectl get -o yaml``
    # writes them; nested lists are walked with a stack, not recursion.
    pending = [doc.data]
    while pending:
        data = pending.pop()
        kind = data.get("kind") if isinstance(data, Mapping) else None
        if isinstance(kind, str) and (
            kind == "List" or (kind.endswith("List") and (kind[:-4] in KINDS or "items" in data))
        ):
            items = data.get("items")
            if not isinstance(items, list):
                raise PolicyError(
                    f"{kind} must have items",
                    document=doc.source,
                    line=getattr(data, "line", None),
                    field="items",
                    value=items,
                )
            if kind != "List":
                items = [_typed_item(item, kind[:-4], data.get("apiVersion")) for item in items]
            pending.extend(reversed(items))
            continue
        yield Document(data, doc.source, doc.index)


def _typed_item(item: Any, kind: str, api_version: Any) -> Any:
    """An item of a typed list (``PodList``): the API server leaves out its kind and apiVersion."""
    if not isinstance(item, Mapping) or ("kind" in item and "apiVersion" in item):
        return item
    out = _LineDict({"apiVersion": api_version, "kind": kind, **item})
    out.line = getattr(item, "line", 0)
    out.key_lines = dict(getattr(item, "key_lines", {}))
    return out


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
    except RecursionError:
        # Only Python data can get here (text is checked first): a structure deep enough
        # to exhaust the stack although within MAX_DEPTH, e.g. under a low recursion limit.
        raise PolicyError(
            "document nested too deeply to parse",
            document=where,
            kind=kind,
            namespace=namespace,
            name=name,
        ) from None
    except PolicyError as exc:
        if kind in ("CiliumNetworkPolicy", "NetworkPolicy", "Pod", "Service") and not namespace:
            namespace = "default"
        raise exc.located(
            document=where,
            line=line_of(data, exc.field),
            kind=kind,
            namespace=namespace
            if kind not in ("CiliumClusterwideNetworkPolicy", "Namespace", "Node", "CiliumCIDRGroup")
            else None,
            name=name,
        ) from None
    return obj


def load_objects(sources: Iterable[Any], *, recursive: bool = False, strict: bool = False) -> list[ModelObject]:
    """Parse every source; model objects pass through unchanged."""
    return [obj for obj, _ in load_located(sources, recursive=recursive, strict=strict)]


def load_located(
    sources: Iterable[Any], *, recursive: bool = False, strict: bool = False
) -> list[tuple[ModelObject, Document | None]]:
    """Like :func:`load_objects`, keeping each object's document for later error locations.

    Reads what ``kubectl get -o yaml`` writes and application directories as they are
    (workloads become pods, other kinds are skipped; see :mod:`ciliumpy._snapshot`). Every
    problem in every source is collected and raised as one :class:`PolicyError`.
    """
    snapshot = Snapshot(parse=parse_object, line_of=line_of, strict=strict)
    for source in sources:
        if isinstance(source, MODEL_TYPES):
            snapshot.add_object(source)
            continue
        # A directory's files one by one, so that a broken file does not hide the others' problems.
        try:
            is_dir = isinstance(source, Path | str) and _is_path_like(str(source)) and _path_kind(Path(source)) == "dir"
        except PolicyError as exc:
            snapshot.errors.append(exc)
            continue
        for item in manifest_files(Path(source), recursive=recursive) if is_dir else [source]:
            try:
                for doc in read_documents(item, recursive=recursive):
                    snapshot.add(doc)
            except PolicyError as exc:
                snapshot.errors.append(exc)
    return snapshot.result()


#: Files ``kubectl apply -f DIR`` skips: kustomize's own configuration is not a manifest.
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def manifest_files(directory: Path, *, recursive: bool = False) -> list[Path]:
    """The manifest files of a directory as ``kubectl apply -f DIR [-R]`` reads them, in name order.

    The recursive walk does not follow symbolic links to directories (``/proc/self/root``
    would loop) and skips files that vanish while it runs; a directory that cannot be read
    is a PolicyError.
    """

    def failed(exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError):
            raise PolicyError(f"cannot read directory: {exc.strerror or exc}", document=str(exc.filename)) from None

    try:
        if recursive:
            walk = os.walk(directory, onerror=failed, followlinks=False)
            found = [Path(dirpath, name) for dirpath, _dirs, names in walk for name in names]
        else:
            found = list(directory.iterdir())
    except OSError as exc:
        raise PolicyError(f"cannot read directory: {exc.strerror or exc}", document=str(directory)) from None
    return sorted(
        p for p in found if p.suffix in (".yaml", ".yml", ".json") and p.name not in KUSTOMIZATION_FILES and p.is_file()
    )


def locate_error(exc: PolicyError, located: Iterable[tuple[ModelObject, Document | None]]) -> PolicyError:
    """``exc`` with the file and line of the object it names, when that object came from a
    document: errors found after parsing (an address already in use, L7 parsers that cannot
    be merged) know the object and field but not where it was written.
    """
    if exc.document is not None or exc.kind is None:
        return exc
    found: Document | None = None
    for obj, doc in located:
        if (
            doc is not None
            and exc.kind == obj.KIND
            and obj.name == exc.name
            and (getattr(obj, "namespace", "") or None) == (exc.namespace or None)
        ):
            found = doc
    if found is None or (found.source is None and getattr(found.data, "line", None) is None):
        return exc  # Python data: there is no file or line to name
    return exc.located(document=found.source or "<manifest>", line=line_of(found.data, exc.field))
