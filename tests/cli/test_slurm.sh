#!/usr/bin/env bash
# The Slurm test (a private slurmctld + slurmd on loopback, slurm/s2d.sbatch, tools/sweep --slurm):
# see tests/slurm/run_tests.sh. Skips loudly where Slurm cannot run (not root, slurm-wlm/munge missing).
exec bash "$(dirname "$0")/../slurm/run_tests.sh"
