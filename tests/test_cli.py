"""`ippo train` and `ippo eval` run as a user runs them, in subprocesses."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import HANG_GUARD_SECONDS, REPO, probe_overrides, run_cli, training_process

TINY = [
    "env.num_envs=4",
    "algorithm.learn_step=512",
    "algorithm.total_steps=2048",
    "eval_every=1024",
    "eval_episodes=2",
    "checkpoint.every=1024",
    "progress=false",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short speaker_listener run with wandb offline, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("train")
    result = run_cli(
        ["train", "env=speaker_listener", *TINY, "hardware.num_workers=2", "eval_gif=true"], cwd
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "outputs" / "train").glob("*/*")
    return run_dir, result


def test_train_writes_the_run_directory(trained_run):
    run_dir, result = trained_run
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").is_file()
    assert (run_dir / "learning_curve.png").stat().st_size > 0
    ckpts = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert {"last.pt", "best.pt", "step_1024.pt", "step_2048.pt"} <= ckpts
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert sorted(p.name for p in (run_dir / "media").iterdir()) == [
        "eval_1024.gif",
        "eval_2048.gif",
    ]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [512, 1024, 1536, 2048]
    first = rows[0]
    for key in (
        "wall_time",
        "steps_per_second",
        "return",
        "return/speaker",
        "return/listener",
        "speaker_0/policy_loss",
        "listener_0/value_loss",
        "listener_0/entropy",
        "listener_0/approx_kl",
        "listener_0/clip_fraction",
        "listener_0/explained_variance",
    ):
        assert key in first, key
    assert rows[1]["eval/return"] is not None
    assert "final eval return" in result.stdout and str(run_dir.name) in result.stdout


def test_eval_renders_a_gif_and_writes_eval_json(trained_run):
    run_dir, _ = trained_run
    ckpt = run_dir / "checkpoints" / "last.pt"
    result = run_cli(["eval", f"ckpt={ckpt}", "episodes=3", "render=true"], REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads((ckpt.parent / "eval.json").read_text())
    assert report["episodes"] == 3 and report["episode_length"]["mean"] == 25
    assert set(report["groups"]) == {"speaker", "listener"}
    gif = ckpt.parent / "eval.gif"
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    import imageio.v3 as iio

    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 26 and frames.shape[-1] == 3  # the reset frame + 25 steps
    assert "sum over agents" in result.stdout


def test_eval_writes_an_mp4_when_asked(trained_run):
    run_dir, _ = trained_run
    result = run_cli(
        ["eval", f"ckpt={run_dir}", "episodes=1", "render=true", "video_format=mp4"], REPO
    )
    assert result.returncode == 0, result.stderr
    assert (run_dir / "checkpoints" / "eval.mp4").read_bytes()[4:8] == b"ftyp"
    bad = run_cli(["eval", f"ckpt={run_dir}", "render=true", "video_format=avi"], REPO)
    assert bad.returncode != 0 and "video_format=avi is not supported" in bad.stderr


def test_eval_accepts_a_run_directory(trained_run):
    run_dir, _ = trained_run
    result = run_cli(["eval", f"ckpt={run_dir}", "episodes=1"], REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "checkpoints" / "eval.json").read_text())["episodes"] == 1


def _metrics_without_wall_clock(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_time")
        row.pop("steps_per_second")
    return rows


def test_two_runs_with_the_same_seed_write_identical_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        args = ["train", *TINY, "logger=none", "seed=3", f"hydra.run.dir={tmp_path / name}"]
        result = run_cli(args, tmp_path)
        assert result.returncode == 0, result.stderr
        runs.append(_metrics_without_wall_clock(tmp_path / name))
    assert runs[0] == runs[1]
    assert len(runs[0]) == 4


BAD_TRAIN = [
    (
        ["env=speaker_listner"],
        "unknown env 'speaker_listner'; known: collect_treasure, knights_archers_zombies",
    ),
    (["algorithm.lrr=0.1"], "unknown key 'algorithm.lrr'"),
    (["+foo=1"], "unknown key 'foo'"),
    (["algorithm.lr=0"], "algorithm.lr=0.0 is invalid"),
    (["algorithm.lr=-1e-3"], "algorithm.lr=-0.001 is invalid"),
    (["algorithm.batch_size=0"], "algorithm.batch_size=0 is invalid"),
    (["algorithm.gamma=1.5"], "algorithm.gamma=1.5 is invalid"),
    (["env.num_envs=0"], "env.num_envs=0 is invalid"),
    (["hardware.cores=0"], "hardware.cores=0 is invalid: must be null or >= 1"),
    (["algorithm.lr=abc"], "bad value for 'algorithm.lr'"),
    (["env=pettingzoo"], "'env.factory' must be set"),
    (["env=pettingzoo", "env.factory=nowhere.env"], "cannot import 'nowhere'"),
    (["-m", "algorithm.lr=1e-4,0"], "algorithm.lr=0.0 is invalid"),
    # An env constructor that raises: the factory, its kwargs and the exception.
    (
        ["env=simple_spread", "env.backend=pettingzoo", "env.kwargs.N=0"],
        "env.factory='mpe2.simple_spread_v3.parallel_env' with kwargs {'N': 0, 'local_ratio': "
        "0.5, 'max_cycles': 25, 'continuous_actions': False} raised ValueError: zero-size array",
    ),
    (
        ["-m", "env=simple_spread", "env.backend=pettingzoo", "env.kwargs.N=2,0"],
        "sweep job with env.kwargs.N=0: env.factory='mpe2.simple_spread_v3.parallel_env' with",
    ),
    (
        ["env=pettingzoo", "env.factory=tests.probe_envs.ConstantRewardEnv", "eval_gif=true"],
        "eval_gif=true: env.factory='tests.probe_envs.ConstantRewardEnv' takes no render_mode",
    ),
]


@pytest.mark.parametrize("args, message", BAD_TRAIN)
def test_bad_train_input_fails_in_one_line_before_anything_starts(tmp_path, args, message):
    result = run_cli(["train", *args], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # no run directory was created


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_refused(tmp_path):
    result = run_cli(["train", "hardware=cuda"], tmp_path)
    assert result.returncode == 2
    assert "hardware.device=cuda but no CUDA GPU is available" in result.stderr


def _bad_checkpoints(tmp_path, trained_run):
    run_dir, _ = trained_run
    good = (run_dir / "checkpoints" / "last.pt").read_bytes()
    files = {
        "empty.pt": b"",
        "truncated.pt": good[: len(good) // 3],
        "random.pt": bytes(range(256)) * 40,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    marker = tmp_path / "code_ran"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, torch\n"
            "class E:\n"
            f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
            "torch.save({'format_version': 1, 'agent': E(), 'config': {}}, "
            f"'{tmp_path}/evil.pt')",
        ],
        check=True,
    )
    (tmp_path / "somedir").mkdir()
    return marker, [
        ("missing.pt", "does not exist"),
        ("somedir", "is a directory"),
        ("empty.pt", "is empty"),
        ("truncated.pt", "corrupt or truncated"),
        ("random.pt", "corrupt or truncated"),
        ("evil.pt", "not plain data"),
    ]


def test_bad_checkpoints_are_refused_in_one_line(tmp_path, trained_run):
    marker, cases = _bad_checkpoints(tmp_path, trained_run)
    for name, message in cases:
        result = run_cli(["eval", f"ckpt={tmp_path / name}"], tmp_path)
        assert result.returncode != 0, name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (name, result.stderr)
    assert not marker.exists(), "unpickling ran code"


def test_missing_ckpt_argument_is_named(tmp_path):
    result = run_cli(["eval"], tmp_path)
    assert result.returncode == 2 and "'ckpt' must be set" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_last_checkpoint_and_exits_cleanly(tmp_path, sig):
    run = tmp_path / "run"
    args = [
        "train",
        "logger=none",
        "progress=false",
        "algorithm.total_steps=10000000",
        "hardware.torch_compile=null",  # not what is tested: no compiling first
        "algorithm.learn_step=256",
        "env.num_envs=2",
        "hardware.num_workers=2",
        f"hydra.run.dir={run}",
    ]
    with training_process(args, tmp_path, run, rows=2) as proc:
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=HANG_GUARD_SECONDS)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    from ippo_cli.ippo import IPPO

    assert IPPO.load(str(run / "checkpoints" / "last.pt")).agent_ids == ["speaker_0", "listener_0"]


def test_wandb_online_without_a_login_falls_back_to_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    args = [
        "train",
        *TINY,
        "algorithm.total_steps=512",
        "logger.wandb.mode=online",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "ippo_cli", *args],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    assert "wandb online failed" in result.stderr
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_an_env_error_during_training_is_one_line_and_keeps_last_checkpoint(tmp_path):
    args = [
        "train",
        "env=pettingzoo",
        "env.factory=tests.probe_envs.RaisingEnv",
        "env.name=probe",
        "logger=none",
        "progress=false",
        "algorithm.learn_step=64",
        "env.num_envs=2",
        "algorithm.total_steps=100000",
        "hardware.torch_compile=null",  # not what is tested: no compiling first
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = run_cli(args, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "raised ValueError" in lines[0], result.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert "Traceback" in (tmp_path / "run" / "train.log").read_text()  # details kept in the log


@pytest.mark.parametrize(
    "what, message",
    [
        ("obs", "non-finite observation (NaN or inf) from agent 'agent_0' in env"),
        # An env's own NaN reward is not taken for an absent agent (the vector env's NaN).
        ("reward", "non-finite reward (nan) from agent 'agent_0' in env 0 at step 5 of its"),
    ],
)
def test_non_finite_values_stop_training_and_keep_the_last_good_checkpoint(tmp_path, what, message):
    run = tmp_path / "run"
    args = [
        "train",
        "env=pettingzoo",
        "env.factory=tests.probe_envs.NonFiniteEnv",
        "env.name=probe",
        f"+env.kwargs.what={what}",
        "+env.kwargs.after=600",
        "logger=none",
        "progress=false",
        "algorithm.learn_step=128",
        "env.num_envs=2",
        "hardware.vec_env=sync",
        "checkpoint.every=128",
        "eval_every=0",
        "algorithm.total_steps=100000",
        "hardware.torch_compile=null",  # not what is tested: no compiling first
        f"hydra.run.dir={run}",
    ]
    result = run_cli(args, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    from ippo_cli.ippo import IPPO

    agent = IPPO.load(str(run / "checkpoints" / "last.pt"))
    params = [*agent.actors.parameters(), *agent.critics.parameters()]
    assert all(torch.isfinite(p).all() for p in params)


def test_a_killed_env_worker_is_named_and_ends_the_run(tmp_path):
    run = tmp_path / "run"
    pids = tmp_path / "pids"
    args = [
        "train",
        "logger=none",
        "progress=false",
        "algorithm.total_steps=10000000",
        "hardware.torch_compile=null",  # not what is tested: no compiling first
        "algorithm.learn_step=256",
        *probe_overrides("PidRecordingEnv", directory=pids),
        "env.num_envs=4",
        "hardware.vec_env=async",
        "hardware.num_workers=2",
        f"hydra.run.dir={run}",
    ]
    with training_process(args, tmp_path, run, rows=1) as proc:
        # The process that reset env 2 (seed 0 + 2) is worker 1, which steps envs 2 and 3.
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        [worker] = [p for p in children if (pids / f"seed2.pid{p}").exists()]
        assert (pids / f"seed3.pid{worker}").exists()
        os.kill(int(worker), signal.SIGKILL)
        _, stderr = proc.communicate(timeout=HANG_GUARD_SECONDS)
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    # Seen as a death when its pipe closes, not as a worker that did not answer in time.
    assert len(lines) == 1 and "worker 1 (envs 2..3) died" in lines[0], stderr
    assert (run / "checkpoints" / "last.pt").is_file()
    leftover = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
