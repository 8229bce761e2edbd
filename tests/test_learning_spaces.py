"""Learning on probe environments across action spaces, observation spaces, action masks,
env-defined actions and agents that die mid-episode."""

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import FAST, probe_overrides, run_training
from tests.probe_envs import EnvDefinedActionEnv, MaskedActionEnv, ObsKeyRewardEnv


def _steps(n: int) -> list[str]:
    return [f"algorithm.total_steps={n}"]


def _dist(agent, obs, mask=None, net_id="agent_0"):
    """The policy's distribution for one env observation (and optional action mask)."""
    x = torch.as_tensor(agent.obs_layouts[net_id].to_storage(obs, 0))[None]
    m = None if mask is None else torch.as_tensor(np.asarray(mask, bool))[None]
    with torch.no_grad():
        return agent.actors[net_id].distribution(x, m)


def _rows(tmp_path):
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ action spaces
# The probes' reward noise (see tests/probe_envs.py) keeps a solved policy from drifting.

ONES = np.ones(2, np.float32)


def _action_probe(space: str, noise: float = 0.5) -> list[str]:
    return probe_overrides("SpaceActionRewardEnv", action_space=space, noise=noise) + FAST


def test_discrete_action_is_learned(tmp_path):
    trainer = run_training(tmp_path, _action_probe("discrete") + _steps(2048))
    dist = _dist(trainer.agent, ONES)
    assert dist.mode().item() == 1
    assert dist.log_p.exp()[0, 1].item() > 0.9


def test_box_action_is_learned(tmp_path):
    trainer = run_training(
        tmp_path, _action_probe("box", 0.0) + _steps(4096) + ["algorithm.action_std_init=-1.0"]
    )
    dist = _dist(trainer.agent, ONES)
    assert dist.mode()[0, 0].item() == pytest.approx(0.5, abs=0.1)  # starts at 0


def test_multidiscrete_action_is_learned(tmp_path):
    trainer = run_training(tmp_path, _action_probe("multidiscrete") + _steps(3072))
    dist = _dist(trainer.agent, ONES)
    assert dist.mode()[0].tolist() == [1, 2]
    probs = [part.log_p.exp()[0] for part in dist.parts]
    assert probs[0][1].item() > 0.9 and probs[1][2].item() > 0.9


def test_multibinary_action_is_learned(tmp_path):
    trainer = run_training(tmp_path, _action_probe("multibinary") + _steps(3072))
    dist = _dist(trainer.agent, ONES)
    assert dist.mode()[0].tolist() == [1.0, 0.0, 1.0, 0.0]
    p_one = torch.sigmoid(dist.logits)[0]
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert (p_one - target).abs().max().item() < 0.1  # every bit right at least 90% of the time


# ------------------------------------------------------------- observation spaces


@pytest.mark.parametrize("kind", ["image", "dict", "tuple", "discrete"])
def test_policy_reads_the_observation_space(tmp_path, kind):
    # network=auto (the default): the encoder follows the space (CNN for the image,
    # multi-input for Dict/Tuple, one-hot MLP for Discrete).
    trainer = run_training(
        tmp_path, probe_overrides("ObsKeyRewardEnv", kind=kind, noise=0.5) + FAST + _steps(3072)
    )
    n_keys = 2 if kind == "image" else 3
    for key in range(n_keys):
        dist = _dist(trainer.agent, ObsKeyRewardEnv.observation(kind, key))
        assert dist.mode().item() == key
        assert dist.log_p.exp()[0, key].item() > 0.85


# ------------------------------------------------------------------- action masks


def test_discrete_action_masks_are_obeyed_and_best_allowed_action_learned(tmp_path):
    # MaskedActionEnv raises if it gets a masked action, so finishing proves (a).
    trainer = run_training(
        tmp_path,
        probe_overrides("MaskedActionEnv", action_space="discrete", noise=0.3)
        + FAST
        + _steps(3072),
    )
    agent = trainer.agent
    for extra, best in ((0, 1), (1, 2), (2, 1), (3, 1)):
        mask = MaskedActionEnv.mask([extra])
        obs = np.concatenate([[1.0], mask]).astype(np.float32)
        p = _dist(agent, obs, mask).log_p.exp()[0]
        assert p[~torch.from_numpy(mask)].sum().item() == 0.0  # masked actions: probability 0
        assert p.argmax().item() == best and p[best].item() > 0.8
        # Without the mask, the never-taken (best paid) action 0 is not favoured either.
        unmasked = _dist(agent, obs).log_p.exp()[0]
        assert unmasked[0].item() < unmasked[best].item()
    # The update saw the masked distribution that acted: no masked log-prob (-1e8) leaked
    # into a ratio.
    kls = [r["agent_0/approx_kl"] for r in _rows(tmp_path) if "agent_0/approx_kl" in r]
    assert kls and all(kl is not None and -1e-6 < kl < 0.5 for kl in kls)


def test_multidiscrete_action_masks_are_obeyed(tmp_path):
    trainer = run_training(
        tmp_path,
        probe_overrides("MaskedActionEnv", action_space="multidiscrete", noise=0.3)
        + FAST
        + _steps(3072),
    )
    mask = MaskedActionEnv.mask([1, 0])  # sub-action 0: 1 masked, best 2; sub-action 1: best 1
    obs = np.concatenate([[1.0], mask]).astype(np.float32)
    dist = _dist(trainer.agent, obs, mask)
    assert dist.mode()[0].tolist() == [2, 1]
    for part, block in zip(dist.parts, mask.reshape(2, 4), strict=True):
        assert part.log_p.exp()[0][~torch.from_numpy(block)].sum().item() == 0.0
    kls = [r["agent_0/approx_kl"] for r in _rows(tmp_path) if "agent_0/approx_kl" in r]
    assert kls and all(kl is not None and -1e-6 < kl < 0.5 for kl in kls)


def test_action_mask_given_at_an_autoreset_is_obeyed(tmp_path):
    # The env draws a new mask when it resets: the first action of every episode must obey
    # the mask of the reset's info, not the one the previous episode ended with.
    run_training(
        tmp_path,
        probe_overrides("MaskedActionEnv", action_space="discrete", redraw_on_reset="true")
        + FAST
        + _steps(512),
    )


# ------------------------------------------------------------ env-defined actions


@pytest.mark.parametrize(("space", "steps"), [("discrete", 3072), ("box", 512)])
def test_env_defined_actions_are_sent_and_kept_out_of_the_policy_loss(tmp_path, space, steps):
    # The env raises if an imposed step gets anything but its action. Imposed steps pay 2
    # for the action that free steps do not pay for: learning from them as if the policy
    # had chosen it would pull the policy towards it (p[1] ends near 0.3-0.5 then).
    EnvDefinedActionEnv.counts.update(imposed=0, free=0)
    trainer = run_training(
        tmp_path,
        probe_overrides("EnvDefinedActionEnv", action_space=space, noise=0.5)
        + FAST
        + _steps(steps),
    )
    counts = EnvDefinedActionEnv.counts
    assert counts["imposed"] >= steps // 2 - 4 and counts["free"] >= steps // 2 - 4
    if space == "discrete":
        p = _dist(trainer.agent, ONES).log_p.exp()[0]
        assert p[1].item() > 0.9


# ------------------------------------------------------------------- dying agents


@pytest.mark.parametrize("env_class", ["DyingAgentEnv", "StaggeredDeathEnv", "DictObsEnv"])
def test_agents_dying_mid_episode_train_without_nan(tmp_path, env_class):
    trainer = run_training(tmp_path, probe_overrides(env_class) + FAST + _steps(2048))
    rows = _rows(tmp_path)
    assert len(rows) >= 8
    net_ids = list(trainer.agent.actors)
    for row in rows:
        # NaN and inf are logged as null: only episode fields of episode-less rows may be.
        for key, value in row.items():
            if value is None:
                assert key == "return" and row.get("episodes") == 0, (key, row)
            elif isinstance(value, float):
                assert math.isfinite(value), (key, row)
        if "update" in row and any(k.startswith(f"{net_ids[0]}/") for k in row):
            for net_id in net_ids:
                for name in ("policy_loss", "value_loss", "entropy", "approx_kl"):
                    assert row[f"{net_id}/{name}"] is not None, (net_id, name, row)
    assert any(r.get("return") is not None for r in rows)
    for net in (*trainer.agent.actors.values(), *trainer.agent.critics.values()):
        for name, param in net.named_parameters():
            assert torch.isfinite(param).all(), name
