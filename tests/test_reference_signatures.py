"""Our ``IPPO`` takes the reference's documented arguments: names, order and defaults.

The signatures are read from the reference document itself (the seed's
``ippo_reference.txt``, beside this repository in ``../shared/seed/``; ``IPPO_REFERENCE``
names another copy), so that a drift on either side fails here. Annotations are not
compared. Ours may add parameters only where no documented call can reach them: keyword-only
ones, or positional ones with a default after every documented one.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
from pathlib import Path

import pytest

from ippo_cli.ippo import IPPO
from tests.conftest import REPO

REFERENCE = Path(
    os.environ.get("IPPO_REFERENCE", REPO.parent / "shared" / "seed" / "ippo_reference.txt")
)
NO_DEFAULT = inspect.Parameter.empty
# "- [static |classmethod ]name(params) [return annotation]¶"
METHOD_LINE = re.compile(r"^- (?:(static|classmethod) )?([a-z_]+)\((.*)\)[^()]*¶$")
CONSTRUCTOR_LINE = re.compile(r"^- class \S+\.IPPO\(")
# "name (type, optional) – text, defaults to X"
PARAMETER_LINE = re.compile(r"^([a-z_]+) \((.*?)\) – (.*)$")
DEFAULT_TEXT = re.compile(r"[Dd]efaults to ([^\s,.]+(?:\.\d+)?|[‘'][^’']*[’'])")


def _reference_text() -> str:
    if not REFERENCE.is_file():
        pytest.skip(f"reference document not found at {REFERENCE} (set IPPO_REFERENCE)")
    return REFERENCE.read_text(encoding="utf-8")


def _split_top_level(text: str) -> list[str]:
    """``a: dict[str, int], b=1`` -> ["a: dict[str, int]", "b=1"] (commas outside brackets)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def _literal(text: str) -> object:
    return ast.literal_eval(text.replace("‘", "'").replace("’", "'"))


def _documented_parameter(text: str) -> tuple[str, str, object]:
    """(kind, name, default) of one documented parameter, e.g. ``loop: int = 3``."""
    kind = "var_keyword" if text.startswith("**") else "var_positional" if text[0] == "*" else ""
    head, _, default = text.partition(" = ")
    name = head.split(":")[0].lstrip("*").strip()
    return kind or "positional", name, _literal(default) if default else NO_DEFAULT


def documented_methods() -> dict[str, tuple[str | None, list[tuple[str, str, object]]]]:
    """Method name -> (``static``/``classmethod``/None, documented parameters)."""
    methods = {}
    for line in _reference_text().splitlines():
        match = METHOD_LINE.match(line.strip())
        if match:
            decorator, name, params = match.groups()
            parsed = [_documented_parameter(p) for p in _split_top_level(params)]
            methods[name] = (decorator, parsed)
    return methods


def documented_constructor() -> list[tuple[str, str, object]]:
    """The constructor's parameters from its "Parameters:" list (name, optional, default)."""
    lines = [line.strip() for line in _reference_text().splitlines()]
    start = next(i for i, line in enumerate(lines) if CONSTRUCTOR_LINE.match(line))
    params = []
    for line in lines[start + 1 :]:
        if METHOD_LINE.match(line):
            break
        match = PARAMETER_LINE.match(line)
        if not match:
            continue
        name, kind, text = match.groups()
        default = DEFAULT_TEXT.search(text)
        if default:
            value = _literal(default.group(1))
        else:  # "optional" without a stated default is None; otherwise required
            value = None if "optional" in kind else NO_DEFAULT
        params.append(("positional", name, value))
    return params


def our_parameters(func) -> list[inspect.Parameter]:
    params = list(inspect.signature(func).parameters.values())
    return params[1:] if params and params[0].name in ("self", "cls") else params


def mismatches(documented: list[tuple[str, str, object]], ours: list[inspect.Parameter]) -> list:
    """What differs between a documented signature and ours (empty when they agree)."""
    kinds = {
        "positional": inspect.Parameter.POSITIONAL_OR_KEYWORD,
        "var_positional": inspect.Parameter.VAR_POSITIONAL,
        "var_keyword": inspect.Parameter.VAR_KEYWORD,
    }
    # Keyword-only parameters of ours are extras no documented call can reach.
    reachable = [p for p in ours if p.kind != inspect.Parameter.KEYWORD_ONLY]
    problems = []
    for i, (kind, name, default) in enumerate(documented):
        if i >= len(reachable):
            problems.append(f"missing parameter {name!r}")
            continue
        p = reachable[i]
        if (p.name, p.kind) != (name, kinds[kind]):
            problems.append(f"position {i}: documented {name!r} ({kind}), ours {p.name!r}")
        elif p.default != default and not (p.default is NO_DEFAULT and default is NO_DEFAULT):
            problems.append(f"{name}: documented default {default!r}, ours {p.default!r}")
    for p in reachable[len(documented) :]:
        if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is NO_DEFAULT:
            problems.append(f"extra required parameter {p.name!r}")
    return problems


def test_the_document_yields_the_signatures_we_compare():
    """The parser finds the methods the issue names, with their documented details, so
    that an empty comparison below means agreement, not a parse that found nothing."""
    methods = documented_methods()
    assert len(methods) >= 25
    decorator, params = methods["population"]
    assert decorator == "classmethod"
    assert [p[1] for p in params] == [
        "size",
        "observation_space",
        "action_space",
        "wrapper_cls",
        "wrapper_kwargs",
        "kwargs",
    ]
    assert methods["test"][1][1:] == [
        ("positional", "swap_channels", False),
        ("positional", "max_steps", None),
        ("positional", "loop", 3),
        ("positional", "sum_scores", True),
    ]
    assert methods["get_action_dim"][0] == "static"
    constructor = dict((name, default) for _, name, default in documented_constructor())
    assert constructor["observation_spaces"] is NO_DEFAULT
    assert constructor["agent_ids"] is None
    assert (constructor["lr"], constructor["device"], constructor["wrap"]) == (1e-4, "cpu", True)
    assert len(constructor) == 27


@pytest.mark.parametrize("name", sorted(documented_methods()) if REFERENCE.is_file() else [])
def test_method_takes_the_documented_arguments(name):
    decorator, documented = documented_methods()[name]
    assert hasattr(IPPO, name), f"IPPO has no method {name}"
    static = inspect.getattr_static(IPPO, name)
    expected_type = {"static": staticmethod, "classmethod": classmethod}.get(decorator)
    if expected_type is not None:
        assert isinstance(static, expected_type), f"{name} must be a {decorator} method"
    assert mismatches(documented, our_parameters(getattr(IPPO, name))) == []


def test_constructor_takes_the_documented_arguments():
    assert mismatches(documented_constructor(), our_parameters(IPPO.__init__)) == []


def test_mismatches_reports_renamed_reordered_and_changed_defaults():
    def ours(self, env, max_steps=None, loop=3, sum_scores=True):  # test() before the fix
        pass

    documented = documented_methods()["test"][1]
    problems = mismatches(documented, our_parameters(ours))
    assert "position 1: documented 'swap_channels' (positional), ours 'max_steps'" in problems

    def changed(self, env, swap_channels=True, max_steps=None, loop=3, sum_scores=True):
        pass

    assert mismatches(documented, our_parameters(changed)) == [
        "swap_channels: documented default False, ours True"
    ]
