pub mod init;
pub mod reference;
pub mod tensor;
