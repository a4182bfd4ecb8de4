//! The geometry of a 2-D convolution and its optional fused epilogue, shared by the
//! im2col and Winograd kernels.
//!
//! Layouts are NCHW: input `[n, ci, h, w]`, weight `[co, ci/groups, kh, kw]`, output
//! `[n, co, ho, wo]`, all contiguous; semantics are PyTorch's cross-correlation with
//! zero padding.

use std::fmt;

/// A 2-D convolution's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub pad: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

/// Why a convolution cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConvError {
    /// The geometry is inconsistent (zero stride, groups not dividing, an empty output).
    Geometry(String),
    /// A buffer has the wrong length.
    Buffer {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Winograd was asked for a conv it does not cover.
    NotWinograd(String),
    /// The sliding-window direct conv was asked for a conv it does not cover.
    NotDirect(String),
}

impl fmt::Display for ConvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvError::Geometry(why) => write!(f, "conv2d: {why}"),
            ConvError::Buffer {
                what,
                expected,
                got,
            } => write!(
                f,
                "conv2d: the {what} holds {got} floats, expected {expected} \
                 (hint: buffers are contiguous NCHW / [co, ci/groups, kh, kw])"
            ),
            ConvError::NotWinograd(why) => write!(
                f,
                "conv2d: Winograd covers 3×3, stride 1, dilation 1, groups 1 only, but {why} \
                 (hint: use conv2d_im2col for this conv)"
            ),
            ConvError::NotDirect(why) => write!(
                f,
                "conv2d: the sliding-window direct conv covers stride 1 only, but {why} \
                 (hint: use conv2d_im2col for this conv)"
            ),
        }
    }
}

impl std::error::Error for ConvError {}

impl Conv2d {
    /// A `k × k` conv with stride 1, the given padding, dilation 1 and one group.
    #[allow(clippy::too_many_arguments)]
    pub fn simple(
        n: usize,
        ci: usize,
        h: usize,
        w: usize,
        co: usize,
        k: usize,
        pad: usize,
    ) -> Conv2d {
        Conv2d {
            n,
            ci,
            h,
            w,
            co,
            kh: k,
            kw: k,
            stride: (1, 1),
            pad: (pad, pad),
            dilation: (1, 1),
            groups: 1,
        }
    }

    /// Output height and width, or why there is none.
    pub fn out_hw(&self) -> Result<(usize, usize), ConvError> {
        let dim = |size: usize, k: usize, s: usize, p: usize, d: usize, axis: &str| {
            if s == 0 || d == 0 || k == 0 {
                return Err(ConvError::Geometry(format!(
                    "{axis}: kernel {k}, stride {s} and dilation {d} must be positive"
                )));
            }
            let span = d * (k - 1) + 1;
            let padded = size + 2 * p;
            if padded < span {
                return Err(ConvError::Geometry(format!(
                    "{axis}: the dilated kernel spans {span} but the padded input is {padded}"
                )));
            }
            Ok((padded - span) / s + 1)
        };
        let ho = dim(
            self.h,
            self.kh,
            self.stride.0,
            self.pad.0,
            self.dilation.0,
            "height",
        )?;
        let wo = dim(
            self.w,
            self.kw,
            self.stride.1,
            self.pad.1,
            self.dilation.1,
            "width",
        )?;
        Ok((ho, wo))
    }

    /// Checks the geometry and the buffer lengths; returns `(ho, wo)`.
    pub fn check(
        &self,
        input: usize,
        weight: usize,
        out: usize,
        epi: &Epilogue,
    ) -> Result<(usize, usize), ConvError> {
        let g = self.groups;
        if g == 0 || !self.ci.is_multiple_of(g) || !self.co.is_multiple_of(g) {
            return Err(ConvError::Geometry(format!(
                "{g} groups must divide both {} input and {} output channels",
                self.ci, self.co
            )));
        }
        let (ho, wo) = self.out_hw()?;
        let need = |what, expected, got| {
            if expected == got {
                Ok(())
            } else {
                Err(ConvError::Buffer {
                    what,
                    expected,
                    got,
                })
            }
        };
        need("input", self.n * self.ci * self.h * self.w, input)?;
        need(
            "weight",
            self.co * (self.ci / g) * self.kh * self.kw,
            weight,
        )?;
        let out_len = self.n * self.co * ho * wo;
        need("output", out_len, out)?;
        if let Some(b) = epi.bias {
            need("bias", self.co, b.len())?;
        }
        if let Some(r) = epi.residual {
            need("residual", out_len, r.len())?;
        }
        Ok((ho, wo))
    }

    /// Multiply-adds of the direct algorithm (`2×` this is the flop count).
    pub fn macs(&self) -> usize {
        let (ho, wo) = self.out_hw().unwrap_or((0, 0));
        self.n * self.co * (self.ci / self.groups.max(1)) * self.kh * self.kw * ho * wo
    }
}

/// What happens to each output after the sum: `relu(sum + bias[co] + residual)`, each
/// part optional. Fused so the output is written once, while it is in cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// One value per output channel.
    pub bias: Option<&'a [f32]>,
    /// A tensor shaped like the output, added element by element (a ResNet skip).
    pub residual: Option<&'a [f32]>,
    /// Clamp at zero last.
    pub relu: bool,
}

impl Epilogue<'_> {
    /// Whether there is nothing to do.
    pub fn is_identity(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && !self.relu
    }

    /// Applies the epilogue to `out`, the `hw` outputs of channel `co` whose first
    /// element sits at `offset` in the whole output (where the residual is read).
    #[inline]
    pub fn apply_channel(&self, out: &mut [f32], co: usize, offset: usize) {
        let b = self.bias.map_or(0.0, |b| b[co]);
        match self.residual {
            Some(r) => {
                let r = &r[offset..offset + out.len()];
                out.iter_mut()
                    .zip(r)
                    .for_each(|(v, r)| *v = self.clamp(*v + b + r));
            }
            None => out.iter_mut().for_each(|v| *v = self.clamp(*v + b)),
        }
    }

    /// Writes `dst = epilogue(src)` for outputs of channel `co` from `offset` on, in one
    /// pass (what [`Epilogue::apply_channel`] does after a copy). Always inlined, so
    /// that it runs in the caller's vector width (the direct conv's AVX-512 tiles).
    #[inline(always)]
    pub fn store_channel(&self, dst: &mut [f32], src: &[f32], co: usize, offset: usize) {
        assert_eq!(dst.len(), src.len(), "store_channel: lengths differ");
        let b = self.bias.map_or(0.0, |b| b[co]);
        match self.residual {
            Some(r) => {
                let r = &r[offset..offset + dst.len()];
                for ((d, s), r) in dst.iter_mut().zip(src).zip(r) {
                    *d = self.clamp(s + b + r);
                }
            }
            None => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, s)| *d = self.clamp(s + b)),
        }
    }

    /// The last step: ReLU's clamp at zero, when there is one.
    #[inline(always)]
    fn clamp(&self, v: f32) -> f32 {
        if self.relu {
            v.max(0.0)
        } else {
            v
        }
    }
}
