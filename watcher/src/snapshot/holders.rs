//! Who holds each socket of a snapshot, named from /proc: one read of
//! each holding process, shared by every socket it holds.
use std::{collections::HashMap, fs, path::Path};

use crate::{
    host::process::{ProcessInfo, ProcessLookup},
    model::{
        holder::{Comm, Holder},
        socket::{Local, Proto},
    },
    snapshot::sock_diag::{Holder as HeldBy, Snapshot},
};

/// What /proc told about one holder; `None` fields were unknowable (the
/// process exited after its fds were read, or hid them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolderInfo {
    pub pid: u32,
    pub fd: i32,
    /// The kernel's comm, as bytes.
    pub comm: Option<Comm>,
    /// The real uid, as watch's events give it.
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub process: ProcessInfo,
}

/// Every holder of every socket, named; each process read once.
pub fn name_holders(snapshot: &Snapshot, lookup: &mut ProcessLookup) -> HashMap<u64, Vec<HolderInfo>> {
    let mut processes: HashMap<u32, HolderInfo> = HashMap::new();
    let mut named = HashMap::new();
    for (inode, holders) in &snapshot.holders {
        let infos = holders
            .iter()
            .map(|&HeldBy { pid, fd }| {
                let process = processes.entry(pid).or_insert_with(|| {
                    let dir = lookup.proc_root().join(pid.to_string());
                    let uid = read_uid(&dir);
                    HolderInfo {
                        pid,
                        fd: 0,
                        comm: read_comm(&dir),
                        uid,
                        user: uid.and_then(|uid| lookup.user_name(uid)),
                        process: lookup.process(pid),
                    }
                });
                HolderInfo { fd, ..process.clone() }
            })
            .collect();
        named.insert(*inode, infos);
    }
    named
}

/// /proc/<pid>/comm without its newline (a comm may hold one of its own).
fn read_comm(dir: &Path) -> Option<Comm> {
    let comm = fs::read(dir.join("comm")).ok()?;
    Some(Comm::new(comm.strip_suffix(b"\n").unwrap_or(&comm)))
}

/// The real uid: the first number of /proc/<pid>/status's `Uid:` line.
fn read_uid(dir: &Path) -> Option<u32> {
    let status = fs::read_to_string(dir.join("status")).ok()?;
    parse_uid(&status)
}

pub(crate) fn parse_uid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// The rows of one socket: one per holder, or a single one without a
/// holder for a socket no process holds (a kernel socket), as `list` and
/// the `existing` events print them.
pub fn rows(holders: &[HolderInfo]) -> impl Iterator<Item = Option<&HolderInfo>> {
    let none = holders.is_empty().then_some(None);
    holders.iter().map(Some).chain(none)
}

impl HolderInfo {
    /// The holder as every later stage knows it.
    pub fn holder(&self) -> Holder {
        Holder {
            pid: self.pid,
            uid: self.uid,
            user: self.user.clone(),
            comm: self.comm.unwrap_or_default(),
            exe: self.process.exe.clone(),
            cmdline: self.process.cmdline.clone(),
        }
    }
}

/// A snapshot with every holder named: the sequence `list`, `watch`'s
/// start, `baseline` and the daemon's resync all need.
pub fn take_named(
    lookup: &mut ProcessLookup,
    only_pids: &[u32],
) -> anyhow::Result<(Snapshot, HashMap<u64, Vec<HolderInfo>>)> {
    let snapshot = crate::snapshot::sock_diag::take(lookup.proc_root(), only_pids)?;
    let holders = name_holders(&snapshot, lookup);
    Ok((snapshot, holders))
}

/// Who holds the sockets waiting on (`proto`, `local`) in this network
/// namespace now, looking only at `candidates` (every process when empty).
/// Returns the sockets' inodes and their holders, named.
pub fn holding(
    lookup: &mut ProcessLookup,
    proto: Proto,
    local: &Local,
    candidates: &[u32],
) -> anyhow::Result<(Vec<u64>, Vec<HolderInfo>)> {
    let (snapshot, mut holders) = take_named(lookup, candidates)?;
    let inodes: Vec<u64> =
        snapshot.sockets.iter().filter(|s| s.proto == proto && s.local == *local).map(|s| s.inode).collect();
    let mut found: Vec<HolderInfo> = inodes.iter().filter_map(|i| holders.remove(i)).flatten().collect();
    found.sort_by_key(|h| h.pid);
    found.dedup_by_key(|h| h.pid);
    Ok((inodes, found))
}

/// One socket waiting on a key, and who holds it.
pub struct Held {
    pub inode: u64,
    pub cookie: Option<u64>,
    /// Sorted by pid, one per process.
    pub holders: Vec<HolderInfo>,
}

/// Who holds each socket waiting on (`proto`, `local`) in this network
/// namespace now, socket by socket, looking only at `candidates` (every
/// process when empty).
pub fn holding_each(
    lookup: &mut ProcessLookup,
    proto: Proto,
    local: &Local,
    candidates: &[u32],
) -> anyhow::Result<Vec<Held>> {
    let (snapshot, mut holders) = take_named(lookup, candidates)?;
    Ok(snapshot
        .sockets
        .iter()
        .filter(|s| s.proto == proto && s.local == *local)
        .map(|s| {
            let mut found = holders.remove(&s.inode).unwrap_or_default();
            found.sort_by_key(|h| h.pid);
            found.dedup_by_key(|h| h.pid);
            Held { inode: s.inode, cookie: s.cookie, holders: found }
        })
        .collect())
}

/// The process a socket of the snapshot is judged by, as a live event
/// would name its creator: the holder running as the socket's owner (the
/// uid that created it, kept by the kernel when the daemon later dropped
/// privileges), else the first holder; its uid is the socket's owner uid.
/// So a daemon that binds as root and runs as `_rpc` is the same service
/// in `baseline`, at the daemon's start, and when it restarts.
pub fn creator(owner_uid: Option<u32>, holders: &[HolderInfo], lookup: &mut ProcessLookup) -> Holder {
    let first = holders.iter().find(|h| owner_uid.is_some() && h.uid == owner_uid).or(holders.first());
    let mut creator = first.map(HolderInfo::holder).unwrap_or_default();
    if let Some(uid) = owner_uid
        && creator.uid != Some(uid)
    {
        creator.uid = Some(uid);
        creator.user = lookup.user_name(uid);
    }
    creator
}
