"""The public surface of ciliumpy.lab (no privileges needed)."""

from __future__ import annotations

import ciliumpy.lab


def test_all_is_sorted_and_resolves() -> None:
    names = ciliumpy.lab.__all__
    # ruff's RUF022 order: CONSTANTS, then CamelCase classes, then functions, each alphabetical
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    for name in names:
        assert getattr(ciliumpy.lab, name) is not None


def test_importing_ciliumpy_does_not_import_the_lab() -> None:
    import subprocess
    import sys

    code = "import sys, ciliumpy; print('ciliumpy.lab' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
