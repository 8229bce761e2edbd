"""ippo: Independent PPO for PettingZoo multi-agent environments."""

from ippo_cli.ippo import IPPO

__all__ = ["IPPO"]
__version__ = "0.1.0"
