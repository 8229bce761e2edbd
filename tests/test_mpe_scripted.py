"""The scripted references of the MPE suite (benchmarks/mpe_scripted.py) beat the random
policy and agents that stand still on every scenario they script, on mpe2 with each
shipped config's arguments."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from benchmarks.mpe_scripted import SCRIPTED, Random, Scripted
from ippo_cli.envs.factory import build_env
from ippo_cli.episodes import run_episodes
from tests.conftest import REPO

EPISODES = 4


def stand_still(world, scenario):
    return {a.name: (None, None) for a in world.agents}


@pytest.mark.parametrize("scenario", sorted(SCRIPTED))
def test_scripted_beats_random_and_standing_still(scenario):
    cfg = OmegaConf.load(REPO / "conf" / "env" / f"{scenario}.yaml")
    env = build_env(cfg.factory, OmegaConf.to_container(cfg.kwargs))
    try:
        scripted = run_episodes(Scripted(env, SCRIPTED[scenario][0]), env, EPISODES, seed=7)
        random = run_episodes(Random(env, 7), env, EPISODES, seed=7)
        still = run_episodes(Scripted(env, stand_still), env, EPISODES, seed=7)
    finally:
        env.close()
    assert scripted.summed.mean() > random.summed.mean()
    assert scripted.summed.mean() > still.summed.mean()
