"""ippo: Independent PPO for PettingZoo multi-agent environments."""

from ippo_cli.envs.vector import AsyncPettingZooVecEnv, AsyncVecEnv, SyncVecEnv
from ippo_cli.ippo import IPPO, MultiAgentSetup, learn_together

__all__ = [
    "IPPO",
    "AsyncPettingZooVecEnv",
    "AsyncVecEnv",
    "MultiAgentSetup",
    "SyncVecEnv",
    "learn_together",
]
__version__ = "0.1.0"
