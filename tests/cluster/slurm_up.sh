#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for `make test-cluster`, run as root.
#
# Installs Debian's slurm-wlm and munge when missing, then starts munged, slurmctld and
# slurmd inside the network namespace ippo-cluster, whose only interface is loopback: the
# daemons cannot be reached from outside, and their ports cannot clash with anything on
# the host. Config, state, logs and pid files live in $IPPO_CLUSTER_DIR (slurm_down.sh
# stops exactly the daemons whose pid files are there). Clients run in the namespace too:
#   nsenter --net=/run/netns/ippo-cluster env SLURM_CONF=$IPPO_CLUSTER_DIR/slurm.conf sinfo
set -euo pipefail

DIR=${IPPO_CLUSTER_DIR:-/tmp/ippo-cluster}
NETNS=ippo-cluster
NODE=ippo-node
PARTITION=ippo

if [ "$(id -u)" != 0 ]; then
    echo "slurm_up.sh: run as root (it installs packages and starts daemons)" >&2
    exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
fi

# nsenter enters the network namespace alone (`ip netns exec` would also remount /sys,
# hiding the cgroup hierarchy slurmd needs).
in_ns() { nsenter --net="/run/netns/$NETNS" "$@"; }

mkdir -p "$DIR"/{state,spool,log,munge}
chmod 755 "$DIR/munge"  # the socket must be reachable; the key stays 0400
ip netns add "$NETNS"
in_ns ip link set lo up
# A second loopback address: glibc's getaddrinfo(AI_ADDRCONFIG), which slurm uses to bind,
# finds no address at all in a namespace whose only address is 127.0.0.1.
in_ns ip addr add 127.0.0.2/8 dev lo

# munge: a fresh key and a private socket, so that no system munged is touched.
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
in_ns munged --force \
    --key-file="$DIR/munge/munge.key" \
    --socket="$DIR/munge/munge.sock" \
    --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed"

CPUS=$(nproc)
MEMORY_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
cat >"$DIR/slurm.conf" <<CONF
ClusterName=ippo
SlurmctldHost=$(hostname -s)(127.0.0.1)
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.sock
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$(hostname) CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF="$DIR/slurm.conf"
in_ns slurmctld -f "$SLURM_CONF"
in_ns slurmd -f "$SLURM_CONF" -N "$NODE"

for _ in $(seq 60); do
    if timeout 5 nsenter --net="/run/netns/$NETNS" sinfo -h -n "$NODE" -o %t 2>/dev/null | grep -qx idle; then
        in_ns sinfo
        exit 0
    fi
    sleep 1
done
echo "slurm_up.sh: node $NODE not idle after 60 s; logs in $DIR/log" >&2
in_ns sinfo >&2 || true
exit 1
