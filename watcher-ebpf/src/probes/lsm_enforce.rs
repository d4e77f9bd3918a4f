//! Opt-in enforcement beyond bind, where the kernel has BPF LSM (Debian
//! 12's 6.1 has `bpf` among its active LSMs; this project's 6.18 host
//! refuses LSM programs at load): `lsm/socket_listen` refuses a listen()
//! on a TCP port or a UNIX name, and `lsm/socket_create` the creation of a
//! raw (SOCK_RAW of AF_INET/AF_INET6) or packet (AF_PACKET) socket, that no
//! rule of the allowlist gives the caller. The judgment is the bind hooks'
//! (`cgroup_bind_enforce::judge`), on the same maps, filled by the daemon;
//! a refusal is reported here, through the same `denied` record: an LSM
//! program's return value is the call's, so what is reported is what the
//! caller got.
//!
//! Always allowed: sockets the kernel makes for itself (`kern`), kernel
//! threads, the daemon itself, and everything until the daemon has filled
//! the maps and set `ENFORCE_LSM` (these are attached before that, and
//! `watcher doctor` attaches them only to see that they can be). Unlike
//! the cgroup bind hooks an LSM hook runs for every task on the host, so it
//! judges only tasks in the `enforce_cgroup` (its level and id in the
//! settings). On a map error, allow and count it, as the bind hooks do.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_ancestor_cgroup_id},
    macros::{lsm, map},
    maps::HashMap,
    programs::LsmContext,
};
use watcher_common::{
    AF_INET, AF_INET6, AF_PACKET, AF_UNIX, DENIED_LISTEN, DENIED_SOCKET, ENFORCE_LSM, ENFORCE_PACKET_SLOT,
    ENFORCE_RAW_SLOT, ENFORCE_UNIX_OTHER_SLOT, EnforceSettings, ProgramError, UNIX_PATH_BYTES, UnixPathKey,
};

use super::{
    cgroup_bind_enforce::{Bind, ENFORCE_PORTS, ENFORCE_SETTINGS, judge, refused, report},
    syscall_passive::passive_socket,
};
use crate::{
    kernel::{offsets, read_kernel_bytes, read_or},
    record::count_error,
};

/// The UNIX names some rule names → class slot. One entry in the object;
/// the loader sizes it (ENFORCE_UNIX_PATHS) only when the daemon enforces.
#[map(name = "ENFORCE_UNIX")]
static ENFORCE_UNIX: HashMap<UnixPathKey, u32> = HashMap::with_max_entries(1, 0);

/// What an LSM hook returns to let the call go on.
const LSM_ALLOW: i32 = 0;
/// What the caller gets for a refusal (-EPERM).
const LSM_REFUSE: i32 = -1;

/// `sk_userlocks` bit set by a bind() to a port other than 0.
const SOCK_BINDPORT_LOCK: u8 = 8;

/// `sizeof(sa_family_t)`: where `sun_path` starts in a `sockaddr_un`.
const SUN_PATH_OFFSET: u32 = 2;

// The macro wraps each of these in the program's entry point; inlined, as
// 6.1's verifier refuses a call from it that passes the context as an
// LsmContext ("reg type unsupported for arg#0").

/// `security_socket_create(family, type, protocol, kern)`, then what the
/// BPF LSM programs before this one returned.
#[lsm(hook = "socket_create")]
#[inline(always)]
pub fn lsm_sock_create(ctx: LsmContext) -> i32 {
    try_sock_create(&ctx).unwrap_or_else(allow_on_error)
}

/// `security_socket_listen(sock, backlog)`, then the earlier programs' answer.
#[lsm(hook = "socket_listen")]
#[inline(always)]
pub fn lsm_sock_listen(ctx: LsmContext) -> i32 {
    try_sock_listen(&ctx).unwrap_or_else(allow_on_error)
}

/// The maps are filled before ENFORCE_LSM is set, so an error here is not
/// expected; refusing on one would refuse every such call on the host,
/// which is worse than enforcing nothing. It is counted.
#[inline(always)]
fn allow_on_error(e: ProgramError) -> i32 {
    count_error(e);
    LSM_ALLOW
}

#[inline(always)]
fn try_sock_create(ctx: &LsmContext) -> Result<i32, ProgramError> {
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        // Another BPF LSM program refused already: keep its answer.
        return Ok(earlier);
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        // A socket the kernel makes for itself: no process asked for it.
        return Ok(LSM_ALLOW);
    }
    let (family, sock_type, protocol): (i32, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    // The same sockets `syscall_passive` reports: netlink's SOCK_RAW (ss,
    // ip) is not a raw socket, and TCP, UDP and UNIX are judged elsewhere.
    let Some(socket) = passive_socket(family as u32, sock_type as u32, protocol as u32) else {
        return Ok(LSM_ALLOW);
    };
    let Some(settings) = judged_caller()? else {
        return Ok(LSM_ALLOW);
    };
    let slot = if socket.family == AF_PACKET { ENFORCE_PACKET_SLOT } else { ENFORCE_RAW_SLOT };
    let class_slot = *ENFORCE_PORTS.get(slot).ok_or(ProgramError::MapLookup)?;
    let bind = Bind {
        family: socket.family as u16,
        port: 0,
        protocol: socket.protocol,
        sock_type: socket.sock_type,
        addr: [0; 16],
    };
    Ok(match judge(settings, class_slot, &bind)? {
        None => LSM_ALLOW,
        Some((caller, class_slot)) => {
            report(&bind, &caller, class_slot, DENIED_SOCKET, None);
            LSM_REFUSE
        }
    })
}

#[inline(always)]
fn try_sock_listen(ctx: &LsmContext) -> Result<i32, ProgramError> {
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return Ok(earlier);
    }
    let Some(settings) = judged_caller()? else {
        return Ok(LSM_ALLOW);
    };
    let o = offsets().ok_or(ProgramError::MapLookup)?;
    let socket: u64 = ctx.arg(0);
    // Values read with read_or throughout: see there why.
    let sock_type = u32::from(read_or::<u16>(socket, o.socket_type, 0));
    let sk = read_or::<u64>(socket, o.socket_sk, 0);
    if sk == 0 {
        return Ok(LSM_ALLOW);
    }
    let family = read_or::<u16>(sk, o.skc_family, 0);
    if family == AF_UNIX {
        return unix_listen(settings, sk, sock_type);
    }
    if family != AF_INET && family != AF_INET6 {
        return Ok(LSM_ALLOW);
    }
    // skc_num: the bound port, host order. A port the kernel chose (a
    // bind to port 0, or none: listen() picks one) is allowed, as a bind to
    // port 0 is (`refused` says so); only a port asked for is judged.
    // Unreadable (counted): judged, as a port asked for.
    let locks = read_or::<u8>(sk, settings.sock_sk_userlocks, SOCK_BINDPORT_LOCK << settings.sk_userlocks_shift);
    let asked_for = (locks >> settings.sk_userlocks_shift) & SOCK_BINDPORT_LOCK != 0;
    let port = if asked_for { read_or::<u16>(sk, o.skc_num, 0) } else { 0 };
    let protocol = u32::from(read_or::<u16>(sk, settings.sock_sk_protocol, 0));
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&read_or::<[u8; 4]>(sk, o.skc_rcv_saddr, [0; 4]));
    } else {
        addr = read_or::<[u8; 16]>(sk, o.skc_v6_rcv_saddr, [0; 16]);
    }
    let bind = Bind { family, port, protocol, sock_type, addr };
    Ok(match refused(&bind, settings)? {
        None => LSM_ALLOW,
        Some((caller, class_slot)) => {
            report(&bind, &caller, class_slot, DENIED_LISTEN, None);
            LSM_REFUSE
        }
    })
}

/// listen() on a UNIX socket: judged by the name it is bound to, from
/// `unix_sk(sk)->addr`. An unbound socket has none; the kernel refuses its
/// listen() itself (EINVAL).
#[inline(always)]
fn unix_listen(settings: &EnforceSettings, sk: u64, sock_type: u32) -> Result<i32, ProgramError> {
    let address = read_or::<u64>(sk, settings.unix_sock_addr, 0);
    if address == 0 {
        return Ok(LSM_ALLOW);
    }
    let len = read_or::<i32>(address, settings.unix_address_len, 0);
    let mut key = UnixPathKey { len: 0, path: [0; UNIX_PATH_BYTES] };
    let used = (len as u32).saturating_sub(SUN_PATH_OFFSET);
    let read =
        read_kernel_bytes(&mut key.path, address + u64::from(settings.unix_address_name + SUN_PATH_OFFSET), used);
    if read == 0 {
        return Ok(LSM_ALLOW);
    }
    // A path's length counts its trailing NUL; an abstract name (a leading
    // NUL) is exactly `len` bytes, NULs and all.
    key.len = if key.path[0] != 0 && key.path.get(read as usize - 1) == Some(&0) { read - 1 } else { read };
    // SAFETY: the value is copied out at once.
    let class_slot = match unsafe { ENFORCE_UNIX.get(&key) } {
        Some(&slot) => slot,
        None => *ENFORCE_PORTS.get(ENFORCE_UNIX_OTHER_SLOT).ok_or(ProgramError::MapLookup)?,
    };
    let bind = Bind { family: AF_UNIX, port: 0, protocol: 0, sock_type, addr: [0; 16] };
    Ok(match judge(settings, class_slot, &bind)? {
        None => LSM_ALLOW,
        Some((caller, class_slot)) => {
            report(&bind, &caller, class_slot, DENIED_LISTEN, Some(&key));
            LSM_REFUSE
        }
    })
}

/// The settings when the daemon enforces through these hooks and the
/// caller is one to judge: in the enforced cgroup, not the daemon itself.
#[inline(always)]
fn judged_caller() -> Result<Option<&'static EnforceSettings>, ProgramError> {
    let settings = ENFORCE_SETTINGS.get(0).ok_or(ProgramError::MapLookup)?;
    if settings.flags & ENFORCE_LSM == 0 || (bpf_get_current_pid_tgid() >> 32) as u32 == settings.daemon_tgid {
        return Ok(None);
    }
    // SAFETY: a helper taking a level; past the task's own depth it returns 0.
    let cgroup = unsafe { bpf_get_current_ancestor_cgroup_id(settings.cgroup_level as i32) };
    Ok((cgroup == settings.cgroup_id).then_some(settings))
}
