//! Sinks: every format an event can be written as.
pub mod daemon_lines;
pub mod ecs;
pub mod event;
pub mod existing;
pub mod facts;
pub mod fleet;
pub mod format;
pub mod json_file;
pub mod json_line;
pub mod metrics;
pub mod ocsf;
pub mod siem;
pub mod sink;
pub mod stdout_closed;
pub mod syslog;
