//! The commands: glue from the stages above to what the user asked for.
pub mod baseline;
pub mod daemon;
pub mod doctor;
pub mod list;
pub mod watch;
