#!/usr/bin/env bash
# A real Slurm cluster of N nodes on this one machine: one slurmctld and one `slurmd -N nodeK` per node, each node with
# its own port at 127.0.0.1, authenticated by a munged of its own. For the multi-node tests and for trying
# launch_slurm.py's multi-node path without a cluster.
#
#   bash scripts/slurm_local.sh up 3            # install slurm + munge if missing, start a 3-node cluster
#   export SLURM_CONF=$PWD/.cache/slurm/etc/slurm.conf
#   salloc -N3 python launch_slurm.py --config recipes/tiny.yaml
#   bash scripts/slurm_local.sh status
#   SLURM_LOCAL_GPUS=8 bash scripts/slurm_local.sh up 3   # 8 stand-in GPUs per node, declared to Slurm
#   bash scripts/slurm_local.sh down            # stop every daemon it started, by PID
#
# SLURM_LOCAL_DIR (default <repo>/.cache/slurm) holds everything: config, munge key and socket, state, logs and
# pid files; nothing outside it is written except the Debian packages. SLURM_LOCAL_GPUS=G declares G GPUs on each
# node (gres/gpu) without any GPU: stand-in character devices <dir>/dev/nodeK/gpu0..G-1 (Slurm refuses plain files),
# so Slurm assigns them to jobs and steps and sets CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS, SLURM_GPUS_ON_NODE as on a
# GPU cluster (`launch_slurm.py --probe_gpus` shows them). Node names are node1..nodeN; they do not
# resolve through DNS: launch_slurm.py reads each node's address (NodeAddr) from `scontrol show node`, as it must on
# clusters whose node names are not host names. Needs root (apt-get, slurmd), as on a real cluster.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(mkdir -p "${SLURM_LOCAL_DIR:-$HERE/.cache/slurm}" && cd "${SLURM_LOCAL_DIR:-$HERE/.cache/slurm}" && pwd)"
CTLD_PORT="${SLURM_LOCAL_PORT:-6817}"  # slurmctld; node K's slurmd listens on CTLD_PORT + K
GPUS="${SLURM_LOCAL_GPUS:-0}"          # GPUs declared per node (gres), stand-in devices

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v srun >/dev/null \
        && command -v munged >/dev/null && command -v mungekey >/dev/null; then
        return
    fi
    [ "$(id -u)" -eq 0 ] || { echo "slurm_local: installing slurm-wlm and munge needs root" >&2; exit 1; }
    echo "slurm_local: installing slurmctld, slurmd, slurm-client and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

down() {
    local stopped=0
    # first the jobs: cancelling them makes each slurmstepd stop its processes (KillWait=5 s), which stopping the
    # daemons alone would leave running
    export SLURM_CONF="$DIR/etc/slurm.conf"
    if pid_alive "$DIR/run/slurmctld.pid"; then
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
            echo "slurm_local: cancelled jobs $(echo $jobs)"
        fi
    fi
    for f in "$DIR"/run/*.pid; do
        [ -e "$f" ] || continue
        if pid_alive "$f"; then
            kill "$(cat "$f")" 2>/dev/null || true
            stopped=$((stopped + 1))
        fi
    done
    # wait up to 10 s for them to exit, then SIGKILL what is left (still by the recorded PIDs only)
    for _ in $(seq 50); do
        local alive=0
        for f in "$DIR"/run/*.pid; do [ -e "$f" ] && pid_alive "$f" && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for f in "$DIR"/run/*.pid; do
        [ -e "$f" ] || continue
        if pid_alive "$f"; then
            kill -9 "$(cat "$f")" 2>/dev/null || true
            for _ in $(seq 50); do pid_alive "$f" || break; sleep 0.1; done  # SIGKILL is delivered, not yet done
        fi
        rm -f "$f"
    done
    echo "slurm_local: stopped $stopped daemons ($DIR)"
}

up() {
    local n="$1"
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "slurm_local: up N: N must be a number of nodes >= 1, got '$n'" >&2; exit 2; }
    [[ "$GPUS" =~ ^[0-9]+$ ]] || { echo "slurm_local: SLURM_LOCAL_GPUS must be a number of GPUs per node, got '$GPUS'" >&2; exit 2; }
    install
    if pid_alive "$DIR/run/slurmctld.pid"; then
        echo "slurm_local: already running in $DIR; run 'bash scripts/slurm_local.sh down' first" >&2
        exit 1
    fi
    mkdir -p "$DIR"/{etc,munge,state,log,run}
    for k in $(seq "$n"); do mkdir -p "$DIR/spool/node$k"; done
    chmod 700 "$DIR/munge"
    [ -s "$DIR/munge/munge.key" ] || mungekey -c -k "$DIR/munge/munge.key"
    chmod 600 "$DIR/munge/munge.key"
    # munged as root (-f: it would refuse a root-owned key otherwise); the socket and key live in $DIR only.
    munged -f --key-file "$DIR/munge/munge.key" --socket "$DIR/munge/munge.socket" \
        --pid-file "$DIR/run/munged.pid" --log-file "$DIR/log/munged.log" --seed-file "$DIR/munge/munged.seed"

    local gres=""
    if [ "$GPUS" -gt 0 ]; then
        # each node its own device files, so that every node owns its G GPUs; c 1 3 is /dev/null's device number
        : > "$DIR/etc/gres.conf"
        for k in $(seq "$n"); do
            mkdir -p "$DIR/dev/node$k"
            for g in $(seq 0 $((GPUS - 1))); do
                [ -c "$DIR/dev/node$k/gpu$g" ] || mknod "$DIR/dev/node$k/gpu$g" c 1 3
            done
            local files="gpu0"
            if [ "$GPUS" -gt 1 ]; then files="gpu[0-$((GPUS - 1))]"; fi
            echo "NodeName=node$k Name=gpu File=$DIR/dev/node$k/$files Flags=nvidia_gpu_env" >> "$DIR/etc/gres.conf"
        done
        gres=" Gres=gpu:$GPUS"
    else
        rm -f "$DIR/etc/gres.conf"
    fi

    local cpus mem_mb host
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # GNU nproc reports OMP_NUM_THREADS when set (tests set 1)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    host=$(hostname)
    {
        echo "# written by scripts/slurm_local.sh: $n nodes on this machine"
        echo "ClusterName=local"
        echo "SlurmctldHost=$host(127.0.0.1)"
        echo "SlurmctldPort=$CTLD_PORT"
        echo "AuthType=auth/munge"
        echo "CredType=cred/munge"
        # a requeued job waits cred_expire seconds before it may start again (default 120; 5 is Slurm's least), then
        # for the scheduler's next pass (sched_interval, default 60 s): 10 and 2 keep the requeue tests short
        echo "AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core"
        echo "SchedulerType=sched/builtin"
        echo "SchedulerParameters=sched_interval=2"
        echo "MpiDefault=none"
        echo "ReturnToService=2"
        echo "KillWait=5"
        echo "SlurmdTimeout=30"
        echo "InactiveLimit=0"
        echo "MinJobAge=60"
        echo "StateSaveLocation=$DIR/state"
        echo "SlurmdSpoolDir=$DIR/spool/%n"
        echo "SlurmctldPidFile=$DIR/run/slurmctld.pid"
        echo "SlurmdPidFile=$DIR/run/slurmd-%n.pid"
        echo "SlurmctldLogFile=$DIR/log/slurmctld.log"
        echo "SlurmdLogFile=$DIR/log/slurmd-%n.log"
        echo "AccountingStorageType=accounting_storage/none"
        echo "JobCompType=jobcomp/none"
        echo "JobAcctGatherType=jobacct_gather/none"
        if [ "$GPUS" -gt 0 ]; then echo "GresTypes=gpu"; fi
        for k in $(seq "$n"); do
            echo "NodeName=node$k NodeAddr=127.0.0.1 NodeHostname=$host Port=$((CTLD_PORT + k)) CPUs=$cpus RealMemory=$mem_mb$gres State=UNKNOWN"
        done
        echo "PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
    } > "$DIR/etc/slurm.conf"
    export SLURM_CONF="$DIR/etc/slurm.conf"
    slurmctld -i -f "$SLURM_CONF"   # -i: ignore state left by an earlier cluster in this directory
    for k in $(seq "$n"); do slurmd -f "$SLURM_CONF" -N "node$k"; done

    for _ in $(seq 60); do
        if [ "$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)" -ge "$n" ]; then
            echo "slurm_local: $n nodes up ($DIR); use them with: export SLURM_CONF=$SLURM_CONF"
            sinfo -N
            return
        fi
        sleep 0.5
    done
    echo "slurm_local: the nodes did not come up within 30 s; logs in $DIR/log:" >&2
    tail -n 5 "$DIR"/log/*.log >&2 || true
    down
    exit 1
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    down) down ;;
    status) export SLURM_CONF="$DIR/etc/slurm.conf"; sinfo -N; squeue ;;
    install)  # for the test command: without root, say so and go on (tests/test_slurm.py then skips, or fails under CI)
        if [ "$(id -u)" -ne 0 ] && ! command -v slurmctld >/dev/null; then
            echo "slurm_local: WARNING not root: Slurm not installed, the multi-node tests will skip" >&2
        else
            install && echo "slurm_local: $(slurmctld -V) and munge installed"
        fi ;;
    *) echo "usage: bash scripts/slurm_local.sh up N | down | status | install" >&2; exit 2 ;;
esac
