"""`ippo train -m launcher=stacked` as a user runs it: the jobs train as one stack, and
each job's run directory is what a solo run leaves."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import probe_overrides, run_cli, training_process

TINY = [
    *probe_overrides("ObsRewardEnv", n_agents=2, episode_len=3),
    "algorithm.learn_step=64",
    "algorithm.batch_size=16",
    "algorithm.update_epochs=2",
    "algorithm.total_steps=128",
    "env.num_envs=4",
    "eval_every=64",
    "eval_episodes=2",
    "logger=none",
    "progress=false",
    "hardware.vec_env=sync",
]
SWEEP = ["-m", "launcher=stacked", "seed=0,1", "algorithm.lr=0.001,0.003", *TINY]
TIMING = ("wall_time", "steps_per_second")


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The same stacked sweep, run twice."""
    out = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(name)
        result = run_cli(["train", *SWEEP, f"hydra.sweep.dir={root / 'sweep'}"], cwd=root)
        assert result.returncode == 0, result.stderr[-2000:]
        out.append((root / "sweep", result))
    return out


def test_every_job_of_a_stacked_sweep_looks_as_if_it_ran_alone(sweeps):
    sweep, result = sweeps[0]
    assert "jobs 0, 1, 2, 3 train as one stack" in result.stdout + result.stderr
    for job in range(4):
        run = sweep / str(job)
        for name in (".hydra/config.yaml", "train.log", "learning_curve.png"):
            assert (run / name).exists(), name
        assert {p.name for p in (run / "checkpoints").iterdir()} >= {"last.pt", "best.pt"}
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["env_steps"] == 128
        assert [r["env_steps"] for r in _metrics(run) if "update" in r][-1] == 128
        assert "one of a stack of 4 members" in (run / "train.log").read_text()
    table = json.loads((sweep / "summary.json").read_text())
    assert len(table["jobs"]) == 4
    assert (sweep / "summary.csv").exists() and (sweep / "learning_curves.png").exists()


def test_a_stacked_sweep_run_twice_writes_the_same_metrics(sweeps):
    (first, _), (second, _) = sweeps
    for job in range(4):
        assert _metrics(first / str(job)) == _metrics(second / str(job))
    # Members with other seeds or learning rates did learn something else.
    assert _metrics(first / "0") != _metrics(first / "1")


def test_a_member_checkpoint_evaluates_and_resumes(sweeps, tmp_path):
    run = sweeps[0][0] / "1"
    result = run_cli(
        ["eval", f"ckpt={run / 'checkpoints' / 'last.pt'}", "episodes=2"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    more = run_cli(
        ["train", f"resume={run}", "algorithm.total_steps=192", "progress=false"], cwd=tmp_path
    )
    assert more.returncode == 0, more.stderr[-2000:]
    assert [r["env_steps"] for r in _metrics(run) if "update" in r][-1] == 192


def test_ctrl_c_stops_every_member_and_saves_each(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train", *SWEEP, "algorithm.total_steps=100000", f"hydra.sweep.dir={sweep}"]
    with training_process(args, tmp_path, sweep / "3") as proc:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    for job in range(4):
        run = sweep / str(job)
        assert (run / "checkpoints" / "last.pt").exists()
        assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert (sweep / "summary.csv").exists()


def test_wandb_gets_one_run_per_stacked_job(tmp_path):
    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY if a != "logger=none"]
    args = ["-m", "launcher=stacked", "seed=0,1", *tiny, "logger=wandb", f"hydra.sweep.dir={sweep}"]
    result = run_cli(["train", *args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = [list((sweep / str(job) / "wandb").glob("offline-run-*")) for job in range(2)]
    assert [len(r) for r in runs] == [1, 1]
    assert runs[0][0].name != runs[1][0].name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hydra.launcher.max_members=0"], "hydra.launcher.max_members=0"),
        (["hardware=distributed"], "hardware=distributed"),
    ],
)
def test_bad_stacked_launcher_input_is_refused_in_one_line(tmp_path, args, message):
    result = run_cli(["train", *SWEEP, *args], cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
