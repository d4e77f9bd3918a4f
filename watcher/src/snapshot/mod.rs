//! What already waits when watching begins: sock_diag, /proc/net, and the
//! fd tables that say who holds each socket.
pub mod holders;
pub mod sock_diag;
