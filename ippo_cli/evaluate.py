"""`ippo eval`: rebuild an agent from a checkpoint, play episodes on its own env (with
groups replaced as ``+replace.<group>=...`` asks, ippo_cli.crossplay), report the returns
and write eval.json and a video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ippo_cli import checkpoint
from ippo_cli.checkpoint import CheckpointError, resolve_checkpoint
from ippo_cli.crossplay import build_lineup
from ippo_cli.envs.factory import RenderModeError, env_fn
from ippo_cli.episodes import run_episodes, stats
from ippo_cli.files import write_json
from ippo_cli.ippo import IPPO


def evaluate_checkpoint(cfg: Any) -> dict[str, Any]:
    """`ippo eval`: rebuild agent and env from the checkpoint, play, report, write files."""
    if cfg.video_format not in VIDEO_FORMATS:
        raise ValueError(
            f"video_format={cfg.video_format} is not supported; use {' or '.join(VIDEO_FORMATS)}"
        )
    path = resolve_checkpoint(cfg.ckpt)
    data = checkpoint.load(path, cfg.device)
    if "config" not in data or "agent" not in data:
        raise CheckpointError(
            f"checkpoint '{path}' holds no run config (it was not written by `ippo train`)"
        )
    run_cfg = data["config"]
    agent = IPPO.from_dict(data["agent"], cfg.device)
    lineup, policies = build_lineup(agent, path, cfg.replace, cfg.seed, cfg.device)
    try:
        env = env_fn(run_cfg["env"], render_mode="rgb_array" if cfg.render else None)()
    except RenderModeError as exc:
        raise ValueError(f"render=true: {exc}; evaluate without render=true") from None
    torch.manual_seed(cfg.seed)  # the draws of deterministic=false
    try:
        result = run_episodes(
            lineup,
            env,
            cfg.episodes,
            deterministic=cfg.deterministic,
            seed=cfg.seed,
            render=cfg.render,
        )
    finally:
        env.close()
    sums = result.group_sums()
    report = {
        "checkpoint": str(path),
        "env": run_cfg["env"]["name"],
        "deterministic": bool(cfg.deterministic),
        "seed": int(cfg.seed),
        "env_steps": data.get("trainer", {}).get("env_steps"),
        **result.summary(),
        # per group: who played it, and its return summed over its agents
        "players": {
            g: {"policy": policies[g], "agents": agents, "return": stats(sums[g])}
            for g, agents in result.groups.items()
        },
    }
    write_json(path.parent / "eval.json", report)
    if cfg.render:
        report["video"] = str(
            write_video(result.frames, path.parent / f"eval.{cfg.video_format}", cfg.fps)
        )
    print_report(report)
    return report


VIDEO_FORMATS = ("gif", "mp4")


def with_progress_bar(frames: list[np.ndarray]) -> np.ndarray:
    """Frames with a thin bar along the bottom edge that grows with the step.

    It shows where in the episode a frame is, and keeps consecutive frames distinct: GIF
    writers merge identical frames, which would lose the episode's frame count.
    """
    video = np.array(np.stack(frames), dtype=np.uint8)
    n, _, width = video.shape[:3]
    for i in range(n):
        video[i, -3:, : max(1, round(width * (i + 1) / n))] = (40, 40, 40)
    return video


def write_video(frames: list[np.ndarray], out: Path, fps: int) -> Path:
    """An animated GIF or an MP4 of rendered frames (by ``out``'s suffix), written
    atomically."""
    import imageio.v3 as iio

    if not frames or frames[0] is None:
        raise ValueError("the env returned no rgb_array frames; it cannot be rendered")
    fmt = out.suffix.lstrip(".")
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = with_progress_bar(frames)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    if fmt == "gif":
        iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0)
    elif fmt == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ValueError(
                "video_format=mp4 needs an encoder: pip install imageio-ffmpeg (or use gif)"
            ) from None
        iio.imwrite(tmp, frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)
    else:
        raise ValueError(f"video_format={fmt} is not supported; use {' or '.join(VIDEO_FORMATS)}")
    tmp.replace(out)
    return out


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ippo eval: {report['env']}, {report['episodes']} episodes")
    table.add_column("")
    table.add_column("policy")
    table.add_column("return (mean ± std)", justify="right")
    for group, player in report["players"].items():
        n = len(player["agents"])
        label = f"group {group}" + (f" ({n} agents, summed)" if n > 1 else "")
        policy = player["policy"]
        policy = "this checkpoint" if policy == report["checkpoint"] else policy
        s = player["return"]
        table.add_row(label, policy, f"{s['mean']:.3f} ± {s['std']:.3f}")
    s = report["return"]
    table.add_row("sum over agents", "", f"{s['mean']:.3f} ± {s['std']:.3f}")
    s = report["episode_length"]
    table.add_row("episode length", "", f"{s['mean']:.1f} ± {s['std']:.1f}")
    console = Console()
    console.print(table)
    console.print(f"wrote {Path(report['checkpoint']).parent / 'eval.json'}")
    if "video" in report:
        console.print(f"wrote {report['video']}")
