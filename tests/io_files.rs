//! File readers against files written by the real tools (numpy, safetensors
//! via PyTorch), from `tests/fixtures/golden/`.

use std::path::PathBuf;

use fnet::io::npy::{read_npy, read_npy_any, write_npy, NpyArray};
use fnet::io::weights::read_weights;
use fnet::io::IoErrorKind;
use fnet::tensor::Tensor;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name)
}

#[test]
fn reads_numpy_written_arrays() {
    let a = read_npy::<f32>(&golden("numpy_f32.npy")).unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(a.data, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);

    let b = read_npy_any(&golden("numpy_f64_v2.npy")).unwrap();
    let want = Tensor::from_vec(vec![5], vec![-1.0, -0.5, 0.0, 0.5, 1.0]).unwrap();
    assert_eq!(b, NpyArray::F64(want));

    let s = read_npy::<f64>(&golden("numpy_scalar_f64.npy")).unwrap();
    assert_eq!((s.shape.len(), s.data[0]), (0, 2.5));

    let e = read_npy::<f64>(&golden("numpy_f32.npy")).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::WrongDtype);
}

#[test]
fn numpy_header_layout_matches_ours() {
    // Re-writing numpy's array gives numpy's bytes back.
    let a = read_npy::<f32>(&golden("numpy_f32.npy")).unwrap();
    let p = std::env::temp_dir().join(format!("fnet-io-files-{}.npy", std::process::id()));
    write_npy(&p, &a).unwrap();
    let ours = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    assert_eq!(ours, std::fs::read(golden("numpy_f32.npy")).unwrap());
}

#[test]
fn reads_torch_written_safetensors_in_sorted_order() {
    let w = read_weights::<f32>(&golden("basis_block.safetensors")).unwrap();
    let names = w.names();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.contains(&"bn.weight"));
    let e = read_weights::<f32>(&golden("magnet2d_f64.safetensors")).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::WrongDtype);
    assert!(e.to_string().contains("magnet2d_f64.safetensors"));
}
