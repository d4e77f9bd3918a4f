//! The process table: pid → what the process is, kept from the kernel's
//! fork / exec / exit records, so that a process that execs, binds and exits
//! within a millisecond is still named with its real exe and argv.
//!
//! /proc is read once per process at start (for those already running) and
//! as a fallback for a pid the table has not met; after that the kernel's
//! records keep it current. Exited processes stay a short while — their
//! sockets close after the exit record (the kernel closes files after it
//! reports the exit) — then go, so memory stays bounded.
use std::{collections::VecDeque, sync::Arc};

use crate::{
    host::process::{ProcessInfo, ProcessLookup},
    model::fast_map::FastMap,
    record::decode::{Record, Task},
};

/// How long an exited process stays, in kernel time, for the events that
/// its exit itself causes (its listeners closing) to be named.
const EXITED_GRACE_NS: u64 = 5_000_000_000;
/// Pending argv of execs that have not (yet) succeeded, at most.
const PENDING_ARGS_MAX: usize = 4096;

#[derive(Clone, Debug, Default)]
struct Entry {
    info: ProcessInfo,
    exited: bool,
}

pub struct ProcessTable {
    lookup: ProcessLookup,
    processes: FastMap<u32, Entry>,
    /// argv captured at execve() entry, by calling tid, until the exec
    /// succeeds (or the task exits).
    pending_args: FastMap<u32, (Vec<Vec<u8>>, bool)>,
    /// (exit time, pid) in exit order, for eviction.
    exited: VecDeque<(u64, u32)>,
    /// The last uid named and its name: every event asks, mostly for the
    /// uid just asked for, and the lookup's map (which keeps every name
    /// for good, as this does) hashes with SipHash.
    last_user: Option<(u32, Option<Arc<str>>)>,
}

impl ProcessTable {
    pub fn new(lookup: ProcessLookup) -> Self {
        Self {
            lookup,
            processes: FastMap::default(),
            pending_args: FastMap::default(),
            exited: VecDeque::new(),
            last_user: None,
        }
    }

    /// One pass over /proc for the processes already running.
    pub fn fill_from_proc(&mut self) {
        let Ok(dir) = std::fs::read_dir(self.lookup.proc_root()) else {
            return;
        };
        for entry in dir.filter_map(Result::ok) {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                let info = self.lookup.process(pid);
                self.processes.entry(pid).or_insert(Entry { info, exited: false });
            }
        }
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// What is known of `pid`: from the table, else from /proc (and kept).
    pub fn get(&mut self, pid: u32) -> ProcessInfo {
        if let Some(entry) = self.processes.get(&pid) {
            return entry.info.clone();
        }
        let info = self.lookup.process(pid);
        if info != ProcessInfo::default() {
            self.processes.insert(pid, Entry { info: info.clone(), exited: false });
        }
        info
    }

    pub fn user_name(&mut self, uid: u32) -> Option<String> {
        self.lookup.user_name(uid)
    }

    pub fn shared_user_name(&mut self, uid: u32) -> Option<Arc<str>> {
        match &self.last_user {
            Some((last, name)) if *last == uid => name.clone(),
            _ => {
                let name = self.lookup.shared_user_name(uid);
                self.last_user = Some((uid, name.clone()));
                name
            }
        }
    }

    /// Applies a process record; other records pass through untouched.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Socket(_)
            | Record::PassiveSocket { .. }
            | Record::FilterAttached { .. }
            | Record::SockoptSet { .. }
            | Record::SocketOnFd { .. }
            | Record::BindFailed { .. }
            | Record::ListenFailed { .. }
            | Record::UnixBind { .. }
            | Record::UnixListen { .. }
            | Record::UnixClose { .. }
            | Record::Accept(_)
            | Record::Denied(_) => {}
            Record::Fork { parent, child } => {
                // A forked child runs its parent's program until it execs.
                let mut info = self.processes.get(&parent.pid).map(|e| e.info.clone()).unwrap_or_default();
                info.ppid = Some(parent.pid);
                self.processes.insert(*child, Entry { info, exited: false });
            }
            Record::ExecArgs { task, args, complete } => {
                if self.pending_args.len() >= PENDING_ARGS_MAX {
                    // Execs that failed leave their argv behind; drop them all
                    // rather than grow (the next exec's argv comes fresh).
                    self.pending_args.clear();
                }
                self.pending_args.insert(task.tid, (args.clone(), *complete));
            }
            Record::Exec { task, old_tid, filename } => self.exec(task, *old_tid, filename),
            Record::Exit { task, group_dead } => {
                self.pending_args.remove(&task.tid);
                if *group_dead {
                    if let Some(entry) = self.processes.get_mut(&task.pid) {
                        entry.exited = true;
                    }
                    self.exited.push_back((task.ktime_ns, task.pid));
                } else if task.tid != task.pid {
                    // A thread's entry, made by the fork that created it.
                    self.processes.remove(&task.tid);
                }
                self.evict(task.ktime_ns);
            }
        }
    }

    fn exec(&mut self, task: &Task, old_tid: u32, filename: &[u8]) {
        let captured = self.pending_args.remove(&old_tid);
        let from_proc = self.lookup.process(task.pid);
        let previous = self.processes.get(&task.pid).map(|e| e.info.clone()).unwrap_or_default();
        let info = ProcessInfo {
            ppid: from_proc.ppid.or(previous.ppid),
            // The canonical path when the process is still there to ask;
            // the path execve() was given, made canonical, when it is
            // already gone: /sbin/rpc.statd and /usr/sbin/rpc.statd are one
            // program (merged /usr), and the allowlist must see one name.
            exe: from_proc.exe.or_else(|| Some(canonical_path(filename).into())),
            // argv from the kernel is exact even when /proc is gone; when
            // it was cut short, /proc (if there) has all of it.
            cmdline: match captured {
                Some((args, true)) if !args.is_empty() => Some(args.into()),
                Some((args, false)) if !args.is_empty() => from_proc.cmdline.or(Some(args.into())),
                _ => from_proc.cmdline,
            },
        };
        self.processes.insert(task.pid, Entry { info, exited: false });
    }

    /// Drops processes that exited more than the grace period before `now`.
    fn evict(&mut self, now_ns: u64) {
        while let Some(&(at, pid)) = self.exited.front() {
            if now_ns.saturating_sub(at) < EXITED_GRACE_NS {
                break;
            }
            self.exited.pop_front();
            // Only if it is still the exited one: a pid can be reused.
            if self.processes.get(&pid).is_some_and(|e| e.exited) {
                self.processes.remove(&pid);
            }
        }
    }
}

/// An absolute path with its links resolved, as /proc/PID/exe gives it;
/// the path as given when it cannot be resolved (gone, or relative to a
/// working directory that is not ours).
fn canonical_path(path: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    if !path.starts_with(b"/") {
        return path.to_vec();
    }
    std::fs::canonicalize(std::ffi::OsStr::from_bytes(path))
        .map_or_else(|_| path.to_vec(), |p| p.into_os_string().into_encoded_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: u32, tid: u32, ktime_ns: u64) -> Task {
        Task {
            ktime_ns,
            cgroup_id: 1,
            pid,
            tid,
            uid: 0,
            gid: 0,
            netns: 0,
            comm: crate::model::holder::Comm::from(b"x"),
        }
    }

    /// /proc of a folder that holds no process: everything comes from records.
    fn table() -> ProcessTable {
        ProcessTable::new(ProcessLookup::new("/nonexistent-proc"))
    }

    /// A path through a link (merged /usr: /bin → usr/bin) is named as its
    /// target; one that does not exist, or a relative one, as given.
    #[test]
    fn paths_given_to_execve_are_made_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("prog"), b"").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let via_link = dir.path().join("link/prog");
        let canonical = std::fs::canonicalize(real.join("prog")).unwrap();
        assert_eq!(canonical_path(via_link.as_os_str().as_encoded_bytes()), canonical.as_os_str().as_encoded_bytes());
        assert_eq!(canonical_path(b"/nonexistent/x"), b"/nonexistent/x");
        assert_eq!(canonical_path(b"./x"), b"./x");
    }

    #[test]
    fn exec_of_a_vanished_process_keeps_kernel_argv_and_filename() {
        let mut t = table();
        t.apply(&Record::Fork { parent: task(10, 10, 1), child: 20 });
        t.apply(&Record::ExecArgs {
            task: task(20, 20, 2),
            args: vec![b"nc".to_vec(), b"-l".to_vec()],
            complete: true,
        });
        t.apply(&Record::Exec { task: task(20, 20, 3), old_tid: 20, filename: b"/bin/nc".to_vec() });
        let info = t.get(20);
        assert_eq!(info.ppid, Some(10));
        assert_eq!(info.exe, Some(canonical_path(b"/bin/nc").into()));
        assert_eq!(info.cmdline, Some(vec![b"nc".to_vec(), b"-l".to_vec()].into()));
    }

    #[test]
    fn forked_worker_inherits_its_parents_program() {
        let mut t = table();
        t.apply(&Record::ExecArgs { task: task(10, 10, 1), args: vec![b"apache2".to_vec()], complete: true });
        t.apply(&Record::Exec { task: task(10, 10, 2), old_tid: 10, filename: b"/usr/sbin/apache2".to_vec() });
        t.apply(&Record::Fork { parent: task(10, 10, 3), child: 11 });
        let worker = t.get(11);
        assert_eq!(worker.exe.as_deref(), Some(b"/usr/sbin/apache2".as_slice()));
        assert_eq!(worker.ppid, Some(10));
    }

    #[test]
    fn exited_processes_stay_for_the_grace_period_then_go() {
        let mut t = table();
        t.apply(&Record::Exec { task: task(30, 30, 0), old_tid: 30, filename: b"/bin/x".to_vec() });
        t.apply(&Record::Exit { task: task(30, 30, 1_000), group_dead: true });
        assert_eq!(t.get(30).exe.as_deref(), Some(b"/bin/x".as_slice()), "still named after exit");
        // Another exit, past the grace period, evicts the first.
        t.apply(&Record::Exit { task: task(31, 31, 1_000 + EXITED_GRACE_NS), group_dead: true });
        assert_eq!(t.get(30), ProcessInfo::default());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_thread_exit_removes_only_the_thread() {
        let mut t = table();
        t.apply(&Record::Exec { task: task(40, 40, 0), old_tid: 40, filename: b"/bin/y".to_vec() });
        t.apply(&Record::Fork { parent: task(40, 40, 1), child: 41 }); // a thread
        assert_eq!(t.len(), 2);
        t.apply(&Record::Exit { task: task(40, 41, 2), group_dead: false });
        assert_eq!(t.len(), 1);
        assert!(t.get(40).exe.is_some());
    }

    #[test]
    fn failed_execs_do_not_grow_without_bound() {
        let mut t = table();
        for tid in 0..(PENDING_ARGS_MAX as u32 + 10) {
            t.apply(&Record::ExecArgs { task: task(tid, tid, 0), args: vec![], complete: true });
        }
        assert!(t.pending_args.len() <= PENDING_ARGS_MAX);
    }
}
