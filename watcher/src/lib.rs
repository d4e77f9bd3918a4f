//! watcher: every socket on the host that starts waiting for others,
//! reported the moment it appears, with the process behind it.
//!
//! Data flows one way: `loader` attaches the kernel programs, `events`
//! reads and decodes the ring buffer, `process` names the process,
//! `filter` keeps what the user asked for, `output` prints it; `watch`
//! wires these together for the `watch` command.
pub mod baseline;
pub mod btf;
pub mod cgroups;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod enforce;
pub mod escape;
pub mod events;
pub mod filter;
pub mod fleet;
pub mod lifecycle;
pub mod list;
pub mod loader;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod privileges;
pub mod process;
pub mod process_table;
pub mod services;
pub mod sink;
pub mod snapshot;
pub mod syslog;
pub mod tracepoint_format;
pub mod socket_options;
pub mod unix_listeners;
pub mod watch;
