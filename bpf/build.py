#!/usr/bin/env python3
"""Build ciliumpy's eBPF object, or check that the committed one is fresh.

    python bpf/build.py            # writes ciliumpy/bpf/ciliumpy.bpf.o
    python bpf/build.py --check    # rebuilds into a temp dir, exit 1 if it differs
    python bpf/build.py --output /tmp/x.o --define CIL_PARSE_WITH_HELPERS   # a test variant

The object is committed as package data (ciliumpy/bpf/*.o) so that installing ciliumpy
needs no compiler.  The build is reproducible: clang runs from the repository root with
relative paths, and the debug info's directory is mapped to ".", so the bytes depend only
on the sources and the clang version.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path("bpf/ciliumpy.bpf.c")
OUTPUT = Path("ciliumpy/bpf/ciliumpy.bpf.o")
HEADERS = (Path("bpf/ciliumpy_bpf.h"), Path("bpf/maps.h"), Path("bpf/proxy.h"), Path("bpf/lb.h"))

# -mcpu=v3 (32-bit jumps and ALU, kernel >= 5.1) gives smaller programs; the ring buffer
# already needs 5.8.  No system include directories: the header in bpf/ is self-contained.
CFLAGS = (
    "-O2",
    "-g",
    "-Wall",
    "-Werror",
    "-target",
    "bpf",
    "-mcpu=v3",
    "-nostdinc",
    "-fdebug-compilation-dir=.",
)


def find_clang() -> str:
    """The compiler to use: ``$CLANG``, else ``clang`` on PATH."""
    clang = os.environ.get("CLANG") or shutil.which("clang")
    if not clang:
        sys.exit(
            "bpf/build.py: clang not found; install it (apt-get install clang) or point $CLANG at a BPF-capable clang"
        )
    return clang


def build(out: Path, defines: tuple[str, ...] = ()) -> None:
    """Compile bpf/ciliumpy.bpf.c into ``out`` (absolute or relative to the repo root).

    ``defines`` are preprocessor macros (``NAME`` or ``NAME=VALUE``) for test variants of the
    datapath; the committed object is built without any.
    """
    clang = find_clang()
    out = out if out.is_absolute() else ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        clang,
        *CFLAGS,
        *(f"-D{d}" for d in defines),
        f"-fdebug-prefix-map={ROOT}=.",
        "-c",
        str(SOURCE),
        "-o",
        str(out),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"bpf/build.py: compilation failed: {' '.join(cmd)}")


def clang_version() -> str:
    out = subprocess.run([find_clang(), "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown clang"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temporary directory and fail if the committed object differs",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=OUTPUT,
        help=f"where to write the object (default {OUTPUT})",
    )
    parser.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="a preprocessor macro, for test variants (e.g. CIL_PARSE_WITH_HELPERS)",
    )
    args = parser.parse_args(argv)
    if args.check and (args.define or args.output != OUTPUT):
        parser.error("--check compares the committed object: it takes no --output or --define")
    if not args.check:
        build(args.output, tuple(args.define))
        out = args.output if args.output.is_absolute() else ROOT / args.output
        print(f"built {args.output} ({out.stat().st_size} bytes, {clang_version()})")
        return 0
    committed = ROOT / OUTPUT
    with tempfile.TemporaryDirectory(prefix="ciliumpy-bpf-") as tmp:
        fresh = Path(tmp) / OUTPUT.name
        build(fresh)
        if not committed.exists():
            print(f"bpf/build.py --check: {OUTPUT} is missing; run `python bpf/build.py`")
            return 1
        if not filecmp.cmp(fresh, committed, shallow=False):
            sources = ", ".join(str(p) for p in (SOURCE, *HEADERS))
            print(
                f"bpf/build.py --check: {OUTPUT} is stale: it differs from a fresh build of "
                f"{sources} with {clang_version()}.\n"
                "Run `python bpf/build.py` (or `nox -s bpf`) and commit the object."
            )
            return 1
    print(f"{OUTPUT} is up to date ({clang_version()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
