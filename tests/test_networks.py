"""Observation storage, encoders for every observation space, config and space errors."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli.networks import StochasticActor, ValueNetwork
from ippo_cli.networks.actor_critic import check_net_config
from ippo_cli.networks.encoders import (
    SIZED_CNN_TARGET,
    CNNEncoder,
    MLPEncoder,
    MultiInputEncoder,
    make_encoder,
    sized_cnn,
    sized_encoder_config,
)
from ippo_cli.networks.observations import ObservationLayout, observation_layout
from ippo_cli.spaces import (
    action_dim,
    action_is_integer,
    action_shape,
    space_from_dict,
    space_to_dict,
)
from tests.conftest import sample_batch

IMAGE_HWC = spaces.Box(0, 255, (10, 12, 3), np.uint8)
IMAGE_CHW = spaces.Box(0.0, 1.0, (2, 10, 12), np.float32)
SMALL_CNN = {"channel_size": [4], "kernel_size": 3, "stride_size": 2}


# ------------------------------------------------------------------ storage format
def test_vector_boxes_are_flattened_to_float32():
    layout = ObservationLayout(spaces.Box(-1, 1, (2, 3), np.float64))
    obs = np.arange(12.0).reshape(2, 2, 3)
    out = layout.to_storage(obs, 1)
    assert layout.shape == (6,) and out.dtype == np.float32
    np.testing.assert_array_equal(out, obs.reshape(2, 6))
    scalar = ObservationLayout(spaces.Box(-1, 1, ()))
    assert scalar.shape == (1,)
    np.testing.assert_array_equal(scalar.to_storage(np.array([0.5, -0.5]), 1), [[0.5], [-0.5]])


def test_discrete_is_one_hot_from_its_start():
    layout = ObservationLayout(spaces.Discrete(4, start=2))
    out = layout.to_storage(np.array([2, 5, 3], dtype=np.int64), 1)
    np.testing.assert_array_equal(out, [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]])
    assert out.dtype == np.float32
    # a single (unbatched) observation, and an out-of-range value (an absent agent's zero)
    np.testing.assert_array_equal(layout.to_storage(np.int64(4), 0), [0, 0, 1, 0])
    np.testing.assert_array_equal(layout.to_storage(np.array([0]), 1), [[0, 0, 0, 0]])


def test_multidiscrete_is_concatenated_one_hots():
    layout = ObservationLayout(spaces.MultiDiscrete([2, 3], start=[0, 1]))
    out = layout.to_storage(np.array([[1, 3], [0, 1]]), 1)
    np.testing.assert_array_equal(out, [[0, 1, 0, 0, 1], [1, 0, 1, 0, 0]])
    # two batch dims (time, env)
    two = layout.to_storage(np.array([[[1, 3], [0, 1]]] * 3), 2)
    assert two.shape == (3, 2, 5)
    np.testing.assert_array_equal(two[2], out)


def test_multibinary_is_floats():
    layout = ObservationLayout(spaces.MultiBinary((2, 2)))
    out = layout.to_storage(np.array([[[1, 0], [0, 1]]], dtype=np.int8), 1)
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.0, 1.0]])
    assert out.dtype == np.float32


def test_channels_last_images_are_transposed_and_keep_their_dtype():
    layout = ObservationLayout(IMAGE_HWC)
    assert layout.is_image and layout.shape == (3, 10, 12) and layout.dtype == np.uint8
    obs = sample_batch(IMAGE_HWC, 2)
    out = layout.to_storage(obs, 1)
    assert out.shape == (2, 3, 10, 12) and out.dtype == np.uint8 and out.flags.c_contiguous
    for b, c, h, w in [(0, 0, 0, 0), (1, 2, 9, 11), (0, 1, 4, 7), (1, 0, 3, 2)]:
        assert out[b, c, h, w] == obs[b, h, w, c]
    np.testing.assert_array_equal(out, obs.transpose(0, 3, 1, 2))


def test_channels_first_images_are_not_transposed():
    layout = ObservationLayout(IMAGE_CHW)
    assert layout.shape == (2, 10, 12) and layout.dtype == np.float32
    obs = sample_batch(IMAGE_CHW, 3)
    np.testing.assert_array_equal(layout.to_storage(obs, 1), obs)


def test_dict_parts_follow_the_space_order_with_images_flattened_chw():
    space = spaces.Dict(
        OrderedDict(
            [
                ("z", spaces.Discrete(3)),
                ("img", spaces.Box(0, 255, (4, 5, 2), np.uint8)),
                ("a", spaces.Box(-1, 1, (2,))),
            ]
        )
    )
    layout = ObservationLayout(space)
    assert [p.key for p in layout.parts] == ["z", "img", "a"]
    assert [(p.kind, p.offset, p.length) for p in layout.parts] == [
        ("discrete", 0, 3),
        ("image", 3, 40),
        ("vector", 43, 2),
    ]
    assert layout.parts[1].image_shape == (2, 4, 5) and layout.shape == (45,)
    obs = {
        "a": np.array([[0.25, -0.5]]),
        "img": np.arange(40, dtype=np.uint8).reshape(1, 4, 5, 2),
        "z": np.array([2]),
    }
    out = layout.to_storage(obs, 1)
    assert out.shape == (1, 45) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, :3], [0, 0, 1])
    np.testing.assert_array_equal(out[0, 3:43], obs["img"][0].transpose(2, 0, 1).reshape(-1))
    np.testing.assert_array_equal(out[0, 43:], [0.25, -0.5])


def test_tuple_parts_are_concatenated_in_order():
    space = spaces.Tuple([spaces.MultiBinary(2), spaces.Box(-1, 1, (2, 2))])
    layout = ObservationLayout(space)
    obs = [np.array([[1, 0], [0, 1]]), np.arange(8.0).reshape(2, 2, 2)]
    out = layout.to_storage(obs, 1)
    np.testing.assert_array_equal(out, [[1, 0, 0, 1, 2, 3], [0, 1, 4, 5, 6, 7]])
    assert layout.batch_ndim_of(obs) == 1 and layout.batch_ndim_of(tuple(o[0] for o in obs)) == 0


def test_observation_of_the_wrong_shape_is_rejected():
    layout = ObservationLayout(spaces.Box(-1, 1, (3,)))
    with pytest.raises(ValueError, match="does not match its space"):
        layout.to_storage(np.zeros((2, 4)), 1)


# ------------------------------------------------------------------ encoders
ENCODED_SPACES = {
    "vector": spaces.Box(-1, 1, (5,)),
    "box2d": spaces.Box(-1, 1, (3, 4)),
    "image_hwc": IMAGE_HWC,
    "image_chw": IMAGE_CHW,
    "discrete": spaces.Discrete(4),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "multibinary": spaces.MultiBinary(3),
    "dict": spaces.Dict(
        {"img": IMAGE_HWC, "pos": spaces.Box(-1, 1, (2,)), "id": spaces.Discrete(3)}
    ),
    "tuple": spaces.Tuple([spaces.MultiDiscrete([2, 2]), spaces.Box(0, 1, (2,))]),
}


@pytest.mark.parametrize("name", list(ENCODED_SPACES))
def test_encoders_map_stored_observations_to_the_latent(name):
    space = ENCODED_SPACES[name]
    layout = ObservationLayout(space)
    config = {"cnn_config": SMALL_CNN} if layout.is_multi_input else {}
    if layout.is_image:
        config = SMALL_CNN
    encoder = make_encoder(space, config, latent_dim=8)
    x = torch.as_tensor(layout.to_storage(sample_batch(space, 3), 1))
    out = encoder(x)
    assert out.shape == (3, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_encoder_kind_follows_the_space():
    assert isinstance(make_encoder(ENCODED_SPACES["multibinary"], {}, 8), MLPEncoder)
    cnn = make_encoder(IMAGE_HWC, {}, 8)
    assert isinstance(cnn, CNNEncoder)
    convs = [m for m in cnn.convs if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32] and convs[0].in_channels == 3
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)
    multi = make_encoder(ENCODED_SPACES["dict"], {}, 8)
    assert isinstance(multi, MultiInputEncoder)
    inner = [m for m in multi.cnns[0].convs if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in inner] == [16, 16]
    # 16 CNN features + 2 raw vector values + 3 one-hot values
    assert multi.final[0].in_features == 16 + 2 + 3 and multi.vector_mlp is None


def test_vector_space_mlp_routes_the_non_image_parts_through_an_mlp():
    config = {"vector_space_mlp": True, "latent_dim": 8, "mlp_config": {"hidden_size": [5]}}
    multi = make_encoder(ENCODED_SPACES["dict"], config, 4)
    assert multi.vector_mlp[0].in_features == 5  # 2 + 3 one-hot
    assert multi.final[0].in_features == 8 + 8


def test_cnn_per_layer_kernel_and_stride_lists():
    config = {"channel_size": [4, 6], "kernel_size": [5, 3], "stride_size": [2, 1]}
    convs = [m for m in make_encoder(IMAGE_HWC, config, 8).convs if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((5, 5), (2, 2)), ((3, 3), (1, 1))]
    with pytest.raises(ValueError, match="kernel_size"):
        make_encoder(IMAGE_HWC, {"channel_size": [4, 6], "kernel_size": [3]}, 8)


def _scaled_inputs(encoder_scale, run):
    seen = []
    handle = encoder_scale.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    run()
    handle.remove()
    return seen[0]


def _feature_map(encoder: CNNEncoder) -> tuple[int, ...]:
    """Shape (C, H, W) of the last conv layer's output for one image."""
    x = torch.zeros(1, *encoder.image_shape)
    return tuple(encoder.convs(x).shape[1:])


@pytest.mark.parametrize("hw", [(210, 160), (84, 84), (457, 120), (32, 32)])
def test_a_cnn_sized_to_its_image_ends_in_a_small_feature_map(hw):
    space = spaces.Box(0, 255, (*hw, 3), np.uint8)
    layout = ObservationLayout(space)
    cfg = sized_encoder_config(layout, {})
    encoder = make_encoder(space, cfg, 64)
    channels, h, w = _feature_map(encoder)
    assert channels == 32 and min(h, w) <= SIZED_CNN_TARGET + 1
    # The reference's default (kernel 3, stride 1) keeps nearly the whole image instead.
    default = _feature_map(make_encoder(space, {}, 64))
    assert default == (32, hw[0] - 4, hw[1] - 4)
    assert h * w * 8 < default[1] * default[2]


def test_sizing_keeps_small_images_and_given_kernels_and_sizes_multi_input_cnns():
    small = ObservationLayout(spaces.Box(0, 255, (8, 8, 3), np.uint8))
    assert sized_encoder_config(small, {}) == {"kernel_size": [3, 3], "stride_size": [1, 1]}
    three = sized_encoder_config(small, {"channel_size": [8, 8, 8]})
    assert len(three["kernel_size"]) == 3
    given = {"kernel_size": [8, 4], "stride_size": [4, 2]}
    assert sized_encoder_config(ObservationLayout(IMAGE_HWC), given) == given
    assert sized_encoder_config(ObservationLayout(spaces.Box(-1, 1, (5,))), {}) == {}
    both = spaces.Dict(
        {
            "big": spaces.Box(0, 255, (96, 96, 3), np.uint8),
            "small": spaces.Box(0, 255, (32, 32, 3), np.uint8),
            "vec": spaces.Box(-1, 1, (2,)),
        }
    )
    cfg = sized_encoder_config(ObservationLayout(both), {})
    assert cfg["cnn_config"] == sized_cnn((3, 32, 32), 2)
    encoder = make_encoder(both, cfg, 64)  # every image part fits the sized layers
    assert encoder(torch.zeros(2, ObservationLayout(both).flat_dim)).shape == (2, 64)


def test_images_are_scaled_by_their_bounds():
    obs = torch.as_tensor(ObservationLayout(IMAGE_HWC).to_storage(sample_batch(IMAGE_HWC, 4), 1))
    torch.manual_seed(0)
    on = make_encoder(IMAGE_HWC, SMALL_CNN, 8, normalize_images=True)
    torch.manual_seed(0)
    off = make_encoder(IMAGE_HWC, SMALL_CNN, 8, normalize_images=False)
    scaled = _scaled_inputs(on.scale, lambda: on(obs))
    assert scaled.min() >= 0 and scaled.max() <= 1
    torch.testing.assert_close(scaled, obs.float() / 255)
    raw = _scaled_inputs(off.scale, lambda: off(obs))
    torch.testing.assert_close(raw, obs.float())
    assert not torch.allclose(on(obs), off(obs))


def test_image_bounds_that_are_unit_or_infinite_are_not_rescaled():
    assert not make_encoder(IMAGE_CHW, SMALL_CNN, 8).scale.active  # already [0, 1]
    unbounded = spaces.Box(-np.inf, np.inf, (2, 10, 12))
    assert not make_encoder(unbounded, SMALL_CNN, 8).scale.active
    shifted = spaces.Box(-1.0, 3.0, (2, 10, 12))
    scale = make_encoder(shifted, SMALL_CNN, 8).scale
    x = torch.tensor([-1.0, 1.0, 3.0]).reshape(3, 1, 1, 1).expand(3, 2, 10, 12)
    torch.testing.assert_close(scale(x)[:, 0, 0, 0], torch.tensor([0, 0.5, 1]))


def test_image_subspaces_of_a_dict_are_scaled_too():
    space = ENCODED_SPACES["dict"]
    layout = ObservationLayout(space)
    encoder = make_encoder(space, {"cnn_config": SMALL_CNN}, 8)
    x = torch.as_tensor(layout.to_storage(sample_batch(space, 2), 1))
    scaled = _scaled_inputs(encoder.cnns[0].scale, lambda: encoder(x))
    assert scaled.shape == (2, 3, 10, 12) and scaled.min() >= 0 and scaled.max() <= 1
    assert scaled.max() > 0.5  # random uint8 pixels, really rescaled rather than zeroed


def test_too_small_image_names_the_layer_and_the_size():
    space = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    config = {"channel_size": [8, 8], "kernel_size": [5, 3], "stride_size": 2}
    with pytest.raises(ValueError) as err:
        make_encoder(space, config, 8)
    assert str(err.value).startswith(
        "image of 8x8 is too small for CNN layer 2 (kernel 3, stride 2): output would be 0x0"
    )
    with pytest.raises(ValueError, match="'img'"):
        make_encoder(spaces.Dict({"img": space}), {"cnn_config": config}, 8)


# ------------------------------------------------------------------ net_config errors
@pytest.mark.parametrize(
    "space, net_config, bad",
    [
        (spaces.Box(-1, 1, (3,)), {"latent_size": 3}, "latent_size"),
        (spaces.Box(-1, 1, (3,)), {"encoder_config": {"channel_size": [8]}}, "channel_size"),
        (IMAGE_HWC, {"encoder_config": {"hidden_size": [8]}}, "hidden_size"),
        (spaces.Box(-1, 1, (3,)), {"head_config": {"kernel_size": 3}}, "kernel_size"),
        (
            ENCODED_SPACES["dict"],
            {"encoder_config": {"cnn_config": {"chanel_size": [8]}}},
            "chanel",
        ),
        (ENCODED_SPACES["dict"], {"encoder_config": {"mlp_config": {"hidden": [8]}}}, "hidden"),
        (ENCODED_SPACES["dict"], {"encoder_config": {"hidden_size": [8]}}, "hidden_size"),
    ],
)
def test_unknown_net_config_keys_are_named_with_the_known_ones(space, net_config, bad):
    with pytest.raises(ValueError, match=rf"unknown net_config.*'{bad}.*known: \["):
        check_net_config(net_config, space)
    with pytest.raises(ValueError, match=bad):
        StochasticActor(space, spaces.Discrete(2), net_config)


def test_reference_net_configs_are_accepted():
    image = {"encoder_config": {"channel_size": [8], "kernel_size": [3], "stride_size": [1]}}
    ValueNetwork(IMAGE_HWC, {**image, "latent_dim": 16, "head_config": {"hidden_size": [8]}})
    multi = {"encoder_config": {"latent_dim": 8, "vector_space_mlp": True, "cnn_config": SMALL_CNN}}
    ValueNetwork(ENCODED_SPACES["dict"], multi)


# ------------------------------------------------------------------ unsupported spaces
@pytest.mark.parametrize(
    "space, name",
    [
        (spaces.Graph(spaces.Box(0, 1, (3,)), spaces.Discrete(3)), "Graph"),
        (spaces.Sequence(spaces.Discrete(2)), "Sequence"),
        (spaces.Text(5), "Text"),
        (spaces.Dict({"a": spaces.Dict({"b": spaces.Discrete(2)})}), "nested Dict/Tuple"),
        (spaces.Tuple([spaces.Discrete(2), spaces.Tuple([spaces.Discrete(2)])]), "nested"),
        (spaces.MultiDiscrete([[2, 3], [4, 5]]), "multi-dimensional MultiDiscrete"),
    ],
)
def test_unsupported_observation_spaces_raise_a_one_line_type_error(space, name):
    with pytest.raises(TypeError) as err:
        ObservationLayout(space)
    message = str(err.value)
    assert "\n" not in message and name in message
    assert "supported observation spaces: Box" in message
    with pytest.raises(TypeError):
        ValueNetwork(space)


def test_unsupported_action_space_raises_a_type_error():
    with pytest.raises(TypeError, match="supported action spaces"):
        StochasticActor(spaces.Box(-1, 1, (2,)), spaces.Text(3))


# ------------------------------------------------------------------ space helpers
@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-np.inf, np.inf, (3,)),
        spaces.Box(np.array([0, -np.inf], np.float32), np.array([np.inf, 1], np.float32)),
        IMAGE_HWC,
        spaces.Discrete(4, start=-1),
        spaces.MultiDiscrete([2, 3], start=[1, 0]),
        spaces.MultiBinary(3),
        spaces.MultiBinary((2, 3)),
        ENCODED_SPACES["dict"],
        ENCODED_SPACES["tuple"],
    ],
)
def test_spaces_round_trip_through_plain_data(space):
    data = space_to_dict(space)
    assert space_from_dict(data) == space
    if space is IMAGE_HWC:
        assert data["low"] == 0 and data["high"] == 255  # uniform bounds stay small


@pytest.mark.parametrize(
    "space, dim, shape, integer",
    [
        (spaces.Discrete(4), 4, (), True),
        (spaces.MultiDiscrete([2, 3]), 5, (2,), True),
        (spaces.MultiBinary(3), 3, (3,), False),
        (spaces.Box(-1, 1, (2,)), 2, (2,), False),
    ],
)
def test_action_helpers(space, dim, shape, integer):
    assert action_dim(space) == dim
    assert action_shape(space) == shape
    assert action_is_integer(space) is integer


def test_env_actions_add_the_start_and_take_the_space_shape():
    obs = spaces.Box(-1, 1, (2,))
    actor = StochasticActor(obs, spaces.Discrete(3, start=1))
    assert actor.env_action(torch.tensor([0, 2])).tolist() == [1, 3]
    actor = StochasticActor(obs, spaces.MultiDiscrete([2, 3], start=[5, 0]))
    assert actor.env_action(torch.tensor([[1, 2]])).tolist() == [[6, 2]]
    actor = StochasticActor(obs, spaces.MultiBinary((2, 2)))
    action, _, _ = actor(torch.zeros(3, 2))
    assert action.shape == (3, 4) and actor.env_action(action).shape == (3, 2, 2)


def test_observation_layout_helper_and_torch_dtype():
    assert observation_layout(IMAGE_HWC).torch_dtype == torch.uint8
    assert observation_layout(ENCODED_SPACES["dict"]).torch_dtype == torch.float32
