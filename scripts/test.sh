#!/usr/bin/env bash
# The test suite, as CI runs it (README: `bash scripts/setup.sh && bash scripts/test.sh`):
#  1. `cargo test --features mpi`: the default features (OpenCL on PoCL, the JIT with
#     the best micro-kernel ISA this CPU has) and data-parallel training over MPI
#     (scripts/setup.sh installs Open MPI);
#  2. the JIT's tests again under each narrower micro-kernel path this CPU can run,
#     forced with FNET_JIT_ISA (AVX2+FMA, portable), so every path is tested;
#  3. fnetc built without the `opencl` feature: it starts without the OpenCL loader
#     and runs on the JIT (tests/no_opencl.rs).
# Extra arguments go to the first `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --features mpi "$@"

# The JIT test files (built with the same features, so nothing is rebuilt);
# jit_kernels loops over the ISAs itself.
jit_tests=()
for f in tests/jit*.rs; do
    name=$(basename "$f" .rs)
    [ "$name" = jit_kernels ] || jit_tests+=(--test "$name")
done
has() { grep -qw "$1" /proc/cpuinfo 2>/dev/null; }
narrower=()
if has avx512f; then
    has avx2 && has fma && narrower+=(avx2)
    narrower+=(portable)
elif has avx2 && has fma; then
    narrower+=(portable)
fi
for isa in "${narrower[@]}"; do
    echo "test.sh: the JIT tests with FNET_JIT_ISA=$isa"
    FNET_JIT_ISA=$isa cargo test --locked --features mpi "${jit_tests[@]}"
done

echo "test.sh: fnetc without the opencl feature"
cargo test --locked --no-default-features --test no_opencl
