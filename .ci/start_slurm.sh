#!/usr/bin/env bash
# A single-node SLURM (munge + slurmctld + slurmd, all on this machine) for the tests marked `slurm`.
# For a Debian 12 machine or container, run as root, without systemd or cgroups (Debian's SLURM 22.05).
# Idempotent: a second run leaves a working cluster alone (well under a second) and starts whatever
# daemon is missing; a changed slurm.conf restarts the SLURM daemons.
#
#   sudo .ci/start_slurm.sh          (.ci/run calls it before `make test`)
#
# What it sets up: one node (this host, its CPUs and 95% of its memory from `slurmd -C`), one default
# partition `debug` without a time limit, no GPUs (no gres), no accounting (no slurmdbd: `sacct` does not
# work, see README "Cluster"), process tracking by /proc (proctrack/linuxproc) and no task plugin, as a
# container has no usable cgroups. Logs: /var/log/slurm/{slurmctld,slurmd}.log.
set -euo pipefail

log() { echo "start_slurm.sh: $*"; }
die() { echo "start_slurm.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"
command -v apt-get >/dev/null || die "needs apt-get (a Debian machine)"
export DEBIAN_FRONTEND=noninteractive

# 1. Packages, only when one of the programs is missing.
missing=0
for program in munged slurmctld slurmd sinfo; do
  command -v "$program" >/dev/null || missing=1
done
if [ "$missing" = 1 ]; then
  log "installing munge and SLURM (apt)"
  apt-get update -q
  apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client
fi

# 2. munge: a key, and its daemon (SLURM authenticates every message with it).
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_works; then
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2.lock  # left by a munged that died
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 40); do munge_works && break; sleep 0.25; done
fi
munge_works || die "munged does not answer; see /var/log/munge/munged.log"

# 3. slurm.conf, from this machine's own figures; written only when it changes.
host=$(hostname -s)
hardware=$(slurmd -C | head -1)
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hardware")
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")
[ -n "$cpus" ] && [ -n "$memory" ] || die "cannot read CPUs and RealMemory from 'slurmd -C': $hardware"
memory=$((memory * 95 / 100))  # slurmd drains a node that reports less memory than slurm.conf says

install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld /var/log/slurm
install -d -m 0755 /var/spool/slurmd /etc/slurm
conf=$(mktemp)
trap 'rm -f "$conf"' EXIT
cat >"$conf" <<EOF
# Written by vlmlab's .ci/start_slurm.sh: one node, no cgroups, no systemd, no accounting.
ClusterName=vlmlab-ci
SlurmctldHost=${host}
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
MinJobAge=600
Waittime=0
NodeName=${host} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$conf" /etc/slurm/slurm.conf; then
  install -m 0644 "$conf" /etc/slurm/slurm.conf
  changed=1
fi

# 4. The daemons (they daemonize themselves); restarted when slurm.conf changed.
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$changed" = 1 ]; then
  for daemon in slurmd slurmctld; do
    if running "/run/$daemon.pid"; then
      log "slurm.conf changed: stopping $daemon"
      kill "$(cat "/run/$daemon.pid")"
      for _ in $(seq 40); do running "/run/$daemon.pid" || break; sleep 0.25; done
    fi
  done
fi
running /run/slurmctld.pid || /usr/sbin/slurmctld
for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld does not answer; see /var/log/slurm/slurmctld.log"
running /run/slurmd.pid || /usr/sbin/slurmd

# 5. Wait until the node takes jobs (a node that was down is resumed once).
state=""
node_state() { sinfo -h -N -n "$host" -o %T 2>/dev/null | head -1; }
for attempt in $(seq 120); do
  state=$(node_state)
  case "$state" in
    idle* | mixed* | allocated* | completing*) break ;;
    down* | drain*) [ "$attempt" = 10 ] && scontrol update nodename="$host" state=resume ;;
  esac
  sleep 0.5
done
case "$state" in
  idle* | mixed* | allocated* | completing*) ;;
  *) die "node $host is '${state:-unknown}'; see /var/log/slurm/slurmctld.log and slurmd.log" ;;
esac
srun --nodes=1 --ntasks=1 --time=1 true || die "a one-task srun failed; see /var/log/slurm/slurmd.log"
log "SLURM is up: node $host, CPUs=$cpus, RealMemory=${memory}M, partition debug"
