//! The reference interpreter behind the [`Backend`] seam. Preparing keeps the graph
//! and its parameters and checks the input shapes; a run is `runtime::run`. It
//! computes in f32 or f64 and runs training mode, where the running statistics it
//! updates replace the stored ones, so `read_param` sees them.

use super::{
    check_inputs, check_param, no_param_or_buffer, Backend, BackendKind, Capabilities, Prepared,
};
use crate::cost::CostTableId;
use crate::ir::Graph;
use crate::runtime::bind::bind_inputs;
use crate::runtime::{run, Mode, ParamStore, RunError, RunOptions};
use crate::tensor::{Scalar, Tensor};
use rustfft::FftNum;

/// The reference interpreter, on this machine's CPU (rayon's thread pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

impl Backend for ReferenceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Reference
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            f64: true,
            device_params: false,
            training: true,
        }
    }

    fn device(&self) -> String {
        format!(
            "reference interpreter ({} threads)",
            rayon::current_num_threads()
        )
    }

    fn cost_table(&self) -> CostTableId {
        CostTableId::Reference
    }

    fn prepare(
        &self,
        graph: Graph,
        params: ParamStore<f32>,
        input_shapes: &[Vec<usize>],
    ) -> Result<Box<dyn Prepared<f32>>, RunError> {
        Ok(Box::new(ReferencePrepared::new(
            graph,
            params,
            input_shapes,
        )?))
    }

    fn prepare_f64(
        &self,
        graph: Graph,
        params: ParamStore<f64>,
        input_shapes: &[Vec<usize>],
    ) -> Result<Box<dyn Prepared<f64>>, RunError> {
        Ok(Box::new(ReferencePrepared::new(
            graph,
            params,
            input_shapes,
        )?))
    }
}

/// A graph and its parameters, ready for `runtime::run`.
pub struct ReferencePrepared<T> {
    graph: Graph,
    params: ParamStore<T>,
    options: RunOptions,
    input_shapes: Vec<Vec<usize>>,
    inputs: Vec<Tensor<T>>,
    outputs: Vec<Tensor<T>>,
}

impl<T: Scalar + FftNum> ReferencePrepared<T> {
    /// Checks that `input_shapes` fit the graph's inputs.
    pub fn new(
        graph: Graph,
        params: ParamStore<T>,
        input_shapes: &[Vec<usize>],
    ) -> Result<ReferencePrepared<T>, RunError> {
        let shapes: Vec<&[usize]> = input_shapes.iter().map(Vec::as_slice).collect();
        bind_inputs(&graph, &shapes)?;
        Ok(ReferencePrepared {
            graph,
            params,
            options: RunOptions::default(),
            input_shapes: input_shapes.to_vec(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        })
    }

    /// Runs on `inputs` without keeping them: a forward copies nothing.
    fn run_on(&mut self, inputs: &[Tensor<T>]) -> Result<Vec<Tensor<T>>, RunError> {
        let result = run(&self.graph, &self.params, inputs, &self.options)?;
        if self.options.mode == Mode::Train {
            self.params.extend(result.updated_buffers);
        }
        Ok(result.outputs)
    }
}

impl<T: Scalar + FftNum> Prepared<T> for ReferencePrepared<T> {
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.input_shapes
    }

    fn write_inputs(&mut self, inputs: &[Tensor<T>]) -> Result<(), RunError> {
        check_inputs(&self.input_shapes, inputs)?;
        self.inputs = inputs.to_vec();
        Ok(())
    }

    fn run(&mut self) -> Result<(), RunError> {
        if self.inputs.is_empty() && !self.input_shapes.is_empty() {
            return Err(
                RunError::new("run before any input was written").hint("call write_inputs first")
            );
        }
        let inputs = std::mem::take(&mut self.inputs);
        let result = self.run_on(&inputs);
        self.inputs = inputs;
        self.outputs = result?;
        Ok(())
    }

    fn read_outputs(&self) -> Result<Vec<Tensor<T>>, RunError> {
        Ok(self.outputs.clone())
    }

    fn forward(&mut self, inputs: &[Tensor<T>]) -> Result<Vec<Tensor<T>>, RunError> {
        check_inputs(&self.input_shapes, inputs)?;
        self.run_on(inputs)
    }

    fn set_mode(&mut self, mode: Mode) -> Result<(), RunError> {
        self.options.mode = mode;
        Ok(())
    }

    fn set_seed(&mut self, seed: u64) -> Result<(), RunError> {
        self.options.seed = seed;
        Ok(())
    }

    fn write_param(&mut self, name: &str, value: &Tensor<T>) -> Result<(), RunError> {
        check_param(name, self.params.get(name).map(|t| &t.shape), value)?;
        self.params.insert(name.to_string(), value.clone());
        Ok(())
    }

    fn read_param(&self, name: &str) -> Result<Tensor<T>, RunError> {
        self.params
            .get(name)
            .cloned()
            .ok_or_else(|| no_param_or_buffer(name))
    }
}
