"""The reference library's "Example Training Loop" (AgileRL 2.58 docs, IPPO page) with a step
budget, run by benchmarks/vs_reference.py in the reference's own virtual environment.

    <agilerl venv>/bin/python benchmarks/reference_loop.py STEPS

The loop body is the docs' code (speaker_listener continuous, 8 envs, batch_size 128, the
defaults learn_step 2048 and 4 epochs), with three changes: no tqdm bar; the step budget is
checked after every rollout + learn (as printed, the docs' outer
``for _ in range(agent.learn_step)`` runs 2048 rollouts of 2048 env steps before the budget
is first checked, about 4.2M env steps, so it is left out); and ``agent.steps`` is an int in
2.58 (the docs' ``agent.steps[-1]`` raises TypeError). Prints the env steps done as JSON.
"""

import json
import sys

import numpy as np
import torch
from agilerl.algorithms import IPPO
from agilerl.vector.pz_async_vec_env import AsyncPettingZooVecEnv
from gymnasium import spaces

try:
    from pettingzoo.mpe import simple_speaker_listener_v4
except ImportError:  # pettingzoo >= 1.25 moved the MPE envs to the mpe2 package
    from mpe2 import simple_speaker_listener_v4

max_steps = int(sys.argv[1])
device = torch.device("cpu")
num_envs = 8
env = AsyncPettingZooVecEnv(
    [
        lambda: simple_speaker_listener_v4.parallel_env(continuous_actions=True)
        for _ in range(num_envs)
    ]
)
env.reset()
observation_spaces = [env.single_observation_space(agent) for agent in env.agents]
action_spaces = [env.single_action_space(agent) for agent in env.agents]
agent_ids = [agent_id for agent_id in env.agents]
agent = IPPO(
    observation_spaces=observation_spaces,
    action_spaces=action_spaces,
    agent_ids=agent_ids,
    device=device,
    batch_size=128,
)
obs, info = env.reset()
scores = np.zeros((num_envs, len(agent.shared_agent_ids)))
steps = 0
while steps < max_steps:
    states = {agent_id: [] for agent_id in agent.agent_ids}
    actions = {agent_id: [] for agent_id in agent.agent_ids}
    log_probs = {agent_id: [] for agent_id in agent.agent_ids}
    entropies = {agent_id: [] for agent_id in agent.agent_ids}
    rewards = {agent_id: [] for agent_id in agent.agent_ids}
    dones = {agent_id: [] for agent_id in agent.agent_ids}
    values = {agent_id: [] for agent_id in agent.agent_ids}
    done = {agent_id: np.zeros(num_envs) for agent_id in agent.agent_ids}
    for _ in range(-(agent.learn_step // -num_envs)):
        action, log_prob, entropy, value = agent.get_action(obs=obs, infos=info)
        clipped_action = {}
        for agent_id, agent_action in action.items():
            network_id = (
                agent_id if agent_id in agent.actors.keys() else agent.get_group_id(agent_id)
            )
            agent_space = agent.possible_action_spaces[agent_id]
            if isinstance(agent_space, spaces.Box):
                if agent.actors[network_id].squash_output:
                    clipped_agent_action = agent.actors[network_id].scale_action(agent_action)
                else:
                    clipped_agent_action = np.clip(agent_action, agent_space.low, agent_space.high)
            else:
                clipped_agent_action = agent_action
            clipped_action[agent_id] = clipped_agent_action
        next_obs, reward, termination, truncation, info = env.step(clipped_action)
        agent_rewards = np.array(list(reward.values())).transpose()
        agent_rewards = np.where(np.isnan(agent_rewards), 0, agent_rewards)
        scores += np.sum(agent_rewards, axis=-1)[:, np.newaxis]
        steps += num_envs
        for agent_id in obs:
            states[agent_id].append(obs[agent_id])
            rewards[agent_id].append(reward[agent_id])
            actions[agent_id].append(action[agent_id])
            log_probs[agent_id].append(log_prob[agent_id])
            entropies[agent_id].append(entropy[agent_id])
            values[agent_id].append(value[agent_id])
            dones[agent_id].append(done[agent_id])
        next_done = {}
        for agent_id in termination:
            terminated = termination[agent_id]
            truncated = truncation[agent_id]
            mask = ~(np.isnan(terminated) | np.isnan(truncated))
            result = np.full_like(mask, np.nan, dtype=float)
            result[mask] = np.logical_or(terminated[mask], truncated[mask])
            next_done[agent_id] = result
        obs = next_obs
        done = next_done
        for idx, agent_dones in enumerate(zip(*next_done.values(), strict=True)):
            if all(agent_dones):
                agent.scores.append(list(scores[idx]))
                scores[idx].fill(0)
                done = {agent_id: np.zeros(num_envs) for agent_id in agent.agent_ids}
    experiences = (states, actions, log_probs, rewards, dones, values, next_obs, next_done)
    agent.learn(experiences)
    agent.steps = steps
env.close()
print(json.dumps({"env_steps": steps}))
