//! Running fnetc under `mpirun -np 2` in the tests (the `mpi` feature), and the small
//! ResNet the data-parallel and SyncBatchNorm tests train.

use std::process::{Command, Output};

/// The fnetc binary of this build.
pub const FNETC: &str = env!("CARGO_BIN_EXE_fnetc");

/// Whether to skip an MPI test: fnetc was built without the `mpi` feature (the reason
/// is printed).
pub fn skip() -> bool {
    if cfg!(feature = "mpi") {
        return false;
    }
    println!("skipped: fnetc was built without the `mpi` feature (cargo test --features mpi)");
    true
}

/// `mpirun -np 2` of fnetc with `args`, one thread per rank, on shared memory.
pub fn mpirun(args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", "2", "--oversubscribe", "--bind-to", "none"])
        .args(["-x", "RAYON_NUM_THREADS=1", FNETC])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Shared memory and loopback only: no network probing on CI machines.
        .env("OMPI_MCA_btl", "self,vader")
        // Containers often forbid the cross-memory attach vader copies with.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("RAYON_NUM_THREADS", "1");
    c
}

/// `o`, after asserting it succeeded (its output in the message otherwise).
pub fn ok(what: &str, o: Output) -> Output {
    assert!(
        o.status.success(),
        "{what}: {}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A ResNet in miniature on 1×`side`×`side` inputs: a stem conv-BN-ReLU, a basic block
/// and a downsampling one (option-A shortcut), global pooling, a linear head: five
/// batch norms.
pub fn tiny_resnet(side: usize) -> String {
    format!(
        r#"
model tiny_resnet {{
  input x: f32[B, 1, {side}, {side}]
  seed 3

  def conv(c, stride = 1) = conv2d(c, 3, stride: stride, padding: 1, bias: false)

  block basic(c: int, stride: int = 1) (h) {{
    y = h |> conv(c, stride) |> batchnorm |> relu |> conv(c) |> batchnorm
    return relu(y + shortcut(h, c, stride: stride))
  }}

  h = x |> conv(4) |> batchnorm |> relu
  h = h |> basic(4) |> basic(8, stride: 2)
  return h |> global_avg_pool |> linear(3)
}}
"#
    )
}
