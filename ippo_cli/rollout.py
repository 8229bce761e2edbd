"""Preallocated rollout storage for one agent group, and GAE.

Every per-step quantity has the layout (time, env, agent-in-group, ...), so that
observations, actions, log-probs, values, rewards and advantages of a grouped agent
stay aligned when flattened into minibatches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    ends: torch.Tensor,
    bootstrap: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> torch.Tensor:
    """Generalised advantage estimates for a rollout of T steps (dim 0).

    ``ends[t]`` is 1 where step t ended the agent's episode (terminated or truncated):
    nothing is bootstrapped across it. ``bootstrap[t]`` is the value of the final
    observation of a truncated episode (0 elsewhere), so a time limit is not mistaken for
    a terminal state. ``last_values`` are the values of the observations after the last
    step.
    """
    not_end = 1.0 - ends
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)])
    delta = rewards + gamma * (next_values * not_end + bootstrap) - values
    decay = (gamma * gae_lambda) * not_end
    # A[t] = delta[t] + decay[t] * A[t + 1]: everything but this recursion is computed for
    # all steps at once, and each step of it is one operation written in place.
    advantages = torch.empty_like(rewards)
    advantages[-1] = delta[-1]
    for t in range(rewards.shape[0] - 2, -1, -1):
        torch.addcmul(delta[t], decay[t], advantages[t + 1], out=advantages[t])
    return advantages


@dataclass
class GroupRollout:
    """Storage for one group: ``num_steps`` vector steps of ``num_envs`` envs x ``num_agents``.

    ``valid`` marks the steps where the agent was present; only those enter the losses.
    ``chosen`` marks the valid steps whose action the policy chose (not an env-defined
    action): only those enter the policy loss. ``action_masks`` (True = legal) are kept
    for discrete action spaces so that learning uses the distribution that acted.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    ends: torch.Tensor
    bootstrap: torch.Tensor
    valid: torch.Tensor
    chosen: torch.Tensor
    last_values: torch.Tensor
    action_masks: torch.Tensor | None = None

    @classmethod
    def allocate(
        cls,
        num_steps: int,
        num_envs: int,
        num_agents: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        device: torch.device | str = "cpu",
        mask_dim: int | None = None,
        obs_dtype: torch.dtype = torch.float32,
    ) -> GroupRollout:
        lead = (num_steps, num_envs, num_agents)

        def zeros(shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32):
            return torch.zeros(*lead, *shape, dtype=dtype, device=device)

        return cls(
            obs=zeros(obs_shape, obs_dtype),
            actions=zeros(action_shape, action_dtype),
            log_probs=zeros(),
            values=zeros(),
            rewards=zeros(),
            ends=zeros(),
            bootstrap=zeros(),
            valid=zeros(dtype=torch.bool),
            chosen=zeros(dtype=torch.bool),
            last_values=torch.zeros(num_envs, num_agents, device=device),
            action_masks=None if mask_dim is None else zeros((mask_dim,), torch.bool),
        )

    @property
    def num_steps(self) -> int:
        return self.obs.shape[0]

    def advantages_and_returns(
        self, gamma: float, gae_lambda: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE over the stored rollout; steps where the agent was absent break the chain."""
        ends = torch.where(self.valid, self.ends, torch.ones_like(self.ends))
        values = self.values * self.valid
        adv = gae(
            self.rewards * self.valid,
            values,
            ends,
            self.bootstrap,
            self.last_values,
            gamma,
            gae_lambda,
        )
        return adv, adv + values

    def flat_batch(self, gamma: float, gae_lambda: float) -> dict[str, torch.Tensor]:
        """All valid transitions, flattened in one (time, env, agent) order."""
        adv, returns = self.advantages_and_returns(gamma, gae_lambda)
        keep = self.valid.reshape(-1)
        n = keep.numel()

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(n, *x.shape[3:])[keep]

        batch = {
            "obs": flat(self.obs),
            "actions": flat(self.actions),
            "log_probs": flat(self.log_probs),
            "values": flat(self.values),
            "advantages": flat(adv),
            "returns": flat(returns),
            "chosen": flat(self.chosen),
        }
        if self.action_masks is not None:
            batch["action_masks"] = flat(self.action_masks)
        return batch
