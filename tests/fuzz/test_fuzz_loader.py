"""Fuzzing the manifest loader: mutated real manifests, wrong types at every path, deep
nesting, aliases and odd unicode must give a CiliumpyError with a short message or load."""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml
from fuzz_support import corpus, fuzz_settings, only_ciliumpy_errors
from hypothesis import given
from hypothesis import strategies as st

from ciliumpy import Cluster
from ciliumpy._manifests import load_objects


def _not_a_path(text: str) -> bool:
    # A string the loader would read as a file or directory (``"/"`` walks the whole disk).
    return not os.path.lexists(text) and not text.endswith((".yaml", ".yml", ".json"))


ODD_TEXT = st.one_of(
    st.text(max_size=40).filter(_not_a_path),
    st.sampled_from(["", " ", "\x00", "\ud7ff", "\ufeff", "\u202e", "\U0001f600", "a" * 300, "*", "%", "::", "\\C"]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    ODD_TEXT,
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _documents() -> list[Any]:
    """Single objects of the corpus (list items unwrapped), small enough to mutate quickly."""
    out: list[Any] = []
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for _name, text in corpus():
        try:
            docs = [d for d in yaml.load_all(text, Loader=loader) if isinstance(d, dict)]
        except yaml.YAMLError:
            continue
        for doc in docs:
            items = doc.get("items") if isinstance(doc.get("items"), list) else [doc]
            out.extend(i for i in items[:5] if isinstance(i, dict) and len(repr(i)) < 4000)
    return out


DOCUMENTS = _documents()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A real manifest with one to three values replaced by values of any type."""
    doc = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        doc = _set(doc, path, draw(JSONISH))
    return doc


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    """A real manifest file with bytes spliced, cut or duplicated."""
    _name, text = draw(st.sampled_from(corpus()))
    for _ in range(draw(st.integers(1, 3))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 40)))
        op = draw(st.sampled_from(["cut", "dup", "insert"]))
        if op == "cut":
            text = text[:i] + text[j:]
        elif op == "dup":
            text = text[:j] + text[i:j] * draw(st.integers(1, 50)) + text[j:]
        else:
            text = (
                text[:i]
                + draw(st.sampled_from(["[", "{", "&a ", "*a", "!!binary ", "\t", "\x85", "%", ": ", "- "]))
                + text[i:]
            )
    return text


@st.composite
def nested(draw: st.DrawFn) -> str:
    """Deep flow nesting and alias chains, at and beyond the limits."""
    depth = draw(st.sampled_from([10, 150, 199, 200, 201, 1000, 20_000]))
    kind = draw(st.sampled_from(["flow-list", "flow-map", "aliases", "block"]))
    head = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: "
    if kind == "flow-list":
        return head + "[" * depth + "]" * depth
    if kind == "flow-map":
        return head + "{a: " * depth + "1" + "}" * depth
    if kind == "block":
        depth = min(depth, 400)
        return head + "\n" + "".join(f"{'  ' * (i + 2)}- \n" for i in range(depth))
    fan = draw(st.integers(2, 12))
    lines = ["x0: &x0 [1]"] + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * fan)}]" for i in range(1, min(depth, 60))]
    return "\n".join(lines) + "\n" + head + f"*x{min(depth, 60) - 1}"


@given(mutated_documents())
@fuzz_settings(60)
def test_mutated_real_manifest_gives_only_ciliumpy_errors(doc: Any) -> None:
    only_ciliumpy_errors("loader-mutated-doc", lambda: load_objects([doc]))


@given(mutated_texts())
@fuzz_settings(40)
def test_mutated_manifest_text_gives_only_ciliumpy_errors(text: str) -> None:
    only_ciliumpy_errors("loader-mutated-text", lambda: load_objects([text]))


@given(nested())
@fuzz_settings(15)
def test_nesting_and_aliases_give_only_ciliumpy_errors(text: str) -> None:
    only_ciliumpy_errors("loader-nesting", lambda: load_objects([text]))


@given(JSONISH)
@fuzz_settings(40)
def test_arbitrary_data_gives_only_ciliumpy_errors(data: Any) -> None:
    only_ciliumpy_errors("loader-arbitrary", lambda: load_objects([data]))


@given(mutated_documents())
@fuzz_settings(15)
def test_mutated_manifest_applied_to_a_cluster_gives_only_ciliumpy_errors(doc: Any) -> None:
    def apply() -> None:
        with Cluster() as cluster:
            cluster.apply(doc)

    only_ciliumpy_errors("cluster-apply", apply)
