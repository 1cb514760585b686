"""The quickstart notebook, run by a real Jupyter kernel: no error cell, the planted rate inside the printed
interval, HTML tables for results, a figure."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cwd = tmp_path_factory.mktemp("nb")  # no runs/digits here: the last cell says how to make it
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def _outputs(nb):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def test_the_notebook_runs_without_an_error_cell(executed):
    assert not [o for o in _outputs(executed) if o.output_type == "error"]


def test_the_planted_rate_is_inside_the_printed_interval(executed):
    text = "".join(o.get("text", "") for o in _outputs(executed) if o.output_type == "stream")
    assert "PLANTED_RATE_INSIDE True" in text, text
    assert "verdict: estimated" in text
    assert "\\begin{tabular}" in text  # the LaTeX table


def test_results_render_as_html_tables_with_a_text_fallback(executed):
    rich = [o for o in _outputs(executed) if o.output_type == "execute_result"]
    html = [o["data"]["text/html"] for o in rich if "text/html" in o.get("data", {})]
    assert any("<table" in h and "verdict" in h and "generator" in h for h in html)  # res and its summary
    assert all("text/plain" in o["data"] for o in rich)


def test_the_plot_cell_produces_a_figure(executed):
    assert any("image/png" in o.get("data", {}) for o in _outputs(executed) if o.output_type == "display_data")
