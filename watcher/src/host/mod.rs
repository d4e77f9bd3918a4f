//! What the host says outside the ring buffer: /proc, cgroups, users, services.
pub mod cgroups;
pub mod hostname;
pub mod pid_file;
pub mod process;
pub mod services;
