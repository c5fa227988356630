#!/usr/bin/env bash
# with_cluster.sh COMMAND...: runs COMMAND against a private one-node Slurm cluster (tests/slurm/cluster.sh)
# with SLURM_CONF exported, then stops the daemons and removes the cluster's directory. For trying the sbatch
# scripts and `tools/sweep --slurm` on a workstation (as root), e.g.
#   tests/slurm/with_cluster.sh tools/sweep --slurm --threads 1 --sbatch-args=-O
#   tests/slurm/with_cluster.sh bash      # an interactive shell: sbatch, squeue, srun work inside it
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/cluster.sh"
[ $# -gt 0 ] || { echo "usage: tests/slurm/with_cluster.sh COMMAND [ARGS...]" >&2; exit 2; }
missing=$(slurm_cluster_missing)
[ -z "$missing" ] || { echo "with_cluster.sh: $missing" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "with_cluster.sh: slurmd must run as root to launch jobs" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/s2d-slurm.XXXXXX")
trap 'slurm_cluster_stop; rm -rf "$dir"' EXIT
trap 'exit 143' TERM INT
slurm_cluster_start "$dir" || exit 1
echo "with_cluster.sh: cluster up (SLURM_CONF=$SLURM_CONF, logs in $dir)" >&2
"$@"
