//! The `.fnet` front end: grammar, syntax tree, parser.

pub mod ast;
pub mod parser;

pub use parser::parse_program;
