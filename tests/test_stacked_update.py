"""Groups trained as one stack of networks learn exactly what they learn one at a time."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli import IPPO
from ippo_cli.compiled import compiled as compile_once
from ippo_cli.stacked_update import LARGE_MINIBATCH_ROWS, stack_sets

BOX = {
    "obs": [spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (11,), np.float32)],
    "act": [spaces.Box(0, 1, (3,), np.float32), spaces.Box(-2, 2, (5,), np.float32)],
}
DISCRETE = {
    "obs": [spaces.Box(-1, 1, (4,), np.float32), spaces.Box(-1, 1, (7,), np.float32)],
    "act": [spaces.Discrete(3), spaces.Discrete(5)],
}


def _sets(agent, batches):
    """stack_sets of one agent, as lists of its network ids."""
    return [[net_id for _, net_id in keys] for keys in stack_sets([agent], [batches])]


def _agent(spec, stack: bool, **kwargs) -> IPPO:
    torch.manual_seed(0)
    kwargs = {"batch_size": 32, "lr": 1e-3, "update_epochs": 3, **kwargs}
    agent = IPPO(spec["obs"], spec["act"], ["speaker_0", "listener_0"], **kwargs)
    agent.stack_updates = stack
    return agent


def _fill(agent: IPPO, seed: int, steps: int = 24, envs: int = 4):
    """Random rollouts; some steps' actions were the env's (chosen False)."""
    rollouts = agent.allocate_rollouts(steps, envs)
    g = torch.Generator().manual_seed(seed)
    for r in rollouts.values():
        for t in (r.obs, r.log_probs, r.values, r.rewards, r.last_values):
            t.normal_(generator=g)
        r.obs[..., :2] = r.obs[..., :2].sign()  # few values, as a signalling key has
        r.ends.bernoulli_(0.05, generator=g)
        r.valid.fill_(True)
        r.chosen.bernoulli_(0.8, generator=g)
        if r.actions.is_floating_point():  # in (-1, 1): valid squashed actions too
            r.actions.uniform_(-0.99, 0.99, generator=g)
        else:
            r.actions.random_(0, 3, generator=g)
        if r.action_masks is not None:
            r.action_masks.bernoulli_(0.7, generator=g)
            r.action_masks[..., 0] = True
    return rollouts


def _train(spec, stack: bool, **kwargs):
    agent = _agent(spec, stack, **kwargs)
    metrics = []
    for update in range(2):
        rollouts = _fill(agent, seed=update)
        torch.manual_seed(10 + update)
        metrics.append(agent.update(rollouts))
    return agent, metrics


@pytest.mark.parametrize(
    "spec, kwargs",
    [
        (BOX, {}),
        (BOX, {"net_config": {"squash_output": True}}),
        (DISCRETE, {}),
        (BOX, {"signalling": {"speaker": 0.1}}),
        (DISCRETE, {"signalling": {"speaker": 0.1}}),
        (DISCRETE, {"signalling": {"speaker": {"weight": 0.1, "about": [0, 2], "symbols": 3}}}),
    ],
    ids=["box", "box-squashed", "discrete", "box-signalling", "discrete-signalling", "keyed"],
)
def test_stacked_update_matches_one_network_pair_at_a_time(spec, kwargs):
    stacked, stacked_metrics = _train(spec, stack=True, **kwargs)
    plain, plain_metrics = _train(spec, stack=False, **kwargs)
    assert _sets(stacked, _batches(stacked)) == [["speaker_0", "listener_0"]]
    _assert_same_parameters(stacked, plain, atol=2e-5)
    for net in ("speaker_0", "listener_0"):
        for opts in ("actor_optimizers", "critic_optimizers"):
            mine = getattr(stacked, opts)[net].state_dict()["state"]
            theirs = getattr(plain, opts)[net].state_dict()["state"]
            assert mine.keys() == theirs.keys()
            for k, state in mine.items():
                for field in ("step", "exp_avg", "exp_avg_sq"):
                    assert torch.allclose(state[field], theirs[k][field], atol=1e-5), (net, k)
    for mine, theirs in zip(stacked_metrics, plain_metrics, strict=True):
        for net, values in mine.items():
            assert values == pytest.approx(theirs[net], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize(
    "spec, kwargs",
    [(BOX, {"signalling": {"speaker": 0.1}}), (DISCRETE, {})],
    ids=["box-signalling", "discrete"],
)
def test_compiled_stacked_update_matches_eager_training(spec, kwargs):
    # torch_compiler compiles the stack's minibatch forward and losses (and so its
    # backward); the stack is still used, and learns what the eager networks learn.
    compile_once.cache_clear()
    compiled, compiled_metrics = _train(spec, stack=True, torch_compiler="default", **kwargs)
    assert compile_once.cache_info().currsize == 1  # the stack's minibatch terms
    assert _sets(compiled, _batches(compiled)) == [["speaker_0", "listener_0"]]
    plain, plain_metrics = _train(spec, stack=False, **kwargs)
    _assert_same_parameters(compiled, plain, atol=1e-4)
    for mine, theirs in zip(compiled_metrics, plain_metrics, strict=True):
        for net, values in mine.items():
            assert values == pytest.approx(theirs[net], rel=1e-3, abs=1e-4)


def _assert_same_parameters(agent: IPPO, other: IPPO, atol: float) -> None:
    for net in ("speaker_0", "listener_0"):
        for role in ("actors", "critics"):
            mine = dict(getattr(agent, role)[net].named_parameters())
            theirs = dict(getattr(other, role)[net].named_parameters())
            for name, p in mine.items():
                assert torch.allclose(p, theirs[name], atol=atol), (net, role, name)


def _batches(agent):
    rollouts = _fill(agent, seed=0)
    return {k: r.flat_batch(agent.gamma, agent.gae_lambda) for k, r in rollouts.items()}


def test_groups_stack_only_when_their_networks_and_batches_agree():
    assert _sets(_agent(BOX, True, target_kl=0.1), _batches(_agent(BOX, True))) == []
    # A listening bias runs the listener's actor module again: it trains on its own.
    listening = _agent(BOX, True, listening={"listener": {"weight": 0.1, "message": [8, 11]}})
    assert _sets(listening, _batches(listening)) == [["speaker_0"]]
    # Different hidden layers: each group is a stack of its own actor and critic.
    agent = _agent(BOX, True)
    wide = IPPO(
        BOX["obs"][:1],
        BOX["act"][:1],
        ["speaker_0"],
        net_config={"head_config": {"hidden_size": [32]}},
    )
    agent.actors["speaker_0"], agent.critics["speaker_0"] = (
        wide.actors["speaker_0"],
        wide.critics["speaker_0"],
    )
    agent.reinit_optimizers()
    assert _sets(agent, _batches(agent)) == [["speaker_0"], ["listener_0"]]
    # Different numbers of valid rows (an agent absent at some steps).
    agent = _agent(BOX, True)
    batches = _batches(agent)
    batches["speaker_0"] = {k: v[:-1] for k, v in batches["speaker_0"].items()}
    assert _sets(agent, batches) == [["speaker_0"], ["listener_0"]]


def test_large_cpu_minibatches_train_one_network_pair_at_a_time():
    # From LARGE_MINIBATCH_ROWS rows the arithmetic dominates; stacking would only copy.
    big = _agent(BOX, True, batch_size=LARGE_MINIBATCH_ROWS)
    assert _sets(big, _batches(big)) == []
    small = _agent(BOX, True, batch_size=LARGE_MINIBATCH_ROWS - 1)
    assert _sets(small, _batches(small)) == [["speaker_0", "listener_0"]]


@pytest.mark.parametrize("spec", [BOX, DISCRETE], ids=["box", "discrete"])
def test_stacked_signalling_with_every_action_chosen_matches_one_pair_at_a_time(spec):
    # Every row the policy's choice: the losses and the signalling term take no weights.
    agents = [_agent(spec, stack, signalling={"speaker": 0.1}) for stack in (True, False)]
    for agent in agents:
        rollouts = _fill(agent, seed=0)
        for r in rollouts.values():
            r.chosen.fill_(True)
        torch.manual_seed(10)
        agent.update(rollouts)
    _assert_same_parameters(*agents, atol=2e-5)
