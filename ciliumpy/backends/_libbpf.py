"""Thin, private ctypes binding to the system ``libbpf.so.1`` (libbpf >= 1.0 semantics).

Signatures are data: :data:`_SIGNATURES` lists every function with its argument types,
result type and error convention, and :func:`library` applies the table once when the
library is first needed (never at import, so ``import ciliumpy`` does not touch libbpf).
libbpf 1.x returns ``-errno`` from int functions and ``NULL`` with ``errno`` set from
pointer functions; the errcheck hooks turn both into :class:`ciliumpy.exceptions.BPFError`
(:class:`~ciliumpy.exceptions.MapFullError` for ``E2BIG``/``ENOSPC`` on map writes).

Options structs mirror libbpf 1.1.2's x86-64 layouts (measured; see docs/ebpf.md) and are
always created through :func:`opts`, which sets ``sz``.  This module knows nothing about
policy: it only moves bytes between Python and the kernel.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno as errno_mod
import os
import platform
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..exceptions import BPFError, MapFullError

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "OwnedFd",
    "library",
    "opts",
]

# ---------------------------------------------------------------- constants (UAPI / libbpf)
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_MAP_TYPE_LPM_TRIE = 11
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_RDONLY_PROG = 1 << 7

BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1

BTF_KIND_STRUCT = 4
BTF_KIND_ENUM = 6

LIBBPF_WARN = 0


# ---------------------------------------------------------------- opaque handle types
class bpf_object(ctypes.Structure):
    """Opaque ``struct bpf_object``."""


class bpf_program(ctypes.Structure):
    """Opaque ``struct bpf_program``."""


class bpf_map(ctypes.Structure):
    """Opaque ``struct bpf_map``."""


class ring_buffer(ctypes.Structure):
    """Opaque ``struct ring_buffer``."""


class btf(ctypes.Structure):
    """Opaque ``struct btf``."""


ObjectPtr = ctypes.POINTER(bpf_object)
ProgramPtr = ctypes.POINTER(bpf_program)
MapPtr = ctypes.POINTER(bpf_map)
RingBufferPtr = ctypes.POINTER(ring_buffer)
BtfPtr = ctypes.POINTER(btf)


# ---------------------------------------------------------------- options structs (libbpf 1.1)
class bpf_object_open_opts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        # `__u32 :32` left behind by the removed attach_prog_fd: without it every later
        # field would sit 8 bytes too early.
        ("_stub", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_char_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class bpf_test_run_opts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class bpf_map_create_opts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    ]


class bpf_map_batch_opts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class bpf_tc_hook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class bpf_tc_opts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


class btf_type(ctypes.Structure):
    """``struct btf_type``; members (``struct btf_member``) follow it in memory."""

    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("info", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
    ]


class btf_member(ctypes.Structure):
    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("offset", ctypes.c_uint32),
    ]


class btf_enum(ctypes.Structure):
    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("val", ctypes.c_int32),
    ]


_S = TypeVar("_S", bound=ctypes.Structure)


def opts(cls: type[_S], **fields: Any) -> _S:
    """An options struct with ``sz`` set and every field not given zeroed."""
    obj = cls()
    obj.sz = ctypes.sizeof(cls)
    for name, value in fields.items():
        setattr(obj, name, value)
    return obj


# ---------------------------------------------------------------- callbacks
# print: int (*)(enum libbpf_print_level, const char *fmt, va_list ap).  On x86-64 a va_list
# argument decays to a pointer, so it can be forwarded to libc's vsnprintf untouched.
PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
# ring_buffer_sample_fn: int (*)(void *ctx, void *data, size_t size)
SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


# ---------------------------------------------------------------- error conventions
_MAP_WRITERS = frozenset({"bpf_map_update_elem", "bpf_map_update_batch", "bpf_map_create"})


def _error(err: int, function: str) -> BPFError:
    message = os.strerror(err)
    hint = _last_warning()
    if hint:
        message = f"{message} (libbpf: {hint})"
    if function in _MAP_WRITERS and err in (errno_mod.E2BIG, errno_mod.ENOSPC):
        return MapFullError(err, message, function=function)
    return BPFError(err, message, function=function)


def _check_int(result: int, func: Any, _args: tuple[Any, ...]) -> int:
    """int functions: negative = -errno."""
    if result < 0:
        raise _error(-result, func.__name__)
    return result


def _check_int_enoent_ok(result: int, func: Any, _args: tuple[Any, ...]) -> int:
    """Lookups and deletes: a missing key (-ENOENT) is an answer, not an error."""
    if result < 0 and result != -errno_mod.ENOENT:
        raise _error(-result, func.__name__)
    return result


def _check_ptr(result: Any, func: Any, _args: tuple[Any, ...]) -> Any:
    """Pointer functions: NULL with errno set."""
    if not result:
        raise _error(ctypes.get_errno() or errno_mod.EINVAL, func.__name__)
    return result


_c_int, _u32, _c_u64 = ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64
_vp, _cp, _sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
_Errcheck = Callable[[Any, Any, tuple[Any, ...]], Any] | None

# name: (restype, argtypes, errcheck)
_SIGNATURES: dict[str, tuple[Any, list[Any], _Errcheck]] = {
    "libbpf_major_version": (_u32, [], None),
    "libbpf_minor_version": (_u32, [], None),
    "libbpf_set_print": (_vp, [PRINT_FN], None),
    # objects and programs
    "bpf_object__open_mem": (
        ObjectPtr,
        [_vp, _sz, ctypes.POINTER(bpf_object_open_opts)],
        _check_ptr,
    ),
    "bpf_object__load": (_c_int, [ObjectPtr], _check_int),
    "bpf_object__close": (None, [ObjectPtr], None),
    "bpf_object__find_map_by_name": (MapPtr, [ObjectPtr, _cp], _check_ptr),
    "bpf_object__find_program_by_name": (ProgramPtr, [ObjectPtr, _cp], _check_ptr),
    "bpf_program__fd": (_c_int, [ProgramPtr], _check_int),
    "bpf_program__set_log_buf": (_c_int, [ProgramPtr, _vp, _sz], _check_int),
    "bpf_program__set_log_level": (_c_int, [ProgramPtr, _u32], _check_int),
    "bpf_map__fd": (_c_int, [MapPtr], _check_int),
    "bpf_map__set_max_entries": (_c_int, [MapPtr, _u32], _check_int),
    "bpf_map__max_entries": (_u32, [MapPtr], None),
    "bpf_map__set_inner_map_fd": (_c_int, [MapPtr, _c_int], _check_int),
    # maps by fd
    "bpf_map_create": (
        _c_int,
        [_c_int, _cp, _u32, _u32, _u32, ctypes.POINTER(bpf_map_create_opts)],
        _check_int,
    ),
    "bpf_map_update_elem": (_c_int, [_c_int, _vp, _vp, _c_u64], _check_int),
    "bpf_map_lookup_elem": (_c_int, [_c_int, _vp, _vp], _check_int_enoent_ok),
    "bpf_map_delete_elem": (_c_int, [_c_int, _vp], _check_int_enoent_ok),
    "bpf_map_get_next_key": (_c_int, [_c_int, _vp, _vp], _check_int_enoent_ok),
    "bpf_map_update_batch": (
        _c_int,
        [_c_int, _vp, _vp, ctypes.POINTER(_u32), ctypes.POINTER(bpf_map_batch_opts)],
        _check_int,
    ),
    "bpf_map_delete_batch": (
        _c_int,
        [_c_int, _vp, ctypes.POINTER(_u32), ctypes.POINTER(bpf_map_batch_opts)],
        _check_int_enoent_ok,
    ),
    "bpf_map_get_fd_by_id": (_c_int, [_u32], _check_int),
    # running programs
    "bpf_prog_test_run_opts": (
        _c_int,
        [_c_int, ctypes.POINTER(bpf_test_run_opts)],
        _check_int,
    ),
    "ring_buffer__new": (RingBufferPtr, [_c_int, SAMPLE_FN, _vp, _vp], _check_ptr),
    "ring_buffer__consume": (_c_int, [RingBufferPtr], _check_int),
    "ring_buffer__poll": (_c_int, [RingBufferPtr, _c_int], None),
    "ring_buffer__epoll_fd": (_c_int, [RingBufferPtr], _check_int),
    "ring_buffer__free": (None, [RingBufferPtr], None),
    # tc attachment (netlink in the calling thread's network namespace)
    "bpf_tc_hook_create": (_c_int, [ctypes.POINTER(bpf_tc_hook)], None),
    "bpf_tc_hook_destroy": (_c_int, [ctypes.POINTER(bpf_tc_hook)], _check_int),
    "bpf_tc_attach": (
        _c_int,
        [ctypes.POINTER(bpf_tc_hook), ctypes.POINTER(bpf_tc_opts)],
        _check_int,
    ),
    "bpf_tc_detach": (
        _c_int,
        [ctypes.POINTER(bpf_tc_hook), ctypes.POINTER(bpf_tc_opts)],
        _check_int_enoent_ok,
    ),
    # BTF of an ELF file (no privileges needed)
    "btf__parse": (BtfPtr, [_cp, _vp], _check_ptr),
    "btf__free": (None, [BtfPtr], None),
    "btf__find_by_name_kind": (ctypes.c_int32, [BtfPtr, _cp, _u32], _check_int),
    "btf__type_by_id": (ctypes.POINTER(btf_type), [BtfPtr, _u32], _check_ptr),
    "btf__name_by_offset": (_cp, [BtfPtr, _u32], None),
}

# ---------------------------------------------------------------- loading
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_warnings: collections.deque[str] = collections.deque(maxlen=32)
_print_buf = threading.local()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int
_VA_LIST_IS_POINTER = platform.machine() in ("x86_64", "AMD64")


def _on_print(level: int, fmt: bytes | None, ap: int | None) -> int:
    # Only warnings are kept (DEBUG/INFO would be 100+ lines per load); they enrich the
    # message of the next BPFError.
    if level != LIBBPF_WARN or fmt is None:
        return 0
    if _VA_LIST_IS_POINTER:
        buf = getattr(_print_buf, "buf", None)
        if buf is None:
            buf = _print_buf.buf = ctypes.create_string_buffer(8192)
        _libc.vsnprintf(buf, len(buf), fmt, ap)
        text = buf.value.decode(errors="replace")
    else:  # a va_list is a struct elsewhere: keep the unformatted message
        text = fmt.decode(errors="replace")
    _warnings.append(text.strip())
    return 0


# Module-level so the callback outlives every call that may invoke it.
_PRINT_CALLBACK = PRINT_FN(_on_print)


def _last_warning() -> str:
    return _warnings[-1] if _warnings else ""


def drain_warnings() -> list[str]:
    """libbpf warnings printed since the last call (oldest first)."""
    out = list(_warnings)
    _warnings.clear()
    return out


def library() -> ctypes.CDLL:
    """``libbpf.so.1`` with every signature of :data:`_SIGNATURES` applied.

    Raises ``OSError`` if the library cannot be loaded or is older than 1.0 (whose
    error convention differs).
    """
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        for name, (restype, argtypes, errcheck) in _SIGNATURES.items():
            try:
                func = getattr(lib, name)
            except AttributeError as exc:
                raise OSError(errno_mod.ENOSYS, f"libbpf.so.1 lacks {name}; libbpf >= 1.1 is needed") from exc
            func.restype = restype
            func.argtypes = argtypes
            if errcheck is not None:
                func.errcheck = errcheck
        lib.libbpf_set_print(_PRINT_CALLBACK)
        _lib = lib
        return lib


def version() -> tuple[int, int]:
    """libbpf's (major, minor) version."""
    lib = library()
    return (int(lib.libbpf_major_version()), int(lib.libbpf_minor_version()))


# ---------------------------------------------------------------- fd ownership
class OwnedFd:
    """Exactly one owner of a raw kernel fd (an inner map, an fd got by id).

    ``close()`` is idempotent; the object is a context manager; an fd that is garbage
    collected while open is closed by a finalizer that warns with ``ResourceWarning``.
    """

    def __init__(self, fd: int, what: str) -> None:
        self._fd = fd
        self.what = what
        self._finalizer = weakref.finalize(self, _close_leaked_fd, fd, what)

    @property
    def fd(self) -> int:
        """The descriptor; ``ValueError`` once closed."""
        if self._fd < 0:
            raise ValueError(f"{self.what}: file descriptor already closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the descriptor (no-op when already closed)."""
        if self._fd >= 0:
            self._finalizer.detach()
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> OwnedFd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"<OwnedFd {self.what} {state}>"


def _close_leaked_fd(fd: int, what: str) -> None:
    warnings.warn(f"unclosed {what} (fd {fd})", ResourceWarning, stacklevel=2)
    with contextlib.suppress(OSError):
        os.close(fd)


# ---------------------------------------------------------------- small typed helpers
def map_create_lpm(name: bytes, key_size: int, value_size: int, max_entries: int, flags: int) -> OwnedFd:
    """A new LPM trie map (e.g. a per-endpoint policy trie), owned by the caller."""
    o = opts(bpf_map_create_opts, map_flags=flags)
    fd = library().bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, name, key_size, value_size, max_entries, ctypes.byref(o))
    return OwnedFd(int(fd), f"BPF map {name.decode()}")


def map_update(fd: int, key: Any, value: Any, flags: int = 0) -> None:
    """``bpf_map_update_elem``; :class:`MapFullError` when the map has no room."""
    library().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags)


def map_lookup(fd: int, key: Any, value: Any) -> bool:
    """Fill ``value`` from the map; False when the key is absent."""
    return int(library().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))) == 0


def map_delete(fd: int, key: Any) -> bool:
    """Delete ``key``; False when it was absent."""
    return int(library().bpf_map_delete_elem(fd, ctypes.byref(key))) == 0


def map_keys(fd: int, key_type: type[_S]) -> Iterator[_S]:
    """Iterate the keys of a map (a snapshot-free walk: concurrent changes may show)."""
    lib = library()
    prev: _S | None = None
    while True:
        nxt = key_type()
        rc = lib.bpf_map_get_next_key(fd, None if prev is None else ctypes.byref(prev), ctypes.byref(nxt))
        if rc != 0:
            return
        yield nxt
        prev = nxt


def map_update_batch(fd: int, keys: ctypes.Array[Any], values: ctypes.Array[Any]) -> None:
    """``bpf_map_update_batch`` of parallel arrays, one element at a time where unsupported.

    On an error some prefix of the batch may have been written; callers restore from
    their own record of the previous contents.
    """
    count = len(keys)
    if count == 0:
        return
    lib = library()
    n = ctypes.c_uint32(count)
    o = opts(bpf_map_batch_opts)
    try:
        lib.bpf_map_update_batch(fd, keys, values, ctypes.byref(n), ctypes.byref(o))
        return
    except BPFError as exc:
        # Kernels without batch support for a map type answer EINVAL/ENOTSUPP(524).
        if exc.errno not in (errno_mod.EINVAL, errno_mod.EOPNOTSUPP, 524):
            raise
    for i in range(count):
        lib.bpf_map_update_elem(fd, _element(keys, i), _element(values, i), 0)


def map_delete_batch(fd: int, keys: ctypes.Array[Any]) -> None:
    """Delete every key of ``keys``; absent keys are skipped.

    One ``bpf_map_delete_batch`` call where possible: for map-in-map types the kernel waits
    for an RCU grace period (~5 ms here) per syscall, not per key.
    """
    count = len(keys)
    if count == 0:
        return
    lib = library()
    done = ctypes.c_uint32(count)
    try:
        lib.bpf_map_delete_batch(fd, keys, ctypes.byref(done), ctypes.byref(opts(bpf_map_batch_opts)))
    except BPFError as exc:
        if exc.errno not in (errno_mod.EINVAL, errno_mod.EOPNOTSUPP, 524):
            raise
        done.value = 0
    # The batch stops at the first absent key (-ENOENT): finish one by one from there.
    for i in range(min(done.value, count), count):
        lib.bpf_map_delete_elem(fd, _element(keys, i))


def _element(array: ctypes.Array[Any], i: int) -> Any:
    """A pointer to element ``i`` of ``array``, for structs and plain integers alike
    (``array[i]`` of a ``c_uint32`` array is a Python int, which has no address)."""
    return ctypes.byref(array, i * ctypes.sizeof(array._type_))


def map_get_fd_by_id(map_id: int) -> OwnedFd:
    """A new fd for the map with kernel id ``map_id`` (e.g. an inner map)."""
    return OwnedFd(int(library().bpf_map_get_fd_by_id(map_id)), f"BPF map id {map_id}")


def possible_cpus() -> int:
    """Number of possible CPUs: the slot count of a per-CPU map value."""
    try:
        with open("/sys/devices/system/cpu/possible", encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return os.cpu_count() or 1
    total = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        total += (int(hi) if hi else int(lo)) - int(lo) + 1
    return total
