"""Actor and critic networks: encoders, heads and action distributions."""

from ippo_cli.networks.actor_critic import StochasticActor, ValueNetwork

__all__ = ["StochasticActor", "ValueNetwork"]
