//! The vocabulary every later stage shares: names of events, and the
//! escaping that keeps what a process chooses from forging a line.
pub mod escape;
pub mod event_name;
pub mod fast_map;
pub mod holder;
pub mod socket;
pub mod text;
