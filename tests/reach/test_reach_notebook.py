"""docs/notebooks/explore.ipynb runs from top to bottom (so it cannot rot) and draws its graph."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[2] / "docs" / "notebooks" / "explore.ipynb"


def test_explore_notebook_executes_and_renders_the_graph(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit it without outputs"
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(NOTEBOOK.parents[2]), env_path) if p)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        )
        client.execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out["data"]["image/png"] for out in outputs if "image/png" in out.get("data", {})]
    assert images, "the graph picture was not rendered"
    png = base64.b64decode(images[0])
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    (tmp_path / "explore-graph.png").write_bytes(png)
    texts = "\n".join(str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", "")) for out in outputs)
    assert "fix 1:" in texts and "match-pattern-depth" in texts and "production/database" in texts
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    assert any("<table" in h for h in html)
