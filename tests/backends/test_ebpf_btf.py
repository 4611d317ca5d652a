"""The Python mirrors of bpf/maps.h match the compiled object's BTF, and the build is fresh."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ebpf_support import REQUIRE_ENV, require_ebpf

from ciliumpy.backends import _bpfstructs as S
from ciliumpy.backends import _libbpf as L
from ciliumpy.backends._ebpf import OBJECT_PATH

ROOT = Path(__file__).resolve().parents[2]


class _Btf:
    """Read-only view of an ELF object's .BTF through libbpf (no privileges needed)."""

    def __init__(self, path: Path) -> None:
        self.lib = L.library()
        self.ptr = self.lib.btf__parse(str(path).encode(), None)

    def close(self) -> None:
        self.lib.btf__free(self.ptr)

    def name(self, off: int) -> str:
        return bytes(self.lib.btf__name_by_offset(self.ptr, off)).decode()

    def find(self, name: str, kind: int) -> tuple[Any, int]:
        type_id = self.lib.btf__find_by_name_kind(self.ptr, name.encode(), kind)
        t = self.lib.btf__type_by_id(self.ptr, type_id)
        return t, type_id

    def struct(self, name: str) -> tuple[int, list[tuple[str, int]]]:
        """Size and (member name, byte offset) list of a struct."""
        t, _ = self.find(name, L.BTF_KIND_STRUCT)
        vlen = t.contents.info & 0xFFFF
        kind_flag = t.contents.info >> 31
        members = ctypes.cast(
            ctypes.addressof(t.contents) + ctypes.sizeof(L.btf_type),
            ctypes.POINTER(L.btf_member * vlen),
        ).contents
        out = []
        for m in members:
            bits = m.offset & 0xFFFFFF if kind_flag else m.offset
            assert bits % 8 == 0, f"{name}.{self.name(m.name_off)} is a bitfield"
            out.append((self.name(m.name_off), bits // 8))
        return t.contents.size, out

    def enum(self, name: str) -> dict[str, int]:
        t, _ = self.find(name, L.BTF_KIND_ENUM)
        vlen = t.contents.info & 0xFFFF
        values = ctypes.cast(
            ctypes.addressof(t.contents) + ctypes.sizeof(L.btf_type),
            ctypes.POINTER(L.btf_enum * vlen),
        ).contents
        return {self.name(v.name_off): v.val for v in values}


@pytest.fixture(scope="module")
def btf() -> Iterator[_Btf]:
    try:
        L.library()
    except OSError as exc:
        require_ebpf(f"libbpf.so.1 cannot be loaded: {exc}")
    parsed = _Btf(OBJECT_PATH)
    yield parsed
    parsed.close()


@pytest.mark.parametrize("c_name", sorted(S.MIRRORS))
def test_ctypes_mirror_matches_btf(btf: _Btf, c_name: str) -> None:
    mirror = S.MIRRORS[c_name]
    size, members = btf.struct(c_name)
    py_members = [(name, getattr(mirror, name).offset) for name, *_ in mirror._fields_]
    assert py_members == members
    assert ctypes.sizeof(mirror) == size


def test_every_struct_in_maps_h_has_a_mirror() -> None:
    text = (ROOT / "bpf" / "maps.h").read_text() + (ROOT / "bpf" / "lb.h").read_text()
    declared = {
        line.split()[1]
        for line in text.splitlines()
        if line.startswith("struct ") and line.rstrip().endswith("{") and line.split()[1] != "{"  # not a map
    }
    assert declared == set(S.MIRRORS)


@pytest.mark.parametrize("c_name", sorted(S.C_ENUMS))
def test_c_enums_match_python_enums(btf: _Btf, c_name: str) -> None:
    c_values = sorted(btf.enum(c_name).values())
    py_values = sorted(int(v) for v in S.C_ENUMS[c_name])
    if c_name == "cil_drop_reason":
        # The C enum has CIL_DROP_NONE = 0 and only the reasons this datapath emits; the
        # Python enum also names reasons other parts of ciliumpy report.
        assert c_values[0] == 0
        assert set(c_values[1:]) <= set(py_values)
        return
    assert c_values == py_values


def test_policy_key_prefix_matches_map_state_key() -> None:
    from ciliumpy._datapath import Direction, MapStateKey

    for key, prefix in [
        (MapStateKey(7, Direction.INGRESS), 40),
        (MapStateKey(7, Direction.EGRESS, 6), 48),
        (MapStateKey(7, Direction.EGRESS, 6, 80, 16), 64),
        (MapStateKey(0, Direction.INGRESS, 17, 1024, 6), 54),
    ]:
        c_key = S.policy_key_to_c(key)
        assert c_key.prefixlen == prefix
        assert S.policy_key_from_c(c_key) == key
    raw = bytes(S.policy_key_to_c(MapStateKey(7, Direction.EGRESS, 6, 0x1234, 16)))
    assert raw[10:12] == b"\x12\x34"  # dport is big-endian in the map


def test_committed_object_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bpf" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    if "clang not found" in result.stderr:
        require_ebpf("clang is not installed: the committed object cannot be checked")
    assert result.returncode == 0, result.stdout + result.stderr


def test_require_ebpf_fails_instead_of_skipping_when_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="unavailable: no kernel"):
        require_ebpf("no kernel")
    monkeypatch.setenv(REQUIRE_ENV, "0")
    with pytest.raises(pytest.skip.Exception, match="no kernel"):
        require_ebpf("no kernel")
