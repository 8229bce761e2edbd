"""The configuration reference's tables, built from the code at docs build time.

Keys, types and defaults come from the ConfigStore schemas in ippo_cli/config.py and the
config `ippo train` composes with no overrides; the options of each group are the files of
conf/<group>/; each key's one-line meaning is the comment beside it in conf/ (or, failing
that, in ippo_cli/config.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ippo_cli import config as schemas

CONF = Path(__file__).resolve().parents[2] / "conf"
# group -> (schema, overrides that select it for composing the defaults)
GROUPS = {
    "env": (schemas.EnvConfig, []),
    "network": (schemas.NetworkConfig, []),
    "algorithm": (schemas.AlgorithmConfig, []),
    "hardware": (schemas.HardwareConfig, []),
    "logger": (schemas.LoggerConfig, []),
    "hpo": (schemas.EvolutionConfig, ["hpo=evolution"]),
}
# The top-level keys of `ippo train` (the groups have their own tables).
TOP_LEVEL = ("seed", "eval_every", "eval_episodes", "eval_gif", "checkpoint", "progress", "resume")


def config_group(group: str) -> str:
    """Markdown tables for ``group``: its options (conf/<group>/*.yaml) and its keys."""
    if group == "train":
        rows = schema_rows(schemas.TrainConfig, composed([]), only=TOP_LEVEL)
        return keys_table(rows)
    if group == "eval":
        defaults = OmegaConf.structured(schemas.EvalConfig)
        return keys_table(schema_rows(schemas.EvalConfig, defaults))
    if group == "launcher":
        return launcher_table()
    if group not in GROUPS:
        raise ValueError(f"unknown config group {group!r}")
    schema, overrides = GROUPS[group]
    rows = schema_rows(schema, composed(overrides)[group])
    return options_table(group) + "\n\n" + keys_table(rows, group)


@cache
def _composed(overrides: tuple[str, ...]):
    from ippo_cli.cli import compose_config

    schemas.register_configs()
    return compose_config("train", list(overrides))


def composed(overrides: list[str]):
    return _composed(tuple(overrides))


def schema_rows(schema, values, prefix: str = "", only: tuple[str, ...] = ()) -> list[tuple]:
    """(dotted key, type, value, comment) for the fields of ``schema`` (those named in
    ``only``, if given), nested schemas flattened."""
    rows = []
    for f in dataclasses.fields(schema):
        if only and f.name not in only:
            continue
        key = prefix + f.name
        if dataclasses.is_dataclass(_schema_type(f)):
            rows += schema_rows(_schema_type(f), values[f.name], key + ".")
            continue
        value = values[f.name] if not OmegaConf.is_missing(values, f.name) else "???"
        rows.append((key, str(f.type), value, field_comment(schema, f.name)))
    return rows


def _schema_type(f: dataclasses.Field):
    resolved = getattr(schemas, str(f.type), None)
    return resolved if dataclasses.is_dataclass(resolved) else None


def keys_table(rows: list[tuple], group: str | None = None) -> str:
    lines = ["| key | type | default (`ippo train`) | meaning |", "|---|---|---|---|"]
    for key, kind, value, comment in rows:
        full = f"{group}.{key}" if group else key
        meaning = comment or yaml_comments(group).get(key, "")
        lines.append(f"| `{full}` | `{kind}` | {show(value)} | {cell(meaning)} |")
    return "\n".join(lines)


def options_table(group: str) -> str:
    lines = [f"| `{group}=` | what it sets |", "|---|---|"]
    for path in sorted((CONF / group).glob("*.yaml")):
        lines.append(f"| `{path.stem}` | {cell(header_comment(path)) or settings(path)} |")
    return "\n".join(lines)


def launcher_table() -> str:
    lines = ["| `launcher=` | jobs run | settings (defaults) |", "|---|---|---|"]
    for path in sorted((CONF / "launcher").glob("*.yaml")):
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        launcher = cfg.get("hydra", {}).get("launcher", {})
        flat = ", ".join(f"`hydra.launcher.{k}` ({show(v, code=False)})"
                         for k, v in flatten(launcher).items())
        lines.append(f"| `{path.stem}` | {cell(header_comment(path))} | {flat} |")
    return "\n".join(lines)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def header_comment(path: Path) -> str:
    """The comment lines a config file starts with (Hydra's @package line left out)."""
    text = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            text.append(line.lstrip("# ").rstrip())
    return " ".join(text)


def settings(path: Path) -> str:
    cfg = OmegaConf.load(path)
    return ", ".join(f"`{k}: {show(v, code=False)}`"
                     for k, v in flatten(OmegaConf.to_container(cfg)).items() if k != "defaults")


@cache
def yaml_comments(group: str | None) -> dict[str, str]:
    """key -> the comment beside it in the group's files (conf/train.yaml and conf/eval.yaml
    for the top-level keys), options that build on no other option first."""
    if group is None:
        paths = [CONF / "train.yaml", CONF / "eval.yaml"]
    else:
        paths = sorted(
            (CONF / group).glob("*.yaml"), key=lambda p: ("defaults:" in p.read_text(), p.name)
        )
    comments: dict[str, str] = {}
    for path in paths:
        stack: list[tuple[int, str]] = []
        for line in path.read_text().splitlines():
            m = re.match(r"^(\s*)([\w-]+):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
            if not m:
                continue
            indent, key, comment = len(m.group(1)), m.group(2), m.group(4)
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
            dotted = ".".join(k for _, k in stack)
            if comment and dotted not in comments:
                comments[dotted] = comment
    return comments


@cache
def _class_comments(schema) -> dict[str, str]:
    """field -> the comment beside it (or the comment lines just above it) in the source."""
    out: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(schema).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        field = re.match(r"    (\w+)\s*:", line)
        if field:
            _, _, beside = line.partition("  # ")
            out[field.group(1)] = beside or " ".join(above)
        above = []
    return out


def field_comment(schema, name: str) -> str:
    return _class_comments(schema).get(name, "")


def show(value: Any, code: bool = True) -> str:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    text = _yamlish(value)
    return f"`{text}`" if code else text


def _yamlish(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yamlish(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yamlish(v) for v in value) + "]"
    return str(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|")
