//! Records that cross the ring buffer from the kernel programs to userspace,
//! and the constants both sides agree on. Nothing else lives here.
//!
//! Every record starts with a [`RecordHeader`]; its `kind` says which record
//! follows, and each record has one fixed size. Fields are ordered by size so
//! that no layout has padding (the kernel and userspace must agree byte for
//! byte); the asserts below keep it so.
#![no_std]

/// Name of the one ring buffer every program writes to.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU counter of records that could not be reserved.
pub const LOST_MAP: &str = "LOST";
/// Name of the per-CPU array of program errors, one `u64` slot per
/// [`ProgramError`]: what a program could not do and so left out of a
/// record or dropped, counted so that it is never silent.
pub const ERRORS_MAP: &str = "ERRORS";
/// Name of the one-slot array that tells the programs how to wake the ring
/// buffer's reader (see [`RING_WAKEUP_MAP`]'s contract below).
pub const RING_WAKEUP_MAP: &str = "RING_WAKEUP";
/// Bytes in the ring buffer as the object declares it, and the loader's
/// default (`--ring-buffer-mib`); a power of two, a multiple of the page
/// size. Userspace maps the data area twice (records that wrap read on),
/// so it counts twice in the reader's RSS: 8 MiB of it at this size.
pub const EVENTS_BYTES: u32 = 4 << 20;
/// How many bound and listening UNIX sockets the kernel side remembers.
pub const UNIX_SOCKETS_MAX: u32 = 16_384;
/// How many bound UDP sockets the kernel side remembers, so that it reports
/// the close of those (and only those) without sending every socket release
/// on the host through the ring buffer.
pub const BOUND_SOCKETS_MAX: u32 = 65_536;

/// Name of the LRU map of bound UDP sockets: socket cookie → [`BoundSocket`].
/// Filled by `post_bind`, emptied by `sock_release`; userspace seeds it at
/// start with the bound UDP sockets of the snapshot, so that their closes
/// are reported too.
pub const BOUND_UDP_MAP: &str = "BOUND_UDP";
/// Name of the LRU map of named UNIX sockets: (tgid << 32 | fd) →
/// [`UnixSocket`]. Filled by bind(), emptied by close(); userspace seeds it
/// at start with each holder (pid, fd) of the snapshot's UNIX sockets.
pub const UNIX_SOCKETS_MAP: &str = "UNIX_SOCKETS";

/// Where a bound UDP socket is bound ([`BOUND_UDP_MAP`]'s value):
/// `sock_release` cannot read the local address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundSocket {
    /// IPv4 addresses use the first four bytes, in network order.
    pub addr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host byte order.
    pub port: u16,
    /// Inode of the socket's network namespace (its binder's at bind), 0
    /// if unknown: the close is often seen at its holder's exit, when the
    /// task has left its namespaces already.
    pub netns: u32,
}

const _: () = assert!(core::mem::size_of::<BoundSocket>() == 24);
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for BoundSocket {}

/// A named UNIX socket of one process ([`UNIX_SOCKETS_MAP`]'s value): the
/// address its bind() was given, from bind() to close() of that fd.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnixSocket {
    /// The `sockaddr_un` given to bind(): family, then the path (an
    /// abstract name starts with a NUL and is `addr_len - 2` bytes long).
    pub addr: [u8; SOCKADDR_BYTES],
    pub fd: i32,
    pub addr_len: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub sock_type: u32,
    /// 1 once reported (listening, or a named datagram socket): its close is then reported too.
    pub reported: u32,
}

const _: () = assert!(core::mem::size_of::<UnixSocket>() == SOCKADDR_BYTES + 16);
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for UnixSocket {}

/// Why a program could not do its whole job. Counted per CPU in
/// [`ERRORS_MAP`] at index `kind as u32`; userspace sums and reports them
/// beside the lost records.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramError {
    /// Reading the tracepoint's record or kernel memory failed (a field
    /// offset that does not fit this kernel, a pointer the walk could not
    /// follow): the record was dropped, or sent without that field.
    ReadKernel = 0,
    /// Reading the caller's memory failed (a bind() address, a filter
    /// program, an option's value): a bad pointer from the process, or
    /// memory paged out; the record was sent without those bytes or dropped.
    ReadUser = 1,
    /// A map insert failed (no room, or no memory): what it kept between
    /// two hooks is missing, so a later record lacks it (a fd, a path, a
    /// UDP socket's close).
    MapUpdate = 2,
    /// A map that must hold an entry did not (the enforcement settings):
    /// the program did nothing (for enforcement: allowed the bind).
    MapLookup = 3,
}

/// Slots of [`ERRORS_MAP`].
pub const PROGRAM_ERROR_KINDS: u32 = 4;

impl ProgramError {
    pub const ALL: [Self; PROGRAM_ERROR_KINDS as usize] =
        [Self::ReadKernel, Self::ReadUser, Self::MapUpdate, Self::MapLookup];

    /// A stable name, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ReadKernel => "read_kernel",
            Self::ReadUser => "read_user",
            Self::MapUpdate => "map_update",
            Self::MapLookup => "map_lookup",
        }
    }
}

/// [`RING_WAKEUP_MAP`]'s one `u64`: 0 (as loaded) makes every program let the
/// kernel decide when to wake the reader (it wakes it whenever the reader
/// has caught up, which under a flood is every few records). A reader that
/// bounds its own latency (watcher's `kernel::ring::RingReader`) writes
/// the number of unread bytes above which records force wake-ups; below
/// it, records skip the wake-up (`BPF_RB_NO_WAKEUP`), except the first one
/// after the reader has read everything (`BPF_RB_FORCE_WAKEUP`), so that a
/// reader asleep on the ring is always woken by the first record. Above
/// it, one record in each [`RING_WAKEUP_STEPS`]th of the threshold forces a
/// wake-up (the one whose bytes cross such a boundary of the ring's
/// positions): a reader that should be reading is woken, and the programs
/// of a reader that lags (stopped, or slower than the flood) do not pay for
/// a wake-up on every record, a self-IPI each (it made a stopped watcher's
/// binds 5× slower with a 256 MiB ring).
///
/// Its contract: never sleep on the ring without a level-triggered check
/// that it is empty (poll(), or an epoll registration made just then), and
/// while records that were reserved are not yet readable, poll on a timer.
pub const RING_WAKEUP_OFF: u64 = 0;
/// Above [`RING_WAKEUP_MAP`]'s threshold, a wake-up per this fraction of it.
pub const RING_WAKEUP_STEPS: u64 = 16;

/// The `log` target of the kernel programs' own lines (aya-log): the
/// loader attaches aya-log's reader only when `RUST_LOG` enables debug for
/// it, and the programs write nothing unless it is attached (aya-log's
/// `AYA_LOG_LEVEL` global, set by the loader, is then 0).
pub const KERNEL_LOG_TARGET: &str = "watcher::ebpf";
/// Name of the per-CPU array of when each kind of failure was last logged
/// (one slot per [`ProgramError`], then one for LOST), so that a failure
/// repeated by the thousand logs at most once a second per CPU.
pub const LOGGED_AT_MAP: &str = "LOGGED_AT";
/// Slots of [`LOGGED_AT_MAP`]: [`ProgramError`]'s, then [`LOGGED_AT_LOST`].
pub const LOGGED_AT_SLOTS: u32 = PROGRAM_ERROR_KINDS + 1;
/// The slot of [`LOGGED_AT_MAP`] for records lost to a full ring buffer.
pub const LOGGED_AT_LOST: u32 = PROGRAM_ERROR_KINDS;
/// At most one kernel log line per kind of failure, per CPU, this often.
pub const KERNEL_LOG_EVERY_NS: u64 = 1_000_000_000;

/// Global set by the loader: report only this tgid (0 = every process).
pub const FILTER_TGID_GLOBAL: &str = "FILTER_TGID";
/// Global set by the loader: [`KernelOffsets`] of the running kernel.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// Byte offsets of the kernel struct fields the programs follow, read by
/// the loader from the kernel's BTF. `valid` is 0 when they could not be
/// read; the programs then report netns 0 and accept without addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub valid: u32,
    pub task_nsproxy: u32,
    pub task_files: u32,
    pub nsproxy_net_ns: u32,
    pub net_ns_inum: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// `struct socket`'s `type` (a `short`: SOCK_STREAM, SOCK_DGRAM, …).
    pub socket_type: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_net: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `task_struct.mm` and `mm_struct.arg_start/arg_end`: argv of the new
    /// program, read at `sched_process_exec`.
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `task_struct.signal` and `signal_struct.live`: live threads of the
    /// process, 0 at `sched_process_exit` of its last thread (the kernel
    /// counts it down before the tracepoint), for kernels whose exit
    /// tracepoint has no `group_dead`.
    pub task_signal: u32,
    pub signal_live: u32,
    /// `struct sock`'s `sk_cookie`: the socket cookie, 0 until generated
    /// (a bind's post_bind hook, a sock_diag dump). 0 here: not known.
    pub sk_cookie: u32,
    /// `struct sock`'s `sk_protocol` (a whole `u16` since Linux 5.6); 0:
    /// not known, and the raw tracepoint that needs it is not attached.
    pub sk_protocol: u32,
    /// `struct inet_sock`'s `inet_sport` (network order): the bound port
    /// as the perf tracepoint reports it; still set when a listener's close
    /// is traced, when `skc_num` is already 0.
    pub inet_sport: u32,
    /// `unix_sock.addr`, `unix_address.len` and `unix_address.name`: the
    /// address a UNIX socket is bound to, as the kernel keeps it, read at
    /// bind()'s exit where the arguments come from the saved registers
    /// ([`SyscallRegisters`]): by then the caller's own buffer may say
    /// anything. 0 here: not known (the caller's buffer is read at entry).
    pub unix_addr: u32,
    pub unix_address_len: u32,
    pub unix_address_name: u32,
    /// `task_struct.nvcsw` and `nivcsw`: the task's context switches. A
    /// bind()'s exit skips its look at the socket when the post_bind hook
    /// of that very call saw an inet socket: same thread, same CPU, no
    /// switch in between (see `syscall_bind_listen`).
    pub task_nvcsw: u32,
    pub task_nivcsw: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 32 * 4);
#[cfg(feature = "user")]
// SAFETY: repr(C), u32 fields only (no padding), every bit pattern valid.
unsafe impl aya::Pod for KernelOffsets {}

/// Global set by the loader: [`TracepointOffsets`] of the running kernel.
pub const TRACEPOINT_OFFSETS_GLOBAL: &str = "TRACEPOINT_OFFSETS";

/// Byte offsets of the tracepoint fields the programs read, from each
/// tracepoint's tracefs `format` file (they differ between kernels: 6.1's
/// `sched_process_fork` has its comms inline, 6.18's as `__data_loc`).
/// 0 means the field is missing (no real field sits at 0, where
/// `common_type` is): a program then reports nothing that needs it, and
/// the loader has said so.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// sched/sched_process_fork
    pub fork_child_pid: u32,
    /// sched/sched_process_exit
    pub exit_pid: u32,
    /// Absent on older kernels (6.1): group death then comes from BTF.
    pub exit_group_dead: u32,
    /// sched/sched_process_exec (a `__data_loc` field)
    pub exec_filename: u32,
    pub exec_old_pid: u32,
    /// sock/inet_sock_set_state
    pub tcp_skaddr: u32,
    pub tcp_oldstate: u32,
    pub tcp_newstate: u32,
    pub tcp_sport: u32,
    pub tcp_family: u32,
    pub tcp_protocol: u32,
    pub tcp_saddr: u32,
    pub tcp_saddr_v6: u32,
    /// The first argument of every used `syscalls/sys_enter_*` (each next
    /// one 8 bytes further), and `ret` of every used `sys_exit_*`.
    pub syscall_args: u32,
    pub syscall_ret: u32,
}

const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 15 * 4);
#[cfg(feature = "user")]
// SAFETY: repr(C), u32 fields only (no padding), every bit pattern valid.
unsafe impl aya::Pod for TracepointOffsets {}

/// Global set by the loader: [`SyscallRegisters`] of the running kernel.
pub const SYSCALL_REGISTERS_GLOBAL: &str = "SYSCALL_REGISTERS";

/// Where a task's syscall number and first three arguments sit in the
/// kernel's `struct pt_regs` (the user registers saved at syscall entry),
/// from BTF, and the numbers of the syscalls the programs look for. With
/// them a program reads the arguments of the call it runs in (at the
/// call's exit tracepoint, or inside it: post_bind, the LISTEN state
/// change) from those registers, and no program runs at the call's entry
/// to keep them in a map: that entry program and its map insert were the
/// largest part of what watcher adds to a bind(). `valid` 0: not known on
/// this architecture or kernel; the entry tracepoints and the pending maps
/// then carry the arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallRegisters {
    pub valid: u32,
    /// The syscall's number (`orig_ax` on x86-64; `ax` holds the return
    /// value by the exit), each field of these an 8-byte register.
    pub nr: u32,
    /// The first three arguments (`di`, `si`, `dx` on x86-64).
    pub args: [u32; 3],
    /// This architecture's numbers of bind() and listen().
    pub bind_nr: u32,
    pub listen_nr: u32,
    /// Reserved, 0 (keeps the size a multiple of 8).
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<SyscallRegisters>() == 8 * 4);
#[cfg(feature = "user")]
// SAFETY: repr(C), u32 fields only (no padding), every bit pattern valid.
unsafe impl aya::Pod for SyscallRegisters {}

pub const TASK_COMM_LEN: usize = 16;
/// Bytes of the path given to execve() that an exec record keeps.
pub const FILENAME_BYTES: usize = 256;
/// Bytes of argv (its NUL-separated strings as the new program's stack
/// holds them) an exec-args record keeps.
pub const ARGV_BYTES: usize = 2048;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;

/// What a record reports. Crosses the ring buffer as a `u32`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A TCP socket entered LISTEN. [`SocketRecord`]
    Listen = 1,
    /// A bind() succeeded (TCP or UDP); the port is the one the kernel assigned. [`SocketRecord`]
    Bind = 2,
    /// A TCP listener left LISTEN, or an explicitly bound UDP socket was released. [`SocketRecord`]
    Close = 3,
    /// A process forked. [`ProcessRecord`]
    Fork = 4,
    /// A task exited. [`ProcessRecord`]
    Exit = 5,
    /// An exec succeeded: the new program's argv. [`ExecArgsRecord`]
    ExecArgs = 6,
    /// An exec succeeded. [`ExecRecord`]
    Exec = 7,
    /// A raw (SOCK_RAW) or packet (AF_PACKET) socket was created. [`PassiveRecord`]
    PassiveSocket = 8,
    /// A classic or extended BPF filter was attached to a socket. [`PassiveRecord`]
    FilterAttached = 9,
    /// A socket option that matters for listeners was set. [`SockoptRecord`]
    SockoptSet = 10,
    /// bind() failed. [`SyscallRecord`]
    BindFailed = 11,
    /// listen() failed. [`SyscallRecord`]
    ListenFailed = 12,
    /// listen() succeeded on a UNIX socket bound by this process. [`SyscallRecord`]
    UnixListen = 13,
    /// close() of the fd of a UNIX listener, or of a UNIX datagram socket
    /// bound to a name. [`SyscallRecord`]
    UnixClose = 14,
    /// accept() or accept4() returned a connection. [`AcceptRecord`]
    Accept = 15,
    /// Enforcement refused a bind(), a listen() or a socket() with EPERM. [`DeniedRecord`]
    Denied = 16,
    /// bind() of a UNIX datagram socket to a path or an abstract name
    /// succeeded (a stream or seqpacket socket is reported at listen()). [`SyscallRecord`]
    UnixBind = 17,
    /// socket() returned an fd whose options a [`EventKind::SockoptSet`]
    /// reported: they were another socket's. [`SockoptRecord`] (its fd only)
    SocketOnFd = 18,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Ok(match value {
            1 => Self::Listen,
            2 => Self::Bind,
            3 => Self::Close,
            4 => Self::Fork,
            5 => Self::Exit,
            6 => Self::ExecArgs,
            7 => Self::Exec,
            8 => Self::PassiveSocket,
            9 => Self::FilterAttached,
            10 => Self::SockoptSet,
            11 => Self::BindFailed,
            12 => Self::ListenFailed,
            13 => Self::UnixListen,
            14 => Self::UnixClose,
            15 => Self::Accept,
            16 => Self::Denied,
            17 => Self::UnixBind,
            18 => Self::SocketOnFd,
            other => return Err(other),
        })
    }
}

/// What every record starts with: who did it, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, in nanoseconds.
    pub ktime_ns: u64,
    /// `bpf_get_current_cgroup_id()` of the calling task (cgroup v2).
    pub cgroup_id: u64,
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Inode of the network namespace (as in /proc/<pid>/ns/net): the
    /// socket's where the hook has the socket, else the task's; 0 when the
    /// kernel's BTF could not be read.
    pub netns: u32,
    pub comm: [u8; TASK_COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<RecordHeader>() == 56);

/// A record that crosses the ring buffer. The programs reserve it in the
/// ring zeroed, write its header and let the hook fill the rest
/// (watcher-ebpf's `record::emit`); userspace reads it back by kind.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with a [`RecordHeader`], have no
/// padding, and every bit pattern (all zeros included) is a valid value.
pub unsafe trait Record: Copy + 'static {
    /// The header at the start of the record.
    fn header_mut(&mut self) -> &mut RecordHeader {
        // SAFETY: by the trait's contract the record starts with a header.
        unsafe { &mut *(self as *mut Self).cast::<RecordHeader>() }
    }
}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for RecordHeader {}

/// A socket event: [`EventKind::Listen`], [`EventKind::Bind`], [`EventKind::Close`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketRecord {
    pub header: RecordHeader,
    /// Identifies the socket across its events: the `struct sock` address
    /// for TCP state changes, the socket cookie for bind and UDP close.
    pub sock_id: u64,
    /// The socket cookie (`bpf_get_socket_cookie`, what sock_diag reports),
    /// or 0 when the socket has none yet (a TCP socket that was never bound
    /// explicitly nor dumped) or it could not be read.
    pub cookie: u64,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, … (0 where the hook does not say).
    pub sock_type: u32,
    /// The file descriptor of the bind()/listen() call that caused the
    /// event, or -1 when the hook did not run inside one.
    pub fd: i32,
    /// listen()'s backlog, for a listen event from listen(); else 0.
    pub backlog: u32,
    /// [`SOCKET_STOPPED`], or 0.
    pub flags: u32,
    /// IPv4 addresses use the first four bytes, in network order.
    pub addr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host byte order.
    pub port: u16,
}

const _: () = assert!(core::mem::size_of::<SocketRecord>() == 112);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for SocketRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for SocketRecord {}

/// [`EventKind::Fork`]: the header is the parent; [`EventKind::Exit`]: the
/// header is the exiting task.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessRecord {
    pub header: RecordHeader,
    /// Fork: the child's pid (a thread's tid when the clone made a thread).
    /// Exit: the exiting task's tid.
    pub pid: u32,
    /// Exit: 1 when the last thread of the process exited.
    pub group_dead: u32,
}

const _: () = assert!(core::mem::size_of::<ProcessRecord>() == 64);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for ProcessRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for ProcessRecord {}

/// [`EventKind::Exec`]: the header is the task after the exec (new comm).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: RecordHeader,
    /// The tid that called execve (differs from tgid when a thread did).
    pub old_pid: u32,
    /// Bytes of `filename` used, without the NUL.
    pub filename_len: u32,
    /// The path given to execve(), as the kernel resolved it for the binary.
    pub filename: [u8; FILENAME_BYTES],
}

const _: () = assert!(core::mem::size_of::<ExecRecord>() == 64 + FILENAME_BYTES);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for ExecRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for ExecRecord {}

/// [`EventKind::ExecArgs`]: argv of a successful exec, read at
/// `sched_process_exec` from the new program's memory (`mm->arg_start ..
/// arg_end`), just before its [`ExecRecord`]: there, a program that exits
/// a millisecond later is still named, and the read is one bounded copy
/// that every kernel's verifier passes cheaply.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecArgsRecord {
    pub header: RecordHeader,
    /// The tid that called execve, as in [`ExecRecord::old_pid`].
    pub old_pid: u32,
    /// Bytes of `args` filled.
    pub len: u32,
    /// Bytes of argv in the process (more than `len` when it was cut).
    pub full_len: u64,
    /// The arguments, each ending with a NUL (the last one may be cut).
    pub args: [u8; ARGV_BYTES],
}

const _: () = assert!(core::mem::size_of::<ExecArgsRecord>() == 72 + ARGV_BYTES);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for ExecArgsRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for ExecArgsRecord {}

pub const AF_UNIX: u16 = 1;
pub const AF_PACKET: u32 = 17;
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SOCK_RAW: u32 = 3;
pub const SOL_SOCKET: u32 = 1;
pub const SOL_IP: u32 = 0;
pub const SOL_IPV6: u32 = 41;
pub const SO_REUSEADDR: u32 = 2;
pub const SO_REUSEPORT: u32 = 15;
pub const SO_BINDTODEVICE: u32 = 25;
pub const SO_ATTACH_FILTER: u32 = 26;
pub const SO_ATTACH_BPF: u32 = 50;
pub const SO_ATTACH_REUSEPORT_CBPF: u32 = 51;
pub const SO_ATTACH_REUSEPORT_EBPF: u32 = 52;
pub const IP_FREEBIND: u32 = 15;
pub const IP_TRANSPARENT: u32 = 19;
pub const IPV6_TRANSPARENT: u32 = 75;
pub const IPV6_FREEBIND: u32 = 78;

/// Bytes of a classic BPF program a [`PassiveRecord`] keeps: 64
/// instructions of 8 bytes (a BPFDoor-style filter has about 30).
pub const FILTER_BYTES: usize = 512;
/// Bytes of a socket address a [`SyscallRecord`] keeps: enough for
/// `sockaddr_in6` and for the 108-byte path of `sockaddr_un`.
pub const SOCKADDR_BYTES: usize = 112;
/// Bytes of an option's value a [`SockoptRecord`] keeps (IFNAMSIZ).
pub const OPTVAL_BYTES: usize = 16;

/// [`EventKind::PassiveSocket`] (socket() returned `fd`) and
/// [`EventKind::FilterAttached`] (setsockopt on `fd` succeeded).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PassiveRecord {
    pub header: RecordHeader,
    pub fd: i32,
    /// socket()'s arguments; 0 for a filter (the socket was made earlier).
    pub family: u32,
    pub sock_type: u32,
    pub protocol: u32,
    /// The setsockopt option (SO_ATTACH_*), 0 for a new socket.
    pub optname: u32,
    /// Classic BPF: the program's instruction count. Extended BPF: the
    /// program's file descriptor in the calling process.
    pub filter_len: u32,
    /// The first instructions of a classic BPF program, as the caller gave them.
    pub filter: [u8; FILTER_BYTES],
}

const _: () = assert!(core::mem::size_of::<PassiveRecord>() == 80 + FILTER_BYTES);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for PassiveRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for PassiveRecord {}

/// [`EventKind::SockoptSet`]: setsockopt(fd, level, optname, value) succeeded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockoptRecord {
    pub header: RecordHeader,
    pub fd: i32,
    pub level: u32,
    pub optname: u32,
    /// Bytes of `value` the caller passed (the copy keeps at most OPTVAL_BYTES).
    pub optlen: u32,
    pub value: [u8; OPTVAL_BYTES],
}

const _: () = assert!(core::mem::size_of::<SockoptRecord>() == 88);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for SockoptRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for SockoptRecord {}

/// [`EventKind::BindFailed`], [`EventKind::ListenFailed`],
/// [`EventKind::UnixBind`], [`EventKind::UnixListen`], [`EventKind::UnixClose`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRecord {
    pub header: RecordHeader,
    pub fd: i32,
    /// The positive errno; 0 for the UNIX events.
    pub errno: u32,
    /// listen()'s backlog; 0 for bind and close.
    pub backlog: u32,
    /// Bytes of `addr` the caller passed to bind(); 0 for a failed listen.
    pub addr_len: u32,
    /// The UNIX events: the socket's type (`SOCK_STREAM`, `SOCK_DGRAM`,
    /// `SOCK_SEQPACKET`), 0 when it could not be read; 0 for the failures.
    pub sock_type: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// The socket address bind() was asked for, as the caller gave it.
    pub addr: [u8; SOCKADDR_BYTES],
}

const _: () = assert!(core::mem::size_of::<SyscallRecord>() == 80 + SOCKADDR_BYTES);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for SyscallRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for SyscallRecord {}

/// [`EventKind::Accept`]: a connection accepted on `listen_fd` as `fd`,
/// with both ends as the accepted socket has them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AcceptRecord {
    pub header: RecordHeader,
    pub listen_fd: i32,
    pub fd: i32,
    /// 1 when the caller asked for the peer's address (a non-NULL pointer).
    pub peer_requested: u32,
    /// AF_INET, AF_INET6, or 0 when the socket could not be read.
    pub family: u16,
    pub local_port: u16,
    pub peer_port: u16,
    /// Reserved, 0.
    pub reserved: [u16; 3],
    /// IPv4 addresses use the first four bytes, in network order.
    pub local_addr: [u8; 16],
    pub peer_addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<AcceptRecord>() == 56 + 12 + 12 + 32);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for AcceptRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for AcceptRecord {}

/// Bytes of `sun_path` in a `sockaddr_un`: the most a UNIX socket's name
/// can hold (an abstract name's leading NUL included).
pub const UNIX_PATH_BYTES: usize = 108;

/// [`DeniedRecord::call`]: what the caller was refused.
/// bind() of a TCP or UDP port (`cgroup/bind4`, `cgroup/bind6`).
pub const DENIED_BIND: u32 = 0;
/// listen() on a TCP or UNIX socket (BPF LSM `socket_listen`).
pub const DENIED_LISTEN: u32 = 1;
/// socket() of a raw or packet socket (BPF LSM `socket_create`).
pub const DENIED_SOCKET: u32 = 2;

/// [`EventKind::Denied`]: the call the enforcement programs refused (the
/// caller got EPERM): a bind(), a listen() or a socket().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DeniedRecord {
    pub header: RecordHeader,
    /// Inode of the caller's executable (0 when it could not be read).
    pub exe_ino: u64,
    /// Device of the caller's executable, as the kernel encodes a `dev_t`
    /// (major << 20 | minor).
    pub exe_dev: u32,
    /// bind, listen: the socket's protocol (`IPPROTO_TCP`, `IPPROTO_UDP`;
    /// 0 for UNIX). socket: its `protocol` argument (an IPPROTO_* for a raw
    /// socket, an ETH_P_* in network order for a packet socket).
    pub protocol: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`, …
    pub sock_type: u32,
    /// The [`ENFORCE_CLASSES_MAP`] slot of the port, path or kind of socket:
    /// which rules cover it (none of them allows the caller);
    /// [`ENFORCE_NO_RULE`] when no rule does.
    pub class: u32,
    /// [`DENIED_BIND`], [`DENIED_LISTEN`] or [`DENIED_SOCKET`].
    pub call: u32,
    /// IPv4 addresses use the first four bytes, in network order; zeros
    /// for UNIX, raw and packet sockets.
    pub addr: [u8; 16],
    /// `AF_INET`, `AF_INET6`, `AF_UNIX` or `AF_PACKET`.
    pub family: u16,
    /// The port asked for (bind) or bound (listen), host byte order; 0 for
    /// UNIX, raw and packet sockets.
    pub port: u16,
    /// UNIX: bytes of `path` used.
    pub path_len: u32,
    /// UNIX: the name the socket is bound to, as `sun_path` holds it (an
    /// abstract name starts with a NUL); no trailing NUL.
    pub path: [u8; UNIX_PATH_BYTES],
}

const _: () = assert!(core::mem::size_of::<DeniedRecord>() == 56 + 8 + 4 * 5 + 16 + 4 + 4 + UNIX_PATH_BYTES);
// SAFETY: repr(C), starts with a RecordHeader, no padding (size asserted), any bits valid.
unsafe impl Record for DeniedRecord {}
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for DeniedRecord {}

// Enforcement (`watcher daemon` with `enforce`): cgroup/bind4 and
// cgroup/bind6 refuse what these maps, filled by the daemon from its
// allowlist, do not allow; where the kernel has BPF LSM, so do its
// `socket_listen` (TCP and UNIX listen()) and `socket_create` (raw and
// packet sockets) hooks. Each (protocol, port), each kind of socket and
// each UNIX path a rule names points to a class: the owners (uid,
// executable, comm, address scope) the rules covering it allow. What no
// rule covers points to ENFORCE_NO_RULE.

/// Array of u32: one slot per (protocol, port), TCP ports first, then UDP;
/// then one slot each for raw sockets, packet sockets and the UNIX paths
/// [`ENFORCE_UNIX_MAP`] does not hold. The value is a slot of
/// [`ENFORCE_CLASSES_MAP`], or [`ENFORCE_NO_RULE`].
pub const ENFORCE_PORTS_MAP: &str = "ENFORCE_PORTS";
/// Array of [`EnforceClass`].
pub const ENFORCE_CLASSES_MAP: &str = "ENFORCE_CLASSES";
/// Array of one [`EnforceSettings`].
pub const ENFORCE_SETTINGS_MAP: &str = "ENFORCE_SETTINGS";
/// Hash of [`UnixPathKey`] → class slot: the UNIX paths some rule names.
pub const ENFORCE_UNIX_MAP: &str = "ENFORCE_UNIX";
/// The TCP ports, then the UDP ports.
pub const ENFORCE_TCP_BASE: u32 = 0;
pub const ENFORCE_UDP_BASE: u32 = 65_536;
/// Raw IP sockets (SOCK_RAW of AF_INET or AF_INET6): `proto = "raw"` rules.
pub const ENFORCE_RAW_SLOT: u32 = 2 * 65_536;
/// AF_PACKET sockets: `proto = "packet"` rules.
pub const ENFORCE_PACKET_SLOT: u32 = ENFORCE_RAW_SLOT + 1;
/// A UNIX path no rule names: the `proto = "unix"` rules without a path.
pub const ENFORCE_UNIX_OTHER_SLOT: u32 = ENFORCE_RAW_SLOT + 2;
pub const ENFORCE_PORT_SLOTS: u32 = ENFORCE_RAW_SLOT + 3;
/// Distinct UNIX paths the rules may name.
pub const ENFORCE_UNIX_PATHS: u32 = 1024;
/// What no rule covers: refused to everyone.
pub const ENFORCE_NO_RULE: u32 = 0;
/// Class slots of one generation of the rules. A reload writes its classes
/// into the generation not in use before any port points to them, so a
/// bind during a reload sees either the old rules or the new, never a mix.
pub const ENFORCE_CLASSES_PER_GENERATION: u32 = 512;
pub const ENFORCE_CLASS_SLOTS: u32 = 2 * ENFORCE_CLASSES_PER_GENERATION;
/// Distinct owners the rules covering one port may name.
pub const ENFORCE_OWNERS_PER_CLASS: usize = 16;

/// A UNIX socket's name ([`ENFORCE_UNIX_MAP`]'s key): the bytes of
/// `sun_path` it is bound to, without the trailing NUL of a path (an
/// abstract name starts with a NUL and may hold more), zero-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnixPathKey {
    /// Bytes of `path` used.
    pub len: u32,
    pub path: [u8; UNIX_PATH_BYTES],
}

const _: () = assert!(core::mem::size_of::<UnixPathKey>() == 4 + UNIX_PATH_BYTES);
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for UnixPathKey {}

/// [`EnforceOwner::flags`]: the caller's uid must be `uid`.
pub const OWNER_UID: u32 = 1;
/// The caller's executable must be (`exe_dev`, `exe_ino`).
pub const OWNER_EXE: u32 = 1 << 1;
/// The caller's comm must be `comm`.
pub const OWNER_COMM: u32 = 1 << 2;
/// The address bound must be loopback (127.0.0.0/8, ::1).
pub const OWNER_LOOPBACK: u32 = 1 << 3;
/// Matches nobody: the rule names a user or executable that does not
/// exist, or a comm longer than the kernel keeps.
pub const OWNER_NEVER: u32 = 1 << 4;

/// Who may bind the ports of a class, as one rule says.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EnforceOwner {
    pub exe_ino: u64,
    /// Kernel encoding of a `dev_t` (major << 20 | minor).
    pub exe_dev: u32,
    pub uid: u32,
    /// `OWNER_*` bits: which fields must match.
    pub flags: u32,
    /// Index of the rule in the configuration's `[[allow]]` list.
    pub rule: u32,
    /// NUL-padded, as `bpf_get_current_comm` fills it.
    pub comm: [u8; TASK_COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<EnforceOwner>() == 40);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnforceClass {
    /// Slots of `owners` used.
    pub count: u32,
    /// Reserved, 0.
    pub reserved: u32,
    pub owners: [EnforceOwner; ENFORCE_OWNERS_PER_CLASS],
}

const _: () = assert!(core::mem::size_of::<EnforceClass>() == 8 + 40 * ENFORCE_OWNERS_PER_CLASS);
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for EnforceClass {}

/// Byte offsets (from the kernel's BTF) the enforcement programs follow
/// from the calling task to its executable's inode and from a socket to
/// its protocol and UNIX name, and what the daemon tells them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EnforceSettings {
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub super_block_s_dev: u32,
    /// `ENFORCE_*` bits: what the kernel side does with these rules.
    pub flags: u32,
    /// The daemon's own tgid: never stopped (its metrics listener), never
    /// refused by the LSM hooks.
    pub daemon_tgid: u32,
    /// `struct sock`'s `sk_protocol` (a `u16`): TCP or another stream
    /// protocol (SCTP, MPTCP) at listen().
    pub sock_sk_protocol: u32,
    /// `struct unix_sock`'s `addr` (a `struct unix_address *`, NULL until bound).
    pub unix_sock_addr: u32,
    /// `struct unix_address`'s `len` (bytes of the `sockaddr_un` used) and
    /// `name` (the `sockaddr_un`).
    pub unix_address_len: u32,
    pub unix_address_name: u32,
    /// The LSM hooks are not confined to a cgroup as the bind hooks are:
    /// they judge a task whose cgroup at this level of the hierarchy
    /// (`bpf_get_current_ancestor_cgroup_id`) is `cgroup_id`, the
    /// `enforce_cgroup` (level 0 and the root's id: every task).
    pub cgroup_level: u32,
    /// The byte of `struct sock` holding `sk_userlocks` (4 bits on older
    /// kernels such as 6.1, a whole byte on 6.18), and the shift of its
    /// bits in that byte: SOCK_BINDPORT_LOCK there says the socket's port
    /// was asked for by its bind(), not chosen by the kernel.
    pub sock_sk_userlocks: u32,
    pub sk_userlocks_shift: u32,
    /// Reserved, 0.
    pub reserved: u32,
    pub cgroup_id: u64,
}

/// [`EnforceSettings::flags`]: the daemon has `kill_unexpected` on, so a
/// TCP listen no rule allows is stopped (SIGSTOP to the caller) at the
/// `sock/inet_sock_set_state` tracepoint, before listen() returns; the
/// listen's record then has [`SOCKET_STOPPED`].
pub const ENFORCE_STOP_AT_LISTEN: u32 = 1;

/// [`SocketRecord::flags`]: the kernel sent SIGSTOP to the caller (see
/// [`ENFORCE_STOP_AT_LISTEN`]); userspace kills it, or lets it go on
/// (SIGCONT) if its own allowlist allows the listener.
pub const SOCKET_STOPPED: u32 = 1;

/// [`EnforceSettings::flags`]: the daemon enforces (`enforce`) and has
/// filled the maps: the LSM hooks judge listen() and socket(). Without it
/// they allow everything (they are attached before the maps are filled,
/// and `watcher doctor` attaches them only to see that they can be).
pub const ENFORCE_LSM: u32 = 1 << 1;

const _: () = assert!(core::mem::size_of::<EnforceSettings>() == 16 * 4 + 8);
#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (size asserted), every bit pattern valid.
unsafe impl aya::Pod for EnforceSettings {}
