pub mod init;
pub mod io;
pub mod reference;
pub mod tensor;
