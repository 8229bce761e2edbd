"""The `ippo` command: `ippo train ...` and `ippo eval ...`, both Hydra applications.

Before Hydra starts a run, the overrides are composed and checked here, so that a bad
value fails with one line naming it, before any run directory, env or worker exists.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ippo_cli.config import ConfigError, register_configs, validate_train
from ippo_cli.files import write_json
from ippo_cli.launchers import missing_plugin, share_cores
from ippo_cli.paths import CONF_DIR
from ippo_cli.run_control import first_line
from ippo_cli.sweep import is_seed

log = logging.getLogger("ippo")

USAGE = """usage: ippo <command> [overrides ...]

commands:
  train   train IPPO agents          ippo train env=speaker_listener seed=1
  eval    evaluate a checkpoint      ippo eval ckpt=outputs/train/.../checkpoints/last.pt
  summary summarise a sweep          ippo summary outputs/multirun/<date>/<time>

`ippo <command> --help` lists config groups and options."""

GROUPS = ("env", "network", "algorithm", "hardware", "logger", "hpo", "launcher")
# Hydra flags that print or inspect instead of running: skip the pre-flight for them.
INFO_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--shell-completion",
    "-sc",
    "--version",
}
MAX_PREFLIGHT_COMBINATIONS = 256
_NO_DETAIL = "invalid configuration"  # an error whose message is blank
# Config nodes that take arbitrary keys (`+env.kwargs.N=5`), per command; everything else
# is a schema.
OPEN_KEYS = {
    "train": (
        "env.kwargs.",
        "network.groups.",
        "hpo.hp_config.",
        "algorithm.signalling.",
        "algorithm.listening.",
    ),
    "eval": ("replace.",),
}


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, args = argv[0], argv[1:]
    apps = {"train": _train_app, "eval": _eval_app}
    if command == "summary":  # not a Hydra app: no config, no pre-flight
        from ippo_cli.sweep import summary_command

        summary_command(args)
        return
    if command not in apps:
        _fail(f"unknown command '{command}'; known: train, eval, summary")
    import_from_working_directory()
    register_configs()
    try:
        if not INFO_FLAGS.intersection(args):
            preflight(command, args)
            if command == "train":
                args = args + resume_run_dir_overrides(args) + worker_rank_overrides()
    except UserError as exc:
        _fail(str(exc))
    sys.argv = [f"ippo {command}", *args]
    apps[command]()


def import_from_working_directory() -> None:
    """Let ``env.factory`` (and wrappers) name a module in the directory `ippo` was started
    from, as ``python -m`` and pytest do: first on this process's path and, through
    PYTHONPATH, on that of every process it starts (env workers, sweep jobs of the joblib
    and submitit launchers)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if cwd not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *filter(None, paths)])


def _fail(message: str, status: int = 2) -> None:
    print(f"ippo: error: {message}", file=sys.stderr)
    raise SystemExit(status)


# ------------------------------------------------------------------ pre-flight
def preflight(command: str, args: list[str]) -> None:
    """Compose every override combination and validate it; raise UserError on the first
    problem."""
    overrides = [a for a in args if not a.startswith("-")]
    unknown_flags = [a for a in args if a.startswith("-") and a not in ("-m", "--multirun")]
    if unknown_flags:
        raise UserError(f"unknown option '{unknown_flags[0]}'; see `ippo {command} --help`")
    if command == "train" and _resume_value(overrides) is not None:
        check_resume_overrides(overrides)
        resume_checkpoint(_resume_value(overrides))
        for combo in expand_sweeps(overrides):
            try:
                validate_train(compose_config(command, combo))
            except ConfigError as exc:
                raise UserError(str(exc)) from None
        return
    multirun = any(a in ("-m", "--multirun") for a in args)
    stacked = multirun and "launcher=stacked" in overrides
    if stacked:
        check_max_members(overrides)
    combos = expand_sweeps(overrides, command)
    # Jobs that differ only in their seed build the same env and networks: built once
    # (speaker_listener's take 0.8 s of CPU; a sweep may have a thousand jobs).
    built: set[tuple[str, ...]] = set()
    for combo in combos:
        cfg = compose_config(command, combo)
        if stacked and cfg.hardware.distributed:
            raise UserError(
                "launcher=stacked trains a sweep's jobs together in this process and cannot "
                "run hardware=distributed; use launcher=basic|slurm|ray for data-parallel jobs"
            )
        if command == "train":
            unseeded = tuple(o for o in combo if not is_seed(o))
            try:
                _check_train(cfg, multirun, build=unseeded not in built)
            except UserError as exc:
                swept = [o for o in combo if any(o not in other for other in combos)]
                if not swept:
                    raise
                raise UserError(f"sweep job with {' '.join(swept)}: {exc}") from None
            built.add(unseeded)
    if command == "train" and multirun:
        check_search_space(overrides, combos[0])


def check_max_members(overrides: list[str]) -> None:
    """``hydra.launcher.max_members`` of launcher=stacked must be a whole number >= 1."""
    for o in overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key != "hydra.launcher.max_members":
            continue
        try:
            ok = int(value) >= 1
        except ValueError:
            ok = False
        if not ok:
            raise UserError(
                f"hydra.launcher.max_members={value} is invalid: must be an integer >= 1"
            )


# What `resume=` may change: how long, where it logs, on what hardware; not the experiment.
RESUMABLE_KEYS = (
    "algorithm.total_steps",
    "logger",
    "hardware",
    "eval_every",
    "eval_episodes",
    "checkpoint",
    "progress",
    "resume",
    "hydra",
)


def _resume_value(args: list[str]) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    return values[-1] if values and values[-1] not in ("", "null") else None


def resume_checkpoint(path: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume (a file, or a run directory's checkpoints/last.pt)."""
    from ippo_cli.checkpoint import CheckpointError, load, resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(path)
        data = load(ckpt)
    except CheckpointError as exc:
        raise UserError(f"resume: {exc}") from None
    if data.get("kind") == "population":  # hpo=evolution continues at an evolution
        return ckpt, data
    if data.get("kind") != "run" or "env" not in data.get("trainer", {}):
        raise UserError(f"resume='{path}' is not a resumable `ippo train` checkpoint")
    if not data["trainer"]["env"].get("restorable", False):
        raise UserError(f"resume='{path}': its env state cannot be restored")
    return ckpt, data


def check_resume_overrides(args: list[str]) -> None:
    """Refuse overrides that would change the experiment being resumed."""
    for arg in args:
        if arg.startswith("-"):
            continue
        key = arg.lstrip("+~").split("=", 1)[0]
        if not any(
            key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in RESUMABLE_KEYS
        ):
            raise UserError(
                f"'{arg}' would change the experiment being resumed; with resume= only "
                f"{', '.join(k for k in RESUMABLE_KEYS if k not in ('resume', 'hydra'))} "
                "may change"
            )


def resume_run_dir_overrides(args: list[str]) -> list[str]:
    """A resumed run continues in its own run directory (its .hydra/ stays as it was)."""
    path = _resume_value(args)
    if path is None:
        return []
    ckpt, _ = resume_checkpoint(path)
    run_dir = ckpt.resolve().parent.parent
    return [f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]


def resumed_config(cfg: DictConfig, data: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The checkpoint's config with the allowed overrides of this command applied."""
    resumed = OmegaConf.create(data["config"])
    for arg in overrides:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra") or key == "resume":
            continue
        node = key.replace("/", ".")
        OmegaConf.update(resumed, node, OmegaConf.select(cfg, node), merge=False)
    return resumed


def expand_sweeps(overrides: list[str], command: str = "train") -> list[list[str]]:
    """Every combination of a sweep (``key=a,b``) of ``command``'s overrides as a plain
    list of overrides."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise UserError(_reason(exc)) from None
    open_keys = OPEN_KEYS[command]
    choices = []
    for o in parsed:
        if o.key_or_group.startswith("hydra"):
            continue
        if o.is_add() and not o.key_or_group.startswith(open_keys):
            raise UserError(
                f"unknown key '{o.key_or_group}'; '+' adds keys only under "
                f"{', '.join(k.rstrip('.') for k in open_keys)} (check the spelling)"
            )
        if not o.is_sweep_override():
            choices.append([o.input_line])
        elif not o.is_interval_sweep():  # intervals are sampled by the sweeper itself
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
    combos = [list(c) for c in itertools.product(*choices)]
    return combos[:MAX_PREFLIGHT_COMBINATIONS]


def check_search_space(overrides: list[str], base: list[str]) -> None:
    """Every value a sweeper may try (Optuna's ``hydra.sweeper.params`` and command-line
    intervals) must fit its key: each choice, range value and interval bound is composed."""
    params = dict(_sweeper_params(base))
    parser = OverridesParser.create()
    for o in parser.parse_overrides([a for a in overrides if not a.startswith("hydra")]):
        if o.is_sweep_override():
            params[o.get_key_element()] = o.input_line.split("=", 1)[1]
    swept = {key.lstrip("+~") for key in params}  # a `+key=a,b` sweep adds a new key
    plain = [b for b in base if b.split("=", 1)[0].lstrip("+~") not in swept]
    for key, spec in params.items():
        try:
            parsed = parser.parse_override(f"{key}={spec}")
        except HydraException as exc:
            raise UserError(f"search space '{key}: {spec}': {_reason(exc)}") from None
        if parsed.is_interval_sweep():
            sweep = parsed.value()
            values = [sweep.start, sweep.end]
        elif parsed.is_sweep_override():
            values = list(parsed.sweep_string_iterator())
        else:
            values = [parsed.get_value_element_as_str()]
        for value in values:
            try:
                compose_config("train", [*plain, f"{key}={value}"])
            except UserError as exc:
                raise UserError(f"search space '{key}: {spec}': {exc}") from None


def _sweeper_params(overrides: list[str]) -> dict[str, str]:
    """The sweeper's search space as composed (empty for the basic sweeper)."""
    cfg = compose_config("train", overrides, with_hydra=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return {str(k): str(v) for k, v in params.items()}


def compose_config(command: str, overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """Compose the config as Hydra will, turning composition errors into one line.
    ``with_hydra`` also returns the ``hydra`` node (left unresolved: its run-time
    interpolations only resolve inside a run)."""
    for o in overrides:
        group, _, value = o.lstrip("+~").partition("=")
        if group in GROUPS and value:
            known = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
            if value not in known:
                raise UserError(f"unknown {group} '{value}'; known: {', '.join(known)}")
            if group == "launcher" and missing_plugin(value):
                raise UserError(missing_plugin(value))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=command, overrides=overrides, return_hydra_config=with_hydra)
            if not with_hydra:
                OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            return cfg
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(describe_config_error(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def describe_config_error(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key."""
    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt in chain:
            break
        chain.append(nxt)
    for err in chain:
        if isinstance(err, ConfigKeyError | ConfigAttributeError) and getattr(
            err, "full_key", None
        ):
            parent = err.full_key.rpartition(".")[0]
            if any(f"{parent}." in keys for keys in OPEN_KEYS.values()):
                return (
                    f"'{err.full_key}' is a new key under '{parent}': add it with '+' "
                    f"(+{err.full_key}=...)"
                )
            return f"unknown key '{err.full_key}'" + (
                f" in '{parent}'; check the spelling" if parent else "; check the spelling"
            )
        if isinstance(err, OmegaConfBaseException) and getattr(err, "full_key", None):
            if "Missing mandatory value" in str(err):
                return f"'{err.full_key}' must be set (e.g. {err.full_key}=...)"
            msg = first_line(getattr(err, "msg", None) or str(err), _NO_DETAIL)
            return f"bad value for '{err.full_key}': {msg}"
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    return first_line(str(exc), _NO_DETAIL)


def check_launch(cfg: DictConfig, multirun: bool) -> None:
    """hardware=distributed if and only if a launcher (torchrun, accelerate) started us."""
    from ippo_cli.distributed import LAUNCH_HINT, launched_rank

    world = int(os.environ.get("WORLD_SIZE", 1)) if launched_rank() is not None else None
    if cfg.hardware.distributed:
        if cfg.get("hpo") is not None:
            raise UserError(
                "hardware=distributed trains one agent and cannot run hpo=evolution; "
                "hpo=evolution trains its population as one stack in one process"
            )
        if multirun:
            raise UserError(
                "hardware=distributed trains one run over several processes and cannot "
                "be swept with -m; sweep with a launcher (launcher=joblib|slurm|ray) instead"
            )
        if world is None:
            raise UserError(
                "hardware=distributed must be started by torchrun or accelerate launch "
                f"(RANK/WORLD_SIZE are not set), e.g. {LAUNCH_HINT}"
            )
    elif world is not None and world > 1:
        raise UserError(
            f"started by a launcher with WORLD_SIZE={world} but hardware.distributed is "
            "false; add hardware=distributed"
        )


def worker_rank_overrides() -> list[str]:
    """Ranks other than 0 of a distributed run write nothing the user keeps: their Hydra
    output goes to a temporary directory, removed at exit, and they log nowhere."""
    from ippo_cli.distributed import launched_rank

    rank = launched_rank()
    if not rank:
        return []
    scratch = tempfile.mkdtemp(prefix=f"ippo-rank{rank}-")
    atexit.register(shutil.rmtree, scratch, True)
    return [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "logger=none", "progress=false"]


def _check_train(cfg: DictConfig, multirun: bool = False, build: bool = True) -> None:
    """Validate a training config; with ``build``, also build its env and networks."""
    from ippo_cli.envs.factory import EnvConfigError, RenderModeError, env_fn
    from ippo_cli.trainer import build_agent, resolve_device

    try:
        validate_train(cfg)
        resolve_device(cfg.hardware.device)
    except (ConfigError, ValueError) as exc:
        raise UserError(str(exc)) from None
    check_launch(cfg, multirun)
    if not build:
        return
    try:  # the evaluation env as it will be built (rendering for eval_gif)
        env = env_fn(cfg.env, "rgb_array" if cfg.eval_gif else None)()
    except RenderModeError as exc:
        raise UserError(f"eval_gif=true: {exc}; set eval_gif=false") from None
    except EnvConfigError as exc:
        raise UserError(str(exc)) from None
    try:
        agents = list(env.possible_agents)
        spaces = ([env.observation_space(a) for a in agents], [env.action_space(a) for a in agents])
        build_agent(cfg, *spaces, agents, "cpu")  # network and space errors, before any run
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise UserError(_reason(exc)) from None
    finally:
        env.close()


# ------------------------------------------------------------------ train
@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _train_app(cfg: DictConfig) -> float | None:
    from hydra.types import RunMode

    from ippo_cli.envs.factory import EnvConfigError
    from ippo_cli.trainer import Trainer

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    data = None
    try:
        if cfg.resume:
            _, data = resume_checkpoint(cfg.resume)
            cfg = resumed_config(cfg, data, list(hydra_cfg.overrides.task))
    except Exception as exc:
        if not multirun:
            raise
        return _sweep_job_failed(run_dir, _reason(exc))
    if multirun:
        decided = share_cores(cfg, hydra_cfg.launcher)
        if decided:
            log.info(decided)
    try:
        if cfg.get("hpo") is not None:
            from ippo_cli.evolution.population import PopulationTrainer

            trainer = PopulationTrainer(cfg, run_dir, resume=data)
        else:
            trainer = Trainer(cfg, run_dir, resume=data)
        summary = trainer.run()
    except EnvConfigError as exc:  # the env cannot be built (the pre-flight built one)
        log.info("building the env failed", exc_info=True)
        if multirun:
            return _sweep_job_failed(run_dir, str(exc))
        _fail(str(exc))
    except (ValueError, TypeError, RuntimeError, NotImplementedError, KeyError, OSError) as exc:
        # Bad data from an env (a mask of the wrong length, ...) or a crashed env worker:
        # one line, and checkpoints/last.pt holds the last completed update.
        log.info("training failed", exc_info=True)  # the log file keeps the traceback
        if multirun:
            return _sweep_job_failed(run_dir, _reason(exc))
        _fail(f"{_reason(exc)} (run directory: {run_dir})", status=1)
    except Exception as exc:
        if not multirun:
            raise
        # In a sweep, any failure of one job is recorded and the sweep goes on.
        log.info("training failed", exc_info=True)
        return _sweep_job_failed(run_dir, f"{type(exc).__name__}: {_reason(exc)}")
    except SystemExit as exc:
        if not multirun or exc.code in (0, None):
            raise
        log.info("training failed", exc_info=True)
        return _sweep_job_failed(run_dir, f"exited with status {exc.code}")
    if not trainer.dist.main:
        return None  # rank 0 reports for the whole data-parallel run
    _print_train_summary(summary)
    if multirun:
        summary["status"] = "interrupted" if summary["interrupted"] else "completed"
    write_json(run_dir / "summary.json", summary)
    if summary["interrupted"]:
        print(f"interrupted: saved {run_dir / 'checkpoints' / 'last.pt'}", file=sys.stderr)
        if multirun:  # the sweep stops here: summarise the jobs run so far
            from ippo_cli.sweep import SweepSummaryCallback

            sweep = OmegaConf.create({"hydra": {"sweep": {"dir": hydra_cfg.sweep.dir}}})
            SweepSummaryCallback().on_multirun_end(sweep)
        raise SystemExit(130)
    return summary["final_eval"]


def _sweep_job_failed(run_dir: Path, error: str) -> None:
    """Record a failed sweep job (summary.json with status "failed") and let the sweep go on."""
    from ippo_cli.sweep import metrics_summary

    summary = {**metrics_summary(run_dir), "interrupted": False, "status": "failed"}
    summary["error"] = error
    write_json(run_dir / "summary.json", summary)
    job = HydraConfig.get().job.num
    print(f"ippo: error: job {job} failed: {error} (run directory: {run_dir})", file=sys.stderr)
    return None


def _print_train_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table(title="ippo train", show_header=False)
    table.add_row("env steps", f"{summary['env_steps']:,}")
    table.add_row("wall time", f"{summary['wall_time']:.1f} s")
    table.add_row("final eval return", fmt(summary["final_eval"]))
    table.add_row("best eval return", fmt(summary["best_eval"]))
    console = Console()
    console.print(table)
    console.print(f"run directory: {summary['run_dir']}", soft_wrap=True)


# ------------------------------------------------------------------- eval
@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _eval_app(cfg: DictConfig) -> None:
    from ippo_cli.checkpoint import CheckpointError
    from ippo_cli.evaluate import evaluate_checkpoint

    try:
        evaluate_checkpoint(cfg)
    except (CheckpointError, UserError, ValueError) as exc:
        _fail(str(exc))
