"""PPO epochs for several networks at once: their actors and critics as one stack.

:func:`update_agents` is the update of one agent (:meth:`IPPO.update`) or of several
(the members of a stack of runs, :mod:`ippo_cli.run_stack`, or a population). The
networks found by :func:`stack_sets`, (agent, group) pairs that may belong to different
agents, learn with :func:`update_stack`; the others train one network pair at a time
(``IPPO._update_network``). For a set of G pairs the stack holds 2G networks (the G
actors, then the G critics, :class:`~ippo_cli.networks.stacked.NetworkStack`), and every
minibatch step is one forward pass, one loss, one backward pass, one gradient clip and
one Adam step for all of them.

The result is the same as training each pair on its own: the same shuffles (each agent's
drawn from its own generator, in group order), the same losses per pair with its own
agent's hyperparameters (``clip_coef``, ``ent_coef``, ``vf_coef``, ``max_grad_norm``,
learning rate, ``target_kl``: one value per row of the stack), a speaker's
positive-signalling term computed from its own slice of the stacked distribution, each
network's gradient clipped on its own, Adam's state carried over in both directions. A
pair whose approximate KL passes its ``target_kl`` stops there, as it would alone; the
others go on. With ``torch_compiler`` set, the minibatch's forward pass and losses (and
through them the backward pass) are one compiled function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.adam import adam as adam_step

from ippo_cli.compiled import maybe_compiled
from ippo_cli.groups import group_id_of
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
    from ippo_cli.rollout import GroupRollout

Key = tuple[int, str]  # (agent index, network id)
Batches = Sequence[Mapping[str, dict[str, torch.Tensor]]]  # per agent, per network

ADAM_SETTINGS = ("betas", "eps", "weight_decay", "amsgrad", "maximize", "fused")
# Minibatch rows from which a CPU's arithmetic, not the per-operation overhead, sets the
# pace: stacking then only adds copies.
LARGE_MINIBATCH_ROWS = 2048


def update_agents(
    agents: Sequence[IPPO],
    rollouts: Sequence[Mapping[str, GroupRollout]],
    generators: Sequence[torch.Generator | None] | None = None,
) -> list[dict[str, dict[str, float]]]:
    """PPO epochs over each agent's rollouts (``rollouts[k]`` for ``agents[k]``, one per
    network), networks of every agent stacked where they can be; each agent's shuffles
    come from ``generators[k]`` (torch's global RNG when None). Returns, per agent, each
    network's mean metrics. Every agent learns exactly what it would alone."""
    generators = generators or [None] * len(agents)
    batches = []
    orders = []
    for agent, rolls, generator in zip(agents, rollouts, generators, strict=True):
        agent.set_training_mode(True)
        batch = {net_id: r.flat_batch(agent.gamma, agent.gae_lambda) for net_id, r in rolls.items()}
        batches.append(batch)
        # Every group's shuffles, one per epoch, drawn up front in group order: a group
        # learns the same whether it trains alone or in a stack with others.
        orders.append(
            {
                net_id: [
                    torch.randperm(b["obs"].shape[0], device=agent.device, generator=generator)
                    for _ in range(agent.update_epochs)
                ]
                for net_id, b in batch.items()
            }
        )
    metrics: list[dict[str, dict[str, float]]] = [{} for _ in agents]
    for keys in stack_sets(agents, batches):
        for (k, net_id), result in update_stack(agents, keys, batches, orders).items():
            metrics[k][net_id] = result
    for k, agent in enumerate(agents):
        for net_id, batch in batches[k].items():
            if net_id not in metrics[k]:
                metrics[k][net_id] = agent._update_network(net_id, batch, orders[k][net_id])
        agent.last_metrics = {net_id: metrics[k][net_id] for net_id in batches[k]}
    return [agent.last_metrics for agent in agents]


def stack_sets(agents: Sequence[IPPO], batches: Batches) -> list[list[Key]]:
    """The (agent index, network id) pairs that can learn as one stack, in sets.

    A network pair joins a set when its actor and critic are MLP-encoder networks of one
    shape, its actions are a 1-D Box or Discrete, it has no listening bias (which runs the
    actor module itself again; a signalling bias reads only the distribution), and its
    fused Adam optimizers agree on settings (all but the learning rate) and step count; a
    set's pairs also agree on all of that, on their number of rows, agents, minibatch
    size and epochs, and on their hidden layers. One agent with target_kl stacks nothing
    (its groups stop on their own, and alone it gains little); nothing stacks with an
    accelerator or data-parallel training, nor on CPU from ``LARGE_MINIBATCH_ROWS`` rows
    per minibatch.
    """
    if len(agents) == 1 and agents[0].target_kl is not None:
        return []
    if any(a.accelerator is not None or a.data_parallel or not a.stack_updates for a in agents):
        return []
    sets: dict[Any, list[Key]] = {}
    for k, agent in enumerate(agents):
        for net_id, batch in batches[k].items():
            key = _stack_key(agent, net_id, batch)
            if key is not None:
                sets.setdefault(key, []).append((k, net_id))
    return list(sets.values())


def _stack_key(agent: IPPO, net_id: str, batch: Mapping[str, torch.Tensor]) -> Any:
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
    size = agent.batch_size * agents
    if batch["obs"].device.type == "cpu" and size >= LARGE_MINIBATCH_ROWS:
        return None
    rows = (batch["obs"].shape[0], agents, size, agent.update_epochs)
    masked = "action_masks" in batch
    return (rows, signature, kind, masked, adam, str(batch["obs"].device), agent.torch_compiler)


def _adam_state(optimizers: Sequence[torch.optim.Optimizer]) -> tuple | None:
    """(settings but the learning rate, step count) shared by ``optimizers``; None when
    they differ, are not fused Adam without weight decay, or some parameters have state
    and others none."""
    keys = set()
    for opt in optimizers:
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
            return None
        group = opt.param_groups[0]
        if not group["fused"] or group["amsgrad"] or group["maximize"] or group["weight_decay"]:
            return None
        if any(torch.is_tensor(group[k]) for k in ("lr", "eps", "weight_decay")):
            return None
        params = group["params"]
        steps = {float(opt.state[p]["step"]) if opt.state.get(p) else 0.0 for p in params}
        if len(steps) != 1 or (steps != {0.0} and not all(opt.state.get(p) for p in params)):
            return None
        keys.add((tuple(group[k] for k in ADAM_SETTINGS), steps.pop()))
    return keys.pop() if len(keys) == 1 else None


@dataclass
class _Rows:
    """Each stacked pair's hyperparameters: ``(G, 1)`` tensors (a float when all pairs
    agree, which keeps the one-agent stack's arithmetic as it was), learning rates and
    gradient-norm caps per network row ``(2G, 1)``, KL limits ``(G,)`` (inf: none)."""

    clip_coef: torch.Tensor | float
    ent_coef: torch.Tensor | float
    vf_coef: torch.Tensor | float
    max_grad_norm: torch.Tensor | float
    lr: torch.Tensor | float
    target_kl: torch.Tensor | None

    @classmethod
    def of(cls, owners: Sequence[IPPO], lrs: list[float], device: torch.device) -> _Rows:
        def column(values: list[float], dtype=torch.float32) -> torch.Tensor | float:
            if len(set(values)) == 1:
                return values[0]
            return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)

        def per_pair(name: str) -> torch.Tensor | float:
            return column([float(getattr(a, name)) for a in owners])

        kl = [a.target_kl for a in owners]
        return cls(
            clip_coef=per_pair("clip_coef"),
            ent_coef=per_pair("ent_coef"),
            vf_coef=per_pair("vf_coef"),
            max_grad_norm=column([float(a.max_grad_norm) for a in owners] * 2),
            lr=column(lrs, torch.float64),  # as Adam's own scalars: double
            target_kl=None
            if all(v is None for v in kl)
            else torch.tensor([torch.inf if v is None else float(v) for v in kl], device=device),
        )

    @property
    def uniform(self) -> bool:
        """Whether one fused Adam step (one learning rate, no early stop) serves all."""
        return not torch.is_tensor(self.lr) and self.target_kl is None


def update_stack(
    agents: Sequence[IPPO],
    keys: list[Key],
    batches: Batches,
    orders: Sequence[Mapping[str, list[torch.Tensor]]],
) -> dict[Key, dict[str, float]]:
    """PPO epochs for the pairs ``keys`` (a set from :func:`stack_sets`) as one stack,
    each epoch's minibatches taken in its ``orders`` (one permutation per epoch); returns
    each pair's mean metrics, as ``IPPO._update_network`` does."""
    owners = [agents[k] for k, _ in keys]
    actors = [agents[k].actors[i] for k, i in keys]
    critics = [agents[k].critics[i] for k, i in keys]
    optimizers = [agents[k].actor_optimizers[i] for k, i in keys]
    optimizers += [agents[k].critic_optimizers[i] for k, i in keys]
    g = len(keys)
    first = owners[0]
    box = action_kind(actors[0])[0] == "box"
    extras = [[a.log_std] for a in actors] + [[None]] * g if box else None
    stack = NetworkStack([layer_chain(net) for net in actors + critics], extras)
    stack.load()
    settings, step = _adam_state(optimizers)
    adam = dict(zip(ADAM_SETTINGS, settings, strict=True))
    hyper = _Rows.of(owners, [opt.param_groups[0]["lr"] for opt in optimizers], stack.device)
    state_of = {p: opt.state for opt in optimizers for p in opt.param_groups[0]["params"]}
    if step > 0:
        exp_avg = stack.pack(lambda p: state_of[p][p]["exp_avg"])
        exp_avg_sq = stack.pack(lambda p: state_of[p][p]["exp_avg_sq"])
    else:
        exp_avg, exp_avg_sq = torch.zeros_like(stack.flat), torch.zeros_like(stack.flat)
    optimizer = (
        _FusedAdam(adam, hyper.lr, step, stack.device)
        if hyper.uniform
        else _RowAdam(adam, hyper.lr, step, 2 * g, stack.device, first.torch_compiler)
    )

    data = _stacked_batch([batches[k][i] for k, i in keys], box)
    all_chosen = bool(data["chosen"].all())
    n = data["obs"].shape[1]
    size = first.batch_size * len(first.members[keys[0][1]])
    rows = torch.arange(g, device=stack.device).unsqueeze(1)
    log_std = stack.extra(0)[:g] if box else None
    columns = action_columns(actors, stack.device)
    signallers = [
        (i, group_id_of(net_id), actors[i], owners[i].biases)
        for i, (_, net_id) in enumerate(keys)
        if owners[i].biases.signals(group_id_of(net_id))
    ]
    terms = maybe_compiled(_minibatch_terms, first.torch_compiler)
    totals = torch.zeros(g, len(METRIC_NAMES) - 1, device=stack.device)
    updates = torch.zeros(g, device=stack.device)
    learning = torch.ones(g, dtype=torch.bool, device=stack.device)
    for epoch in range(first.update_epochs):
        # Row order[g, j] of pair g, as a row of the (G * n, ...) flattened batch.
        order = torch.stack([orders[k][net_id][epoch] for k, net_id in keys])
        order = (order + rows * n).view(-1)
        shuffled = {
            k: v.flatten(0, 1).index_select(0, order).view(v.shape) if v.shape[1] == n else v
            for k, v in data.items()
        }
        for start in range(0, n, size):
            part = slice(start, start + size)
            mb = {k: v[:, part] if v.shape[1] == n else v for k, v in shuffled.items()}
            chosen = None if all_chosen else mb["chosen"]
            loss, measured = terms(stack, actors, log_std, columns, signallers, hyper, mb, chosen)
            if hyper.target_kl is not None:
                # A pair whose KL passed its limit stops before this step, as alone.
                learning &= measured[:, 3] <= hyper.target_kl
                if not bool(learning.any()):
                    break
            stack.zero_grad()
            loss.backward()
            grad = stack.gradient()
            # Each network's gradient clipped to max_grad_norm on its own, as
            # clip_grad_norm_ does (a row of the stack is one network).
            norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
            grad.mul_((hyper.max_grad_norm / (norms + 1e-6)).clamp_(max=1.0))
            with torch.no_grad():
                optimizer.step(stack.flat, grad, exp_avg, exp_avg_sq, learning.repeat(2))
            totals += measured * learning.unsqueeze(1)
            updates += learning
        else:
            continue
        break

    stack.store()
    stack.zero_grad()
    row_of = {p: r for r, net in enumerate(actors + critics) for p in net.parameters()}

    def put(name: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def into(p: torch.Tensor, part: torch.Tensor) -> None:
            entry = state_of[p].setdefault(p, {})
            entry["step"] = optimizer.step_of(row_of[p])
            entry[name] = part.clone(memory_format=torch.contiguous_format)

        return into

    stack.unpack(exp_avg, put("exp_avg"))
    stack.unpack(exp_avg_sq, put("exp_avg_sq"))

    means = (totals / updates.clamp(min=1).unsqueeze(1)).tolist()
    counts = updates.tolist()
    result = {}
    for i, key in enumerate(keys):
        metrics = dict(zip(METRIC_NAMES[:-1], means[i], strict=True))
        batch = batches[key[0]][key[1]]
        metrics["explained_variance"] = explained_variance(batch["values"], batch["returns"])
        metrics["updates"] = int(counts[i])
        result[key] = metrics
    return result


class _FusedAdam:
    """Torch's fused Adam step over the whole stack: one learning rate, every row steps."""

    def __init__(self, adam: dict[str, Any], lr: float, step: float, device) -> None:
        self.adam, self.lr = adam, lr
        self.steps = [torch.tensor(step, dtype=torch.float32, device=device)]

    def step(self, flat, grad, exp_avg, exp_avg_sq, learning) -> None:
        adam_step(
            [flat],
            [grad],
            [exp_avg],
            [exp_avg_sq],
            [],
            self.steps,
            fused=self.adam["fused"],
            amsgrad=False,
            beta1=self.adam["betas"][0],
            beta2=self.adam["betas"][1],
            lr=self.lr,
            weight_decay=0.0,
            eps=self.adam["eps"],
            maximize=False,
        )

    def step_of(self, row: int) -> torch.Tensor:
        return self.steps[0].clone()


class _RowAdam:
    """Adam with one learning rate and one step count per row of the stack: rows whose
    pair has stopped (``learning`` False) keep their parameters and moments. The same
    arithmetic as torch's Adam, as one batched expression for all rows (compiled with
    the learner: eager, its dozen elementwise passes over the stack cost as much as a
    tenth of a sweep's update)."""

    def __init__(
        self,
        adam: dict[str, Any],
        lr: torch.Tensor | float,
        step: float,
        rows: int,
        device,
        compiler: str | None = None,
    ) -> None:
        # Learning rates (see _Rows), step counts and bias corrections in double
        # precision, as torch's fused kernel computes them, then the same float32
        # expression. A tensor learning rate even when all rows share one: a compiled
        # step would otherwise be rebuilt for each value an annealed rate takes.
        self.lr = torch.as_tensor(lr, dtype=torch.float64, device=device).expand(rows, 1)
        self.constants = (*adam["betas"], adam["eps"])
        self.steps = torch.full((rows, 1), step, dtype=torch.float64, device=device)
        self._step = maybe_compiled(_row_adam_step, compiler)

    def step(self, flat, grad, exp_avg, exp_avg_sq, learning) -> None:
        live = learning.unsqueeze(1)
        self.steps += live
        self._step(flat, grad, exp_avg, exp_avg_sq, live, self.steps, self.lr, *self.constants)

    def step_of(self, row: int) -> torch.Tensor:
        return self.steps[row, 0].float()


def _row_adam_step(
    flat: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    live: torch.Tensor,
    steps: torch.Tensor,
    lr: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One :class:`_RowAdam` step, in place; ``live``, ``steps`` and ``lr`` per row."""
    new_avg = torch.lerp(exp_avg, grad, 1 - beta1)
    new_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    steps = steps.clamp(min=1)
    step_size = (lr / (1 - beta1**steps)).float()
    bias2_sqrt = (1 - beta2**steps).sqrt().float()
    denom = new_sq.sqrt() / bias2_sqrt + eps
    moved = flat - step_size * (new_avg / denom)
    flat.copy_(torch.where(live, moved, flat))
    exp_avg.copy_(torch.where(live, new_avg, exp_avg))
    exp_avg_sq.copy_(torch.where(live, new_sq, exp_avg_sq))


def _minibatch_terms(
    stack: NetworkStack,
    actors: list[Any],
    log_std: torch.Tensor | None,
    columns: torch.Tensor,
    signallers: list[tuple[int, str, Any, Any]],
    hyper: _Rows,
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
        dist.log_prob(mb["actions"]), dist.entropy(), value, mb, hyper.clip_coef, chosen
    )
    ent_coef, vf_coef = (_flat(c) for c in (hyper.ent_coef, hyper.vf_coef))
    loss = (policy_loss - ent_coef * entropy + vf_coef * value_loss).sum()
    for i, group, actor, biases in signallers:
        own = _own_distribution(actor, i, head, log_std, mb.get("action_masks"))
        weight = None if chosen is None else chosen[i]
        loss = loss + biases.signalling_term(group, own, weight, mb["obs"][i])
    metrics = [policy_loss, value_loss, entropy, approx_kl, clip_frac]
    return loss, torch.stack([m.detach() for m in metrics], dim=1)


def _flat(coef: torch.Tensor | float) -> torch.Tensor | float:
    """A ``(G, 1)`` per-pair coefficient as ``(G,)``, to scale ``(G,)`` losses."""
    return coef.squeeze(1) if torch.is_tensor(coef) else coef


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
