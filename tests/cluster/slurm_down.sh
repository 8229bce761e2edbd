#!/usr/bin/env bash
# Stops exactly the daemons slurm_up.sh started (by their pid files in $IPPO_CLUSTER_DIR)
# and removes the network namespace. Safe to run when nothing, or only part, is up.
set -uo pipefail

DIR=${IPPO_CLUSTER_DIR:-/tmp/ippo-cluster}
NETNS=ippo-cluster

stop() {  # stop PIDFILE: SIGTERM, then SIGKILL after 10 s
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

stop "$DIR/slurmd.pid"
stop "$DIR/slurmctld.pid"
stop "$DIR/munge/munged.pid"
if ip netns list | grep -qw "$NETNS"; then
    ip netns del "$NETNS"
fi
rm -rf "$DIR/state" "$DIR/spool" "$DIR/munge"
