#!/usr/bin/env bash
# Installs what fnet needs on a fresh Debian/Ubuntu machine that has a Rust toolchain,
# then builds the compiler. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# System packages: a C toolchain for crates with build scripts, and pkg-config; the
# OpenCL ICD loader (a default build links libOpenCL.so.1; one with
# `--no-default-features` does not, and runs the JIT and reference backends only), its
# headers, clinfo, and PoCL, the CPU OpenCL driver the OpenCL backend runs on; Open
# MPI and libclang (the `mpi` crate's bindgen) for data-parallel training
# (docs/distributed.md), which the build below and CI turn on with `--features mpi`.
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# Python 3 with NumPy: the experiment scripts' tables and plots (tests/experiments_smoke.rs).
python3 -c 'import numpy' >/dev/null 2>&1 || need+=(python3 python3-numpy)
for pkg in ocl-icd-opencl-dev opencl-headers clinfo pocl-opencl-icd \
    libopenmpi-dev openmpi-bin libclang-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get update -q
    $sudo_cmd apt-get install -y -q --no-install-recommends "${need[@]}"
fi

cargo build --locked --release --features mpi --bin fnetc
echo "setup: built target/release/fnetc (with MPI: mpirun -np N target/release/fnetc train ...)"
