//! Lowering a grouped or depthwise conv (with its fused batch norm, residual add and
//! ReLU) to the bounds-checked kernel of `kernel_ir::grouped`.

use super::fusion::Chain;
use super::{BufId, Builder, Val};
use crate::kernel_ir::conv::ConvSpec;
use crate::kernel_ir::grouped::grouped_conv_kernel;
use crate::kernel_ir::magnet::scale_rows;
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn grouped_conv(
        &mut self,
        chain: &Chain,
        spec: &ConvSpec,
        groups: usize,
        x: &Val,
        weight: NodeIndex,
        (bias, bias_buf): (&[f32], Option<BufId>),
        scale: &[f32],
        layer: &str,
    ) -> Result<Val, RunError> {
        let wb = match self.values.get(&weight).cloned() {
            // Computed on the device (a parameter buffer in training, a synthesised
            // kernel): read in place, scaled by a launch only where a batch norm folds.
            Some(w) if scale.iter().all(|&s| s == 1.0) => w.buf,
            Some(w) => {
                let inner = w.shape[1..].iter().product();
                let sb = self.constant(scale.to_vec());
                let scaled = self.temp(w.shape.clone()).buf;
                let k = scale_rows("", spec.co, inner);
                self.emit("scale_rows", k, vec![w.buf, sb, scaled], layer);
                scaled
            }
            None => {
                let w = self.const_tensor(weight)?.clone();
                let taps = w.data.len() / spec.co.max(1);
                let scaled: Vec<f32> = w
                    .data
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * scale[i / taps.max(1)])
                    .collect();
                self.constant(scaled)
            }
        };
        let bb = match bias_buf {
            Some(b) => b,
            None => self.constant(bias[..spec.co].to_vec()),
        };
        let [oh, ow] = spec.out();
        let shape = if x.shape.len() == 3 {
            vec![spec.n, spec.co, ow]
        } else {
            vec![spec.n, spec.co, oh, ow]
        };
        let y = self.temp(shape);
        let mut args = vec![x.buf, wb, bb];
        if let Some(r) = chain.residual {
            args.push(self.val(r)?.buf);
        }
        args.push(y.buf);
        let k = grouped_conv_kernel("gconv", spec, groups);
        self.emit("gconv", k, args, layer);
        Ok(y)
    }
}
