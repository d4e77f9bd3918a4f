//! Sinks: every format an event can be written as.
pub mod daemon_lines;
pub mod event;
pub mod existing;
pub mod fleet;
pub mod format;
pub mod json_file;
pub mod metrics;
pub mod sink;
pub mod stdout_closed;
pub mod syslog;
