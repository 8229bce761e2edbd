"""The reference's Python API: grouping, get_action with masks and env-defined actions,
helpers, and one-line errors for bad input."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli import IPPO, MultiAgentSetup
from tests.conftest import sample_batch

BOX = spaces.Box(-1, 1, (6,))
IMAGE = spaces.Box(0, 255, (16, 16, 3), np.uint8)
DICT = spaces.Dict(
    {
        "img": spaces.Box(0, 255, (12, 12, 3), np.uint8),
        "pos": spaces.Box(-1, 1, (2,)),
        "id": spaces.Discrete(3),
    }
)
TUPLE = spaces.Tuple((spaces.Box(-1, 1, (3,)), spaces.MultiBinary(4), spaces.MultiDiscrete([2, 3])))
OBS_SPACES = {
    "vector": BOX,
    "image": IMAGE,
    "dict": DICT,
    "tuple": TUPLE,
    "discrete": spaces.Discrete(5),
}
ACTION_SPACES = {
    "discrete": spaces.Discrete(4),
    "box": spaces.Box(0, 1, (2,)),
    "multidiscrete": spaces.MultiDiscrete([3, 2]),
    "multibinary": spaces.MultiBinary(3),
}


def _grouped(**kwargs):
    return IPPO(
        [BOX] * 3, [spaces.Discrete(2)] * 3, ["agent_0", "agent_1", "other_agent_0"], **kwargs
    )


def test_agents_are_grouped_by_id_prefix():
    agent = _grouped()
    assert agent.shared_agent_ids == ["agent", "other_agent"]
    assert agent.grouped_agents == {
        "agent": ["agent_0", "agent_1"],
        "other_agent": ["other_agent_0"],
    }
    assert agent.has_grouped_agents() and list(agent.actors) == ["agent", "other_agent"]
    assert agent.get_group_id("agent_1") == "agent"


def test_ungrouped_agents_are_keyed_by_agent_id():
    agent = IPPO([BOX, BOX], [spaces.Discrete(2)] * 2, ["speaker_0", "listener_0"])
    assert not agent.has_grouped_agents() and list(agent.actors) == ["speaker_0", "listener_0"]


def test_agents_of_a_group_must_share_spaces():
    with pytest.raises(ValueError, match="agents of group 'bob' must share spaces: bob_0"):
        IPPO([BOX, spaces.Box(-1, 1, (3,))], [spaces.Discrete(2)] * 2, ["bob_0", "bob_1"])


@pytest.mark.parametrize(
    "obs, expected",
    [
        ([BOX, BOX, BOX], MultiAgentSetup.HOMOGENEOUS),
        ([BOX, BOX, IMAGE], MultiAgentSetup.MIXED),
        ([BOX, IMAGE, DICT], MultiAgentSetup.HETEROGENEOUS),
    ],
)
def test_get_setup_follows_observation_kinds(obs, expected):
    agent = IPPO(obs, [spaces.Discrete(2)] * 3, ["a_0", "b_0", "c_0"])
    assert agent.get_setup() is expected


def test_get_action_shapes_for_vectorised_and_single_observations():
    agent = _grouped()
    obs = {a: np.random.randn(5, 6).astype(np.float32) for a in agent.agent_ids}
    action, log_prob, entropy, value = agent.get_action(obs)
    for out in (action, log_prob, entropy, value):
        assert set(out) == set(agent.agent_ids) and all(v.shape == (5,) for v in out.values())
    single = agent.get_action({a: o[0] for a, o in obs.items()})[0]
    assert all(np.ndim(v) == 0 for v in single.values())


def test_action_mask_from_infos_forces_the_only_legal_action():
    agent = _grouped()
    obs = {a: np.random.randn(64, 6).astype(np.float32) for a in agent.agent_ids}
    infos = {a: {"action_mask": np.array([0, 1])} for a in agent.agent_ids}
    action = agent.get_action(obs, infos)[0]
    assert all((v == 1).all() for v in action.values())


def test_env_defined_actions_override_the_policy():
    agent = _grouped()
    obs = {a: np.random.randn(6).astype(np.float32) for a in agent.agent_ids}
    infos = {
        "agent_0": {"env_defined_actions": np.array([1])},
        "agent_1": {"env_defined_actions": None},
        "other_agent_0": {},
    }
    for _ in range(10):
        assert agent.get_action(obs, infos)[0]["agent_0"] == 1
    actions, masks = agent.extract_agent_masks(infos)
    assert masks["agent_0"].tolist() == [True] and masks["agent_1"].tolist() == [False]
    assert actions["agent_0"].tolist() == [1.0] and np.isnan(actions["agent_1"]).all()


def test_box_actions_are_clipped_only_in_eval_mode():
    agent = IPPO([BOX], [spaces.Box(0, 1, (2,))], ["a_0"], action_std_init=1.0)
    obs = {"a_0": np.zeros((256, 6), np.float32)}
    raw = agent.get_action(obs)[0]["a_0"]
    assert raw.min() < 0 or raw.max() > 1
    agent.set_training_mode(False)
    clipped = agent.get_action(obs)[0]["a_0"]
    assert clipped.min() >= 0 and clipped.max() <= 1


@pytest.mark.parametrize(
    "space, info, message",
    [
        (spaces.Discrete(3), {"action_mask": np.array([1, 0])}, "has length 2; its action space"),
        (spaces.Discrete(3), {"action_mask": np.array([0, 0, 0])}, "allows no action"),
        (spaces.Box(0, 1, (2,)), {"action_mask": np.array([1, 1])}, "masks are not supported"),
        (
            spaces.Box(0, 1, (2,)),
            {"env_defined_actions": np.array([0.5, 0.5, 0.5])},
            "env_defined_actions of agent 'a_0' has shape (3,)",
        ),
    ],
)
def test_bad_masks_and_env_defined_actions_are_named(space, info, message):
    agent = IPPO([BOX], [space], ["a_0"])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        agent.get_action({"a_0": np.zeros(6, np.float32)}, {"a_0": info})


def test_unknown_net_config_keys_and_unsupported_spaces_are_named():
    with pytest.raises(ValueError, match="hiden_size"):
        IPPO(
            [BOX], [spaces.Discrete(2)], ["a_0"], net_config={"encoder_config": {"hiden_size": [8]}}
        )
    with pytest.raises(TypeError, match="observation of agent 'a_0': unsupported space Text"):
        IPPO([spaces.Text(4)], [spaces.Discrete(2)], ["a_0"])
    nested = spaces.Dict({"a": spaces.Dict({"b": spaces.Discrete(2)})})
    with pytest.raises(TypeError, match="nested"):
        IPPO([nested], [spaces.Discrete(2)], ["a_0"])


def test_too_small_image_names_the_layer():
    config = {
        "encoder_config": {"channel_size": [4, 4], "kernel_size": [5, 5], "stride_size": [2, 2]}
    }
    with pytest.raises(ValueError, match="too small for CNN layer 2"):
        IPPO(
            [spaces.Box(0, 255, (8, 8, 1), np.uint8)],
            [spaces.Discrete(2)],
            ["a_0"],
            net_config=config,
        )


def test_hyperparameters_out_of_range_are_named():
    with pytest.raises(ValueError, match="lr=0 is invalid"):
        _grouped(lr=0)
    with pytest.raises(ValueError, match="torch_compiler='fast' is invalid"):
        _grouped(torch_compiler="fast")


def test_grouped_output_helpers_round_trip():
    agent = _grouped()
    out = {a: np.random.randn(4, 3) for a in agent.agent_ids}
    grouped = agent.assemble_grouped_outputs(out, 4)
    assert grouped["agent"].shape == (8, 3) and grouped["other_agent"].shape == (4, 3)
    back = agent.disassemble_grouped_outputs(grouped, 4, agent.grouped_agents)
    assert all(np.array_equal(back[a], out[a]) for a in out)


def test_sum_shared_rewards_treats_absent_agents_as_zero():
    agent = _grouped()
    summed = agent.sum_shared_rewards(
        {
            "agent_0": np.array([1.0, 2.0]),
            "agent_1": np.array([np.nan, 3.0]),
            "other_agent_0": np.array([5.0, 5.0]),
        }
    )
    assert summed["agent"].tolist() == [1.0, 5.0] and summed["other_agent"].tolist() == [5.0, 5.0]


def test_population_members_are_independent_with_their_own_indices():
    members = IPPO.population(3, [BOX], [spaces.Discrete(2)], agent_ids=["a_0"], lr=3e-4)
    assert [m.index for m in members] == [0, 1, 2] and all(m.lr == 3e-4 for m in members)
    p0, p1 = (next(m.actors.parameters()) for m in members[:2])
    assert not torch.equal(p0, p1)


def test_only_one_of_actor_and_critic_networks_warns_and_uses_defaults():
    source = _grouped()
    with pytest.warns(UserWarning, match="must be given together"):
        agent = _grouped(actor_networks=source.actors)
    assert not torch.equal(next(agent.actors.parameters()), next(source.actors.parameters()))


def test_custom_networks_are_copied_and_must_be_our_networks():
    source = _grouped()
    agent = _grouped(actor_networks=source.actors, critic_networks=source.critics)
    assert torch.equal(next(agent.actors.parameters()), next(source.actors.parameters()))
    assert next(agent.actors.parameters()) is not next(source.actors.parameters())
    with pytest.raises(TypeError, match="must be instances of StochasticActor"):
        _grouped(actor_networks=[torch.nn.Linear(2, 2)] * 2, critic_networks=source.critics)


@pytest.mark.parametrize("obs_kind", list(OBS_SPACES))
@pytest.mark.parametrize("act_kind", list(ACTION_SPACES))
def test_save_and_load_reproduce_every_agent_type_exactly(tmp_path, obs_kind, act_kind):
    obs_space, act_space = OBS_SPACES[obs_kind], ACTION_SPACES[act_kind]
    agent = IPPO([obs_space] * 2, [act_space] * 2, ["x_0", "x_1"])
    obs = {a: sample_batch(obs_space, 5, seed=1) for a in agent.agent_ids}
    path = tmp_path / "agent.pt"
    agent.save_checkpoint(str(path))
    loaded = IPPO.load(str(path))
    torch.manual_seed(3)
    before = agent.get_action(obs)
    torch.manual_seed(3)
    after = loaded.get_action(obs)
    for b, a in zip(before, after, strict=True):
        for agent_id in agent.agent_ids:
            np.testing.assert_array_equal(b[agent_id], a[agent_id])


def test_action_batch_size_chunks_the_forward_with_the_same_result():
    obs = {a: np.random.randn(10, 6).astype(np.float32) for a in ("agent_0", "agent_1")}
    infos = {a: {"action_mask": np.tile([[0, 1]], (10, 1))} for a in obs}
    whole = IPPO([BOX] * 2, [spaces.Discrete(2)] * 2, list(obs))
    chunked = whole.clone()
    chunked.action_batch_size = 3
    calls = []
    original = chunked.act_group
    chunked.act_group = lambda *a, **k: calls.append(a[1].shape[0]) or original(*a, **k)
    torch.manual_seed(0)
    expected = whole.get_action(obs, infos, deterministic=True)
    got = chunked.get_action(obs, infos, deterministic=True)
    assert calls == [3, 3, 3, 3, 3, 3, 2]  # 20 rows of the shared network, 3 at a time
    for e, g in zip(expected, got, strict=True):
        for a in obs:
            np.testing.assert_allclose(e[a], g[a], rtol=1e-5, atol=1e-6)
    assert all((g == 1).all() for g in got[0].values())  # the masks followed their rows
