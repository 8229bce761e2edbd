#!/usr/bin/env bash
# `make test-cluster`: bring up a one-node SLURM cluster on loopback (slurm_up.sh), run
# tests/cluster/ inside its network namespace (SLURM sweeps, a Ray sweep on a local Ray
# cluster the tests start and stop, two torchrun nodes) and always tear down, also when a
# test fails or the run is interrupted. Run as root; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."

export IPPO_CLUSTER_DIR=${IPPO_CLUSTER_DIR:-/tmp/ippo-cluster}
HERE=tests/cluster
trap '"$HERE/slurm_down.sh"' EXIT
trap 'exit 130' INT TERM

"$HERE/slurm_down.sh"  # what a killed earlier run may have left
"$HERE/slurm_up.sh"
# Only the network namespace is entered: the tests see the machine's files and cgroups.
nsenter --net=/run/netns/ippo-cluster \
    env SLURM_CONF="$IPPO_CLUSTER_DIR/slurm.conf" \
    .venv/bin/python -m pytest -q -rP -p no:cacheprovider "$HERE" "$@"
