//! What userspace learns about a process's sockets between their creation
//! and their bind or listen: the options that matter for a listener
//! (SO_REUSEADDR, SO_REUSEPORT, IP_FREEBIND, IP_TRANSPARENT,
//! SO_BINDTODEVICE) and whether an fd is a raw or packet socket, keyed by
//! (pid, fd) from setsockopt()/socket() records and put on the events of
//! that fd.
//!
//! close() of an fd is not watched: a socket() that returns an fd with
//! options known (`SocketOnFd`, from the kernel) forgets them, so a socket
//! closed without a bind does not lend its options to the next socket on
//! its fd (apache2's SO_REUSEPORT probe). Known limit: an fd that dup2(),
//! accept() or socketpair() reuses keeps them. Entries go when the process
//! exits.

use watcher_common::{
    IP_FREEBIND, IP_TRANSPARENT, IPV6_FREEBIND, IPV6_TRANSPARENT, SO_BINDTODEVICE, SO_REUSEADDR, SO_REUSEPORT, SOL_IP,
    SOL_IPV6, SOL_SOCKET,
};

use crate::{
    model::{escape::trim_nul, fast_map::FastMap, socket::Family},
    record::decode::Record,
};

/// A raw or packet socket, as socket() made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveSocket {
    pub family: Family,
    pub sock_type: u32,
    pub protocol: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdFacts {
    /// Names of the boolean options switched on, in a fixed order.
    pub options: Vec<&'static str>,
    /// SO_BINDTODEVICE's interface name.
    pub bind_device: Option<Vec<u8>>,
    pub passive: Option<PassiveSocket>,
}

#[derive(Default)]
pub struct SocketOptions {
    by_pid: FastMap<u32, FastMap<i32, FdFacts>>,
}

const BOOLEAN_OPTIONS: [(u32, u32, &str); 6] = [
    (SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"),
    (SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT"),
    (SOL_IP, IP_FREEBIND, "IP_FREEBIND"),
    (SOL_IP, IP_TRANSPARENT, "IP_TRANSPARENT"),
    (SOL_IPV6, IPV6_FREEBIND, "IPV6_FREEBIND"),
    (SOL_IPV6, IPV6_TRANSPARENT, "IPV6_TRANSPARENT"),
];

impl SocketOptions {
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::SockoptSet { task, fd, level, optname, value } => {
                let facts = self.by_pid.entry(task.pid).or_default().entry(*fd).or_default();
                if (*level, *optname) == (SOL_SOCKET, SO_BINDTODEVICE) {
                    let name = trim_nul(value);
                    facts.bind_device = (!name.is_empty()).then(|| name.to_vec());
                } else if let Some(&(_, _, name)) = BOOLEAN_OPTIONS.iter().find(|(l, o, _)| (l, o) == (level, optname))
                {
                    // An int option: any non-zero value switches it on.
                    let on = value.iter().any(|&b| b != 0);
                    facts.options.retain(|&o| o != name);
                    if on {
                        facts.options.push(name);
                        facts.options.sort_by_key(|o| BOOLEAN_OPTIONS.iter().position(|b| b.2 == *o));
                    }
                }
            }
            Record::PassiveSocket { task, fd, family, sock_type, protocol } => {
                // A new socket on this fd: whatever was known of the old one is stale.
                self.by_pid.entry(task.pid).or_default().insert(
                    *fd,
                    FdFacts {
                        passive: Some(PassiveSocket { family: *family, sock_type: *sock_type, protocol: *protocol }),
                        ..FdFacts::default()
                    },
                );
            }
            Record::SocketOnFd { task, fd } => {
                if let Some(fds) = self.by_pid.get_mut(&task.pid) {
                    fds.remove(fd);
                }
            }
            Record::Exit { task, group_dead: true } => {
                self.by_pid.remove(&task.pid);
            }
            _ => {}
        }
    }

    pub fn get(&self, pid: u32, fd: Option<i32>) -> Option<&FdFacts> {
        self.by_pid.get(&pid)?.get(&fd?)
    }

    /// Processes with entries (bounded by the processes alive).
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::decode::Task;

    fn task(pid: u32) -> Task {
        Task::of_process(pid, b"")
    }

    fn set(t: &mut SocketOptions, fd: i32, level: u32, optname: u32, value: &[u8]) {
        t.apply(&Record::SockoptSet { task: task(7), fd, level, optname, value: value.to_vec() });
    }

    #[test]
    fn options_switch_on_and_off_per_fd() {
        let mut t = SocketOptions::default();
        set(&mut t, 3, SOL_SOCKET, SO_REUSEPORT, &1i32.to_ne_bytes());
        set(&mut t, 3, SOL_SOCKET, SO_REUSEADDR, &1i32.to_ne_bytes());
        set(&mut t, 3, SOL_SOCKET, SO_BINDTODEVICE, b"lo\0");
        set(&mut t, 4, SOL_IP, IP_FREEBIND, &1i32.to_ne_bytes());
        let fd3 = t.get(7, Some(3)).unwrap();
        assert_eq!(fd3.options, ["SO_REUSEADDR", "SO_REUSEPORT"]);
        assert_eq!(fd3.bind_device.as_deref(), Some(b"lo".as_slice()));
        assert_eq!(t.get(7, Some(4)).unwrap().options, ["IP_FREEBIND"]);
        set(&mut t, 3, SOL_SOCKET, SO_REUSEADDR, &0i32.to_ne_bytes());
        assert_eq!(t.get(7, Some(3)).unwrap().options, ["SO_REUSEPORT"]);
        assert_eq!(t.get(7, None), None);
        assert_eq!(t.get(8, Some(3)), None);
        t.apply(&Record::Exit { task: task(7), group_dead: true });
        assert!(t.is_empty());
    }

    /// apache2: SO_REUSEPORT on a probe socket, closed; the listener gets
    /// its fd and only SO_REUSEADDR.
    #[test]
    fn a_new_socket_on_an_fd_does_not_inherit_its_options() {
        let mut t = SocketOptions::default();
        set(&mut t, 3, SOL_SOCKET, SO_REUSEPORT, &1i32.to_ne_bytes());
        t.apply(&Record::SocketOnFd { task: task(7), fd: 3 });
        set(&mut t, 3, SOL_SOCKET, SO_REUSEADDR, &1i32.to_ne_bytes());
        assert_eq!(t.get(7, Some(3)).unwrap().options, ["SO_REUSEADDR"]);
    }
}
