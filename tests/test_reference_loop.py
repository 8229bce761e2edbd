"""The reference library's "Example Training Loop" runs unchanged against our classes.

The loop below is the docs' code (/work/shared/seed/ippo_reference.txt, section "Example
Training Loop") line for line, with indentation restored. The only changes:

* the import lines: ``ippo_cli`` instead of ``agilerl``, ``mpe2`` instead of
  ``pettingzoo.mpe``, and ``tqdm`` (not installed) replaced by a no-op stand-in class;
* ``max_steps = 4096`` instead of 100000;
* one added argument, ``learn_step=64``, to ``IPPO(...)``: the loop's outer
  ``for _ in range(agent.learn_step)`` runs ``learn_step`` rollouts of
  ``ceil(learn_step / num_envs)`` vector steps each before ``agent.steps`` is first
  incremented, so with the default 2048 the first while-iteration alone is ~4.2M env steps
  whatever ``max_steps`` is. With 64 it is 64 rollouts x 8 vector steps x 8 envs = 4096.

The code is executed in two parts (split at "# Define training loop parameters", so no line
changes) to snapshot the initial weights in between.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

SETUP = """\
import numpy as np
import torch
from mpe2 import simple_speaker_listener_v4
from gymnasium import spaces
class tqdm:  # stand-in for `from tqdm import tqdm` (tqdm is not installed)
    def __init__(self, *args, **kwargs): pass
    def update(self, n=1): pass
    def set_description(self, desc=None, refresh=True): pass
from ippo_cli import IPPO
from ippo_cli.envs.vector import AsyncPettingZooVecEnv
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
num_envs = 8
env = AsyncPettingZooVecEnv(
    [
        lambda: simple_speaker_listener_v4.parallel_env(continuous_actions=True)
        for _ in range(num_envs)
    ]
)
env.reset()
# Configure the multi-agent algo input arguments
observation_spaces = [env.single_observation_space(agent) for agent in env.agents]
action_spaces = [env.single_action_space(agent) for agent in env.agents]
agent_ids = [agent_id for agent_id in env.agents]
agent = IPPO(
    observation_spaces=observation_spaces,
    action_spaces=action_spaces,
    agent_ids=agent_ids,
    device=device,
    batch_size=128,
    learn_step=64,  # added: see the module docstring (default 2048 -> ~4.2M steps)
)
"""

LOOP = """\
# Define training loop parameters
max_steps = 4096 # Max steps
pbar = tqdm(total=max_steps)
while agent.steps[-1] < max_steps:
    obs, info = env.reset() # Reset environment at start of episode
    scores = np.zeros((num_envs, len(agent.shared_agent_ids)))
    completed_episode_scores = []
    steps = 0
    for _ in range(agent.learn_step):
        states = {agent_id: [] for agent_id in agent.agent_ids}
        actions = {agent_id: [] for agent_id in agent.agent_ids}
        log_probs = {agent_id: [] for agent_id in agent.agent_ids}
        entropies = {agent_id: [] for agent_id in agent.agent_ids}
        rewards = {agent_id: [] for agent_id in agent.agent_ids}
        dones = {agent_id: [] for agent_id in agent.agent_ids}
        values = {agent_id: [] for agent_id in agent.agent_ids}
        done = {agent_id: np.zeros(num_envs) for agent_id in agent.agent_ids}
        for _ in range(-(agent.learn_step // -num_envs)):
            # Get next action from agent
            action, log_prob, entropy, value = agent.get_action(
                obs=obs, infos=info
            )
            # Clip to action space
            clipped_action = {}
            for agent_id, agent_action in action.items():
                network_id = (
                    agent_id
                    if agent_id in agent.actors.keys()
                    else agent.get_group_id(agent_id)
                )
                agent_space = agent.possible_action_spaces[agent_id]
                if isinstance(agent_space, spaces.Box):
                    if agent.actors[network_id].squash_output:
                        clipped_agent_action = agent.actors[
                            network_id
                        ].scale_action(agent_action)
                    else:
                        clipped_agent_action = np.clip(
                            agent_action, agent_space.low, agent_space.high
                        )
                else:
                    clipped_agent_action = agent_action
                clipped_action[agent_id] = clipped_agent_action
            # Act in environment
            next_obs, reward, termination, truncation, info = env.step(
                clipped_action
            )
            # Compute score increment (replace NaNs representing inactive agents with 0)
            agent_rewards = np.array(list(reward.values())).transpose()
            agent_rewards = np.where(np.isnan(agent_rewards), 0, agent_rewards)
            score_increment = np.sum(agent_rewards, axis=-1)[:, np.newaxis]
            scores += score_increment
            steps += num_envs
            # Save transition
            for agent_id in obs:
                states[agent_id].append(obs[agent_id])
                rewards[agent_id].append(reward[agent_id])
                actions[agent_id].append(action[agent_id])
                log_probs[agent_id].append(log_prob[agent_id])
                entropies[agent_id].append(entropy[agent_id])
                values[agent_id].append(value[agent_id])
                dones[agent_id].append(done[agent_id])
            # Find which agents are "done" - i.e. terminated or truncated
            next_done = {}
            for agent_id in termination:
                terminated = termination[agent_id]
                truncated = truncation[agent_id]
                # Process asynchronous dones
                mask = ~(np.isnan(terminated) | np.isnan(truncated))
                result = np.full_like(mask, np.nan, dtype=float)
                result[mask] = np.logical_or(
                    terminated[mask], truncated[mask]
                )
                next_done[agent_id] = result
            obs = next_obs
            done = next_done
            for idx, agent_dones in enumerate(zip(*next_done.values())):
                if all(agent_dones):
                    completed_score = list(scores[idx])
                    completed_episode_scores.append(completed_score)
                    agent.scores.append(completed_score)
                    scores[idx].fill(0)
                    done = {
                        agent_id: np.zeros(num_envs)
                        for agent_id in agent.agent_ids
                    }
        experiences = (
            states,
            actions,
            log_probs,
            rewards,
            dones,
            values,
            next_obs,
            next_done,
        )
        # Learn according to agent's RL algorithm
        loss = agent.learn(experiences)
        pbar.update(-(agent.learn_step // -num_envs))
        pbar.set_description(f"Score: {np.mean(completed_episode_scores[-10:])}")
    agent.steps[-1] += steps
"""

SPEAKER_LISTENER_IMPORT = "from mpe2 import simple_speaker_listener_v4\n"
SPEAKER_LISTENER_ENV = "simple_speaker_listener_v4.parallel_env(continuous_actions=True)"


def _simple_spread_setup() -> str:
    """The same setup on simple_spread_v3 (3 agents of one group, Discrete actions)."""
    assert SETUP.count(SPEAKER_LISTENER_IMPORT) == 1 and SETUP.count(SPEAKER_LISTENER_ENV) == 1
    setup = SETUP.replace(SPEAKER_LISTENER_IMPORT, "from mpe2 import simple_spread_v3\n")
    return setup.replace(SPEAKER_LISTENER_ENV, "simple_spread_v3.parallel_env()")


def _weights(agent) -> dict[str, torch.Tensor]:
    out = {}
    for role, nets in (("actor", agent.actors), ("critic", agent.critics)):
        for net_id, net in nets.items():
            for name, tensor in net.state_dict().items():
                out[f"{role}/{net_id}/{name}"] = tensor.detach().clone()
    return out


def run_reference_loop(setup: str) -> tuple[dict, list[dict[str, float]], dict]:
    """Execute the docs' setup and loop; returns the namespace, every learn() result and
    the weights before training."""
    namespace: dict = {"__name__": "reference_loop"}
    exec(compile(setup, "<reference setup>", "exec"), namespace)
    env, agent = namespace["env"], namespace["agent"]
    try:
        before = _weights(agent)
        losses: list[dict[str, float]] = []
        learn = agent.learn

        def recording_learn(experiences):
            result = learn(experiences)
            losses.append(copy.deepcopy(result))
            return result

        agent.learn = recording_learn  # instrumentation only: records each learn() result
        exec(compile(LOOP, "<reference loop>", "exec"), namespace)
    finally:
        env.close()
    return namespace, losses, before


def _check_trained(namespace, losses, before, networks, num_rollouts):
    agent = namespace["agent"]
    assert namespace["max_steps"] == 4096
    assert agent.steps[-1] >= namespace["max_steps"]
    assert agent.steps[-1] == namespace["steps"] == 4096  # one while-iteration
    assert set(agent.actors.keys()) == set(networks)
    assert len(losses) == num_rollouts
    for loss in losses:
        assert set(loss) == set(networks)
        assert all(math.isfinite(v) for v in loss.values()), loss
    assert namespace["loss"] == losses[-1]
    after = _weights(agent)
    for role, nets in (("actor", agent.actors), ("critic", agent.critics)):
        for net_id in nets:
            keys = [k for k in before if k.startswith(f"{role}/{net_id}/")]
            changed = [k for k in keys if not torch.equal(before[k], after[k])]
            assert changed, f"no {role} weight of {net_id} changed"
            assert all(torch.isfinite(after[k]).all() for k in keys)
    # 8 envs x 64 steps / 25-step episodes: every env finished two episodes per call.
    assert len(agent.scores) >= 8
    assert np.isfinite(np.asarray(agent.scores, dtype=float)).all()


# The docs' loop logs np.mean of an empty score list until the first episode ends.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Mean of empty slice:RuntimeWarning",
    "ignore:invalid value encountered in scalar divide:RuntimeWarning",
)


def test_reference_loop_speaker_listener():
    namespace, losses, before = run_reference_loop(SETUP)
    agent = namespace["agent"]
    assert agent.agent_ids == ["speaker_0", "listener_0"]
    assert agent.shared_agent_ids == ["speaker", "listener"]
    _check_trained(namespace, losses, before, ["speaker_0", "listener_0"], num_rollouts=64)


def test_reference_loop_simple_spread_grouped_discrete():
    namespace, losses, before = run_reference_loop(_simple_spread_setup())
    agent = namespace["agent"]
    assert namespace["agent_ids"] == ["agent_0", "agent_1", "agent_2"]
    assert agent.shared_agent_ids == ["agent"]
    assert agent.has_grouped_agents()
    _check_trained(namespace, losses, before, ["agent"], num_rollouts=64)
    # Discrete actions were integer indices, passed to the env unclipped.
    actions = namespace["actions"]["agent_0"]
    assert np.asarray(actions).dtype.kind in "iu"
    assert np.asarray(actions).shape == (8, 8)
