"""One env step's action sampling for one agent or several, their actors as stacks.

Every env step a trainer samples one batch of actions per group. Where groups' actors
are MLPs of one shape (:mod:`ippo_cli.networks.stacked`) with the same kind of actions
and as many agents, :class:`StackedSampler` runs them as one forward pass and one draw,
also across agents: the members of a stack of runs (:mod:`ippo_cli.run_stack`) act as
one. The other actors sample on their own (:meth:`IPPO.sample_group`).

Each agent's draws come from its own generator, in the same order whatever it is stacked
with: the noise of every network of agent ``k``, in network order, is drawn from
``generators[k]`` before any forward pass (:func:`~ippo_cli.networks.distributions.draw_noise`).
So a run samples the same actions alone and as a member of a stack.

Build one per rollout: it copies the actors' parameters when it is made, and they change
at every update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ippo_cli.networks.distributions import draw_noise
from ippo_cli.networks.stacked import (
    NetworkStack,
    action_columns,
    action_kind,
    action_width,
    chain_signature,
    layer_chain,
    padded,
    stacked_distribution,
)

if TYPE_CHECKING:
    from ippo_cli.ippo import IPPO

Key = tuple[int, str]  # (agent index, network id)


class StackedSampler:
    """Samples every group's actions of ``agents`` for one step (see the module doc)."""

    def __init__(self, agents: IPPO | Sequence[IPPO]) -> None:
        self.agents = [agents] if not isinstance(agents, Sequence) else list(agents)
        sets: dict[Any, list[Key]] = {}
        for k, agent in enumerate(self.agents):
            for net_id, actor in agent.actors.items():
                chain, kind = layer_chain(actor), action_kind(actor)
                if chain is not None and kind is not None:
                    key = (chain_signature(chain), kind, len(agent.members[net_id]))
                    sets.setdefault(key, []).append((k, net_id))
        # A lone actor gains nothing from a stack.
        self.sets = [keys for keys in sets.values() if len(keys) > 1]
        self.stacks, self.columns, self.boxes = [], [], []
        for keys in self.sets:
            actors = [self._actor(key) for key in keys]
            box = action_kind(actors[0])[0] == "box"
            extras = [[actor.log_std] for actor in actors] if box else None
            stack = NetworkStack([layer_chain(actor) for actor in actors], extras)
            stack.load()
            self.stacks.append(stack)
            self.columns.append(action_columns(actors, stack.device))
            self.boxes.append(box)

    def _actor(self, key: Key) -> Any:
        return self.agents[key[0]].actors[key[1]]

    def sample(
        self,
        obs: Sequence[Mapping[str, torch.Tensor]],
        masks: Sequence[Mapping[str, torch.Tensor | None]],
        generators: Sequence[torch.Generator | None],
    ) -> list[dict[str, torch.Tensor]]:
        """Per agent, each network's sampled actions for its ``(B, ...)`` stored
        observations and action masks (True = legal, or None), as
        :meth:`IPPO.sample_group` returns them; ``generators[k]`` draws agent k's."""
        noise = {
            (k, net_id): draw_noise(
                agent.action_spaces[agent.members[net_id][0]],
                obs[k][net_id].shape[0],
                action_width(actor),
                generators[k],
                obs[k][net_id].device,
            )
            for k, agent in enumerate(self.agents)
            for net_id, actor in agent.actors.items()
        }
        actions: list[dict[str, torch.Tensor]] = [{} for _ in self.agents]
        with torch.inference_mode():
            parts = zip(self.sets, self.stacks, self.columns, self.boxes, strict=True)
            for keys, stack, columns, box in parts:
                actors = [self._actor(key) for key in keys]
                rows = obs[keys[0][0]][keys[0][1]].shape[0]
                x = padded([obs[k][i].reshape(rows, -1).float() for k, i in keys])
                mask = None
                if any(masks[k][i] is not None for k, i in keys):
                    # A group without a mask may take any of its actions.
                    mask = padded(
                        [_legal(masks[k][i], rows, columns[g]) for g, (k, i) in enumerate(keys)]
                    )
                log_std = stack.extra(0) if box else None
                dist = stacked_distribution(actors, stack.forward(x), log_std, columns, mask)
                # Padding columns get neutral noise: no mean (Box), masked out (Discrete).
                fill = 0.0 if box else 0.5
                sampled = dist.sample(padded([noise[key] for key in keys], fill=fill))
                for g, ((k, net_id), actor) in enumerate(zip(keys, actors, strict=True)):
                    # Box: the actor's own columns.
                    width = action_width(actor)
                    actions[k][net_id] = sampled[g, :, :width] if box else sampled[g]
        for k, agent in enumerate(self.agents):
            for net_id in agent.actors:
                if net_id not in actions[k]:
                    actions[k][net_id] = agent.sample_group(
                        net_id, obs[k][net_id], masks[k][net_id], noise[(k, net_id)]
                    )
        return actions


def _legal(mask: torch.Tensor | None, rows: int, columns: torch.Tensor) -> torch.Tensor:
    """A group's ``(rows, A)`` action mask; its ``(1, A)`` columns when it has none."""
    return columns.expand(rows, -1) if mask is None else mask
