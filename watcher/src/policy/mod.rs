//! Judging sockets: the allowlist, user filters, and enforcement.
pub mod allowlist;
pub mod enforce;
pub mod filter;
pub mod kill;
