"""README's results table quotes figures from benchmarks/results/*.json. README cannot use
the docs site's hooks, so each figure is cited under the table as
`<!-- figure: FILE PATH FORMAT -->`; every cited figure must appear in the table as the
JSON formats it, and every number in the table's result column must be a cited figure."""

from __future__ import annotations

import importlib.util
import json
import re

from tests.conftest import REPO

FIGURE = re.compile(r"^<!-- figure: (\S+) (\S+) (\S+) -->$", re.M)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _results_module():
    spec = importlib.util.spec_from_file_location("results", REPO / "docs/hooks/results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results_column(readme: str) -> list[str]:
    """The second cell of each row of the table under `## Results`."""
    section = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [row.split("|")[2].strip() for row in rows]


def test_readme_results_table_matches_the_results_files():
    readme = (REPO / "README.md").read_text()
    results = _results_module()
    cited = [results.result(name, path, fmt) for name, path, fmt in FIGURE.findall(readme)]
    assert cited, "README's results table cites no figure"
    cells = results_column(readme)
    quoted = [n for cell in cells for n in NUMBER.findall(cell)]
    for figure in cited:
        assert figure in quoted, f"README's results table does not show {figure}"
    for number in quoted:
        assert number in cited, f"README's results table shows {number}, which no figure cites"


def test_results_column_reads_the_second_cell():
    readme = "## Results\n\n| a | b | c |\n|---|---|---|\n| x 2M | 1,234 (5) | y |\n\n## Next\n"
    assert results_column(readme) == ["1,234 (5)"]


def test_readme_mpe_suite_table_is_the_results_files():
    # The suite's table is written by its benchmark; README shows it as written.
    readme = (REPO / "README.md").read_text()
    marker = "<!-- table: mpe_suite.json table -->\n"
    assert marker in readme
    table = json.loads((REPO / "benchmarks/results/mpe_suite.json").read_text())["table"]
    start = readme.index(marker) + len(marker)
    assert readme[start : readme.index("\n\n", start)] == table
