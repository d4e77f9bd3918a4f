//! Follows each listener's holders, for `watch` and the daemon alike: the
//! listener table, fed by live events and the snapshot, and an index from
//! pid to the listeners it holds, so that a fork (the child inherits) or an
//! exit touches only those. When every process the events named for a
//! socket is gone and the socket did not close, the few candidates (the
//! children the holders forked), then if need be every process, are looked
//! at in /proc: the change says who holds it now.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use log::warn;

use crate::{
    enrich::report::{Report, What},
    host::process::ProcessLookup,
    model::{
        fast_map::{FastMap, FastSet},
        holder::Holder,
        socket::{Local, Proto},
    },
    record::decode::{Record, SocketKind, Task},
    snapshot::{
        holders::{self, HolderInfo},
        sock_diag::{self, ExistingSocket},
    },
    state::lifecycle::{Change, ListenerId, ListenerKey, ListenerTable, Socket, SocketId},
};

/// A live event as the listener table sees it.
pub struct Sighting {
    pub key: ListenerKey,
    pub id: Option<SocketId>,
    /// Up (a TCP listen, a UDP or UNIX datagram bind, a UNIX listen) or down (a close).
    pub up: bool,
}

impl Sighting {
    /// TCP listeners, bound UDP sockets, UNIX listeners and bound UNIX
    /// datagram sockets; None for every other event (a TCP bind: its listen
    /// is what counts).
    pub fn of(report: &Report<'_>) -> Option<Self> {
        let netns = u64::from(report.task.netns);
        match &report.what {
            What::Socket { event, .. } => {
                let up = match (event.kind, event.proto) {
                    (SocketKind::Listen, Proto::Tcp) | (SocketKind::Bind, Proto::Udp) => true,
                    (SocketKind::Close, Proto::Tcp | Proto::Udp) => false,
                    _ => return None,
                };
                let key = ListenerKey {
                    netns,
                    proto: event.proto,
                    local: Local::Inet { addr: event.addr, port: event.port },
                };
                // The socket cookie, which the snapshot knows too (a UDP
                // event's always, a TCP one's when the socket had one);
                // else the socket's kernel address.
                let id = event.cookie.map_or(SocketId::Kernel(event.sock_id), SocketId::Cookie);
                Some(Self { key, id: Some(id), up })
            }
            What::Unix { kind, path, .. } => {
                let key = ListenerKey { netns, proto: Proto::Unix, local: Local::Unix { path: path.to_vec() } };
                Some(Self { key, id: None, up: *kind != SocketKind::Close })
            }
            _ => None,
        }
    }
}

/// The process of a live event, as the table and the allowlist know it.
pub fn holder_of(report: &Report<'_>) -> Holder {
    let t = report.task;
    Holder {
        pid: t.pid,
        uid: Some(t.uid),
        user: report.user.map(str::to_owned),
        comm: t.comm,
        exe: report.process.exe.clone(),
        cmdline: report.process.cmdline.clone(),
    }
}

/// The name of user `uid`; looked up only for a holder that changed user
/// since it was named (rare): no cache.
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|u| u.name)
}

/// A snapshot socket as a listener key: TCP listeners, bound UDP and UNIX sockets.
pub fn key_of_existing(socket: &ExistingSocket, netns: u64) -> Option<ListenerKey> {
    match (&socket.local, socket.proto) {
        (Local::Inet { .. }, Proto::Tcp | Proto::Udp) | (Local::Unix { .. }, _) => {
            Some(ListenerKey { netns, proto: socket.proto, local: socket.local.clone() })
        }
        _ => None,
    }
}

/// A socket of the snapshot, with every process that holds it.
pub fn existing_socket(socket: &ExistingSocket, holders: &[HolderInfo], lookup: &mut ProcessLookup) -> Socket {
    let creator = holders::creator(socket.owner_uid, holders, lookup);
    let id = socket.cookie.map_or(SocketId::Inode(socket.inode), SocketId::Cookie);
    Socket::new(Some(id), creator, holders.iter().map(HolderInfo::holder).collect())
}

#[derive(Default)]
pub struct Tracker {
    pub listeners: ListenerTable,
    /// pid → the listeners it holds, and its holder as the table names it.
    held: FastMap<u32, Held>,
    /// Keys whose named holders all exited (and the last of them to exit),
    /// to be looked at in /proc once the records before this moment are in
    /// (see [`Self::settle`]).
    orphaned: Vec<(ListenerKey, u32)>,
    /// Cookie → listener of the UDP sockets known by their cookie: a UDP
    /// socket's release may come after its last holder's namespaces are
    /// gone and name none (0), so its listener is found by its cookie. (A
    /// TCP close names the socket's own namespace.)
    by_cookie: FastMap<u64, ListenerId>,
    /// Keys with a socket that no process was seen holding when /proc was
    /// read: looked at again a few times (see [`UNHELD_RETRIES`]).
    unheld: Vec<Unheld>,
}

/// A live listener nobody was seen holding, to be looked for again.
struct Unheld {
    key: ListenerKey,
    /// The named holder that exited last (its fds may still show).
    gone: u32,
    due: Instant,
    /// Looks so far, the first one included.
    looks: usize,
}

/// When a listener that no process was seen holding is looked for again,
/// after each look that found nobody: a socket handed over SCM_RIGHTS is in
/// no fd table from its sender's exit until the receiver's recvmsg(), and
/// no record says when that happens. The looks come with the next drained
/// batch or the next second's tick after they are due.
const UNHELD_RETRIES: [Duration; 3] = [Duration::from_millis(10), Duration::from_millis(100), Duration::from_secs(1)];

/// What one process holds.
#[derive(Default)]
struct Held {
    listeners: FastSet<ListenerId>,
    /// The process as the table last named it: one copy shared by every
    /// socket it holds (a process with 20,000 listeners is one holder).
    holder: Option<Arc<Holder>>,
}

impl Tracker {
    /// For `watch`: holders followed, nothing else (see [`ListenerTable::holders_only`]).
    pub fn holders_only() -> Self {
        Self { listeners: ListenerTable::holders_only(), ..Self::default() }
    }

    /// A socket seen waiting; the holders it names are indexed.
    pub fn up(&mut self, key: ListenerKey, mut socket: Socket, now_ns: u64) -> Vec<Change> {
        let held = &self.held;
        ListenerTable::share_holders(&mut socket, |pid| held.get(&pid)?.holder.clone());
        // Two fit without a heap block, as in the socket.
        let holders = socket.holders.clone();
        let cookie = match socket.id {
            Some(SocketId::Cookie(c)) if key.proto == Proto::Udp => Some(c),
            _ => None,
        };
        let changes = self.listeners.up(key.clone(), socket, now_ns);
        let Some(id) = self.listeners.id_of(&key) else { return changes };
        if let Some(c) = cookie {
            self.by_cookie.insert(c, id);
        }
        // Indexed even when the socket joined a known one silently (a
        // worker's sighting): its pid holds the key from now on.
        self.index(id, &holders);
        changes
    }

    /// A socket of `key` closed in the kernel, by task `by` when known.
    pub fn closed(&mut self, key: &ListenerKey, id: Option<SocketId>, by: Option<&Task>, now_ns: u64) -> Vec<Change> {
        let known = match id {
            Some(SocketId::Cookie(c)) => self.by_cookie.remove(&c).and_then(|l| self.listeners.key_of(l).cloned()),
            _ => None,
        };
        let key = known.as_ref().unwrap_or(key);
        let Some(listener) = self.listeners.id_of(key) else { return Vec::new() };
        let pid = by.map_or(0, |task| task.pid);
        if let Some(task) = by {
            // The closer as the kernel sees it now: a holder named at its
            // fork, or from /proc before it dropped root, that closes its
            // socket before it exits (rpcbind's child on SIGTERM) is named
            // by the down as the user it became.
            self.listeners.seen_as(task.pid, task.uid, || user_name(task.uid), &[listener]);
        }
        let changes = self.listeners.closed(key, id, pid, now_ns);
        // A key gone down is held by nobody: its holders' index entries go,
        // so a process that opens and closes listeners all day keeps none.
        for change in &changes {
            if let Change::Down { socket, .. } = change {
                let pids = std::iter::once(socket.creator.pid)
                    .chain(socket.holders.iter().map(|h| h.pid))
                    .chain(socket.held_by.iter().map(|h| h.pid));
                for pid in pids {
                    if let Some(held) = self.held.get_mut(&pid) {
                        held.listeners.remove(&listener);
                        if held.listeners.is_empty() {
                            self.held.remove(&pid);
                        }
                    }
                }
            }
        }
        changes
    }

    fn index(&mut self, id: ListenerId, holders: &[Arc<Holder>]) {
        for holder in holders.iter().filter(|h| h.pid != 0) {
            let held = self.held.entry(holder.pid).or_default();
            held.listeners.insert(id);
            held.holder = Some(holder.clone());
        }
    }

    /// A fork, exec or exit. An exit may leave sockets whose named holders
    /// are all gone: [`Self::settle`] then asks /proc who holds them now.
    pub fn process(&mut self, record: &Record) {
        match record {
            Record::Fork { parent, child } => {
                // A thread of the same process is not a new holder.
                if *child == parent.pid || *child == parent.tid {
                    return;
                }
                let Some(held) = self.held.get(&parent.pid) else { return };
                let ids: Vec<ListenerId> = held.listeners.iter().copied().collect();
                let named_after_parent = ids
                    .iter()
                    .flat_map(|&id| self.listeners.sockets_of(id))
                    .flat_map(|s| &s.holders)
                    .find(|h| h.pid == parent.pid)
                    .map_or_else(Holder::default, |h| Holder::clone(h));
                let child_holder = Arc::new(Holder { pid: *child, ..named_after_parent });
                self.listeners.forked(parent.pid, &child_holder, &ids);
                let listeners = ids.into_iter().collect();
                self.held.insert(*child, Held { listeners, holder: Some(child_holder) });
            }
            Record::Exit { task, group_dead } => {
                // A thread's clone comes as a fork with its tid as the
                // child, indistinguishable then from a process: it was
                // taken for a holder, and is none now.
                if task.tid != task.pid
                    && let Some(held) = self.held.remove(&task.tid)
                {
                    self.listeners.not_a_holder(task.tid, &held.listeners.into_iter().collect::<Vec<_>>());
                }
                if !*group_dead {
                    return;
                }
                let Some(held) = self.held.remove(&task.pid) else { return };
                let ids: Vec<ListenerId> = held.listeners.into_iter().collect();
                self.listeners.seen_as(task.pid, task.uid, || user_name(task.uid), &ids);
                for key in self.listeners.exited(task.pid, &ids) {
                    if !self.orphaned.iter().any(|(k, _)| *k == key) {
                        self.orphaned.push((key, task.pid));
                    }
                }
            }
            _ => {}
        }
    }

    /// Once the ring buffer is drained: who holds the sockets whose named
    /// holders exited. Not at the exit itself: the exiting process's sockets
    /// close after its exit record, and a restarted daemon may already hold
    /// new sockets on the same keys, whose records are still on their way;
    /// once they are in, a closed socket is gone from the table and the new
    /// ones are known, so /proc is not misread.
    /// Also where the listeners nobody was seen holding are looked for
    /// again, once due.
    pub fn settle(&mut self, lookup: &mut ProcessLookup) -> Vec<Change> {
        let keys = std::mem::take(&mut self.orphaned);
        let mut changes: Vec<Change> =
            keys.iter().flat_map(|(key, gone)| self.find_holders(key, *gone, lookup, 1)).collect();
        if !self.unheld.is_empty() {
            let now = Instant::now();
            let (due, later): (Vec<Unheld>, Vec<Unheld>) =
                std::mem::take(&mut self.unheld).into_iter().partition(|u| u.due <= now);
            self.unheld = later;
            for u in due {
                if self.listeners.is_live(&u.key) {
                    changes.extend(self.find_holders(&u.key, u.gone, lookup, u.looks + 1));
                }
            }
        }
        changes
    }

    /// The sockets of `key` lost every holder the events named (`gone`
    /// exited last): who holds them now, first among the processes they
    /// were handed to (forked children), then, if none of those does,
    /// anywhere. A socket known by its cookie or inode gets the holders of
    /// that socket only; one known by the kernel's pointer (live TCP) gets
    /// those of the key's sockets that no process of another socket of the
    /// key holds: a restarted service's new socket is not the old one's.
    /// `looks`: this look's number (1 the first); a look that finds nobody
    /// for a socket of the key has another one due, up to [`UNHELD_RETRIES`].
    fn find_holders(&mut self, key: &ListenerKey, gone: u32, lookup: &mut ProcessLookup, looks: usize) -> Vec<Change> {
        let Some(ours) = sock_diag::netns(lookup.proc_root()) else {
            return Vec::new();
        };
        if key.netns != 0 && key.netns != ours {
            return Vec::new(); // another namespace: the snapshot cannot see it
        }
        let candidates = self.listeners.unconfirmed_holders(key);
        let mut found: Vec<holders::Held> = Vec::new();
        for scope in [candidates, Vec::new()] {
            if scope.is_empty() && !found.is_empty() {
                break;
            }
            match holders::holding_each(lookup, key.proto, &key.local, &scope) {
                Ok(mut sockets) => {
                    // An exiting process may still show its fds.
                    for held in &mut sockets {
                        held.holders.retain(|h| h.pid != gone);
                    }
                    sockets.retain(|held| !held.holders.is_empty());
                    found = sockets;
                }
                Err(e) => {
                    warn!("finding who holds {:?} now: {e:#}", key.local);
                    return Vec::new();
                }
            }
            if !found.is_empty() {
                break;
            }
        }
        let others: Vec<u32> = self
            .listeners
            .sockets(key)
            .iter()
            .filter(|s| !s.named.is_empty())
            .flat_map(|s| s.holders.iter().map(|h| h.pid))
            .collect();
        let changes = self.listeners.holders_now(key, |socket| {
            let of = |held: &&holders::Held| match socket.id {
                Some(SocketId::Cookie(c)) => held.cookie == Some(c),
                Some(SocketId::Inode(i)) => held.inode == i,
                // A live TCP socket's id means nothing to /proc: by key,
                // leaving out the sockets other live entries hold.
                _ => !held.holders.iter().any(|h| others.contains(&h.pid)),
            };
            let mut holders: Vec<Holder> =
                found.iter().filter(of).flat_map(|held| held.holders.iter().map(HolderInfo::holder)).collect();
            holders.sort_by_key(|h| h.pid);
            holders.dedup_by_key(|h| h.pid);
            holders
        });
        if let Some(id) = self.listeners.id_of(key) {
            for change in &changes {
                if let Change::HoldersChanged { socket, .. } = change {
                    self.index(id, &socket.holders);
                }
            }
        }
        let nobody = self.listeners.sockets(key).iter().any(|s| s.named.is_empty());
        if let Some(wait) = UNHELD_RETRIES.get(looks - 1).filter(|_| nobody)
            && !self.unheld.iter().any(|u| u.key == *key)
        {
            self.unheld.push(Unheld { key: key.clone(), gone, due: Instant::now() + *wait, looks });
        }
        changes
    }

    /// After a loss: the table made to agree with what listens now
    /// (`now_there`, from a fresh snapshot of namespace `netns`), and what
    /// changed while watcher was blind. A key held by none of its known
    /// holders went down and came back in other hands; a key no longer
    /// there went down. Keys of other namespaces (the snapshot cannot see
    /// them) are kept as they are.
    pub fn resync(&mut self, now_there: Vec<(ListenerKey, Socket)>, netns: u64, now_ns: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut present = FastSet::default();
        for (key, socket) in now_there {
            present.insert(key.clone());
            let known = self.listeners.holder_pids(&key);
            if !known.is_empty() && !socket.holders.iter().any(|h| known.contains(&h.pid)) {
                while self.listeners.is_live(&key) {
                    changes.extend(self.closed(&key, None, None, now_ns));
                }
            }
            if !self.listeners.is_live(&key) {
                changes.extend(self.up(key, socket, now_ns));
            }
        }
        for key in self.listeners.live_keys() {
            if (key.netns == netns || key.netns == 0) && !present.contains(&key) {
                while self.listeners.is_live(&key) {
                    changes.extend(self.closed(&key, None, None, now_ns));
                }
            }
        }
        changes
    }

    /// Index entries of processes whose exit was not seen (a lost record)
    /// must not stay for ever.
    pub fn tidy(&mut self) {
        let listeners = &self.listeners;
        if self.held.len() > 4 * listeners.live_count().max(1024) {
            self.held.retain(|pid, held| held.listeners.iter().any(|&id| listeners.holds(id, *pid)));
        }
        // Sockets taken down by a resync leave their cookies behind.
        if self.by_cookie.len() > 2 * listeners.live_count().max(1024) {
            self.by_cookie.retain(|_, id| listeners.key_of(*id).is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn key(port: u16, netns: u64) -> ListenerKey {
        ListenerKey { netns, proto: Proto::Tcp, local: Local::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port } }
    }

    fn socket(pid: u32, exe: &str) -> Socket {
        let holder = Holder { pid, uid: Some(0), exe: Some(exe.as_bytes().to_vec().into()), ..Holder::default() };
        Socket::new(Some(SocketId::Inode(u64::from(pid))), holder, Vec::new())
    }

    fn names(changes: &[Change]) -> Vec<(&'static str, u16)> {
        changes
            .iter()
            .map(|c| match c {
                Change::Up { key, .. } => ("up", key),
                Change::Down { key, .. } => ("down", key),
                Change::Restarted { key, .. } => ("restarted", key),
                Change::OwnerChanged { key, .. } => ("owner_changed", key),
                Change::ReuseportJoined { key, .. } => ("reuseport_joined", key),
                Change::HoldersChanged { key, .. } => ("holders_changed", key),
            })
            .map(|(n, k)| (n, if let Local::Inet { port, .. } = k.local { port } else { 0 }))
            .collect()
    }

    /// While watcher was blind: one listener went away, one came up, one
    /// went down and came back in another program's hands, one stayed;
    /// another namespace's is kept.
    #[test]
    fn resync_reports_what_changed_while_blind() {
        let mut t = Tracker::default();
        t.up(key(1, 7), socket(10, "/stays"), 0);
        t.up(key(2, 7), socket(20, "/goes"), 0);
        t.up(key(3, 7), socket(30, "/usr/sbin/sshd"), 0);
        t.up(key(4, 9), socket(40, "/in/a/container"), 0);
        let now_there = vec![
            (key(1, 7), socket(10, "/stays")),
            (key(3, 7), socket(31, "/tmp/nc")),
            (key(5, 7), socket(50, "/new")),
        ];
        let changes = t.resync(now_there, 7, 100);
        let mut got = names(&changes);
        got.sort();
        assert_eq!(
            got,
            vec![("down", 2), ("down", 3), ("owner_changed", 3), ("restarted", 3), ("up", 3), ("up", 5)],
            "{changes:?}"
        );
        assert!(t.listeners.is_live(&key(4, 9)), "another namespace's listener is kept");
        assert!(!t.listeners.is_live(&key(2, 7)));
        assert_eq!(t.listeners.holder_pids(&key(3, 7)), vec![31]);
        // Nothing more to say a second time.
        let again = t.resync(
            vec![
                (key(1, 7), socket(10, "/stays")),
                (key(3, 7), socket(31, "/tmp/nc")),
                (key(5, 7), socket(50, "/new")),
            ],
            7,
            200,
        );
        assert_eq!(again, vec![]);
    }

    /// A fork's child inherits the parent's sockets; once the parent has
    /// exited, the look-up waits for the drained ring (settle).
    #[test]
    fn forks_are_followed_and_exits_settled_later() {
        let mut t = Tracker::default();
        t.up(key(111, 0), socket(100, "/sbin/rpcbind"), 0);
        let task = |pid: u32| crate::record::decode::Task {
            ktime_ns: 1,
            ..crate::record::decode::Task::of_process(pid, b"rpcbind")
        };
        t.process(&Record::Fork { parent: task(100), child: 101 });
        assert_eq!(t.listeners.holder_pids(&key(111, 0)), vec![100, 101]);
        t.process(&Record::Fork { parent: task(100), child: 100 }); // a thread
        assert_eq!(t.listeners.holder_pids(&key(111, 0)), vec![100, 101]);
        // A thread's clone comes as a fork to its tid: taken for a holder
        // until the thread's exit says otherwise.
        t.process(&Record::Fork { parent: task(100), child: 102 });
        t.process(&Record::Exit { task: crate::record::decode::Task { tid: 102, ..task(100) }, group_dead: false });
        assert_eq!(t.listeners.holder_pids(&key(111, 0)), vec![100, 101]);
        t.process(&Record::Exit { task: task(100), group_dead: true });
        assert_eq!(t.orphaned, vec![(key(111, 0), 100)], "looked up only once the ring is drained");
        assert_eq!(t.listeners.unconfirmed_holders(&key(111, 0)), vec![101]);
    }

    /// rpcbind's child: forked as root, named so, it drops to `_rpc` and
    /// closes its sockets on SIGTERM before its exit record comes: the
    /// down names it as the closing task was, not as it was at the fork.
    #[test]
    fn a_holder_that_closes_after_dropping_root_is_named_as_its_new_user() {
        let mut t = Tracker::default();
        t.up(key(111, 0), socket(100, "/sbin/rpcbind"), 0);
        let task = |pid: u32, uid: u32| crate::record::decode::Task {
            ktime_ns: 1,
            uid,
            ..crate::record::decode::Task::of_process(pid, b"rpcbind")
        };
        t.process(&Record::Fork { parent: task(100, 0), child: 101 });
        t.process(&Record::Exit { task: task(100, 0), group_dead: true });
        let down = t.closed(&key(111, 0), None, Some(&task(101, 105)), 2);
        let [Change::Down { socket, .. }] = &down[..] else { panic!("{down:?}") };
        let child: Vec<(u32, Option<u32>)> = socket.held_by.iter().map(|h| (h.pid, h.uid)).collect();
        assert_eq!(child, vec![(101, Some(105))]);
    }
}
