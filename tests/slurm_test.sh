#!/usr/bin/env bash
# Sweeps on a real SLURM (issue 16): starts munged, slurmctld and slurmd for a one-node
# cluster on 127.0.0.1 (config, state, sockets and logs in a temp dir; needs root and
# `make deps-slurm`), then
#   1. submits configs/sweeps/smoke.json as a job array, waits, checks every run directory and
#      that each run's metrics.jsonl is byte-identical to the local pool's (same thread count);
#   2. submits a longer one-run sweep, scancels it mid-run, checks the run was checkpointed
#      and marked pending, resubmits that array task and checks it resumes to the metrics of
#      an uninterrupted run;
# and stops the daemons it started, by pid. Usage: tests/slurm_test.sh [path/to/fewshot]
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$(readlink -f "${1:-./fewshot}")
T0=$(date +%s)
say() { echo "slurm_test: $*"; }
die() {
    say "FAIL: $*"
    for f in "$T"/*.log "$T"/*/logs/*; do
        [ -f "$f" ] && { echo "----- $f (last 30 lines)"; tail -n 30 "$f"; }
    done
    exit 1
}

[ "$(id -u)" = 0 ] || { say "FAIL: must run as root (slurmd and munged run as root here)"; exit 1; }
for c in munged mungekey slurmctld slurmd sbatch squeue scancel scontrol sinfo; do
    command -v "$c" >/dev/null || { say "FAIL: $c not found; run 'make deps-slurm' (Debian slurm-wlm, munge)"; exit 1; }
done
[ -x "$BIN" ] || { say "FAIL: $BIN is not an executable (build with make)"; exit 1; }

T=$(mktemp -d /tmp/fewshot_slurm_XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() {
    # jobs left by a failure first (this cluster only: SLURM_CONF is ours), then the daemons
    if [ -n "${OUR_SLURM:-}" ]; then
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u)
        if [ -n "$jobs" ]; then
            scancel $jobs 2>/dev/null
            for _ in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
        fi
    fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    [ -n "${KEEP:-}" ] && say "kept $T" || rm -rf "$T"
}
trap cleanup EXIT

# Wait until a command succeeds: wait_for SECONDS WHAT CMD...
wait_for() {
    local secs=$1 what=$2; shift 2
    for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "timed out after ${secs}s waiting for $what"
}

# ---- munge (own key, socket and pid file) ----
mkdir -p "$T/munge"
chmod 700 "$T/munge"
mungekey -c -k "$T/munge/munge.key" || die "mungekey failed"
munged -F --force --key-file="$T/munge/munge.key" --socket="$T/munge/munge.sock" \
    --pid-file="$T/munge/munged.pid" --seed-file="$T/munge/seed" --log-file="$T/munged.log" >"$T/munged.out" 2>&1 &
PIDS+=($!)
wait_for 20 "munged's socket" test -S "$T/munge/munge.sock"

# ---- slurm.conf ----
PORT=$((20000 + RANDOM % 20000))
CPUS=$(nproc)
mkdir -p "$T/state" "$T/spool"
export SLURM_CONF="$T/slurm.conf"
OUR_SLURM=1
cat > "$SLURM_CONF" <<EOF
ClusterName=fewshot
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool/%n
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=30
SlurmdTimeout=60
NodeName=fewshot1 NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=fewshot1 Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -D -i >"$T/slurmctld.out" 2>&1 &
PIDS+=($!)
wait_for 30 "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q "is UP"'
slurmd -D -N fewshot1 >"$T/slurmd.out" 2>&1 &
PIDS+=($!)
wait_for 60 "the node to be idle" bash -c 'sinfo -h -n fewshot1 -o %T | grep -q idle'
say "cluster up ($CPUS CPUs, port $PORT) after $(( $(date +%s) - T0 ))s"

# Wait for a job (all its array tasks) to leave the queue: wait_job ID SECONDS
wait_job() {
    local id=$1 secs=$2
    for _ in $(seq $((secs * 2))); do
        [ -z "$(squeue -h -j "$id" 2>/dev/null)" ] && return 0
        sleep 0.5
    done
    squeue -j "$id"
    die "job $id still queued/running after ${secs}s"
}

# Run names and statuses from the manifest, one "name status" line per run (in order).
runs_of() { "$BIN" sweep summarize "$1" --csv | awk -F, '$1 == "run" { print $2, $3 }'; }
status_of() { runs_of "$1" | sed -n "$(($2 + 1))p" | cut -d' ' -f2; } # DIR INDEX

# ---- 1. the smoke sweep as a job array ----
JOB=$("$BIN" sweep slurm configs/sweeps/smoke.json --out "$T/smoke" --cpus-per-task 1 --max-parallel 2 --submit) ||
    die "sweep slurm --submit failed"
[[ "$JOB" =~ ^[0-9]+$ ]] || die "expected a job id, got '$JOB'"
say "smoke sweep submitted as job $JOB"
wait_job "$JOB" 600
"$BIN" sweep run configs/sweeps/smoke.json --out "$T/local" -j 2 --threads-per-run 1 --no-progress ||
    die "local sweep run failed"
N=$(runs_of "$T/smoke" | wc -l)
[ "$N" -ge 2 ] || die "expected several runs in $T/smoke/sweep.json, got $N"
for i in $(seq 0 $((N - 1))); do
    name=$(runs_of "$T/smoke" | sed -n "$((i + 1))p" | cut -d' ' -f1)
    [ "$(status_of "$T/smoke" "$i")" = done ] || die "run $i ($name) is $(status_of "$T/smoke" "$i"), not done"
    for f in config.json metrics.jsonl; do
        [ -s "$T/smoke/$name/$f" ] || die "$T/smoke/$name/$f missing"
    done
    ls "$T/smoke/$name/checkpoints/"step_*.safetensors >/dev/null 2>&1 || die "no checkpoint in $T/smoke/$name"
    [ -f "$T/smoke/logs/slurm_${JOB}_$i.out" ] || die "no SLURM log for task $i"
    cmp "$T/smoke/$name/metrics.jsonl" "$T/local/$name/metrics.jsonl" ||
        die "run $name: metrics.jsonl as a SLURM task differs from the local pool's"
done
say "smoke: $N array tasks done, metrics byte-identical to the local pool"

# ---- 2. scancel a running task, resubmit it, compare with an uninterrupted run ----
cat > "$T/long.json" <<EOF
{"base": "configs/default.json", "set": {"train.train_iters": 128000, "train.ckpt_every": 0,
 "train.eval_every": 6400}, "axes": {"seed": [5]}}
EOF
JOB=$("$BIN" sweep slurm "$T/long.json" --out "$T/long" --cpus-per-task 1 --submit) || die "sweep slurm (long) failed"
say "long sweep submitted as job $JOB"
# metrics.jsonl is flushed at each evaluation: wait for the first one after 0 sequences
wait_for 300 "the long run to start training" grep -q '"iter":6400' "$T/long/seed=5/metrics.jsonl"
scancel "$JOB" || die "scancel $JOB failed"
wait_job "$JOB" 120
[ "$(status_of "$T/long" 0)" = pending ] || die "after scancel the run is $(status_of "$T/long" 0), not pending"
grep -q "stopped by SIGTERM" "$T/long/logs/seed=5.log" || die "the run did not checkpoint on scancel's SIGTERM"
ls "$T/long/seed=5/checkpoints/"step_*.safetensors >/dev/null 2>&1 || die "no checkpoint after scancel"
JOB2=$(sbatch --parsable --array=0 "$T/long/sweep.sbatch") || die "resubmitting task 0 failed"
JOB2=${JOB2%%;*}
say "cancelled job $JOB mid-run; task 0 resubmitted as job $JOB2"
wait_job "$JOB2" 900
[ "$(status_of "$T/long" 0)" = done ] || die "the resubmitted run is $(status_of "$T/long" 0), not done"
grep -q "resumed at step" "$T/long/logs/seed=5.log" || die "the resubmitted run did not resume from its checkpoint"
"$BIN" train --config "$T/long/configs/seed=5.json" --out "$T/ref" --threads 1 --no-progress ||
    die "the uninterrupted reference run failed"
cmp "$T/long/seed=5/metrics.jsonl" "$T/ref/metrics.jsonl" ||
    die "the cancelled + resubmitted run's metrics differ from an uninterrupted run's"
say "scancel + resubmit: resumed to byte-identical metrics"
say "PASS in $(( $(date +%s) - T0 ))s"
