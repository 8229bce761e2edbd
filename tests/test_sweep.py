"""`ippo train -m` sweeps: failed jobs do not stop them, and every sweep gets a summary."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from ippo_cli.launchers import job_cores, missing_plugin, share_cores
from ippo_cli.sweep import build_summary
from tests.conftest import run_cli

TINY = [
    "logger=none",
    "progress=false",
    "algorithm.total_steps=512",
    "algorithm.learn_step=256",
    "env.num_envs=2",
    "eval_every=256",
    "eval_episodes=1",
    "hardware.vec_env=sync",
    "checkpoint.every=0",
]
OUTPUTS = ("summary.json", "summary.csv", "learning_curves.png")


def _read(sweep):
    summary = json.loads((sweep / "summary.json").read_text())
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    return summary, rows


def test_a_sweep_over_lr_and_seeds_is_summarised_and_can_be_rebuilt(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "algorithm.lr=0.001,0.003", "seed=0,1", *TINY]
    result = run_cli([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    for job in "0123":
        assert json.loads((sweep / job / "summary.json").read_text())["status"] == "completed"
    summary, rows = _read(sweep)
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert all(float(r["env_steps"]) == 512 and r["final_eval"] for r in rows)
    assert [j["job"] for j in summary["jobs"]] == ["0", "1", "2", "3"]
    groups = {g["group"]: g for g in summary["groups"]}
    assert set(groups) == {"algorithm.lr=0.001", "algorithm.lr=0.003"}
    for name, group in groups.items():
        assert group["seeds"] == 2
        finals = [j["final_eval"] for j in summary["jobs"] if j["group"] == name]
        assert abs(group["final_eval_mean"] - sum(finals) / 2) < 1e-9
        assert group["final_eval_std"] >= 0
    assert (sweep / "learning_curves.png").stat().st_size > 0
    assert "groups (over seeds)" in result.stdout

    # `ippo summary DIR` rebuilds the files of an existing sweep.
    for name in OUTPUTS:
        (sweep / name).unlink()
    rebuilt = run_cli(["summary", str(sweep)], tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert all((sweep / name).is_file() for name in OUTPUTS)
    again, _ = _read(sweep)
    assert again["groups"] == summary["groups"] and again["jobs"] == summary["jobs"]


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    factories = "tests.probe_envs.RaisingEnv,tests.probe_envs.ConstantRewardEnv"
    args = ["train", "-m", "env=pettingzoo", "env.name=probe", f"env.factory={factories}"]
    args += [*TINY, "algorithm.learn_step=64", f"hydra.sweep.dir={sweep}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ippo: error:")]
    assert len(errors) == 1 and "job 0 failed" in errors[0] and "bad action" in errors[0]
    failed = json.loads((sweep / "0" / "summary.json").read_text())
    assert failed["status"] == "failed" and "bad action" in failed["error"]
    assert "\n" not in failed["error"]
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "completed"
    summary, rows = _read(sweep)
    assert [r["status"] for r in rows] == ["failed", "completed"]
    assert "bad action" in rows[0]["error"] and rows[1]["error"] == ""
    by_status = {g["statuses"].get("failed", 0): g for g in summary["groups"]}
    assert by_status[1]["seeds"] == 0 and by_status[1]["final_eval_mean"] is None
    assert by_status[0]["seeds"] == 1 and by_status[0]["final_eval_mean"] is not None
    assert (sweep / "learning_curves.png").is_file()


def test_an_unfinished_sweep_is_summarised_from_what_exists(tmp_path):
    sweep = tmp_path / "sweep"
    for job, seed, rows in (("0", 0, 3), ("1", 1, 1)):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(
            f"- algorithm.lr=0.1\n- seed={seed}\n"
        )
        lines = [
            json.dumps({"env_steps": 10 * (i + 1), "eval/return": float(i)}) for i in range(rows)
        ]
        (sweep / job / "metrics.jsonl").write_text("\n".join(lines) + '\n{"env_st')  # mid-write
    (sweep / "0" / "summary.json").write_text(
        json.dumps({"env_steps": 30, "wall_time": 1.0, "final_eval": 2.0, "best_eval": 2.0,
                    "interrupted": True, "status": "interrupted"})
    )  # fmt: skip
    summary = build_summary(sweep)
    assert [j["status"] for j in summary["jobs"]] == ["interrupted", "incomplete"]
    assert summary["jobs"][1]["env_steps"] == 10 and summary["jobs"][1]["best_eval"] == 0.0
    (group,) = summary["groups"]
    assert group["seeds"] == 0 and len(group["_curves"]) == 2
    result = run_cli(["summary", str(sweep)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert all((sweep / name).is_file() for name in OUTPUTS)


def _optuna_like_sweep(sweep, finals):
    """Job directories as an Optuna sweep leaves them: full-precision float overrides."""
    for job, final in enumerate(finals):
        overrides = [
            f"algorithm.lr={0.000123456789012345 * (job + 1)!r}",
            f"algorithm.ent_coef={0.0123456789012345678 / (job + 1)!r}",
            f"algorithm.clip_coef={0.1876543210987654 + job / 100!r}",
            "algorithm.total_steps=4096",
            "logger=none",
        ]
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        summary = {
            "env_steps": 4096,
            "wall_time": 31.25,
            "final_eval": final,
            "best_eval": final + 1.5,
            "interrupted": False,
            "status": "completed",
        }
        (sweep / str(job) / "summary.json").write_text(json.dumps(summary))


def test_the_printed_summary_keeps_its_numbers_at_80_columns(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    finals = [-123.4567891, -98.7654321, -45.6789012]
    _optuna_like_sweep(sweep, finals)
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli(["summary", str(sweep)], tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("written:")[0].splitlines()  # the tables
    assert max(len(line) for line in lines) <= 80
    for final in finals:  # final and best evaluation of every job, whole, on one line
        assert any(f"{final:.3f}" in line and f"{final + 1.5:.3f}" in line for line in lines)
        assert sum(f"{final:.3f} ± 0.000" in line for line in lines) == 1  # groups table
    # Overrides shown rounded and folded, not cut off: each job's lr is there in full.
    assert sum("algorithm.lr=0.0001235" in line for line in lines) == 2  # jobs, groups
    assert "algorithm.total_steps" not in result.stdout  # the same in every job
    # The files keep the full values.
    summary, rows = _read(sweep)
    assert "algorithm.lr=0.000123456789012345" in rows[0]["overrides"]
    assert summary["jobs"][0]["final_eval"] == finals[0]
    assert "algorithm.lr=0.000123456789012345" in summary["groups"][0]["group"]


def test_display_override_rounds_float_values_only():
    from ippo_cli.sweep import display_override

    assert display_override("algorithm.lr=0.000123456789012345") == "algorithm.lr=0.0001235"
    assert display_override("algorithm.lr=3e-4") == "algorithm.lr=0.0003"
    assert display_override("seed=3") == "seed=3"
    assert display_override("env.name=v1.2.3") == "env.name=v1.2.3"
    assert display_override("network=cnn") == "network=cnn"


def test_summary_of_a_bad_directory_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "missing", tmp_path / "empty"):
        result = run_cli(["summary", str(target)], tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ippo: error:"), result.stderr
        assert str(target) in lines[0]
    assert not any((tmp_path / "empty").iterdir())


def test_a_sweep_over_an_unknown_key_fails_before_any_job(tmp_path):
    result = run_cli(["train", "-m", "algorithm.lrr=1,2", "logger=none"], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "algorithm.lrr" in lines[0], result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_sweep_over_a_key_it_adds_passes_the_search_space_check():
    from ippo_cli.cli import check_search_space, expand_sweeps
    from ippo_cli.config import register_configs
    from tests.conftest import probe_overrides

    register_configs()
    overrides = [*probe_overrides("ObsRewardEnv"), "+env.kwargs.episode_len=1,2"]
    check_search_space(overrides, expand_sweeps(overrides)[0])  # raised "already at" before


def test_the_preflight_builds_each_configuration_once_whatever_its_seeds(monkeypatch):
    from ippo_cli.cli import preflight
    from ippo_cli.config import register_configs
    from ippo_cli.envs import factory
    from tests.conftest import probe_overrides

    register_configs()
    built = []
    real_env_fn = factory.env_fn
    monkeypatch.setattr(
        factory, "env_fn", lambda cfg, mode=None: built.append(cfg) or real_env_fn(cfg, mode)
    )
    preflight(
        "train", ["-m", *probe_overrides("ObsRewardEnv"), "algorithm.lr=1e-3,3e-3", "seed=0,1,2"]
    )
    assert len(built) == 2  # one per learning rate, not per job


def test_an_optuna_sweep_of_three_trials_saves_the_best_value(tmp_path):
    args = [
        "train",
        "-m",
        "hpo=optuna",
        "hydra.sweeper.n_trials=3",
        "algorithm.total_steps=512",
        "logger=none",
        "progress=false",
        "env.num_envs=2",
        "eval_episodes=1",
        "hardware.vec_env=sync",
        "algorithm.learn_step=choice(256,512)",
    ]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    finals = [
        json.loads((sweep / j / "summary.json").read_text())["final_eval"] for j in ("0", "1", "2")
    ]
    assert results["best_value"] == pytest.approx(max(finals))
    assert set(results["best_params"]) >= {"algorithm.lr", "algorithm.learn_step"}


# ------------------------------------------------------------------ launchers
def test_joblib_launcher_runs_two_jobs_at_once_on_a_share_of_the_cores(tmp_path):
    from tests.conftest import probe_overrides

    sweep = tmp_path / "sweep"
    meet = tmp_path / "meet"
    probe = probe_overrides("RendezvousEnv", directory=meet)
    args = ["train", "-m", "launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *TINY]
    result = run_cli([*args, *probe, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr
    # Each job waited for the other at its first reset: both finished, so both ran at once.
    assert len(list(meet.iterdir())) == 2
    summary, rows = _read(sweep)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    cores = job_cores({"_target_": "x.JoblibLauncher", "n_jobs": 2})
    for job in "01":
        assert f"hardware.cores={cores}" in (sweep / job / "train.log").read_text()


def test_submitit_local_launcher_runs_a_job(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "launcher=submitit_local", "seed=3", *TINY]
    result = run_cli([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr
    job = json.loads((sweep / "0" / "summary.json").read_text())
    assert job["status"] == "completed" and job["env_steps"] == 512
    assert (sweep / ".submitit").is_dir()  # it went through submitit's executor
    assert (sweep / "summary.csv").exists()


@pytest.mark.parametrize(
    ("launcher", "n_jobs", "cores", "expected"),
    [
        ("x.JoblibLauncher", 2, 2, 1),
        ("x.JoblibLauncher", -1, 4, 1),
        ("x.JoblibLauncher", 2, 8, 4),
        ("x.JoblibLauncher", -2, 8, 1),
        ("x.JoblibLauncher", 16, 2, 1),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", None, 8, None),
    ],
)
def test_job_cores_share_the_machine(launcher, n_jobs, cores, expected):
    assert job_cores({"_target_": launcher, "n_jobs": n_jobs}, cores) == expected


def test_share_cores_caps_the_job_unless_its_cores_are_set():
    from omegaconf import OmegaConf

    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.x.SlurmLauncher"}
    unset = {"num_workers": None, "vec_env": "async", "threads": 0, "learn_threads": None}
    cfg = OmegaConf.create({"hardware": {**unset, "cores": None}})
    assert "hardware.cores=6" in share_cores(cfg, {**slurm, "cpus_per_task": 6})
    h = cfg.hardware
    # learn_threads stays automatic: 1 for small minibatches, capped at the job's cores.
    assert (h.cores, h.num_workers, h.vec_env, h.threads, h.learn_threads) == (
        6,
        None,
        "async",
        6,
        None,
    )
    one = OmegaConf.create({"hardware": {**unset, "threads": 1, "learn_threads": 2}})
    share_cores(one, {**slurm, "cpus_per_task": 1})
    h = one.hardware
    assert (h.cores, h.vec_env, h.threads, h.learn_threads) == (1, "sync", 1, 2)
    # Workers the user asked for stay; the job is still capped.
    workers = OmegaConf.create({"hardware": {**unset, "num_workers": 3}})
    share_cores(workers, {**slurm, "cpus_per_task": 1})
    assert (workers.hardware.cores, workers.hardware.vec_env) == (1, "async")
    mine = OmegaConf.create({"hardware": {**unset, "cores": 3, "threads": 1}})
    assert share_cores(mine, {**slurm, "cpus_per_task": 6}) is None
    assert mine.hardware.cores == 3


@pytest.mark.parametrize("cores", [1, 2])
def test_a_runs_cores_set_its_env_workers_and_learning_threads(tmp_path, cores):
    from ippo_cli.trainer import Trainer
    from tests.conftest import FAST, probe_overrides, train_config

    overrides = probe_overrides("ConstantRewardEnv") + [
        "env.num_envs=4",
        "hardware.vec_env=async",
        f"hardware.cores={cores}",
        "algorithm.batch_size=512",  # large enough to learn on several threads
    ]
    trainer = Trainer(train_config(FAST + overrides), tmp_path)
    try:
        assert trainer.env.num_workers == cores
        with trainer.learning_threads() as threads:
            assert threads == cores
    finally:
        trainer.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hpo=optuna", "algorithm.batch_size=interval(16.5,64)"], "'algorithm.batch_size"),
        (["hpo=optuna", "algorithm.lrr=interval(0.1,0.2)"], "unknown key 'algorithm.lrr'"),
        (["algorithm.batch_size=32,abc"], "'algorithm.batch_size'"),
    ],
)
def test_bad_search_space_refused_before_any_job(tmp_path, args, message):
    result = run_cli(["train", "-m", *args, *TINY], tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


def test_launcher_without_its_plugin_is_refused(tmp_path):
    if missing_plugin("ray") is None:
        pytest.skip("the Ray launcher is installed")
    result = run_cli(["train", "-m", "launcher=ray", "seed=0,1", *TINY], tmp_path)
    assert result.returncode == 2
    assert "pip install 'ippo-cli[ray]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
