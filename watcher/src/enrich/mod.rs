//! State kept beside the stream so each record is named in full: the process
//! table, socket options set before a bind, UNIX listeners by (pid, fd).
pub mod process_table;
pub mod report;
pub mod socket_options;
pub mod unix_listeners;
