"""One rollout's action sampling, with the actors of several groups as one stack.

Every env step the trainer samples one batch of actions per group. Where groups' actors
are MLPs of one shape (:mod:`ippo_cli.networks.stacked`) with the same kind of actions
and as many agents, :class:`StackedSampler` runs them as one forward pass and one draw;
the others sample on their own (:meth:`IPPO.sample_group`). Build one per rollout: it
copies the actors' parameters when it is made, and they change at every update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

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


class StackedSampler:
    """Samples every group's actions for one step (see the module doc)."""

    def __init__(self, agent: IPPO) -> None:
        self.agent = agent
        sets: dict[Any, list[str]] = {}
        for net_id, actor in agent.actors.items():
            chain, kind = layer_chain(actor), action_kind(actor)
            if chain is not None and kind is not None:
                key = (chain_signature(chain), kind, len(agent.members[net_id]))
                sets.setdefault(key, []).append(net_id)
        # A lone actor gains nothing from a stack.
        self.sets = [ids for ids in sets.values() if len(ids) > 1]
        self.stacks, self.columns, self.boxes = [], [], []
        for ids in self.sets:
            actors = [agent.actors[i] for i in ids]
            box = action_kind(actors[0])[0] == "box"
            extras = [[actor.log_std] for actor in actors] if box else None
            stack = NetworkStack([layer_chain(actor) for actor in actors], extras)
            stack.load()
            self.stacks.append(stack)
            self.columns.append(action_columns(actors, stack.device))
            self.boxes.append(box)

    def sample(
        self,
        obs: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor | None],
    ) -> dict[str, torch.Tensor]:
        """Each network's sampled actions for its ``(B, ...)`` stored observations and
        action masks (True = legal, or None), as :meth:`IPPO.sample_group` returns them."""
        actions: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            parts = zip(self.sets, self.stacks, self.columns, self.boxes, strict=True)
            for ids, stack, columns, box in parts:
                actors = [self.agent.actors[i] for i in ids]
                rows = obs[ids[0]].shape[0]
                x = padded([obs[i].reshape(rows, -1).float() for i in ids])
                mask = None
                if any(masks[i] is not None for i in ids):
                    # A group without a mask may take any of its actions.
                    mask = padded([_legal(masks[i], rows, columns[g]) for g, i in enumerate(ids)])
                log_std = stack.extra(0) if box else None
                dist = stacked_distribution(actors, stack.forward(x), log_std, columns, mask)
                sampled = dist.sample()
                for g, (net_id, actor) in enumerate(zip(ids, actors, strict=True)):
                    # Box: the actor's own columns.
                    actions[net_id] = sampled[g, :, : action_width(actor)] if box else sampled[g]
        for net_id in self.agent.actors:
            if net_id not in actions:
                actions[net_id] = self.agent.sample_group(net_id, obs[net_id], masks[net_id])
        return actions


def _legal(mask: torch.Tensor | None, rows: int, columns: torch.Tensor) -> torch.Tensor:
    """A group's ``(rows, A)`` action mask; its ``(1, A)`` columns when it has none."""
    return columns.expand(rows, -1) if mask is None else mask
