//! Live UNIX listeners (and datagram sockets bound to a name, which never
//! listen but wait as much) and the processes that hold them, so that a
//! close is reported when the socket really goes: when the last holder
//! closes it or exits. The kernel sees close() only in the process that listened (its
//! map is keyed by that process's fd), so holders are followed here: a
//! forked child holds what its parent held — a daemon's parent often exits
//! while its child keeps the socket. The sockets already there at start
//! are seeded from the snapshot with every (pid, fd) that holds them (the
//! kernel's map is seeded with the same), so they close the same way.
use std::collections::HashMap;

use crate::record::decode::{Record, Task};

/// A UNIX listener that went away: who held it last, its type and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixClosed {
    pub task: Task,
    pub fd: i32,
    pub sock_type: u32,
    pub path: Vec<u8>,
}

#[derive(Default)]
pub struct UnixListeners {
    next_id: u64,
    /// id → (path, type) and number of (pid, fd) holders.
    sockets: HashMap<u64, ((Vec<u8>, u32), usize)>,
    /// pid → fd → id.
    holders: HashMap<u32, HashMap<i32, u64>>,
}

impl UnixListeners {
    /// Applies a record; returns the listeners it closed.
    pub fn apply(&mut self, record: &Record) -> Vec<UnixClosed> {
        match record {
            Record::UnixListen { task, fd, sock_type, path, .. } | Record::UnixBind { task, fd, sock_type, path } => {
                // The same socket again (a second listen(), or a listen the
                // snapshot saw too): it keeps its holders.
                let known = self.holders.get(&task.pid).and_then(|fds| fds.get(fd));
                if known.and_then(|id| self.sockets.get(id)).is_some_and(|((p, t), _)| p == path && t == sock_type) {
                    return Vec::new();
                }
                self.drop_holder(task, *fd); // an fd reused without our seeing its close
                self.next_id += 1;
                self.sockets.insert(self.next_id, ((path.clone(), *sock_type), 1));
                self.holders.entry(task.pid).or_default().insert(*fd, self.next_id);
                Vec::new()
            }
            Record::UnixClose { task, fd, .. } => self.drop_holder(task, *fd).into_iter().collect(),
            Record::Fork { parent, child } => {
                if let Some(fds) = self.holders.get(&parent.pid).cloned() {
                    for id in fds.values() {
                        if let Some((_, count)) = self.sockets.get_mut(id) {
                            *count += 1;
                        }
                    }
                    self.holders.insert(*child, fds);
                }
                Vec::new()
            }
            Record::Exit { task, group_dead } => {
                // The kernel reports a new thread as a fork (its tid as the
                // child), so a thread was counted as a holder at its clone:
                // its exit takes that count back. Otherwise a multithreaded
                // daemon (rsyslogd) never closes what it bound live.
                let mut closed = Vec::new();
                if task.tid != task.pid {
                    closed.extend(self.drop_all(task, task.tid));
                }
                if *group_dead {
                    closed.extend(self.drop_all(task, task.pid));
                }
                closed
            }
            _ => Vec::new(),
        }
    }

    /// A socket already there at start, bound to `path`, held by these
    /// (pid, fd). A (pid, fd) that holds a socket already is left as it is.
    pub fn seed(&mut self, path: &[u8], sock_type: u32, held: &[(u32, i32)]) {
        let fresh: Vec<(u32, i32)> = held
            .iter()
            .copied()
            .filter(|(pid, fd)| !self.holders.get(pid).is_some_and(|fds| fds.contains_key(fd)))
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.next_id += 1;
        self.sockets.insert(self.next_id, ((path.to_vec(), sock_type), fresh.len()));
        for (pid, fd) in fresh {
            self.holders.entry(pid).or_default().insert(fd, self.next_id);
        }
    }

    /// Every fd `pid` holds, let go (its exit); `task` names who let go.
    fn drop_all(&mut self, task: &Task, pid: u32) -> Vec<UnixClosed> {
        let held = self.holders.remove(&pid).unwrap_or_default();
        held.into_iter().filter_map(|(fd, id)| self.release(task, fd, id)).collect()
    }

    fn drop_holder(&mut self, task: &Task, fd: i32) -> Option<UnixClosed> {
        let id = self.holders.get_mut(&task.pid)?.remove(&fd)?;
        self.release(task, fd, id)
    }

    /// One hold on socket `id` ends; the socket closes with its last holder.
    fn release(&mut self, task: &Task, fd: i32, id: u64) -> Option<UnixClosed> {
        let (_, count) = self.sockets.get_mut(&id)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        let ((path, sock_type), _) = self.sockets.remove(&id)?;
        Some(UnixClosed { task: task.clone(), fd, sock_type, path })
    }

    /// Live UNIX listeners (bounded by what the host has open).
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: u32) -> Task {
        Task::of_process(pid, b"")
    }

    fn listen(pid: u32, fd: i32) -> Record {
        Record::UnixListen { task: task(pid), fd, backlog: 5, sock_type: 1, path: b"/tmp/s".to_vec() }
    }

    #[test]
    fn close_by_the_listener() {
        let mut t = UnixListeners::default();
        assert!(t.apply(&listen(1, 3)).is_empty());
        let closed = t.apply(&Record::UnixClose { task: task(1), fd: 3, sock_type: 1, path: b"/tmp/s".to_vec() });
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].fd, closed[0].path.as_slice()), (3, b"/tmp/s".as_slice()));
        assert!(t.is_empty());
    }

    #[test]
    fn a_named_datagram_socket_closes_at_its_last_holders_exit() {
        let mut t = UnixListeners::default();
        let bind = Record::UnixBind { task: task(1), fd: 4, sock_type: 2, path: b"\0notify".to_vec() };
        assert!(t.apply(&bind).is_empty());
        t.apply(&Record::Fork { parent: task(1), child: 2 });
        assert!(t.apply(&Record::UnixClose { task: task(1), fd: 4, sock_type: 2, path: vec![] }).is_empty());
        let closed = t.apply(&Record::Exit { task: task(2), group_dead: true });
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].task.pid, closed[0].sock_type), (2, 2));
        assert_eq!(closed[0].path, b"\0notify");
    }

    #[test]
    fn a_daemon_whose_parent_exits_keeps_its_listener() {
        let mut t = UnixListeners::default();
        t.apply(&listen(1, 3));
        t.apply(&Record::Fork { parent: task(1), child: 2 });
        assert!(t.apply(&Record::Exit { task: task(1), group_dead: true }).is_empty(), "the child still holds it");
        assert_eq!(t.len(), 1);
        let closed = t.apply(&Record::Exit { task: task(2), group_dead: true });
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].task.pid, 2, "named after the last holder");
        assert!(t.is_empty() && t.holders.is_empty());
    }

    /// A socket the snapshot found, held by a parent and its worker: the
    /// close() of one is nothing, the exit of the other closes it.
    #[test]
    fn a_seeded_socket_closes_at_its_last_holder() {
        let mut t = UnixListeners::default();
        t.seed(b"/dev/printer", 1, &[(10, 3), (11, 3)]);
        assert_eq!(t.len(), 1);
        // Its listen seen live too (from before the snapshot ended): the same socket.
        let again =
            Record::UnixListen { task: task(10), fd: 3, backlog: 5, sock_type: 1, path: b"/dev/printer".to_vec() };
        assert!(t.apply(&again).is_empty());
        assert_eq!(t.len(), 1);
        assert!(t.apply(&Record::UnixClose { task: task(10), fd: 3, sock_type: 1, path: vec![] }).is_empty());
        let closed = t.apply(&Record::Exit { task: task(11), group_dead: true });
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].task.pid, closed[0].fd, closed[0].path.as_slice()), (11, 3, b"/dev/printer".as_slice()));
        assert!(t.is_empty());
    }

    /// rsyslogd: binds /dev/log, then starts threads (each reported as a
    /// fork whose child is the thread's tid). Its close() at the stop, or
    /// its exit with another thread last, closes the socket.
    #[test]
    fn a_multithreaded_binder_closes_once_its_threads_are_gone() {
        let thread = |tid: u32| Task { tid, ..task(1) };
        let bind = || Record::UnixBind { task: task(1), fd: 3, sock_type: 2, path: b"/dev/log".to_vec() };
        let mut t = UnixListeners::default();
        t.apply(&bind());
        t.apply(&Record::Fork { parent: task(1), child: 5 });
        t.apply(&Record::Fork { parent: thread(5), child: 6 });
        assert!(t.apply(&Record::UnixClose { task: task(1), fd: 3, sock_type: 2, path: vec![] }).is_empty());
        assert!(t.apply(&Record::Exit { task: thread(6), group_dead: false }).is_empty());
        let closed = t.apply(&Record::Exit { task: thread(5), group_dead: false });
        assert_eq!(closed.len(), 1, "closed once the last thread that shared the fd table is gone");
        assert_eq!(closed[0].path, b"/dev/log");
        assert!(t.is_empty());
        assert!(!t.holders.contains_key(&5) && !t.holders.contains_key(&6), "the threads hold nothing");

        // No close(): the process exits, a thread other than the main one last.
        t.apply(&bind());
        t.apply(&Record::Fork { parent: task(1), child: 7 });
        assert!(t.apply(&Record::Exit { task: task(1), group_dead: false }).is_empty());
        let closed = t.apply(&Record::Exit { task: thread(7), group_dead: true });
        assert_eq!(closed.len(), 1);
        assert!(t.is_empty() && t.holders.is_empty());
    }

    #[test]
    fn thread_exits_do_not_close() {
        let mut t = UnixListeners::default();
        t.apply(&listen(1, 3));
        assert!(t.apply(&Record::Exit { task: task(1), group_dead: false }).is_empty());
        assert_eq!(t.len(), 1);
    }
}
