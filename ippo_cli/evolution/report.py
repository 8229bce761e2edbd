"""What a population run shows: a member's metrics row, the table printed at each
evolution and ``population.png`` (each member's fitness over time, with its lineage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ippo_cli.evolution.architecture import describe
from ippo_cli.ippo import IPPO
from ippo_cli.plots import figure, label

SHOWN_HYPERPARAMETERS = ("lr", "batch_size", "learn_step", "ent_coef")


def member_row(agent: IPPO, slot: int, lineage: list[int]) -> dict[str, Any]:
    """Index, lineage (founder first), last mutation, hyperparameters, architecture and
    latest fitness of one member."""
    names = dict.fromkeys([*SHOWN_HYPERPARAMETERS, *(agent.hp_config or {})])
    return {
        "member": agent.index,
        "slot": slot,
        "lineage": list(lineage),
        "mutation": agent.mut,
        "fitness": agent.fitness[-1],
        "member_steps": agent.steps[-1],
        **{f"hp/{name}": getattr(agent, name) for name in names},
        "architecture": describe(next(iter(agent.actors.values()))),
    }


def print_population(rows: list[dict[str, Any]], generation: int, env_steps: int) -> None:
    from rich.console import Console
    from rich.table import Table

    best = max(rows, key=lambda r: r["fitness"])
    table = Table(
        title=f"generation {generation} · {env_steps:,} env steps · best member {best['member']}"
    )
    for column in ("member", "lineage", "mutation", "fitness", *SHOWN_HYPERPARAMETERS, "actor"):
        table.add_column(column, justify="left" if column in ("lineage", "actor") else "right")
    for r in rows:
        style = "bold green" if r is best else None
        table.add_row(
            str(r["member"]),
            " > ".join(map(str, r["lineage"])),
            str(r["mutation"]),
            f"{r['fitness']:.3f}",
            *(_number(r[f"hp/{name}"]) for name in SHOWN_HYPERPARAMETERS),
            r["architecture"],
            style=style,
        )
    console = Console()
    console.width = max(console.width, 140)  # one line per member, also in a narrow log
    console.print(table)


def _number(value: float | int) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_population(history: list[dict[str, Any]], out_path: Path, title: str = "") -> Path:
    """Fitness of every member at each evolution against env steps; a thin line joins
    each member to the one it was cloned from (or to itself) the evolution before."""
    with figure(out_path) as ax:
        at = {(r["generation"], r["member"]): r for r in history}
        for r in history:
            before = at.get((r["generation"] - 1, r["member"]))
            if before is None and len(r["lineage"]) > 1:
                before = at.get((r["generation"] - 1, r["lineage"][-2]))
            if before is not None:
                xs, ys = (before["env_steps"], r["env_steps"]), (before["fitness"], r["fitness"])
                ax.plot(xs, ys, color="0.75", lw=0.8, zorder=1)
        if history:
            ax.scatter(
                [r["env_steps"] for r in history],
                [r["fitness"] for r in history],
                c=[r["member"] for r in history],
                cmap="viridis",
                s=18,
                zorder=2,
                label="members (colour: index)",
            )
            generations = sorted({r["generation"] for r in history})
            best = [
                max((r for r in history if r["generation"] == g), key=lambda r: r["fitness"])
                for g in generations
            ]
            ax.plot(
                [r["env_steps"] for r in best],
                [r["fitness"] for r in best],
                "k-",
                lw=1.5,
                label="best member",
                zorder=3,
            )
        label(ax, "env steps (whole population)", "fitness (mean evaluation return)", title)
    return out_path
