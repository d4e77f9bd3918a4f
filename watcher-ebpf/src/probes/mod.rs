//! One file per kernel subject.
mod bind;
mod sock_release;
mod tcp_state;
