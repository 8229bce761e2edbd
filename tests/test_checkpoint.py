"""Checkpoints: exact round trips, atomic writes, and files that must be refused."""

import os
import pickle

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli import checkpoint
from ippo_cli.checkpoint import CheckpointError
from ippo_cli.ippo import IPPO


def _agent(**kwargs):
    obs = [spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (5,))]
    act = [spaces.Discrete(4), spaces.Discrete(4), spaces.Box(0, 1, (2,))]
    return IPPO(obs, act, ["bob_0", "bob_1", "fred_0"], **kwargs)


def _actions(agent, seed=0):
    rng = np.random.default_rng(1)
    obs = {
        a: rng.normal(size=(6, *agent.observation_spaces[a].shape)).astype(np.float32)
        for a in agent.agent_ids
    }
    torch.manual_seed(seed)
    return agent.get_action(obs)


def test_save_and_load_round_trip_gives_identical_actions(tmp_path):
    agent = _agent(lr=3e-4, batch_size=32, net_config={"encoder_config": {"hidden_size": [16]}})
    agent.steps[-1] = 123
    path = tmp_path / "agent.pt"
    agent.save_checkpoint(str(path))
    loaded = IPPO.load(str(path))
    assert loaded.lr == 3e-4 and loaded.batch_size == 32 and loaded.steps == [123]
    assert loaded.grouped_agents == {"bob": ["bob_0", "bob_1"], "fred": ["fred_0"]}
    for before, after in zip(_actions(agent), _actions(loaded), strict=True):
        for a in agent.agent_ids:
            np.testing.assert_array_equal(before[a], after[a])


def test_load_checkpoint_restores_weights_in_place(tmp_path):
    source, target = _agent(), _agent()
    source.save_checkpoint(str(tmp_path / "a.pt"))
    target.load_checkpoint(str(tmp_path / "a.pt"))
    for p, q in zip(source.actors.parameters(), target.actors.parameters(), strict=True):
        assert torch.equal(p, q)


def test_clone_is_independent_of_its_source():
    agent = _agent()
    clone = agent.clone(index=7)
    assert clone.index == 7
    with torch.no_grad():
        next(iter(agent.actors["bob"].parameters())).add_(1.0)
    p = next(iter(agent.actors["bob"].parameters()))
    q = next(iter(clone.actors["bob"].parameters()))
    assert not torch.equal(p, q)


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"value": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save(path, {"value": 2})
    monkeypatch.undo()
    assert checkpoint.load(path)["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\x00\xffrandom bytes that are not a checkpoint" * 10, "corrupt or truncated"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "full.pt"
    _agent().save_checkpoint(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        IPPO.load(str(path))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "agent": evil}, path)
    with pytest.raises(CheckpointError, match="not plain data"):
        checkpoint.load(path)
    assert not marker.exists()
    # a raw pickle (not a torch zip) is refused too
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    assert not marker.exists()


def test_the_loader_refuses_code_even_where_torch_defaults_to_unpickling_anything(
    tmp_path, monkeypatch
):
    # torch before 2.6 loads with weights_only=False unless told otherwise (pyproject allows
    # torch 2.1): with that default, only our own weights_only=True keeps code from running.
    unsafe_by_default = torch.load

    def load(*args, weights_only=False, **kwargs):
        return unsafe_by_default(*args, weights_only=weights_only, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "agent": evil}, path)
    with pytest.raises(CheckpointError, match="not plain data"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="not plain data"):
        IPPO.load(str(path))
    assert not marker.exists()
    torch.load(path)  # the default this test stands for does run the file's code
    assert marker.exists()


def test_missing_file_and_directory_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        checkpoint.load(tmp_path)


def test_a_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format_version": checkpoint.FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match="format version"):
        checkpoint.load(path)


def test_agent_data_with_missing_keys_is_refused_in_one_line(tmp_path):
    path = tmp_path / "agent.pt"
    _agent().save_checkpoint(str(path))
    data = checkpoint.load(path)
    del data["agent"]["hyperparameters"]
    checkpoint.save(path, data)
    with pytest.raises(CheckpointError, match="incomplete or malformed .*hyperparameters"):
        IPPO.load(str(path))


def test_checkpoints_without_per_network_configs_still_load(tmp_path):
    # written before networks carried their own configs: rebuilt from net_config
    path = tmp_path / "agent.pt"
    agent = _agent()
    agent.save_checkpoint(str(path))
    data = checkpoint.load(path)
    del data["agent"]["actor_configs"], data["agent"]["critic_configs"]
    checkpoint.save(path, data)
    for before, after in zip(_actions(agent), _actions(IPPO.load(str(path))), strict=True):
        for a in agent.agent_ids:
            np.testing.assert_array_equal(before[a], after[a])
