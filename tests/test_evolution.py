"""hpo=evolution: mutations, selection, the population trainer and its CLI."""

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli import checkpoint
from ippo_cli.cli import main
from ippo_cli.evolution import (
    HyperparameterConfig,
    Mutations,
    RLParameter,
    TournamentSelection,
    architecture,
)
from ippo_cli.evolution.population import PopulationTrainer
from ippo_cli.ippo import IPPO
from tests.conftest import FAST, probe_overrides, run_cli, train_config

VECTOR = spaces.Box(-1.0, 1.0, (6,), np.float32)
IMAGE = spaces.Box(0, 255, (3, 12, 12), np.uint8)
# Only lr evolves, in big steps, from a learning rate too small to learn the probe.
LR_ONLY = [
    "~hpo.hp_config.batch_size",
    "~hpo.hp_config.learn_step",
    "~hpo.hp_config.ent_coef",
    "hpo.hp_config.lr.max=1e-2",
    "hpo.hp_config.lr.grow_factor=10",
    "hpo.hp_config.lr.shrink_factor=0.5",
    "hpo.no_mut=0",
    "hpo.arch_mut=0",
    "hpo.params_mut=0",
    "hpo.rl_hp_mut=1",
]
BOX_PROBE = (
    probe_overrides("ActionRewardEnv", action_space="box")
    + FAST
    + [
        "hpo=evolution",
        "hpo.eval_loop=2",
        "algorithm.action_std_init=-1.0",
        "algorithm.lr=1e-5",
        "hpo.evo_steps=1024",
    ]
)


def _evolve(tmp_path, overrides):
    trainer = PopulationTrainer(train_config(overrides), tmp_path)
    return trainer, trainer.run()


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_population_evolves_a_learning_rate_that_learns_where_its_start_cannot(tmp_path):
    # Reward 1 - |a - 0.5|: the deterministic action starts near 0 (fitness about 0.5).
    _, alone = _evolve(
        tmp_path / "alone",
        BOX_PROBE
        + LR_ONLY
        + ["hpo.population_size=1", "hpo.tournament_size=1"]
        + ["algorithm.total_steps=4096"],
    )
    trainer, evolved = _evolve(
        tmp_path / "population",
        BOX_PROBE + LR_ONLY + ["hpo.population_size=4", "algorithm.total_steps=16384"],
    )
    assert alone["final_eval"] < 0.7  # lr 1e-5 for the same steps per member: not learned
    assert evolved["final_eval"] > 0.9
    assert trainer.elite.lr > 1e-5 and trainer.elite.lr <= 1e-2
    assert any(
        r["mutation"] == "rl_hp.lr" for r in _rows(tmp_path / "population") if "fitness" in r
    )
    # With elitism, each evolution's best member is in the next one, unmutated and unchanged.
    members = [r for r in _rows(tmp_path / "population") if "fitness" in r]
    for g in range(1, max(r["generation"] for r in members)):
        best = max((r for r in members if r["generation"] == g), key=lambda r: r["fitness"])
        (kept,) = [r for r in members if r["generation"] == g + 1 and r["member"] == best["member"]]
        assert kept["mutation"] == "None" and kept["hp/lr"] == best["hp/lr"]
        assert kept["lineage"] == best["lineage"]


def test_a_population_trains_the_same_as_one_stack_and_member_by_member(tmp_path):
    # Members' learning rates differ after the first mutation: each keeps its own in
    # the stack; selection, mutation and every member's fitness come out the same.
    overrides = BOX_PROBE + LR_ONLY + ["hpo.population_size=3", "algorithm.total_steps=6144"]
    runs = {}
    for stacked in (True, False):
        run_dir = tmp_path / str(stacked)
        _evolve(run_dir, overrides + [f"hpo.stacked={str(stacked).lower()}"])
        runs[stacked] = [r for r in _rows(run_dir) if "fitness" in r]
    assert len(runs[True]) == len(runs[False]) == 6  # 2 generations of 3
    assert len({r["hp/lr"] for r in runs[True]}) > 1
    for a, b in zip(runs[True], runs[False], strict=True):
        assert (a["member"], a["lineage"], a["mutation"]) == (
            b["member"],
            b["lineage"],
            b["mutation"],
        )
        assert a["hp/lr"] == b["hp/lr"]
        assert a["fitness"] == pytest.approx(b["fitness"], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("stacked", [True, False])
def test_a_population_starved_of_cpu_learns_on_one_thread(tmp_path, monkeypatch, stacked):
    # As a lone run does: the population's updates are judged, and once starved every
    # training slot learns on one thread.
    from ippo_cli import run_stack as run_stack_module
    from ippo_cli import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "learn_threads_auto", lambda *args: 2)
    monkeypatch.setattr(trainer_module, "STARVED_MIN_SECONDS", 0.0)
    monkeypatch.setattr(trainer_module, "STARVED_CPU_SHARE", 1e9)  # every update starved
    seen = []
    update = run_stack_module.update_agents  # evolution updates through update_together
    monkeypatch.setattr(
        run_stack_module,
        "update_agents",
        lambda *args: seen.append(torch.get_num_threads()) or update(*args),
    )
    _evolve(
        tmp_path,
        BOX_PROBE
        + ["hpo.population_size=2", "algorithm.total_steps=2048", "hpo.evo_steps=512"]
        + [f"hpo.stacked={str(stacked).lower()}"],
    )
    assert seen[:3] == [2, 2, 1]  # the first update warms up, unjudged; the second starves
    assert set(seen[2:]) == {1}  # every member's turns, every later generation


def test_hpo_parallel_is_gone_with_a_one_line_warning(tmp_path, capsys):
    _evolve(
        tmp_path,
        BOX_PROBE + ["hpo.population_size=2", "hpo.parallel=true", "algorithm.total_steps=2048"],
    )
    out = capsys.readouterr().out
    assert "hpo.parallel is gone and ignored" in out


def _agent(obs_space, net_config=None):
    return IPPO([obs_space], [spaces.Discrete(3)], agent_ids=["a_0"], net_config=net_config)


def _outputs(agent, x):
    return [
        net.head(net.encoder(x)).detach() for net in (agent.actors["a_0"], agent.critics["a_0"])
    ]


def _inputs(agent, space, n=32):
    space.seed(0)
    layout = agent.obs_layouts["a_0"]
    return torch.as_tensor(np.stack([layout.to_storage(space.sample(), 0) for _ in range(n)]))


def _perturb_norms(agent):
    """Trained-looking LayerNorm gains and biases, so that they matter."""
    with torch.no_grad():
        for m in (*agent.actors.modules(), *agent.critics.modules()):
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


PRESERVING = [
    (VECTOR, None, ["head.add_node", "encoder.add_node", "add_latent_node"]),
    (
        VECTOR,
        {"encoder_config": {"layer_norm": False}, "head_config": {"layer_norm": False}},
        ["head.add_node", "encoder.add_node", "head.add_layer", "encoder.add_layer"],
    ),
    (IMAGE, {"head_config": {"layer_norm": False}}, ["add_channel", "add_latent_node"]),
]


@pytest.mark.parametrize(("space", "net_config", "methods"), PRESERVING)
def test_growing_mutations_preserve_the_function(space, net_config, methods):
    agent = _agent(space, net_config)
    _perturb_norms(agent)
    x = _inputs(agent, space)
    before = _outputs(agent, x)
    sizes = []
    for i, method in enumerate(methods):
        for net in (agent.actors["a_0"], agent.critics["a_0"]):
            assert architecture.mutate(net, method, 0.5, 0.9, torch.Generator().manual_seed(i))
        sizes.append(architecture.describe(agent.actors["a_0"]))
        # Exact up to float error; with gains-free LayerNorm (the latent) up to 1e-3 noise.
        tol = 1e-3 if method == "add_latent_node" and space is VECTOR else 1e-5
        for b, a in zip(before, _outputs(agent, x), strict=True):
            assert torch.allclose(a, b, atol=tol), method
    assert len(set(sizes)) == len(methods)  # every mutation changed the architecture
    agent.reinit_optimizers()  # as Mutations does after any mutation
    clone = agent.clone()  # the mutated shapes are in init_config: clones rebuild them
    for a, b in zip(_outputs(clone, x), _outputs(agent, x), strict=True):
        assert torch.equal(a, b)


def test_add_layer_with_layer_norm_changes_outputs_but_keeps_every_weight():
    # Documented: a LayerNorm in the new layer normalises its input, so the function changes.
    agent = _agent(VECTOR)
    actor = agent.actors["a_0"]
    old = {k: v.clone() for k, v in actor.state_dict().items()}
    assert architecture.mutate(actor, "head.add_layer", 0.0, 0.0, torch.Generator())
    new = actor.state_dict()
    moved = {"head.3.weight": "head.6.weight", "head.3.bias": "head.6.bias"}  # the output layer
    for key, value in old.items():
        assert torch.equal(new[moved.get(key, key)], value), key
    assert architecture.describe(actor).endswith("head [64, 64]")


def test_removing_nodes_keeps_the_surviving_units_weights():
    agent = _agent(VECTOR)
    actor = agent.actors["a_0"]
    head_in, out = actor.head[0].weight.clone(), actor.head[3].weight.clone()
    assert architecture.mutate(actor, "head.remove_node", 0.0, 0.0, torch.Generator())
    kept = out.norm(dim=0).argsort(descending=True)[:48].sort().values  # 16 weakest removed
    assert torch.equal(actor.head[0].weight, head_in[kept])
    assert torch.equal(actor.head[3].weight, out[:, kept])


def test_the_elite_is_never_mutated_with_elitism():
    hp = HyperparameterConfig(
        lr=RLParameter(min=1e-5, max=1e-2), batch_size=RLParameter(min=8, max=512, dtype=int)
    )
    population = IPPO.population(4, [VECTOR], [spaces.Discrete(3)], agent_ids=["a_0"], hp_config=hp)
    for agent, fitness in zip(population, [1.0, 5.0, 2.0, 3.0], strict=True):
        agent.fitness.append(fitness)
    tournament = TournamentSelection(2, True, 4, rand_seed=0)
    mutations = Mutations(0, 1, 0.5, 1, 1, 1, mutate_elite=False, rand_seed=0)
    for _ in range(5):
        old_indices = {a.index for a in population}
        elite, selected = tournament.select(population)
        before = {k: v.clone() for k, v in elite.actors["a_0"].state_dict().items()}
        population = mutations.mutation(selected)
        kept = population[0]
        assert kept.index == elite.index and kept.mut == "None"
        assert (kept.lr, kept.batch_size) == (elite.lr, elite.batch_size)
        state = kept.actors["a_0"].state_dict()
        assert state.keys() == before.keys()
        assert all(torch.equal(state[k], before[k]) for k in before)
        assert all(a.index not in old_indices for a in population[1:])  # fresh indices
        assert len({a.index for a in population}) == 4
        for agent in population:
            assert agent.hp_config.names() == ["lr", "batch_size"]  # clones keep hp_config
            agent.fitness.append(float(agent.index))  # later members win the next round


def test_rl_hp_mutation_rebuilds_both_optimizers_with_the_new_lr():
    agent = IPPO.population(
        1,
        [VECTOR],
        [spaces.Discrete(3)],
        agent_ids=["a_0"],
        hp_config=HyperparameterConfig(lr=RLParameter(1e-5, 1e-2)),
    )[0]
    Mutations(0, 0, 0, 0, 0, 1, rand_seed=1).mutation([agent])
    assert agent.mut == "rl_hp.lr" and agent.lr in (pytest.approx(1.2e-4), pytest.approx(8e-5))
    for opt in (*agent.actor_optimizers.values(), *agent.critic_optimizers.values()):
        assert opt.param_groups[0]["lr"] == agent.lr


TINY = [
    "hpo=evolution",
    "hpo.population_size=2",
    "hpo.evo_steps=256",
    "hpo.eval_loop=1",
    "hpo.arch_mut=0.4",
    "hpo.params_mut=0.2",
    "hpo.rl_hp_mut=0.4",
    "hpo.no_mut=0",
]
PROBE = (
    probe_overrides("ActionRewardEnv", action_space="discrete")
    + FAST[:-2]
    + ["logger=none", "progress=false", "hardware.vec_env=sync"]
    # Bitwise resume comparison: mutated batch sizes must not cross the automatic
    # learning-thread count's 2-to-1 fallback in one run and not the other.
    + ["hardware.learn_threads=1"]
)


@pytest.fixture(scope="module")
def evolved_run(tmp_path_factory):
    """4 evolutions of a population of 2 through the CLI, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("evolution")
    run = cwd / "full"
    result = run_cli(
        ["train", *PROBE, *TINY, "algorithm.total_steps=2048", f"hydra.run.dir={run}"], cwd
    )
    assert result.returncode == 0, result.stderr
    return cwd, run, result


def _members(run_dir):
    return [
        {k: v for k, v in r.items() if k != "wall_time"} for r in _rows(run_dir) if "fitness" in r
    ]


def test_the_cli_writes_population_metrics_checkpoints_and_picture(evolved_run):
    _, run, result = evolved_run
    assert "generation 4" in result.stdout and "best member" in result.stdout
    assert (run / "population.png").stat().st_size > 0
    members = _members(run)
    assert [r["generation"] for r in members] == [1, 1, 2, 2, 3, 3, 4, 4]
    for key in (
        "member",
        "lineage",
        "mutation",
        "fitness",
        "hp/lr",
        "hp/batch_size",
        "hp/learn_step",
        "hp/ent_coef",
        "architecture",
    ):
        assert key in members[0]
    evolutions = [r for r in _rows(run) if "eval/return" in r]
    assert [r["eval/return"] for r in evolutions] == [
        max(r["fitness"] for r in members if r["generation"] == g) for g in (1, 2, 3, 4)
    ]
    data = checkpoint.load(run / "checkpoints" / "last.pt")
    assert data["kind"] == "population" and len(data["members"]) == 2
    assert data["evolution"]["generation"] == 4


def test_a_resumed_population_ends_where_an_uninterrupted_one_does(evolved_run):
    cwd, full, _ = evolved_run
    half = cwd / "half"
    result = run_cli(
        ["train", *PROBE, *TINY, "algorithm.total_steps=1024", f"hydra.run.dir={half}"], cwd
    )
    assert result.returncode == 0, result.stderr
    result = run_cli(["train", f"resume={half}", "algorithm.total_steps=2048"], cwd)
    assert result.returncode == 0, result.stderr
    assert _members(half) == _members(full)
    a, b = (checkpoint.load(r / "checkpoints" / "last.pt")["members"] for r in (full, half))
    for x, y in zip(a, b, strict=True):
        assert x["actor_configs"] == y["actor_configs"]
        assert all(
            torch.equal(x["actors"]["agent_0"][k], v) for k, v in y["actors"]["agent_0"].items()
        )


def test_ippo_eval_evaluates_the_elite(evolved_run):
    cwd, run, _ = evolved_run
    elite = run / "checkpoints" / "elite.pt"
    result = run_cli(["eval", f"ckpt={elite}", "episodes=3"], cwd)
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "checkpoints" / "eval.json").read_text())
    assert report["episodes"] == 3
    last = [r for r in _members(run) if r["generation"] == 4]
    best = max(last, key=lambda r: r["fitness"])  # the last selection's elite
    assert checkpoint.load(elite)["agent"]["index"] == best["member"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("hpo.hp_config.lr.min=0.1", "hpo.hp_config.lr.min=0.1"),
        ("hpo.rl_hp_mut=1.5", "hpo.rl_hp_mut=1.5"),
        ("hpo.population_size=0", "hpo.population_size=0"),
        ("hpo.tournament_size=5", "hpo.tournament_size=5"),
        (
            "+hpo.hp_config.gamma.min=0.9 +hpo.hp_config.gamma.max=0.8",
            "hpo.hp_config.gamma.min=0.9",
        ),
    ],
)
def test_bad_evolution_settings_are_refused_naming_the_key(override, key, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "hpo=evolution", *override.split()])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ippo: error: {key} is invalid"), err


def test_mutation_probabilities_summing_to_zero_are_refused(tmp_path):
    zero = [
        "hpo.no_mut=0",
        "hpo.arch_mut=0",
        "hpo.params_mut=0",
        "hpo.act_mut=0",
        "hpo.rl_hp_mut=0",
    ]
    result = run_cli(["train", "hpo=evolution", *zero], tmp_path)
    assert result.returncode == 2
    assert "must not sum to zero" in result.stderr and "hpo.no_mut" in result.stderr
    assert not (tmp_path / "outputs").exists()
