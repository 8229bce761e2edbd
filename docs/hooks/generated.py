"""MkDocs hook: generated content, so that pages cannot fall behind the code or the results.

- ``{{ config_group("algorithm") }}`` becomes the tables of a config group, read from the
  ConfigStore schemas (ippo_cli/config.py) and the config tree (conf/), see config_reference.py;
- ``{{ result("stacked.json", "scaling.runs.4.env_steps_per_s", "{:,}") }}`` becomes a figure
  read from benchmarks/results/, see results.py;
- the figures in benchmarks/results/*.png are served under ``results/``.

An unknown placeholder, a missing key or a missing file fails the build.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))

import config_reference  # noqa: E402
import results  # noqa: E402

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\((.*?)\)\s*\}\}")
FUNCTIONS = {"config_group": config_reference.config_group, "result": results.result}


def on_page_markdown(markdown, page, config, files):
    def fill(match: re.Match) -> str:
        name, args = match.group(1), match.group(2)
        if name not in FUNCTIONS:
            raise PluginError(f"{page.file.src_path}: unknown placeholder {name}()")
        try:
            return FUNCTIONS[name](*ast.literal_eval(f"({args},)"))
        except (KeyError, IndexError, ValueError, FileNotFoundError) as exc:
            raise PluginError(f"{page.file.src_path}: {match.group(0)}: {exc}") from exc

    return PLACEHOLDER.sub(fill, markdown)


def on_files(files, config):
    for png in sorted(results.RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files
