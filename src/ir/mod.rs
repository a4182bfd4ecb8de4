//! The typed graph IR.

pub mod constant;
pub mod conv_cost;
pub mod flex_kernel;
pub mod fold_ops;
pub mod graph;
pub mod op;
pub mod print;
pub mod rewrite;
pub mod shape;
pub mod train_ops;
pub mod types;

pub use graph::{Graph, Node, ParamCounts};
pub use op::{Op, ParamRole};
pub use rewrite::RewriteError;
pub use types::{DType, Dim, TensorType};
