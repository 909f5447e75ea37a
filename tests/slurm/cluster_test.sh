#!/usr/bin/env bash
# A one-node SLURM cluster from Debian's packages, and a tiny DAG run through the shipped
# profile (workflow/profiles/slurm): every non-local job must go through sbatch and the table
# must be written. The daemons started here are stopped by pid on exit. Where the cluster
# cannot be built (not root, no apt-get, packages not installable) it says SKIPPED and exits 0.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}

skip() { echo "SKIPPED: SLURM cluster test: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root to start slurmctld, slurmd and munged"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || skip "no apt-get to install slurmctld, slurmd and munge"
  echo "installing slurmctld, slurmd, slurm-client and munge from Debian's packages"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      slurmctld slurmd slurm-client munge >/dev/null; } || skip "apt-get could not install SLURM"
fi

# job steps (srun inside a job) read the default config path, so the test's config goes there;
# a machine that already has one is a real cluster, and the test leaves it alone
conf=/etc/slurm/slurm.conf
[ ! -e "$conf" ] || skip "$conf exists (a configured SLURM host); not replacing it"
work=$(mktemp -d /tmp/slurm-test.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "$conf"
}
trap stop EXIT

# munge: the key the package made, or a fresh one; the daemon runs as root here
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chmod 400 /etc/munge/munge.key
munged --force --foreground --socket="$work/munge.socket" --pid-file="$work/munged.pid" \
  --log-file="$work/munged.log" --seed-file="$work/munge.seed" > "$work/munged.out" 2>&1 &
pids+=($!)

host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 1024 / 2 ))
mkdir -p "$work/state" "$work/spool"
cat > "$work/slurm.conf" <<CONF
ClusterName=harness-test
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket=$work/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p /etc/slurm
cp "$work/slurm.conf" "$conf"
export SLURM_CONF="$conf"
sleep 1
slurmctld -D -f "$SLURM_CONF" > "$work/slurmctld.out" 2>&1 &
pids+=($!)
sleep 2
slurmd -D -f "$SLURM_CONF" > "$work/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 30); do
  sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed" && break
  sleep 1
done
sinfo -h -o %T | grep -qE "idle|mixed" || { cat "$work"/slurm*.log; echo "FAILED: the node never came up"; exit 1; }
echo "cluster up: $(sinfo -h -o '%P %D %T %c')"

# a tiny DAG: UNet-F and UNet-L on small synthetic ACDC, one seed, with the plateau check
mkdir -p "$work/run"
"$python" - "$repo" "$work/run/config.yaml" <<'PY'
import sys, yaml
repo, out = sys.argv[1:]
config = yaml.safe_load(open(f"{repo}/config/config.yaml"))
config["datasets"] = {"acdc": {"kind": "acdc", "raw": "synthetic",
                               "synthetic": {"patients": 10, "slices": [4, 5], "size": 32, "seed": 0},
                               "fractions": [0.6, 0.2, 0.2]}}
config.update(ratios=[10], seeds=[0], convergence={"multiple": 2, "tolerance": 2.0})
config["tables"] = {"table1": {"datasets": ["acdc"], "methods": ["unet_f", "unet_l"]}}
config["train"].update(iterations=3, widths=[4, 8, 16, 32, 64], log_every=1)
for key in ("ablations", "figures", "table5"):
    config.pop(key, None)
yaml.safe_dump(config, open(out, "w"))
PY
cd "$work/run"
# the cluster has no GPU, little memory and one node of few cores: what a user edits
no_gpu=()
for rule in train plateau_train evaluate evaluate_stage plateau_evaluate; do
  no_gpu+=("$rule:gpu=0" "$rule:mem_mb=500" "$rule:runtime=10")
done
status=0
# (Snakemake shuts down on SIGTERM only after its jobs; KILL follows 30 s later)
timeout -k 30 600 "$python" -m snakemake --snakefile "$repo/Snakefile" --directory "$work/run" \
  --configfile "$work/run/config.yaml" --workflow-profile "$repo/workflow/profiles/slurm" \
  --set-resources "${no_gpu[@]}" --default-resources mem_mb=500 runtime=10 \
  --set-threads train=1 plateau_train=1 evaluate=1 evaluate_stage=1 plateau_evaluate=1 \
  --slurm-init-seconds-before-status-checks 1 --jobs 4 results/table1.csv \
  > "$work/snakemake.log" 2>&1 || status=$?
submitted=$(grep -c "submitted with SLURM jobid" "$work/snakemake.log" || true)
planned=$(grep -cE "^rule (synthesize|preprocess|train|evaluate|plateau_train|plateau_evaluate):" "$work/snakemake.log" || true)
launched=$(grep -c "launch task" "$work/slurmd.log" || true)
if [ "$status" != 0 ] || [ ! -s results/table1.csv ] || [ "$submitted" -lt "$planned" ] || [ "$planned" -lt 1 ]; then
  tail -60 "$work/snakemake.log"
  echo "FAILED: SLURM cluster test (snakemake exit $status, $submitted of $planned cluster jobs submitted)"
  exit 1
fi
echo "PASSED: SLURM cluster test: $submitted of $planned cluster jobs went through sbatch" \
     "(slurmd launched $launched tasks); results/table1.csv written"
rm -rf "$work"
