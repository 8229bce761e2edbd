"""Cross-play in `ippo eval` (ippo_cli/crossplay.py): a group played by the random policy
or by the same group of another checkpoint, each group's summed return, and bad
replacements refused in one line."""

import json
import shutil

import numpy as np
import pytest
from gymnasium import spaces

from ippo_cli.checkpoint import load
from ippo_cli.cli import compose_config
from ippo_cli.config import register_configs
from ippo_cli.crossplay import build_lineup
from ippo_cli.envs.factory import env_fn
from ippo_cli.evaluate import evaluate_checkpoint
from ippo_cli.ippo import IPPO
from tests.conftest import FAST, probe_overrides, run_cli, run_training

TINY = ["algorithm.total_steps=256", "algorithm.learn_step=64"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short simple_adversary runs (seeds 0 and 1): checkpoints A and B."""
    out = {}
    for name, seed in (("A", 0), ("B", 1)):
        run_dir = tmp_path_factory.mktemp(name)
        run_training(run_dir, ["env=simple_adversary", *FAST, *TINY, f"seed={seed}"])
        out[name] = run_dir / "checkpoints" / "last.pt"
    return out


def evaluate(ckpt, *overrides):
    register_configs()
    return evaluate_checkpoint(compose_config("eval", [f"ckpt={ckpt}", *overrides]))


def hand_run_group_returns(ckpt, episodes, seed):
    """Each group's return summed over its agents, episode by episode, from a plain loop."""
    agent = IPPO.load(str(ckpt))
    agent.set_training_mode(False)
    env = env_fn(load(ckpt)["config"]["env"])()
    sums = {g: [] for g in agent.grouped_agents}
    for ep in range(episodes):
        obs, infos = env.reset(seed=seed + ep)
        episode = dict.fromkeys(sums, 0.0)
        while env.agents:
            action, *_ = agent.get_action(obs, infos, deterministic=True)
            obs, rewards, _, _, infos = env.step(action)
            for a, r in rewards.items():
                episode[a.rsplit("_", 1)[0]] += r
        for g, total in episode.items():
            sums[g].append(total)
    env.close()
    return {g: np.array(v) for g, v in sums.items()}


def test_each_groups_return_is_the_sum_over_its_agents_of_what_the_episodes_gave(runs):
    report = evaluate(runs["A"], "episodes=4", "seed=5")
    by_hand = hand_run_group_returns(runs["A"], episodes=4, seed=5)
    players = report["players"]
    assert list(players) == ["adversary", "agent"]
    assert players["agent"]["agents"] == ["agent_0", "agent_1"]
    for group, returns in by_hand.items():
        assert players[group]["policy"] == str(runs["A"])
        assert players[group]["return"]["mean"] == pytest.approx(returns.mean())
        assert players[group]["return"]["std"] == pytest.approx(returns.std())
    total = sum(p["return"]["mean"] for p in players.values())
    assert total == pytest.approx(report["return"]["mean"])
    written = json.loads((runs["A"].parent / "eval.json").read_text())
    assert written["players"] == players


def test_a_random_group_samples_all_its_actions_while_the_other_keeps_its_policy(runs):
    agent = IPPO.load(str(runs["A"]))
    lineup, policies = build_lineup(agent, runs["A"], {"adversary": "random"}, 0, "cpu")
    assert policies == {"adversary": "random", "agent": str(runs["A"])}
    lineup.set_training_mode(False)
    env = env_fn(load(runs["A"])["config"]["env"])()
    obs, infos = env.reset(seed=0)
    plays = [lineup.get_action(obs, infos, deterministic=True)[0] for _ in range(200)]
    env.close()
    adversary = [int(p["adversary_0"]) for p in plays]
    assert set(adversary) == set(range(agent.action_spaces["adversary_0"].n))
    for a in ("agent_0", "agent_1"):
        assert len({int(p[a]) for p in plays}) == 1  # deterministic: one action per obs


def test_a_random_group_changes_that_groups_return(runs):
    own = evaluate(runs["A"], "episodes=3")
    mixed = evaluate(runs["A"], "episodes=3", "+replace.adversary=random")
    assert mixed["players"]["adversary"]["policy"] == "random"
    assert mixed["agents"]["adversary_0"] != own["agents"]["adversary_0"]


def test_the_same_group_from_the_same_checkpoint_plays_exactly_as_unreplaced(runs):
    args = ("episodes=3", "seed=3", "deterministic=false")
    own = evaluate(runs["A"], *args)
    run_dir = runs["A"].parent.parent
    same = evaluate(runs["A"], *args, f"+replace.adversary={run_dir}", f"+replace.agent={run_dir}")
    for key in ("return", "groups", "agents"):
        assert same[key] == own[key]
    # sampled, not the deterministic play: the equality above says the draws matched
    assert own["agents"] != evaluate(runs["A"], "episodes=3", "seed=3")["agents"]


def test_a_group_from_another_checkpoint_plays_its_policy(runs):
    a_with_bs_agents = evaluate(runs["A"], "episodes=3", f"+replace.agent={runs['B']}")
    b_with_as_adversary = evaluate(runs["B"], "episodes=3", f"+replace.adversary={runs['A']}")
    assert a_with_bs_agents["players"]["agent"]["policy"] == str(runs["B"])
    assert a_with_bs_agents["agents"] == b_with_as_adversary["agents"]  # the same line-up
    assert a_with_bs_agents["agents"] != evaluate(runs["A"], "episodes=3")["agents"]


@pytest.mark.parametrize("env_class", ["MaskedActionEnv", "EnvDefinedActionEnv"])
def test_the_random_policy_keeps_to_masks_and_env_defined_actions(tmp_path, env_class):
    # Both envs raise on an action they forbid (a masked one; one other than the imposed).
    run_training(tmp_path, [*probe_overrides(env_class), *FAST, *TINY])
    report = evaluate(tmp_path / "checkpoints" / "last.pt", "episodes=40", "+replace.agent=random")
    assert report["players"]["agent"]["policy"] == "random"
    assert report["return"]["std"] > 0  # the legal actions pay differently: it varied


@pytest.fixture(scope="module")
def bad_replacements(runs, tmp_path_factory):
    """A copy of checkpoint A (no eval.json beside it) and checkpoints that cannot replace
    its adversary group, with the message each must give."""
    tmp = tmp_path_factory.mktemp("bad")
    ckpt = tmp / "A" / "last.pt"
    ckpt.parent.mkdir()
    shutil.copy(runs["A"], ckpt)
    agent = IPPO.load(str(ckpt))
    obs, act = agent.observation_spaces["adversary_0"], agent.action_spaces["adversary_0"]
    other_obs = spaces.Box(-1.0, 1.0, (3,), np.float32)

    def saved(name, agent_ids, obs_space, act_space):
        path = tmp / f"{name}.pt"
        n = len(agent_ids)
        IPPO([obs_space] * n, [act_space] * n, agent_ids).save_checkpoint(str(path))
        return path

    (tmp / "notes.pt").write_text("not a checkpoint")
    no_group = saved("no_group", ["x_0"], obs, act)
    obs_differs = saved("obs_differs", ["adversary_0"], other_obs, act)
    act_differs = saved("act_differs", ["adversary_0"], obs, spaces.Discrete(4))
    agents_differ = saved("agents_differ", ["adversary_0", "adversary_1"], obs, act)
    cases = [
        ("+replace.adversry=random", ["no group 'adversry'", "its groups: adversary, agent"]),
        (f"+replace.adversary={no_group}", [f"'{no_group}' has no group 'adversary'", "x"]),
        (
            f"+replace.adversary={obs_differs}",
            ["observation space", str(obs), str(other_obs), "group 'adversary'"],
        ),
        (f"+replace.adversary={act_differs}", ["action space Discrete(5) here but Discrete(4)"]),
        (f"+replace.adversary={agents_differ}", ["adversary_0 here but adversary_0, adversary_1"]),
        (f"+replace.adversary={tmp / 'missing.pt'}", ["missing.pt' does not exist"]),
        (f"+replace.adversary={tmp / 'notes.pt'}", ["notes.pt' is corrupt or truncated"]),
        ("+replace.adversary=rnd", ["replace.adversary=rnd is neither 'random' nor a checkpoint"]),
        ("replace.adversary=random", ["add it with '+' (+replace.adversary="]),
    ]
    return ckpt, cases


def test_bad_replacements_exit_2_with_one_line_and_write_nothing(bad_replacements, tmp_path):
    ckpt, cases = bad_replacements
    for override, fragments in cases:
        result = run_cli(["eval", f"ckpt={ckpt}", "episodes=1", override], tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (override, result.stderr)
        assert len(lines) == 1, (override, result.stderr)
        for fragment in fragments:
            assert fragment in lines[0], (override, fragment, lines[0])
        assert not (ckpt.parent / "eval.json").exists(), override
