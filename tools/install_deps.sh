#!/usr/bin/env bash
# Installs the Debian packages s2d needs to build and test, only those missing (idempotent).
set -eu
# python3 (stdlib) checks JSON outputs in the CLI tests and python3-h5py reads our HDF5 files there;
# openmpi-bin/libopenmpi-dev run the MPI job; slurm-wlm runs the local Slurm test; gnuplot-nox plots sweeps and
# `s2d plot`; libprotobuf-c-dev/protobuf-c-compiler build the TensorBoard event writer (src/io/tb_event.proto).
PKGS=(build-essential pkg-config libopenblas-openmp-dev libyaml-dev libcjson-dev libonig-dev libutf8proc-dev
      libhdf5-dev libopenmpi-dev openmpi-bin slurm-wlm gnuplot-nox python3 python3-h5py libprotobuf-c-dev
      protobuf-c-compiler)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "make deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "make deps: need root to install: ${missing[*]} (run 'sudo make deps' or install them yourself)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
