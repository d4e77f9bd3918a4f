//! watcher: every socket on the host that starts waiting for others,
//! reported the moment it appears, with the process behind it.
//!
//! The modules follow the data, each importing only from those listed
//! before it (a unit test, `import_order`, checks this):
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`model`] | the shared vocabulary: event names, escaping |
//! | [`config`] | the daemon's TOML configuration, as data |
//! | [`kernel`] | privileges, loading and attaching the eBPF programs, BTF |
//! | [`record`] | ring-buffer records decoded into typed values |
//! | [`host`] | /proc, cgroups, users, services |
//! | [`enrich`] | process table, socket options, UNIX listeners kept beside the stream |
//! | [`snapshot`] | the sockets already there (sock_diag, /proc/net, fd tables) |
//! | [`state`] | the listener table and its lifecycle |
//! | [`policy`] | allowlist, filters, enforcement |
//! | [`output`] | the sinks, one file per format |
//! | [`cli`] | command-line flags |
//! | [`commands`] | watch, list, daemon, baseline: glue only |
pub mod cli;
pub mod commands;
pub mod config;
pub mod enrich;
pub mod host;
pub mod kernel;
pub mod model;
pub mod output;
pub mod policy;
pub mod record;
pub mod snapshot;
pub mod state;
