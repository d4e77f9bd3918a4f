//! One file per kernel subject, named for the hook it uses:
//!
//! | file | hook | reports |
//! | --- | --- | --- |
//! | `cgroup_post_bind.rs` | `cgroup/post_bind4`, `cgroup/post_bind6` | every successful inet bind, with the port the kernel chose |
//! | `cgroup_sock_release.rs` | `cgroup/sock_release` | the close of a bound UDP socket |
//! | `cgroup_bind_enforce.rs` | `cgroup/bind4`, `cgroup/bind6` | binds refused by enforcement (opt-in) |
//! | `lsm_enforce.rs` | BPF LSM `socket_listen`, `socket_create` | TCP and UNIX listens, raw and packet sockets refused by enforcement (opt-in; where the kernel has BPF LSM) |
//! | `tcp_state.rs` | raw tracepoint `inet_sock_set_state`, or the tracepoint `sock/inet_sock_set_state` | TCP listeners up and down |
//! | `syscall_bind_listen.rs` | tracepoints `syscalls/sys_{enter,exit}_{bind,listen}`, `sys_enter_close` | failed binds and listens, UNIX listeners and named UNIX datagram sockets, the fd and backlog of the others |
//! | `syscall_passive.rs` | tracepoints `syscalls/sys_{enter,exit}_{socket,setsockopt}` | raw and packet sockets, attached filters, listener options |
//! | `syscall_accept.rs` | tracepoints `syscalls/sys_{enter,exit}_accept(4)` | accepted connections (opt-in) |
//! | `fentry_sockets.rs` | fentry/fexit `__sys_bind`, `__sys_listen`, `close_fd`, `__sys_socket`, `__sys_setsockopt`, `__sys_accept4` | the same facts as the three `syscall_*` files above, where tracing programs load (the loader's first choice) |
//! | `syscall_args.rs` | — | the per-thread arguments the syscall enter hooks keep for their exits |
//! | `process.rs` | tracepoints `sched/sched_process_{fork,exec,exit}`, `syscalls/sys_enter_execve(at)` | the process table |
mod cgroup_bind_enforce;
mod cgroup_post_bind;
mod cgroup_sock_release;
mod fentry_sockets;
mod lsm_enforce;
mod process;
mod syscall_accept;
mod syscall_args;
mod syscall_bind_listen;
mod syscall_passive;
mod tcp_state;

/// What a cgroup socket program returns to let the call go on. watcher's
/// cgroup programs always allow, except enforcement's refusal.
pub const ALLOW: i32 = 1;
