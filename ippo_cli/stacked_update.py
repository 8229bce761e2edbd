"""PPO epochs for several agent groups at once: their actors and critics as one stack.

:meth:`IPPO.update` hands each set of groups found by :func:`stack_sets` to
:func:`update_stack`; the other groups train one network pair at a time. For a set of G
groups the stack holds 2G networks (the G actors, then the G critics,
:class:`~ippo_cli.networks.stacked.NetworkStack`), and every minibatch step is one
forward pass, one loss, one backward pass, one gradient clip and one Adam step for all of
them. The result is the same as training each group on its own: the same shuffles (drawn
in the same order), the same losses per group (a speaker's positive-signalling term
included, computed from its own slice of the stacked distribution), each network's
gradient clipped to ``max_grad_norm`` on its own, Adam's state carried over in both
directions. With ``torch_compiler`` set, the minibatch's forward pass and losses (and
through them the backward pass) are one compiled function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.adam import adam as adam_step

from ippo_cli.compiled import maybe_compiled
from ippo_cli.losses import METRIC_NAMES, explained_variance, ppo_terms
from ippo_cli.networks.distributions import make_distribution
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

ADAM_SETTINGS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "fused")
# Minibatch rows from which a CPU's arithmetic, not the per-operation overhead, sets the
# pace: stacking then only adds copies.
LARGE_MINIBATCH_ROWS = 2048


def stack_sets(agent: IPPO, batches: Mapping[str, dict[str, torch.Tensor]]) -> list[list[str]]:
    """The networks (by id) that can learn as one stack, in sets.

    A group joins a set when its actor and critic are MLP-encoder networks of one shape,
    its actions are a 1-D Box or Discrete, it has no listening bias (which runs the actor
    module itself again; a signalling bias reads only the distribution), and its fused
    Adam optimizers agree on settings and step count; a set's groups also agree on all of
    that, on their number of rows and agents, and on their hidden layers. Nothing stacks
    with target_kl (each group stops on its own), an accelerator or data-parallel
    training, nor on CPU from ``LARGE_MINIBATCH_ROWS`` rows per minibatch.
    """
    if agent.target_kl is not None or agent.accelerator is not None or agent.data_parallel:
        return []
    sets: dict[Any, list[str]] = {}
    for net_id, batch in batches.items():
        key = _stack_key(agent, net_id, batch)
        if key is not None:
            sets.setdefault(key, []).append(net_id)
    return list(sets.values())


def _stack_key(agent: IPPO, net_id: str, batch: Mapping[str, torch.Tensor]) -> Any:
    from ippo_cli.ippo import group_id_of

    actor, critic = agent.actors[net_id], agent.critics[net_id]
    if agent.biases.listens(group_id_of(net_id)):
        return None
    chains = layer_chain(actor), layer_chain(critic)
    if chains[0] is None or chains[1] is None:
        return None
    signature = chain_signature(chains[0])
    if chain_signature(chains[1]) != signature:
        return None
    kind = action_kind(actor)
    if kind is None:
        return None
    optimizers = (agent.actor_optimizers[net_id], agent.critic_optimizers[net_id])
    adam = _adam_state(optimizers)
    if adam is None:
        return None
    agents = len(agent.members[net_id])
    if batch["obs"].device.type == "cpu" and agent.batch_size * agents >= LARGE_MINIBATCH_ROWS:
        return None
    rows = (batch["obs"].shape[0], agents)
    masked = "action_masks" in batch
    return (rows, signature, kind, masked, adam, str(batch["obs"].device))


def _adam_state(optimizers: tuple[torch.optim.Optimizer, ...]) -> tuple | None:
    """(settings, step count) shared by ``optimizers``; None when they differ, are not
    fused Adam, or some parameters have state and others none."""
    keys = set()
    for opt in optimizers:
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
            return None
        group = opt.param_groups[0]
        if not group["fused"] or group["amsgrad"] or group["maximize"]:
            return None
        if any(torch.is_tensor(group[k]) for k in ("lr", "eps", "weight_decay")):
            return None
        params = group["params"]
        steps = {float(opt.state[p]["step"]) if opt.state.get(p) else 0.0 for p in params}
        if len(steps) != 1 or (steps != {0.0} and not all(opt.state.get(p) for p in params)):
            return None
        keys.add((tuple(group[k] for k in ADAM_SETTINGS), steps.pop()))
    return keys.pop() if len(keys) == 1 else None


def update_stack(
    agent: IPPO,
    net_ids: list[str],
    batches: Mapping[str, dict[str, torch.Tensor]],
    orders: Mapping[str, list[torch.Tensor]],
) -> dict[str, dict[str, float]]:
    """PPO epochs for the groups ``net_ids`` (a set from :func:`stack_sets`) as one stack,
    each epoch's minibatches taken in its ``orders`` (one permutation per epoch); returns
    each network's mean metrics, as ``IPPO._update_network`` does."""
    from ippo_cli.ippo import group_id_of

    actors = [agent.actors[i] for i in net_ids]
    critics = [agent.critics[i] for i in net_ids]
    optimizers = [agent.actor_optimizers[i] for i in net_ids]
    optimizers += [agent.critic_optimizers[i] for i in net_ids]
    g = len(net_ids)
    box = action_kind(actors[0])[0] == "box"
    extras = [[a.log_std] for a in actors] + [[None]] * g if box else None
    stack = NetworkStack([layer_chain(net) for net in actors + critics], extras)
    stack.load()
    settings, step = _adam_state(tuple(optimizers))
    adam = dict(zip(ADAM_SETTINGS, settings, strict=True))
    state_of = {p: opt.state for opt in optimizers for p in opt.param_groups[0]["params"]}
    steps = [torch.tensor(step, dtype=torch.float32, device=stack.device)]
    if step > 0:
        exp_avg = stack.pack(lambda p: state_of[p][p]["exp_avg"])
        exp_avg_sq = stack.pack(lambda p: state_of[p][p]["exp_avg_sq"])
    else:
        exp_avg, exp_avg_sq = torch.zeros_like(stack.flat), torch.zeros_like(stack.flat)

    data = _stacked_batch([batches[i] for i in net_ids], box)
    all_chosen = bool(data["chosen"].all())
    n = data["obs"].shape[1]
    size = agent.batch_size * len(agent.members[net_ids[0]])
    rows = torch.arange(g, device=stack.device).unsqueeze(1)
    log_std = stack.extra(0)[:g] if box else None
    columns = action_columns(actors, stack.device)
    signallers = [
        (i, group_id_of(net_id), actors[i])
        for i, net_id in enumerate(net_ids)
        if agent.biases.signals(group_id_of(net_id))
    ]
    terms = maybe_compiled(_minibatch_terms, agent.torch_compiler)
    totals = torch.zeros(g, len(METRIC_NAMES) - 1, device=stack.device)
    updates = 0
    for epoch in range(agent.update_epochs):
        # Row order[g, j] of group g, as a row of the (G * n, ...) flattened batch.
        order = (torch.stack([orders[net_id][epoch] for net_id in net_ids]) + rows * n).view(-1)
        shuffled = {
            k: v.flatten(0, 1).index_select(0, order).view(v.shape) if v.shape[1] == n else v
            for k, v in data.items()
        }
        for start in range(0, n, size):
            part = slice(start, start + size)
            mb = {k: v[:, part] if v.shape[1] == n else v for k, v in shuffled.items()}
            chosen = None if all_chosen else mb["chosen"]
            loss, measured = terms(stack, actors, log_std, columns, signallers, agent, mb, chosen)
            stack.zero_grad()
            loss.backward()
            grad = stack.gradient()
            # Each network's gradient clipped to max_grad_norm on its own, as
            # clip_grad_norm_ does (a row of the stack is one network).
            norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
            grad.mul_((agent.max_grad_norm / (norms + 1e-6)).clamp_(max=1.0))
            with torch.no_grad():
                adam_step(
                    [stack.flat],
                    [grad],
                    [exp_avg],
                    [exp_avg_sq],
                    [],
                    steps,
                    fused=adam["fused"],
                    amsgrad=False,
                    beta1=adam["betas"][0],
                    beta2=adam["betas"][1],
                    lr=adam["lr"],
                    weight_decay=adam["weight_decay"],
                    eps=adam["eps"],
                    maximize=False,
                )
            totals += measured
            updates += 1

    stack.store()
    stack.zero_grad()

    def put(name: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def into(p: torch.Tensor, part: torch.Tensor) -> None:
            entry = state_of[p].setdefault(p, {})
            entry["step"] = steps[0].clone()
            entry[name] = part.clone(memory_format=torch.contiguous_format)

        return into

    stack.unpack(exp_avg, put("exp_avg"))
    stack.unpack(exp_avg_sq, put("exp_avg_sq"))

    means = (totals / max(updates, 1)).tolist()
    result = {}
    for i, net_id in enumerate(net_ids):
        metrics = dict(zip(METRIC_NAMES[:-1], means[i], strict=True))
        batch = batches[net_id]
        metrics["explained_variance"] = explained_variance(batch["values"], batch["returns"])
        metrics["updates"] = updates
        result[net_id] = metrics
    return result


def _minibatch_terms(
    stack: NetworkStack,
    actors: list[Any],
    log_std: torch.Tensor | None,
    columns: torch.Tensor,
    signallers: list[tuple[int, str, Any]],
    agent: IPPO,
    mb: dict[str, torch.Tensor],
    chosen: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One minibatch's total loss over the stack and its ``(G, 5)`` metrics (policy and
    value loss, entropy, approximate KL, clip fraction; no gradient)."""
    g = len(actors)
    out = stack.forward(mb["obs"])  # actor g and critic g read obs g
    head, value = out[:g], out[g:, :, 0]
    dist = stacked_distribution(actors, head, log_std, columns, mb.get("action_masks"))
    policy_loss, value_loss, entropy, approx_kl, clip_frac = ppo_terms(
        dist.log_prob(mb["actions"]), dist.entropy(), value, mb, agent.clip_coef, chosen
    )
    loss = (policy_loss - agent.ent_coef * entropy + agent.vf_coef * value_loss).sum()
    for i, group, actor in signallers:
        own = _own_distribution(actor, i, head, log_std, mb.get("action_masks"))
        weight = None if chosen is None else chosen[i]
        loss = loss + agent.biases.signalling_term(group, own, weight)
    metrics = [policy_loss, value_loss, entropy, approx_kl, clip_frac]
    return loss, torch.stack([m.detach() for m in metrics], dim=1)


def _own_distribution(
    actor: Any,
    i: int,
    head: torch.Tensor,
    log_std: torch.Tensor | None,
    masks: torch.Tensor | None,
) -> Any:
    """Stacked actor ``i``'s distribution as it would make it alone: its own columns of
    the ``(G, B, A)`` head outputs, log-std and action masks."""
    width = action_width(actor)
    return make_distribution(
        actor.action_space,
        head[i, :, :width],
        None if log_std is None else log_std[i, :, :width],
        None if masks is None else masks[i, :, :width],
        actor.squash_output,
    )


def _stacked_batch(batches: list[dict[str, torch.Tensor]], box: bool) -> dict[str, torch.Tensor]:
    """The groups' flat batches as ``(G, n, ...)`` tensors, observations, Box actions
    and action masks zero-padded to the widest."""
    n = batches[0]["obs"].shape[0]
    data = {"obs": padded([b["obs"].reshape(n, -1) for b in batches], torch.float32)}
    for key in ("log_probs", "values", "advantages", "returns"):
        data[key] = torch.stack([b[key] for b in batches])
    data["chosen"] = torch.stack([b["chosen"] for b in batches]).float()
    if box:
        data["actions"] = padded([b["actions"].reshape(n, -1) for b in batches], torch.float32)
    else:
        data["actions"] = torch.stack([b["actions"].reshape(n) for b in batches])
    if "action_masks" in batches[0]:
        data["action_masks"] = padded([b["action_masks"] for b in batches], torch.bool)
    return data
