//! Ring-buffer records from the kernel, decoded into typed values.
pub mod decode;
