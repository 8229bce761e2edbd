"""Communication biases (ippo_cli/biases.py): values on hand-built batches, the direction
their gradients push, that they are absent unless configured, and bad settings refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli.biases import (
    MESSAGE_STD_FLOOR,
    CommunicationBiases,
    keyed_signalling_loss,
    listening_loss,
    signalling_loss,
)
from ippo_cli.ippo import IPPO
from ippo_cli.networks.distributions import Categorical, DiagGaussian
from tests.conftest import run_cli


def _entropy(p):
    p = np.asarray(p, dtype=np.float64)
    return float(-(p * np.log(p)).sum(-1).mean()) if p.ndim > 1 else float(-(p * np.log(p)).sum())


def test_discrete_signalling_is_conditional_minus_average_message_entropy():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    dist = Categorical(torch.tensor(np.log(probs), dtype=torch.float32))
    expected = _entropy(probs) - _entropy(probs.mean(0))  # 0.639 - 0.948
    assert signalling_loss(dist).item() == pytest.approx(expected, abs=1e-5)
    # a row left out (weight 0) counts in neither term
    weight = torch.tensor([1.0, 0.0])
    assert signalling_loss(dist, weight).item() == pytest.approx(0.0, abs=1e-5)


def _mixed_entropy(p, share):
    return float(np.dot(share, [_entropy(q) for q in p]))


def test_keyed_signalling_is_message_entropy_given_the_key_minus_average_message_entropy():
    # Discrete(6) = 3 moves x 2 symbols, mpe2's layout (action = move + 3 * symbol): the
    # message is the symbol, each row's probability summed over its moves.
    probs = torch.tensor(
        [
            [0.5, 0.2, 0.1, 0.1, 0.05, 0.05],  # says 0 with 0.8
            [0.1, 0.6, 0.2, 0.05, 0.0, 0.05],  # 0.9
            [0.1, 0.1, 0.1, 0.0, 0.6, 0.1],  # 0.3
            [0.3, 0.3, 0.3, 0.05, 0.05, 0.0],  # 0.9
        ]
    )
    key = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # 3 rows of one key
    said = np.array([[0.8, 0.2], [0.9, 0.1], [0.3, 0.7], [0.9, 0.1]])
    by_key = [said[[0, 1, 3]].mean(0), said[2]]
    expected = _mixed_entropy(by_key, [0.75, 0.25]) - _entropy(said.mean(0))
    dist = Categorical(probs.log())
    assert keyed_signalling_loss(dist, key, symbols=2).item() == pytest.approx(expected, abs=1e-5)
    # Weights leave rows out: without row 3 the keys hold two rows and one.
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0])
    expected = _mixed_entropy([said[:2].mean(0), said[2]], [2 / 3, 1 / 3]) - _entropy(
        said[:3].mean(0)
    )
    assert keyed_signalling_loss(dist, key, weight, symbols=2).item() == pytest.approx(
        expected, abs=1e-5
    )


def test_keyed_signalling_is_minus_log_keys_for_a_one_to_one_code_and_zero_for_none():
    key = torch.eye(3).repeat(2, 1)  # three keys, two rows each
    code = torch.full((6, 3, 4), 1e-9)
    for row in range(6):
        code[row, row % 3, :] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # symbol = key
    code = Categorical(code.reshape(6, -1).log())  # 4 moves x 3 symbols, moves free
    assert keyed_signalling_loss(code, key, symbols=3).item() == pytest.approx(
        -math.log(3), abs=1e-4
    )
    same = torch.softmax(torch.randn(1, 12), -1).repeat(6, 1)  # says the same whatever the key
    assert keyed_signalling_loss(Categorical(same.log()), key, symbols=3).item() == pytest.approx(
        0.0, abs=1e-5
    )


def test_keyed_signalling_gradient_ties_the_message_to_the_key_and_ignores_the_moves():
    torch.manual_seed(0)
    key = torch.eye(2).repeat(4, 1)
    logits = (0.1 * torch.randn(8, 2, 3)).requires_grad_(True)  # 3 moves x 2 symbols
    keyed_signalling_loss(Categorical(logits.reshape(8, 6)), key, symbols=2).backward()
    step = -logits.grad  # gradient descent direction
    said_first = step[:, 0, :].mean(-1) - step[:, 1, :].mean(-1)
    # Rows of one key move toward one symbol, rows of the other key toward the other.
    assert (said_first[0::2] * said_first[1::2] < 0).all()
    # Only what is said counts: moving probability between the moves of one symbol
    # leaves the term as it was.
    probs = torch.softmax(logits.detach().reshape(8, 6), -1).reshape(8, 2, 3)
    moved = probs.sum(-1, keepdim=True) * torch.tensor([0.7, 0.2, 0.1])
    before, after = (
        keyed_signalling_loss(Categorical(p.reshape(8, 6).log()), key, symbols=2)
        for p in (probs, moved)
    )
    assert after.item() == pytest.approx(before.item(), abs=1e-6)


def test_gaussian_signalling_is_log_std_minus_half_log_det_of_the_mean_message_covariance():
    log_std = torch.tensor([math.log(0.5), math.log(2.0)])
    # uncorrelated dimensions with variances 1 and 4: the sum of the log-variances
    mean = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
    expected = 0.0 - 0.5 * (math.log(1.0) + math.log(4.0))
    assert signalling_loss(DiagGaussian(mean, log_std)).item() == pytest.approx(expected, abs=1e-3)
    # dimensions that split the messages the same way count once: log det, not per dimension
    mean = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.1]])
    cov = np.cov(mean.numpy().T, bias=True) + 1e-4 * np.eye(2)
    expected = -0.5 * math.log(np.linalg.det(cov))
    assert signalling_loss(DiagGaussian(mean, log_std)).item() == pytest.approx(expected, rel=1e-3)


def test_gaussian_signalling_measures_the_clipped_message():
    log_std = torch.zeros(1)
    inside = DiagGaussian(torch.tensor([[0.0], [1.0]]), log_std)
    beyond = DiagGaussian(torch.tensor([[-50.0], [60.0]], requires_grad=True), log_std)
    bounds = (np.zeros(1), np.ones(1))
    assert signalling_loss(beyond, bounds=bounds).item() == pytest.approx(
        signalling_loss(inside, bounds=bounds).item()
    )
    signalling_loss(beyond, bounds=bounds).backward()
    assert beyond.mean.grad is None or not beyond.mean.grad.any()  # no push further out


def test_discrete_signalling_gradient_sharpens_messages_and_spreads_their_average():
    logits = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.35, 0.25], [0.3, 0.4, 0.3]]).requires_grad_()
    opt = torch.optim.SGD([logits], lr=2.0)

    def entropies():
        dist = Categorical(logits)
        p = dist.log_p.exp()
        average = p.mean(0)
        return dist.entropy().mean().item(), -(average * average.log()).sum().item()

    conditional0, average0 = entropies()
    for _ in range(50):
        opt.zero_grad()
        signalling_loss(Categorical(logits)).backward()
        opt.step()
    conditional1, average1 = entropies()
    # each observation gets its own sharp message; the average message stays uniform
    assert conditional0 > 1.0 and conditional1 < 0.2
    assert average1 > average0 and average1 == pytest.approx(math.log(3), abs=1e-3)


def test_gaussian_signalling_gradient_lowers_log_std_and_spreads_the_means():
    mean = torch.tensor([[0.1, 0.0], [0.0, 0.1], [0.2, 0.1]]).requires_grad_()
    log_std = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([mean, log_std], lr=0.01)
    spread0 = mean.detach().var(0, unbiased=False).sum().item()
    opt.zero_grad()
    signalling_loss(DiagGaussian(mean, log_std)).backward()
    opt.step()
    assert (log_std.detach() < 0).all()
    assert mean.detach().var(0, unbiased=False).sum().item() > spread0


def test_gaussian_signalling_stops_sharpening_messages_at_the_std_floor():
    # A Gaussian's entropy has no lower bound: below the floor (a fraction of the
    # message's range) the term must stop pulling log_std down, or it does so forever.
    mean = torch.tensor([[0.1, 0.0], [0.0, 0.1], [0.2, 0.1]])
    bounds = (np.zeros(2), np.array([1.0, 4.0]))
    floor = np.log(MESSAGE_STD_FLOOR * np.array([1.0, 4.0]))
    above = torch.tensor(floor + 0.5, dtype=torch.float32, requires_grad=True)
    below = torch.tensor(floor - 0.5, dtype=torch.float32, requires_grad=True)
    signalling_loss(DiagGaussian(mean, above), bounds=bounds).backward()
    signalling_loss(DiagGaussian(mean, below), bounds=bounds).backward()
    assert (above.grad > 0).all()  # descending lowers log_std
    assert not below.grad.any()
    at_floor = signalling_loss(DiagGaussian(mean, torch.tensor(floor)), bounds=bounds)
    deeper = signalling_loss(DiagGaussian(mean, torch.tensor(floor - 3.0)), bounds=bounds)
    assert deeper.item() == pytest.approx(at_floor.item())
    # Unbounded messages: the floor is absolute.
    low_std = torch.full((2,), math.log(MESSAGE_STD_FLOOR) - 1.0, requires_grad=True)
    signalling_loss(DiagGaussian(mean, low_std)).backward()
    assert not low_std.grad.any()


class _Listener(torch.nn.Module):
    """A discrete policy over 3 actions from a 4-dim observation whose last 2 dims are
    the message."""

    def __init__(self, message_gain: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(4, 3) * message_gain)
        self.w.data[:2] = 0.1

    def distribution(self, obs, masks=None):
        return Categorical(obs @ self.w, masks)


def test_listening_is_minus_the_total_variation_to_a_swapped_message():
    obs = torch.tensor([[1.0, 0.0, 3.0, 0.0], [0.0, 1.0, 0.0, 3.0]])
    deaf = _Listener(0.0)
    deaf.w.data[2:] = 0.0
    assert listening_loss(deaf, obs, deaf.distribution(obs), (2, 4)).item() == pytest.approx(0.0)
    hearing = _Listener(1.0)
    p = hearing.distribution(obs).log_p.exp()
    swapped = obs.clone()
    swapped[:, 2:] = obs[[1, 0], 2:]
    q = hearing.distribution(swapped).log_p.exp()
    expected = -0.5 * (p - q).abs().sum(-1).mean().item()
    got = listening_loss(hearing, obs, hearing.distribution(obs), (2, 4)).item()
    assert got == pytest.approx(expected, abs=1e-6) and got < -0.1


def test_listening_gradient_makes_the_policy_depend_more_on_the_message():
    torch.manual_seed(0)
    obs = torch.randn(16, 4)
    listener = _Listener(0.2)
    opt = torch.optim.SGD(listener.parameters(), lr=0.5)
    before = -listening_loss(listener, obs, listener.distribution(obs), (2, 4)).item()
    for _ in range(10):
        opt.zero_grad()
        listening_loss(listener, obs, listener.distribution(obs), (2, 4)).backward()
        opt.step()
    after = -listening_loss(listener, obs, listener.distribution(obs), (2, 4)).item()
    assert after > before + 0.05


def _speaker_listener(**kwargs):
    obs = {"speaker_0": spaces.Box(0, 1, (3,)), "listener_0": spaces.Box(-5, 5, (11,))}
    act = {"speaker_0": spaces.Discrete(3), "listener_0": spaces.Discrete(5)}
    return IPPO(obs, act, ["speaker_0", "listener_0"], batch_size=32, **kwargs)


def _experiences(agent, steps=32, envs=2):
    rng = np.random.default_rng(0)
    ids = agent.agent_ids
    size = {"speaker_0": 3, "listener_0": 11}
    n_act = {"speaker_0": 3, "listener_0": 5}
    states = {
        a: [rng.normal(size=(envs, size[a])).astype(np.float32) for _ in range(steps)] for a in ids
    }
    actions = {a: [rng.integers(0, n_act[a], size=envs) for _ in range(steps)] for a in ids}
    log_probs = {a: [np.full(envs, -math.log(n_act[a])) for _ in range(steps)] for a in ids}
    rewards = {a: [rng.normal(size=envs) for _ in range(steps)] for a in ids}
    zeros = {a: [np.zeros(envs) for _ in range(steps)] for a in ids}
    next_states = {a: rng.normal(size=(envs, size[a])).astype(np.float32) for a in ids}
    next_dones = {a: np.zeros(envs) for a in ids}
    return states, actions, log_probs, rewards, zeros, zeros, next_states, next_dones


def _learned_weights(**kwargs):
    torch.manual_seed(0)
    agent = _speaker_listener(**kwargs)
    agent.learn(_experiences(agent))
    return {k: [p.detach().clone() for p in net.parameters()] for k, net in agent.actors.items()}


def _same(a, b):
    # Up to rounding: a group trains in a stack with the other group only when neither
    # has a bias (ippo_cli.stacked_update), and a stack may round differently.
    return all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b, strict=True))


def test_biases_are_absent_unless_configured_and_touch_only_their_group():
    assert CommunicationBiases(None, None).loss("speaker", None, None, None, None, None) == 0.0
    plain = _learned_weights()
    zero = _learned_weights(signalling={"speaker": 0.0})
    signalling = _learned_weights(signalling={"speaker": 0.5})
    listening = _learned_weights(listening={"listener": {"weight": 0.5, "message": [8, 11]}})
    assert _same(plain["speaker_0"], zero["speaker_0"])
    assert not _same(plain["speaker_0"], signalling["speaker_0"])
    assert _same(plain["listener_0"], signalling["listener_0"])
    assert not _same(plain["listener_0"], listening["listener_0"])
    assert _same(plain["speaker_0"], listening["speaker_0"])


def test_biases_survive_a_checkpoint(tmp_path):
    agent = _speaker_listener(signalling={"speaker": 0.1})
    agent.save_checkpoint(str(tmp_path / "a.pt"))
    assert IPPO.load(str(tmp_path / "a.pt")).signalling == {"speaker": 0.1}
    assert _speaker_listener().signalling is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"signalling": {"speakr": 0.1}}, "signalling.speakr=0.1 is invalid: unknown group"),
        ({"signalling": {"speaker": -1.0}}, "signalling.speaker=-1.0 is invalid: must be"),
        ({"signalling": {"speaker": "x"}}, "signalling.speaker='x' is invalid"),
        (
            {"signalling": {"speaker": {"weight": 0.1, "about": [0, 4]}}},
            "signalling.speaker.about=[0, 4] is invalid: must be [start, stop] with 0 <= "
            "start < stop <= 3",
        ),
        (
            {"signalling": {"speaker": {"weight": 0.1, "symbols": 2}}},
            "signalling.speaker.symbols=2 is invalid: must be an integer >= 2 dividing the 3",
        ),
        (
            {"signalling": {"speaker": {"weight": 0.1, "abut": [0, 3]}}},
            "is invalid: must be a weight or {weight: W, about: [start, stop], symbols: K}",
        ),
        (
            {"signalling": {"speaker": {"weight": -0.1, "about": [0, 3]}}},
            "signalling.speaker.weight=-0.1 is invalid: must be a number >= 0",
        ),
        ({"listening": {"listener": 0.1}}, "listening.listener=0.1 is invalid: must be {weight"),
        (
            {"listening": {"listener": {"weight": 0.1, "message": [8, 12]}}},
            "listening.listener.message=[8, 12] is invalid: must be [start, stop] with 0 <= "
            "start < stop <= 11",
        ),
    ],
)
def test_bad_bias_settings_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=None) as info:
        _speaker_listener(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_keyed_signalling_is_refused_for_box_messages():
    obs = {"speaker_0": spaces.Box(0, 1, (3,)), "listener_0": spaces.Box(-5, 5, (11,))}
    act = {"speaker_0": spaces.Box(0, 1, (3,)), "listener_0": spaces.Discrete(5)}
    for setting in ({"about": [0, 3]}, {"symbols": 3}):
        signalling = {"speaker": {"weight": 0.1, **setting}}
        with pytest.raises(ValueError, match="need discrete messages, not Box"):
            IPPO(obs, act, ["speaker_0", "listener_0"], signalling=signalling)


def test_cli_refuses_bad_bias_settings_in_one_line(tmp_path):
    override = "algorithm.signalling.speaker=-1"  # set by the tuned config: no +
    message = "signalling.speaker=-1 is invalid: must be a number >= 0"
    result = run_cli(["train", "env=speaker_listener", override], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_speaker_listener_composes_its_tuned_settings_and_they_can_be_overridden():
    from tests.conftest import train_config

    tuned = train_config(["env=speaker_listener"])
    assert tuned.algorithm.signalling == {"speaker": 0.1} and tuned.env.backend == "batched"
    assert (tuned.algorithm.lr, tuned.algorithm.batch_size, tuned.env.num_envs) == (7e-4, 512, 32)
    assert train_config(["env=speaker_listener", "algorithm.lr=3e-4"]).algorithm.lr == 3e-4
    reference = train_config(["env=speaker_listener", "algorithm=ippo"]).algorithm
    assert (reference.lr, reference.signalling, reference.ent_coef) == (1e-4, {}, 0.01)
    other = train_config(["env=simple_adversary"]).algorithm
    assert (other.lr, other.signalling, other.update_epochs) == (1e-4, {}, 4)
