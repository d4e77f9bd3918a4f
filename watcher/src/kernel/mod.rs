//! The kernel side: privileges, loading the eBPF object, attaching each hook,
//! and the BTF offsets handed to the programs.
pub mod btf;
pub mod loader;
pub mod privileges;
pub mod tracepoint_format;
