//! The `.fnet` front end: grammar, syntax tree, parser.

pub mod ast;
pub mod parser;
pub mod syntax_errors;

pub use parser::parse_program;
