"""Every shell command shown in README.md and docs/ runs: each ```bash block's commands are
extracted, given a tiny budget and run in a fresh directory, and must exit 0. A block whose
line just above the fence is `<!-- not-run: <reason> -->` is skipped (cluster launchers,
GPUs, long benchmarks); the reason may not be empty.

Each document's blocks run in order in one directory, so a later command may use what an
earlier one wrote (`ippo train ... hydra.run.dir=runs/first`, then `ippo eval
ckpt=runs/first`). A command seen before is not run again: within a document always;
across documents when it names no `runs/` path, and for the commands that do, only all of
a document's together, when every one of them ran in an earlier document (README's quick
start repeats getting-started's commands, so README comes last).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_SECONDS, REPO

DOCUMENTS = [*sorted((REPO / "docs").rglob("*.md")), REPO / "README.md"]
NOT_RUN = re.compile(r"^<!--\s*not-run:(.*?)-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
BIN = Path(sys.executable).parent
# Appended to every `ippo train`: the smallest run that still trains, evaluates and
# checkpoints (Hydra lets a later override of a key win).
TINY_TRAIN = [
    "algorithm.total_steps=64",
    "eval_episodes=1",
    "checkpoint.every=0",
    "logger=none",
    "progress=false",
]
SMALL_BUDGET = 16384  # env steps: a command that sets no more keeps its own budget
TINY_EVOLUTION = ["hpo.evo_steps=64", "hpo.eval_loop=1"]
TINY_EVAL = ["episodes=1"]


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    commands: tuple[str, ...]
    not_run: str | None  # the reason, when marked not-run


def blocks(path: Path) -> list[Block]:
    """The ```bash blocks of a Markdown file, with their commands (continued lines joined,
    comment lines dropped) and their not-run reason if any."""
    out, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) == "bash":
            marker = NOT_RUN.match(lines[i - 1].strip()) if i else None
            text = "\n".join(lines[i + 1 : end]).replace("\\\n", " ")
            commands = tuple(
                c.strip() for c in text.splitlines() if c.strip() and not c.strip().startswith("#")
            )
            reason = marker.group(1).strip() if marker else None
            out.append(Block(path.relative_to(REPO).as_posix(), i + 1, commands, reason))
        i = end + 1
    return out


def shortened(command: str) -> list[str]:
    """The command as argv with a tiny budget, its program from this environment."""
    argv = shlex.split(command, comments=True)
    if argv[:2] == ["ippo", "train"] or (argv[0] == "torchrun" and "train" in argv):
        extra = TINY_TRAIN + (TINY_EVOLUTION if "hpo=evolution" in argv else [])
        if any(small_budget(a) for a in argv):  # e.g. resuming for a few more steps
            extra = extra[1:]
        argv = argv + ([] if "--help" in argv else extra)
    elif argv[:2] == ["ippo", "eval"]:
        argv = argv + TINY_EVAL
    elif argv[:2] != ["ippo", "summary"]:
        raise ValueError(f"{command!r}: no tiny budget known; mark its block not-run")
    return [str(BIN / argv[0]), *argv[1:]]


def small_budget(arg: str) -> bool:
    """Whether ``arg`` sets a budget small enough to keep as it is."""
    key, _, value = arg.partition("=")
    return key == "algorithm.total_steps" and value.isdigit() and int(value) <= SMALL_BUDGET


def runs_for(documents: list[Path]) -> dict[str, list[tuple[int, str]]]:
    """document -> the (line, command) pairs it runs, duplicates left out."""
    seen: set[str] = set()
    plan: dict[str, list[tuple[int, str]]] = {}
    for path in documents:
        mine: list[tuple[int, str]] = []
        for block in blocks(path):
            if block.not_run is None:
                mine += [(block.line, c) for c in block.commands if c not in {m for _, m in mine}]
        chained = {c for _, c in mine if "runs/" in c}
        keep = [
            (line, c) for line, c in mine if c not in seen or (c in chained and not chained <= seen)
        ]
        seen |= {c for _, c in mine}
        if keep:
            plan[path.relative_to(REPO).as_posix()] = keep
    return plan


PLAN = runs_for(DOCUMENTS)


def test_every_document_with_bash_blocks_is_planned():
    assert len(PLAN) >= 5


def test_run_directory_chains_are_skipped_only_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    first, second, third = (tmp_path / f"{n}.md" for n in ("first", "second", "third"))
    first.write_text("```bash\nippo train hydra.run.dir=runs/a\nippo eval ckpt=runs/a\n```\n")
    second.write_text("```bash\nippo train hydra.run.dir=runs/a\nippo train x=1\n```\n")
    third.write_text(
        "```bash\nippo train hydra.run.dir=runs/a\nippo eval ckpt=runs/a seed=1\n```\n"
    )
    plan = runs_for([first, second, third])
    assert [c for _, c in plan["first.md"]] == [
        "ippo train hydra.run.dir=runs/a",
        "ippo eval ckpt=runs/a",
    ]
    assert [c for _, c in plan["second.md"]] == ["ippo train x=1"]
    assert [c for _, c in plan["third.md"]] == [
        "ippo train hydra.run.dir=runs/a",
        "ippo eval ckpt=runs/a seed=1",
    ]


def test_not_run_markers_give_a_reason():
    empty = [f"{b.document}:{b.line}" for p in DOCUMENTS for b in blocks(p) if b.not_run == ""]
    assert not empty, f"not-run markers without a reason: {empty}"


def test_every_command_to_run_has_a_tiny_budget():
    for commands in PLAN.values():
        for _, command in commands:
            shortened(command)  # raises for a command it cannot shorten


@pytest.mark.parametrize("document", sorted(PLAN))
def test_document_commands_run(document, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "PATH": f"{BIN}:{os.environ['PATH']}"}
    for line, command in PLAN[document]:
        result = subprocess.run(
            shortened(command),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_SECONDS,
        )
        assert result.returncode == 0, (
            f"{document}:{line}: `{command}` exited {result.returncode}:\n{result.stderr[-2000:]}"
        )


def test_blocks_parse_markers_and_continuations(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not-run: needs a cluster -->\n```bash\nippo train -m launcher=slurm\n```\n\n"
        "<!-- not-run: -->\n```bash\nmake bench\n```\n\n"
        "```bash\n# a comment\nippo train a=1 \\\n    b=2\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = blocks(page)
    assert [b.not_run for b in found] == ["needs a cluster", "", None]
    assert found[2].commands == ("ippo train a=1      b=2",)
    assert shortened("ippo train a=1")[-5:] == TINY_TRAIN
    assert "algorithm.total_steps=64" not in shortened("ippo train algorithm.total_steps=4096")
    assert shortened("ippo train algorithm.total_steps=2000000")[-5:] == TINY_TRAIN
    with pytest.raises(ValueError, match="mark its block not-run"):
        shortened("make bench")
