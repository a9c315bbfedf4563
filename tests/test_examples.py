"""examples/: the notebook runs top to bottom in a real Jupyter kernel, and so does its script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


@pytest.mark.timeout(300)
def test_the_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # jupyter_core warns about its path migration unless told which paths to use.
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    import nbclient
    import nbformat

    notebook = nbformat.read(EXAMPLES / "carpark_analysis.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    html = [out.data["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    # The run and the sweep display as tables with their plots; the frames as DataFrames.
    assert any('class="sim-run"' in h and "data:image/png;base64" in h for h in html)
    assert any('class="sim-sweep"' in h and "data:image/png;base64" in h for h in html)
    assert any("steady_wait_mean_mean" in h for h in html)
    pictures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pictures) == 2  # the histogram of waits and the sweep against the model
    text = "".join(out.get("text", "") for out in outputs)
    assert "had to wait" in text
    assert "model at 12 cars: 1.204 sim min" in text
    assert len(list((tmp_path / "logs").glob("carpark-*/run.json"))) == 1
    assert len(list((tmp_path / "logs" / "sweeps").glob("*/runs/*/*/run.json"))) == 9


@pytest.mark.timeout(300)
def test_the_script_version_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "carpark_analysis.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=280, check=False,
                          env={**os.environ, "MPLBACKEND": "Agg"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "model at 12 cars: 1.204 sim min" in done.stdout
    assert (tmp_path / "logs" / "waits.png").is_file()
    assert (tmp_path / "logs" / "sweep.png").is_file()
