//! One file per kernel subject.
mod accept;
mod bind;
mod bind_listen;
mod enforce;
mod passive;
mod process;
mod sock_release;
mod syscall_args;
mod tcp_state;
