"""Evolutionary hyperparameter optimisation: hyperparameter ranges, mutations and
tournament selection for a population of IPPO agents (the reference's ``hpo`` module),
and the population trainer behind `ippo train hpo=evolution`."""

from ippo_cli.evolution.hyperparameters import HyperparameterConfig, RLParameter
from ippo_cli.evolution.mutations import Mutations
from ippo_cli.evolution.tournament import TournamentSelection

__all__ = ["HyperparameterConfig", "Mutations", "RLParameter", "TournamentSelection"]
