//! One file per kernel subject.
mod bind;
mod process;
mod sock_release;
mod tcp_state;
