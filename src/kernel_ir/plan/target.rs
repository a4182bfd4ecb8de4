//! The device a plan is lowered for: vector width and tiling of the kernels.

use crate::kernel_ir::native::NativeConvs;

/// Device-dependent code generation choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Lanes of the float vectors kernels use.
    pub vector: u8,
    /// Output channels per work-item in conv kernels.
    pub tile_co: usize,
    /// Conv weights as scalar loads splatted to the vector (on x86 a broadcast from
    /// memory, which runs on a load port) instead of one vector load whose lanes are
    /// splatted (a shuffle per FMA). CPUs take the former: 1.5× on PoCL. GPUs keep
    /// the vector load, the form measured on the H100.
    pub broadcast_weights: bool,
    /// Which convs may run as native steps (`kernel_ir::native`): only a backend with
    /// the routines (the JIT) allows them; OpenCL's targets are `Off`.
    pub native: NativeConvs,
    /// Not a device choice but a lowering one: training plans combine every batch
    /// norm's batch statistics and backward sums over the data-parallel ranks
    /// (SyncBatchNorm, `sync_bn: true`) in `NativeOp::SyncStats` host steps, which
    /// every executor runs. Off everywhere but in a prepared plan the trainer asks for
    /// it (`Prepared::set_sync_stats`), so no other plan holds those steps.
    pub sync_batch_stats: bool,
}

impl Target {
    /// CPUs with 256-bit vectors (PoCL on AVX2): 8 pixels × 8 channels per work-item,
    /// eight `f32x8` accumulators to cover the FMA latency (8 × 4 ran ResNet-20 at
    /// batch 64 1.4× slower on PoCL, docs/performance.md).
    pub fn cpu() -> Target {
        Target {
            vector: 8,
            tile_co: 8,
            broadcast_weights: true,
            native: NativeConvs::Off,
            sync_batch_stats: false,
        }
    }

    /// CPUs with 512-bit vectors (PoCL on AVX-512): 16 pixels × 8 channels, eight
    /// `f32x16` accumulators. On the 2-core Skylake it runs ResNet-20 at batch 64 in
    /// 26 ms against 34 ms with 8 × 8 (docs/performance.md).
    pub fn cpu_wide() -> Target {
        Target {
            vector: 16,
            tile_co: 8,
            broadcast_weights: true,
            native: NativeConvs::Off,
            sync_batch_stats: false,
        }
    }

    /// GPUs: every work-item is one SIMT lane with few registers, so smaller register
    /// tiles (4 pixels × 2 channels) and four times as many work-items.
    pub fn gpu() -> Target {
        Target {
            vector: 4,
            tile_co: 2,
            broadcast_weights: false,
            native: NativeConvs::Off,
            sync_batch_stats: false,
        }
    }

    /// The register tile of a conv with output rows `ow` wide: the vector is halved
    /// (down to 4 lanes) while that wastes fewer lanes on the row's last tile, so a
    /// 16-lane target runs ResNet-20's 8-wide last stage with 8 lanes, not half-empty
    /// 16-lane vectors.
    pub fn conv_tile(&self, ow: usize) -> crate::kernel_ir::conv::ConvTile {
        let padded = |v: usize| ow.div_ceil(v) * v;
        let mut v = self.vector as usize;
        while v > 4 && padded(v / 2) < padded(v) {
            v /= 2;
        }
        crate::kernel_ir::conv::ConvTile {
            vector: v as u8,
            tile_co: self.tile_co,
            broadcast_weights: self.broadcast_weights,
        }
    }
}
