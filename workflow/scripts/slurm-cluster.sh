#!/usr/bin/env bash
# A real one-node SLURM (Debian's slurm-wlm + munge) for testing the Snakemake
# SLURM profile on a CPU-only machine, e.g. in CI.  Run as root.
#
#   slurm-cluster.sh start    install if missing, configure, start, wait for idle
#   slurm-cluster.sh stop     cancel jobs, stop the daemons this script started
#   slurm-cluster.sh status   show daemons, node and queue
#
# State, logs and pid files live in $VARIANT_SLURM_DIR (default below);
# the config goes to /etc/slurm/{slurm,gres}.conf because every SLURM client reads it
# there (`stop` removes them again: clients that find a slurm.conf whose controller is
# gone wait ~10 s per call, and Snakemake's SLURM plugin calls scontrol at every start).
#
# The node advertises $SLURM_TEST_GPUS (default 2) GPU slots with no GPU behind them
# (GRES gpu whose File is a null device in $DIR): a rule asking for gpu=N is scheduled
# and launched exactly as on a GPU node (sbatch/srun --gpus=N, then torchrun with N
# processes), and the processes, finding no CUDA, train on the CPU through gloo.
set -euo pipefail

DIR=${VARIANT_SLURM_DIR:-/var/lib/variant-slurm}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARK="# Written by slurm-cluster.sh"
GPUS=${SLURM_TEST_GPUS:-2}
PARTITION=debug
START_TIMEOUT=${SLURM_START_TIMEOUT:-60}   # seconds to wait for the node to be idle

say() { echo "[slurm-cluster] $*"; }
die() { echo "[slurm-cluster] ERROR: $*" >&2; exit 1; }

# pid from a pid file, only if that process is still alive
live_pid() {
    local f=$1 pid
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

log_tails() {
    local f
    for f in "$DIR/slurmctld.log" "$DIR/slurmd.log" /var/log/munge/munged.log; do
        [[ -f $f ]] && { echo "--- tail $f"; tail -n 20 "$f"; }
    done >&2
}

install_packages() {
    local missing=0 c
    for c in slurmctld slurmd sinfo munged; do command -v "$c" >/dev/null || missing=1; done
    (( missing )) || return 0
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get to install them"
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # quiet, but keep the output for when it fails
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
            >"$DIR/apt.log" 2>&1; then
        tail -n 20 "$DIR/apt.log" >&2; die "apt-get failed (log: $DIR/apt.log)"
    fi
}

start_munge() {
    # a munged already answering (ours, or a system service) is good enough
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already running"
        return
    fi
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        say "writing munge key"
        dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$key"; chmod 400 "$key"
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 755 "$DIR/munge"
    say "starting munged"
    # 9>&-: daemons must not inherit (and so hold forever) the start/stop lock
    runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" 9>&-
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    log_tails; die "munged does not answer"
}

write_conf() {
    local host cpus mem_mb headroom
    host=$(hostname -s)
    cpus=$(getconf _NPROCESSORS_ONLN)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    # keep 10% (at least 512 MB) for the OS, the daemons and Snakemake itself
    headroom=$(( mem_mb / 10 > 512 ? mem_mb / 10 : 512 ))
    mem_mb=$(( mem_mb - headroom ))
    say "writing $CONF: node $host, $cpus CPUs, ${mem_mb} MB, $GPUS GPU slots (no devices)"
    mkdir -p "$(dirname "$CONF")" "$DIR/ctld" "$DIR/d"
    # slurmd counts a GPU per File; a character device keeps it from complaining
    local i
    for (( i = 0; i < GPUS; i++ )); do
        [[ -e $DIR/gpu$i ]] || mknod -m 666 "$DIR/gpu$i" c 1 3 2>/dev/null || touch "$DIR/gpu$i"
    done
    cat >"$GRES_CONF" <<EOF
$MARK: GPU slots, no GPUs (see the script's header).
NodeName=$host Name=gpu File=$DIR/gpu[0-$(( GPUS - 1 ))]
EOF
    cat >"$CONF" <<EOF
$MARK: a one-node test cluster, no accounting.
ClusterName=variant-test
# 127.0.0.1 so nothing depends on the host name resolving
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# plain process tracking: works in containers without cgroup delegation
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# CPU (not core) granularity so hyperthreaded CI runners still run jobs side by side
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# finished jobs stay in squeue for an hour: Snakemake's SLURM plugin polls squeue,
# and a test can list every job of a whole pipeline run
MinJobAge=3600
GresTypes=gpu
# a node that was down comes back by itself after a restart
ReturnToService=2
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

node_state() { sinfo -h -N -p "$PARTITION" -o %T 2>/dev/null | head -n1; }

cmd_start() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    mkdir -p "$DIR"
    if live_pid "$DIR/slurmctld.pid" >/dev/null && live_pid "$DIR/slurmd.pid" >/dev/null &&
       [[ $(node_state) == idle || $(node_state) == mixed || $(node_state) == allocated ]]; then
        say "already running (node $(node_state)); nothing to do"
        return
    fi
    local t0=$SECONDS
    install_packages
    start_munge
    write_conf
    if ! live_pid "$DIR/slurmctld.pid" >/dev/null; then
        say "starting slurmctld"; slurmctld 9>&-
    fi
    if ! live_pid "$DIR/slurmd.pid" >/dev/null; then
        say "starting slurmd"; slurmd 9>&-
    fi
    say "waiting for the node to be idle (up to ${START_TIMEOUT}s)"
    local state="" resumed=0
    while (( SECONDS - t0 < START_TIMEOUT )); do
        state=$(node_state)
        [[ $state == idle ]] && { say "ready in $(( SECONDS - t0 ))s: partition $PARTITION"; return; }
        # a drain/down reason saved by an earlier start (other config) outlives the fix
        if [[ $state == drain* || $state == down* ]] && (( ! resumed )); then
            say "node $state from an earlier start ($(sinfo -h -N -o %E | head -n1)); resuming it"
            scontrol update NodeName="$(hostname -s)" State=RESUME || true
            resumed=1
        fi
        sleep 1
    done
    log_tails
    die "node not idle after ${START_TIMEOUT}s (state: '${state:-no answer}')"
}

cmd_stop() {
    local jobs name pid
    if command -v squeue >/dev/null && jobs=$(squeue -h -o %A -t PD,R,CG,S 2>/dev/null) && [[ -n $jobs ]]; then
        say "cancelling jobs: ${jobs//$'\n'/ }"
        # shellcheck disable=SC2086
        scancel $jobs || true
    fi
    # reverse start order; munged only if this script started it
    for name in slurmd slurmctld munge/munged; do
        if pid=$(live_pid "$DIR/$name.pid"); then
            say "stopping ${name#munge/} (pid $pid)"
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$DIR/$name.pid"
    done
    # our config files only (a site's own slurm.conf stays)
    for f in "$CONF" "$GRES_CONF"; do
        if [[ -f $f ]] && head -n1 "$f" | grep -q "^$MARK"; then rm -f "$f"; fi
    done
    say "stopped"
}

cmd_status() {
    local name pid rc=0
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then say "munge: answering"
    else say "munge: not answering"; rc=1; fi
    for name in slurmctld slurmd; do
        if pid=$(live_pid "$DIR/$name.pid"); then
            say "$name: running (pid $pid)"
        else
            say "$name: not running"; rc=1
        fi
    done
    sinfo 2>/dev/null && squeue --states=all 2>/dev/null || rc=1
    return $rc
}

# one start/stop at a time (parallel test sessions)
if [[ ${1:-} == start || ${1:-} == stop ]]; then
    mkdir -p "$DIR"; exec 9>"$DIR/lock"; flock 9
fi

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
