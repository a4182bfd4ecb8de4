//! Which instruction set the micro-kernels run with, picked at run time.
//!
//! fnet is built for the baseline x86-64 target, so AVX2 and AVX-512 code lives in
//! `#[target_feature]` functions that may only be called on a CPU that has those
//! features. [`Isa`] is the proof: a value can only be made by checking the CPU
//! ([`Isa::best`], [`Isa::select`], [`Isa::from_env`]), so every kernel that takes one
//! may call the matching `#[target_feature]` code soundly. Forcing an ISA the CPU lacks
//! is an [`IsaError`], never undefined behaviour.

use std::fmt;

/// The environment variable that forces a micro-kernel path: `avx512`, `avx2` or
/// `portable`.
pub const ISA_ENV: &str = "FNET_JIT_ISA";

/// An instruction-set family the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IsaKind {
    /// AVX-512F (16 f32 lanes, 32 vector registers).
    Avx512,
    /// AVX2 with FMA (8 f32 lanes, 16 vector registers).
    Avx2,
    /// Plain Rust the compiler vectorises for the build target; runs everywhere.
    Portable,
}

impl IsaKind {
    /// All kinds, best first.
    pub const ALL: [IsaKind; 3] = [IsaKind::Avx512, IsaKind::Avx2, IsaKind::Portable];

    /// The name `FNET_JIT_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            IsaKind::Avx512 => "avx512",
            IsaKind::Avx2 => "avx2",
            IsaKind::Portable => "portable",
        }
    }

    /// Parses a name as `FNET_JIT_ISA` takes it (case-insensitive).
    pub fn parse(name: &str) -> Option<IsaKind> {
        let name = name.trim().to_ascii_lowercase();
        IsaKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this CPU can run the kind's code.
    pub fn supported(self) -> bool {
        match self {
            IsaKind::Portable => true,
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

impl fmt::Display for IsaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A checked instruction set: holding one means this CPU supports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Isa(IsaKind);

/// Why an ISA could not be selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// `FNET_JIT_ISA` names no ISA.
    Unknown { value: String },
    /// The ISA exists but this CPU lacks it.
    Unsupported { kind: IsaKind },
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let have: Vec<&str> = Isa::available().iter().map(|i| i.kind().name()).collect();
        match self {
            IsaError::Unknown { value } => write!(
                f,
                "{ISA_ENV}={value:?} names no micro-kernel ISA; expected one of avx512, avx2, \
                 portable (hint: unset {ISA_ENV} to pick the best one this CPU has: {})",
                have[0]
            ),
            IsaError::Unsupported { kind } => write!(
                f,
                "{ISA_ENV} forces the {kind} micro-kernels, but this CPU does not support \
                 them (hint: this CPU supports {})",
                have.join(", ")
            ),
        }
    }
}

impl std::error::Error for IsaError {}

impl Isa {
    /// The best ISA this CPU supports.
    pub fn best() -> Isa {
        let kind = IsaKind::ALL.into_iter().find(|k| k.supported());
        Isa(kind.unwrap_or(IsaKind::Portable))
    }

    /// The portable path, always available.
    pub fn portable() -> Isa {
        Isa(IsaKind::Portable)
    }

    /// `kind` if this CPU supports it.
    pub fn select(kind: IsaKind) -> Result<Isa, IsaError> {
        if kind.supported() {
            Ok(Isa(kind))
        } else {
            Err(IsaError::Unsupported { kind })
        }
    }

    /// The ISA `FNET_JIT_ISA` forces, or the best one when it is unset or empty.
    pub fn from_env() -> Result<Isa, IsaError> {
        match std::env::var(ISA_ENV) {
            Ok(value) if !value.trim().is_empty() => Isa::from_name(&value),
            _ => Ok(Isa::best()),
        }
    }

    /// Parses and checks a name as `FNET_JIT_ISA` takes it.
    pub fn from_name(value: &str) -> Result<Isa, IsaError> {
        let kind = IsaKind::parse(value).ok_or_else(|| IsaError::Unknown {
            value: value.to_string(),
        })?;
        Isa::select(kind)
    }

    /// Every ISA this CPU supports, best first (always ends with portable).
    pub fn available() -> Vec<Isa> {
        IsaKind::ALL
            .into_iter()
            .filter(|k| k.supported())
            .map(Isa)
            .collect()
    }

    /// Which family this is.
    pub fn kind(self) -> IsaKind {
        self.0
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
