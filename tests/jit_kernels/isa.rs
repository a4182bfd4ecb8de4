//! ISA selection: names, forcing, and refusing what the CPU lacks.

use fnet::jit::kernels::isa::{Isa, IsaError, IsaKind};

#[test]
fn names_round_trip_and_unknown_names_are_errors() {
    for kind in IsaKind::ALL {
        assert_eq!(IsaKind::parse(kind.name()), Some(kind));
    }
    assert_eq!(IsaKind::parse(" AVX512 "), Some(IsaKind::Avx512));
    let err = Isa::from_name("sse9").unwrap_err();
    assert_eq!(
        err,
        IsaError::Unknown {
            value: "sse9".into()
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("FNET_JIT_ISA")
            && msg.contains("avx512, avx2, portable")
            && msg.contains("hint"),
        "{msg}"
    );
}

#[test]
fn select_matches_the_cpu_and_best_is_supported() {
    for kind in IsaKind::ALL {
        match Isa::select(kind) {
            Ok(isa) => assert!(kind.supported() && isa.kind() == kind),
            Err(e) => {
                assert!(!kind.supported());
                assert!(e.to_string().contains("does not support"), "{e}");
            }
        }
    }
    assert!(Isa::best().kind().supported());
    assert_eq!(Isa::available()[0], Isa::best());
    assert_eq!(Isa::select(IsaKind::Portable), Ok(Isa::portable()));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn select_agrees_with_cpuid() {
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    assert_eq!(Isa::select(IsaKind::Avx512).is_ok(), avx512);
    assert_eq!(Isa::select(IsaKind::Avx2).is_ok(), avx2);
}

/// `from_env` reads FNET_JIT_ISA; only this test sets it, in a child process so the
/// rest of the binary never sees it.
#[test]
fn env_variable_forces_and_refuses() {
    if let Ok(value) = std::env::var("FNET_JIT_ISA_CHILD") {
        let got = Isa::from_env().map(|i| i.kind().name().to_string());
        let want = if value.is_empty() {
            Ok(Isa::best().kind().name().to_string())
        } else {
            Isa::from_name(&value).map(|i| i.kind().name().to_string())
        };
        assert_eq!(got, want);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for value in ["avx512", "avx2", "portable", "bogus", ""] {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "isa::env_variable_forces_and_refuses",
                "--test-threads=1",
            ])
            .env("FNET_JIT_ISA_CHILD", value)
            .env("FNET_JIT_ISA", value)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child with FNET_JIT_ISA={value:?} failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
