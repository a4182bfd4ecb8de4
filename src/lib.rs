pub mod reference;
pub mod tensor;
