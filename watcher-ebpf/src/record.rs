//! The maps every program shares, and the one way records leave the kernel.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use watcher_common::{EVENTS_BYTES, EventKind, RecordHeader, SocketRecord, TASK_COMM_LEN};

use crate::kernel::current_netns;

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Records that found the ring buffer full, counted per CPU and summed by
/// userspace, so that loss is reported, never silent.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Set by the loader (`EbpfLoader::override_global`); 0 reports every process.
#[unsafe(no_mangle)]
static FILTER_TGID: u32 = 0;

/// What a hook knows about the socket; the task's identity is added here.
pub struct SocketFacts {
    pub kind: EventKind,
    pub sock_id: u64,
    pub family: u16,
    pub port: u16,
    pub protocol: u32,
    pub sock_type: u32,
    pub addr: [u8; 16],
    pub fd: i32,
    pub backlog: u32,
    /// The socket's network namespace when the hook knows the socket, else
    /// the task's ([`current_netns`]).
    pub netns: u32,
}

/// The calling task's tgid, or `None` when the loader's filter excludes it.
#[inline(always)]
pub fn wanted_tgid() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a plain read of a global the loader may have rewritten;
    // volatile so the compiler does not fold the initial 0 into the code.
    let filter = unsafe { core::ptr::read_volatile(&FILTER_TGID) };
    (filter == 0 || filter == tgid).then_some(tgid)
}

/// Who is calling, and when: the start of every record; the network
/// namespace is the task's.
#[inline(always)]
pub fn header(kind: EventKind) -> RecordHeader {
    header_in(kind, current_netns())
}

/// [`header`] with the network namespace the hook knows better (the socket's).
#[inline(always)]
pub fn header_in(kind: EventKind, netns: u32) -> RecordHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    RecordHeader {
        // SAFETY: helpers without arguments, allowed in every program type used here.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        kind: kind as u32,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        netns,
        comm: bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]),
    }
}

#[inline(always)]
pub fn submit(facts: &SocketFacts) {
    let record = SocketRecord {
        header: header_in(facts.kind, facts.netns),
        sock_id: facts.sock_id,
        protocol: facts.protocol,
        sock_type: facts.sock_type,
        fd: facts.fd,
        backlog: facts.backlog,
        reserved: 0,
        addr: facts.addr,
        family: facts.family,
        port: facts.port,
    };
    output(&record);
}

/// Copies a small record into the ring buffer, counting it lost if full.
#[inline(always)]
pub fn output<T: 'static>(record: &T) {
    if EVENTS.output::<T>(record, 0).is_err() {
        count_lost();
    }
}

#[inline(always)]
pub fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, so no other CPU writes it concurrently.
        unsafe { *lost += 1 };
    }
}
