"""An env factory that builds on the submitting machine (so the sweep's pre-flight passes)
and fails on a SLURM node, as a missing dataset or library would."""

from __future__ import annotations

import os

from tests.probe_envs import ObsRewardEnv


def make(fail_on_node: bool = False):
    if fail_on_node and "SLURM_JOB_ID" in os.environ:
        raise FileNotFoundError(
            f"no scenario files on node {os.environ.get('SLURMD_NODENAME', '?')} "
            f"(SLURM job {os.environ['SLURM_JOB_ID']})"
        )
    return ObsRewardEnv()
