"""Environments: factories for PettingZoo ParallelEnvs and vector envs over them."""
