//! Errors from running a model: wrong inputs, wrong weights, or a kernel refusing its
//! operands. Each names what was expected and what was found.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub struct RunError {
    pub message: String,
    pub hint: Option<String>,
}

impl RunError {
    pub fn new(message: impl Into<String>) -> RunError {
        RunError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> RunError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RunError {}

impl From<crate::tensor::ShapeError> for RunError {
    fn from(e: crate::tensor::ShapeError) -> RunError {
        RunError::new(e.to_string())
    }
}

impl From<crate::io::IoError> for RunError {
    fn from(e: crate::io::IoError) -> RunError {
        RunError::new(e.to_string())
    }
}
