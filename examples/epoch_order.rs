//! Writes the order in which `fnetc train` visits the training split, one row per
//! epoch, as an `.npy` of u32 `[epochs, n]`, so a PyTorch control
//! (`tools/experiments/*.py --order FILE`) sees the same batches in the same order.
//!
//!     cargo run --release --example epoch_order -- SEED EPOCHS N OUT.npy
//!
//! It calls `fnet::train::data::epoch_order`, the trainer's own function, so the
//! order cannot drift from the trainer's.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: epoch_order SEED EPOCHS N OUT.npy";
    if args.len() != 4 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let num = |i: usize, what: &str| -> u64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!(
                "epoch_order: {what} `{}` is not a non-negative integer; {usage}",
                args[i]
            );
            std::process::exit(2)
        })
    };
    let (seed, epochs, n) = (num(0, "SEED"), num(1, "EPOCHS"), num(2, "N") as usize);
    let mut body = Vec::with_capacity(epochs as usize * n * 4);
    for e in 0..epochs {
        for i in fnet::train::data::epoch_order(seed, e, n) {
            body.extend((i as u32).to_le_bytes());
        }
    }
    let mut header =
        format!("{{'descr': '<u4', 'fortran_order': False, 'shape': ({epochs}, {n}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::new();
    out.extend(b"\x93NUMPY\x01\x00");
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(body);
    let path = &args[3];
    let tmp = format!("{path}.tmp");
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&out))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        eprintln!("epoch_order: cannot write `{path}`: {e}");
        std::process::exit(1);
    }
}
