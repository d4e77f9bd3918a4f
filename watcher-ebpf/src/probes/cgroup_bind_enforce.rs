//! Opt-in enforcement (`watcher daemon` with `enforce`): the cgroup hooks
//! `cgroup/bind4` and `cgroup/bind6` (run at bind() entry) refuse, with EPERM, a bind() to a port that no rule of the
//! allowlist covers, or that the rules covering it give to someone else,
//! and report it ([`DeniedRecord`]). The daemon fills the maps from its
//! configuration before it attaches these programs, and only when asked to
//! enforce; without that nothing here runs.
//!
//! Anything the maps do not refuse is allowed: port 0 (the kernel picks an
//! ephemeral port), protocols other than TCP and UDP, binds made by kernel
//! threads (nfsd, lockd: they have no executable to judge).
//!
//! The judgment itself ([`refused`] for a port, [`judge`] for any class of
//! rules) is shared with the LSM hooks of `lsm_enforce.rs` and with
//! `kill_unexpected`'s stop at listen: one copy of the matching.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_task, bpf_send_signal},
    },
    macros::{cgroup_sock_addr, map},
    maps::Array,
    programs::SockAddrContext,
};
use watcher_common::{
    AF_INET, AF_INET6, DENIED_BIND, DeniedRecord, ENFORCE_NO_RULE, ENFORCE_OWNERS_PER_CLASS, ENFORCE_STOP_AT_LISTEN,
    ENFORCE_TCP_BASE, ENFORCE_UDP_BASE, EnforceClass, EnforceOwner, EnforceSettings, EventKind, IPPROTO_TCP,
    IPPROTO_UDP, OWNER_COMM, OWNER_EXE, OWNER_LOOPBACK, OWNER_NEVER, OWNER_UID, ProgramError, TASK_COMM_LEN,
    UnixPathKey,
};

use super::ALLOW;
use crate::{
    kernel::read_or,
    record::{count_error, emit},
};

/// The kernel turns a 0 from a bind hook into EPERM for the caller.
const REFUSE: i32 = 0;

// One entry each in the object; the loader sizes them (ENFORCE_PORT_SLOTS,
// ENFORCE_CLASS_SLOTS) only when the daemon enforces, so that `watch`
// does not hold their memory.

/// (protocol, port), then raw, packet and other UNIX paths → class slot,
/// or ENFORCE_NO_RULE.
#[map(name = "ENFORCE_PORTS")]
pub static ENFORCE_PORTS: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "ENFORCE_CLASSES")]
static ENFORCE_CLASSES: Array<EnforceClass> = Array::with_max_entries(1, 0);

#[map(name = "ENFORCE_SETTINGS")]
pub static ENFORCE_SETTINGS: Array<EnforceSettings> = Array::with_max_entries(1, 0);

/// A bind() as the hook sees it, before the kernel does anything with it
/// (or a TCP listen, as `sock/inet_sock_set_state` sees it).
pub struct Bind {
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    pub protocol: u32,
    pub sock_type: u32,
    /// IPv4 in the first four bytes; network order.
    pub addr: [u8; 16],
}

impl Bind {
    fn is_loopback(&self) -> bool {
        if self.family == AF_INET {
            self.addr[0] == 127
        } else {
            let (high, low) = halves(&self.addr);
            high == 0 && low == u64::from_ne_bytes([0, 0, 0, 0, 0, 0, 0, 1])
        }
    }
}

/// The caller, as the owners of a class are described.
pub struct Caller {
    uid: u32,
    comm: [u8; TASK_COMM_LEN],
    exe_dev: u32,
    exe_ino: u64,
}

#[cgroup_sock_addr(bind4)]
pub fn enforce_bind4(ctx: SockAddrContext) -> i32 {
    match try_enforce_bind4(&ctx) {
        Ok(verdict) => verdict,
        Err(e) => {
            count_error(e);
            ALLOW_ON_ERROR
        }
    }
}

#[cgroup_sock_addr(bind6)]
pub fn enforce_bind6(ctx: SockAddrContext) -> i32 {
    match try_enforce_bind6(&ctx) {
        Ok(verdict) => verdict,
        Err(e) => {
            count_error(e);
            ALLOW_ON_ERROR
        }
    }
}

/// When the maps cannot be read. They are sized and filled before the
/// programs attach, so this does not happen; should it, refusing would
/// refuse every bind in the cgroup, which is worse than enforcing nothing.
const ALLOW_ON_ERROR: i32 = ALLOW;

#[inline(always)]
fn try_enforce_bind4(ctx: &SockAddrContext) -> Result<i32, ProgramError> {
    // SAFETY: bind4 may read user_ip4, user_port, type and protocol (the
    // verifier's sock_addr_is_valid_access); it rewrites these loads.
    let bind = unsafe {
        let sa = &*ctx.sock_addr;
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
        Bind {
            family: AF_INET,
            port: u16::from_be(sa.user_port as u16),
            protocol: sa.protocol,
            sock_type: sa.type_,
            addr,
        }
    };
    try_verdict(&bind)
}

#[inline(always)]
fn try_enforce_bind6(ctx: &SockAddrContext) -> Result<i32, ProgramError> {
    // SAFETY: bind6 may read user_ip6, user_port, type and protocol.
    let bind = unsafe {
        let sa = &*ctx.sock_addr;
        let mut addr = [0u8; 16];
        for (chunk, word) in addr.chunks_exact_mut(4).zip(sa.user_ip6) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        Bind {
            family: AF_INET6,
            port: u16::from_be(sa.user_port as u16),
            protocol: sa.protocol,
            sock_type: sa.type_,
            addr,
        }
    };
    try_verdict(&bind)
}

#[inline(always)]
fn try_verdict(bind: &Bind) -> Result<i32, ProgramError> {
    let settings = ENFORCE_SETTINGS.get(0).ok_or(ProgramError::MapLookup)?;
    match refused(bind, settings)? {
        Some((caller, class_slot)) => {
            report(bind, &caller, class_slot, DENIED_BIND, None);
            Ok(REFUSE)
        }
        None => Ok(ALLOW),
    }
}

/// `kill_unexpected` (ENFORCE_STOP_AT_LISTEN): a TCP socket entering LISTEN
/// that no rule allows to the caller. The tracepoint runs in the caller's
/// context, inside listen(): SIGSTOP to its process is delivered before
/// listen() returns, so it forks no child before userspace kills it.
/// Whether it was sent; the listen's record says so.
#[inline(always)]
pub fn stop_unallowed_listen(bind: &Bind) -> Result<bool, ProgramError> {
    // One lookup for every TCP listen on the host; nothing else without the flag.
    let Some(settings) = ENFORCE_SETTINGS.get(0) else {
        return Ok(false);
    };
    if settings.flags & ENFORCE_STOP_AT_LISTEN == 0
        || (bpf_get_current_pid_tgid() >> 32) as u32 == settings.daemon_tgid
        || refused(bind, settings)?.is_none()
    {
        return Ok(false);
    }
    // SAFETY: a helper that takes a signal number; it refuses (non-zero)
    // for kernel threads, init and an exiting task.
    Ok(unsafe { bpf_send_signal(SIGSTOP) } == 0)
}

const SIGSTOP: u32 = 19;

/// The caller and the port's class when no rule allows it this socket.
#[inline(always)]
pub fn refused(bind: &Bind, settings: &EnforceSettings) -> Result<Option<(Caller, u32)>, ProgramError> {
    // Port 0 asks the kernel for an ephemeral port: always allowed.
    if bind.port == 0 {
        return Ok(None);
    }
    let base = match bind.protocol {
        IPPROTO_TCP => ENFORCE_TCP_BASE,
        IPPROTO_UDP => ENFORCE_UDP_BASE,
        // SCTP, UDP-Lite…: the allowlist speaks of TCP and UDP only.
        _ => return Ok(None),
    };
    let class_slot = *ENFORCE_PORTS.get(base + u32::from(bind.port)).ok_or(ProgramError::MapLookup)?;
    judge(settings, class_slot, bind)
}

/// The caller, and `class_slot`, when none of the owners of that class
/// (the rules covering what `bind` asks for) is the caller; `None` when one
/// is, and for kernel threads (nfsd, lockd binding for an in-kernel
/// service: no executable to judge).
#[inline(always)]
pub fn judge(settings: &EnforceSettings, class_slot: u32, bind: &Bind) -> Result<Option<(Caller, u32)>, ProgramError> {
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let mm = read_or::<u64>(task, settings.task_mm, 0);
    if mm == 0 {
        return Ok(None);
    }
    let (exe_dev, exe_ino) = exe_identity(settings, mm);
    let uid_gid = bpf_get_current_uid_gid();
    let caller =
        Caller { uid: uid_gid as u32, comm: bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]), exe_dev, exe_ino };
    if class_slot != ENFORCE_NO_RULE {
        let class = ENFORCE_CLASSES.get(class_slot).ok_or(ProgramError::MapLookup)?;
        for i in 0..ENFORCE_OWNERS_PER_CLASS {
            if i as u32 >= class.count {
                break;
            }
            if owner_allows(&class.owners[i], &caller, bind) {
                return Ok(None);
            }
        }
    }
    Ok(Some((caller, class_slot)))
}

/// (device, inode) of the caller's executable: task → mm → exe_file →
/// f_inode → (i_sb → s_dev, i_ino); (0, 0) when unreadable, which matches
/// no rule that names an executable.
#[inline(always)]
fn exe_identity(s: &EnforceSettings, mm: u64) -> (u32, u64) {
    // read_or (a NULL base gives the default): see there why.
    let inode = read_or::<u64>(read_or::<u64>(mm, s.mm_exe_file, 0), s.file_f_inode, 0);
    if inode == 0 {
        return (0, 0);
    }
    let ino = read_or::<u64>(inode, s.inode_i_ino, 0);
    let dev = read_or::<u32>(read_or::<u64>(inode, s.inode_i_sb, 0), s.super_block_s_dev, 0);
    (dev, ino)
}

#[inline(always)]
fn owner_allows(owner: &EnforceOwner, caller: &Caller, bind: &Bind) -> bool {
    let f = owner.flags;
    f & OWNER_NEVER == 0
        && (f & OWNER_UID == 0 || owner.uid == caller.uid)
        && (f & OWNER_EXE == 0 || (owner.exe_dev == caller.exe_dev && owner.exe_ino == caller.exe_ino))
        && (f & OWNER_COMM == 0 || halves(&owner.comm) == halves(&caller.comm))
        && (f & OWNER_LOOPBACK == 0 || bind.is_loopback())
}

/// 16 bytes as two words: compared without a call to memcmp, which a BPF
/// program does not have.
#[inline(always)]
fn halves(bytes: &[u8; 16]) -> (u64, u64) {
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&bytes[..8]);
    low.copy_from_slice(&bytes[8..]);
    (u64::from_ne_bytes(high), u64::from_ne_bytes(low))
}

/// The one `denied` record of every enforcement hook: `call` is what the
/// caller was refused (`DENIED_*`), `path` the UNIX name it was for.
#[inline(always)]
pub fn report(bind: &Bind, caller: &Caller, class: u32, call: u32, path: Option<&UnixPathKey>) {
    emit(EventKind::Denied, |r: &mut DeniedRecord| {
        r.exe_ino = caller.exe_ino;
        r.exe_dev = caller.exe_dev;
        r.protocol = bind.protocol;
        r.sock_type = bind.sock_type;
        r.class = class;
        r.call = call;
        r.addr = bind.addr;
        r.family = bind.family;
        r.port = bind.port;
        if let Some(path) = path {
            r.path_len = path.len;
            r.path = path.path;
        }
    });
}
