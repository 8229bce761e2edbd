"""Action masks and env-defined actions read from infos, in the (env, agent) layout that
acting and learning share: one env's raw info, or the vector env's collated arrays."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from ippo_cli.masks import action_masks, env_defined_actions, mask_dim

MD = spaces.MultiDiscrete([2, 3, 2])


def test_mask_lengths_follow_the_action_space():
    assert mask_dim(spaces.Discrete(4)) == 4
    assert mask_dim(MD) == 7
    assert mask_dim(spaces.MultiBinary([2, 3])) == 6
    assert mask_dim(spaces.Box(-1, 1, (2,))) is None


def test_collated_masks_land_in_their_env_and_agent():
    # Three envs, agents a and b; only envs 0 and 2 gave b a mask.
    infos = {
        "a": {
            "action_mask": np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]]),
            "_action_mask": [1, 1, 1],
        },
        "b": {
            "action_mask": np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]]),
            "_action_mask": [1, 0, 1],
        },
    }
    masks = action_masks(infos, ["a", "b"], spaces.Discrete(3), 3)
    assert masks.dtype == bool and masks.shape == (3, 2, 3)
    assert masks[:, 0].tolist() == [[1, 0, 1], [0, 1, 1], [1, 1, 0]]
    # env 1's row for b was not given: every action allowed there
    assert masks[:, 1].tolist() == [[0, 0, 1], [1, 1, 1], [1, 0, 0]]


def test_one_envs_raw_mask_applies_to_every_env_and_absent_masks_allow_everything():
    infos = {"b": {"action_mask": np.array([0, 1, 0])}, "a": {}}
    masks = action_masks(infos, ["a", "b"], spaces.Discrete(3), 2)
    assert masks.tolist() == [[[1, 1, 1], [0, 1, 0]]] * 2
    assert action_masks({"a": {}, "b": {"x": 1}}, ["a", "b"], spaces.Discrete(3), 2) is None
    assert action_masks(None, ["a"], spaces.Discrete(3), 2) is None


def test_masks_flagged_for_no_env_are_no_masks():
    infos = {"a": {"action_mask": np.zeros((2, 3)), "_action_mask": np.zeros(2, bool)}}
    assert action_masks(infos, ["a"], spaces.Discrete(3), 2) is None


def test_a_multibinary_mask_of_the_space_s_shape_is_flattened():
    space = spaces.MultiBinary([2, 2])
    rows = np.array([[[1, 0], [0, 1]], [[1, 1], [0, 0]]])
    masks = action_masks({"a": {"action_mask": rows, "_action_mask": [1, 1]}}, ["a"], space, 2)
    assert masks[:, 0].tolist() == [[1, 0, 0, 1], [1, 1, 0, 0]]


def test_a_mask_of_the_wrong_length_is_refused_naming_both_lengths():
    with pytest.raises(ValueError, match=r"agent 'a' has length 2; .*Discrete\(3\) needs 3"):
        action_masks({"a": {"action_mask": np.ones(2)}}, ["a"], spaces.Discrete(3), 1)


def test_a_mask_for_a_box_space_is_refused_naming_the_agent():
    with pytest.raises(ValueError, match="agent 'a', but masks are not supported for its action"):
        action_masks({"a": {"action_mask": np.ones(2)}}, ["a"], spaces.Box(-1, 1, (2,)), 1)


def test_a_raw_mask_array_with_a_row_per_env_is_taken_per_env():
    # The Python API's caller may give (num_envs, dim) masks without the vector env's flags.
    rows = np.array([[1, 0, 1], [0, 1, 1]])
    masks = action_masks({"a": {"action_mask": rows}}, ["a"], spaces.Discrete(3), 2)
    assert masks[:, 0].tolist() == rows.astype(bool).tolist()


def test_masks_of_different_lengths_per_env_are_taken_row_by_row():
    rows = np.empty(2, dtype=object)
    rows[0], rows[1] = np.array([1, 0, 1]), None
    masks = action_masks(
        {"a": {"action_mask": rows, "_action_mask": [True, False]}}, ["a"], spaces.Discrete(3), 2
    )
    assert masks[:, 0].tolist() == [[1, 0, 1], [1, 1, 1]]


def test_a_multidiscrete_mask_must_allow_an_action_in_every_sub_space():
    ok = np.array([1, 0, 0, 0, 1, 0, 1])  # sub-spaces of 2, 3 and 2 actions
    assert action_masks({"a": {"action_mask": ok}}, ["a"], MD, 1) is not None
    for mask in ([0, 0, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 1, 1], [1, 0, 1, 0, 0, 0, 0]):
        with pytest.raises(ValueError, match="agent 'a' allows no action"):
            action_masks({"a": {"action_mask": np.array(mask)}}, ["a"], MD, 1)
    # The env with the empty sub-space is named.
    rows = np.array([ok, [1, 1, 0, 0, 0, 1, 1]])
    infos = {"a": {"action_mask": rows, "_action_mask": [True, True]}}
    with pytest.raises(ValueError, match=r"allows no action \(env 1\)"):
        action_masks(infos, ["a"], MD, 2)


def test_an_empty_mask_is_refused_only_for_an_agent_that_acts():
    rows = np.array([[1, 0, 0], [0, 0, 0]])
    infos = {"a": {"action_mask": rows, "_action_mask": [True, True]}}
    with pytest.raises(ValueError, match=r"allows no action \(env 1\)"):
        action_masks(infos, ["a"], spaces.Discrete(3), 2)
    active = np.array([[True], [False]])  # absent in env 1: its mask is never used
    masks = action_masks(infos, ["a"], spaces.Discrete(3), 2, active)
    assert masks[1, 0].tolist() == [False] * 3
    # MultiBinary: masking every bit forces each to 0, a legal action.
    assert not action_masks(
        {"a": {"action_mask": np.zeros(4)}}, ["a"], spaces.MultiBinary(4), 1
    ).any()


def test_env_defined_actions_are_imposed_where_given_and_not_nan():
    infos = {
        "a": {
            "env_defined_actions": np.array([[np.nan], [1.0], [2.0]]),
            "_env_defined_actions": [1, 1, 0],
        },
        "b": {"env_defined_actions": None},
    }
    actions, imposed = env_defined_actions(infos, ["a", "b"], spaces.Discrete(3), 3)
    # env 0's NaN row leaves the choice to the policy; env 2 gave no row
    assert imposed.tolist() == [[False, False], [True, False], [False, False]]
    assert actions.shape == (3, 2) and actions[1, 0] == 1.0
    assert (
        env_defined_actions({"a": {"env_defined_actions": None}}, ["a"], spaces.Discrete(3), 2)
        is None
    )
    nan_only = {"a": {"env_defined_actions": np.array([np.nan])}}
    assert env_defined_actions(nan_only, ["a"], spaces.Discrete(3), 2) is None


def test_env_defined_actions_given_per_env_leave_none_and_nan_rows_to_the_policy():
    # Envs disagreeing on shape (None in some) arrive as an object array.
    rows = np.empty(3, dtype=object)
    rows[0], rows[1], rows[2] = None, np.array([np.nan]), np.array([2])
    infos = {"a": {"env_defined_actions": rows, "_env_defined_actions": [1, 1, 1]}}
    actions, imposed = env_defined_actions(infos, ["a"], spaces.Discrete(3), 3)
    assert imposed[:, 0].tolist() == [False, False, True] and actions[2, 0] == 2.0
    # A plain int for a Discrete agent, from one env's raw info.
    actions, imposed = env_defined_actions(
        {"a": {"env_defined_actions": 1}}, ["a"], spaces.Discrete(3), 2
    )
    assert imposed.all() and actions[:, 0].tolist() == [1.0, 1.0]


def test_env_defined_actions_of_a_matrix_box_are_given_flat_or_shaped():
    box = spaces.Box(-1, 1, (2, 2))
    flat = np.array([0.1, 0.2, 0.3, 0.4])
    for given in (flat, flat.reshape(2, 2)):
        rows = np.stack([given, given])
        infos = {"a": {"env_defined_actions": rows, "_env_defined_actions": [0, 1]}}
        actions, imposed = env_defined_actions(infos, ["a"], box, 2)
        assert imposed[:, 0].tolist() == [False, True]
        assert actions.shape == (2, 1, 2, 2) and actions[1, 0].tolist() == [[0.1, 0.2], [0.3, 0.4]]


def test_box_env_defined_actions_keep_their_shape():
    box = spaces.Box(-1, 1, (2,))
    actions, imposed = env_defined_actions(
        {"b": {"env_defined_actions": np.array([0.25, -0.5])}}, ["a", "b"], box, 2
    )
    assert actions.shape == (2, 2, 2) and imposed.tolist() == [[False, True]] * 2
    assert actions[:, 1].tolist() == [[0.25, -0.5]] * 2
    with pytest.raises(ValueError, match=r"'b' has shape \(3,\); .* needs \(2,\)"):
        env_defined_actions({"b": {"env_defined_actions": np.zeros(3)}}, ["a", "b"], box, 1)
    with pytest.raises(ValueError, match=r"needs \(1,\)"):
        env_defined_actions(
            {"b": {"env_defined_actions": np.zeros(2)}}, ["b"], spaces.Discrete(3), 1
        )
