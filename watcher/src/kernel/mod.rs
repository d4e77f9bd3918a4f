//! The kernel side: privileges, loading the eBPF object, attaching each hook,
//! the BTF offsets handed to the programs, reading the ring buffer, and the
//! programs' error counters.
pub mod btf;
pub mod counters;
pub mod hooks;
pub mod loader;
pub mod privileges;
pub mod ring;
pub mod seed;
pub mod tracepoint_format;
