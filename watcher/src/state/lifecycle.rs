//! The live listeners, keyed by (netns, proto, address and port, or path),
//! each with its owners and since when; and what their comings and goings
//! mean: a listener up or down, a service restarted (and after how long,
//! and whether the same program came back), a port taken over by someone
//! else, a second program joining a SO_REUSEPORT group.
//!
//! Keys that went down are remembered (the most recent ones, bounded) so a
//! comeback can be recognised; live ones go when their last owner closes.
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use crate::record::decode::Proto;

/// How many keys that went down are remembered for a comeback.
const DOWN_REMEMBERED: usize = 16_384;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Where {
    Inet {
        addr: IpAddr,
        port: u16,
    },
    /// A UNIX path as bytes; an abstract name starts with NUL.
    Unix {
        path: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// Network namespace inode; 0 when unknown.
    pub netns: u64,
    pub proto: Proto,
    pub local: Where,
}

/// Who holds a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub comm: Vec<u8>,
    pub exe: Option<Vec<u8>>,
    pub cmdline: Option<Vec<Vec<u8>>>,
}

impl Owner {
    /// Same program and user: an unknown side never counts as different.
    fn same_service(&self, other: &Self) -> bool {
        same(&self.exe, &other.exe) && same_user(self, other)
    }
}

fn same<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

fn same_user(a: &Owner, b: &Owner) -> bool {
    match (a.uid, b.uid) {
        (Some(x), Some(y)) => x == y,
        _ => same(&a.user, &b.user),
    }
}

/// What a sighting changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Up {
        key: ListenerKey,
        owner: Owner,
    },
    Down {
        key: ListenerKey,
        owner: Owner,
        lived_ns: u64,
    },
    Restarted {
        key: ListenerKey,
        owner: Owner,
        previous: Owner,
        gap_ns: u64,
        same_exe: bool,
        same_user: bool,
        same_cmdline: bool,
    },
    OwnerChanged {
        key: ListenerKey,
        owner: Owner,
        previous: Owner,
    },
    ReuseportJoined {
        key: ListenerKey,
        owner: Owner,
        existing: Owner,
    },
}

struct Live {
    since_ns: u64,
    owners: Vec<Owner>,
}

struct Down {
    at_ns: u64,
    last: Owner,
    /// Which entry of `down_order` stands for this down: a key that went
    /// down, came back and went down again has older entries there too.
    seq: u64,
}

#[derive(Default)]
pub struct ListenerTable {
    live: HashMap<ListenerKey, Live>,
    down: HashMap<ListenerKey, Down>,
    /// Downs in the order they happened, with their `Down::seq`; entries
    /// whose key came back up (or went down again since) are stale.
    down_order: VecDeque<(ListenerKey, u64)>,
    next_seq: u64,
}

impl ListenerTable {
    /// A listener seen up at `now_ns` (CLOCK_MONOTONIC).
    pub fn up(&mut self, key: ListenerKey, owner: Owner, now_ns: u64) -> Vec<Change> {
        if let Some(live) = self.live.get_mut(&key) {
            if live.owners.iter().any(|o| o.pid == owner.pid) {
                return Vec::new(); // the same process again (a bind, then its listen)
            }
            let existing = live.owners[0].clone();
            let joined = !live.owners.iter().any(|o| o.same_service(&owner));
            live.owners.push(owner.clone());
            return if joined { vec![Change::ReuseportJoined { key, owner, existing }] } else { Vec::new() };
        }
        let mut changes = vec![Change::Up { key: key.clone(), owner: owner.clone() }];
        if let Some(down) = self.down.remove(&key) {
            let previous = down.last;
            let same_exe = same(&previous.exe, &owner.exe);
            let same_user = same_user(&previous, &owner);
            changes.push(Change::Restarted {
                key: key.clone(),
                owner: owner.clone(),
                previous: previous.clone(),
                gap_ns: now_ns.saturating_sub(down.at_ns),
                same_exe,
                same_user,
                same_cmdline: same(&previous.cmdline, &owner.cmdline),
            });
            if !same_exe || !same_user {
                changes.push(Change::OwnerChanged { key: key.clone(), owner: owner.clone(), previous });
            }
        }
        self.live.insert(key, Live { since_ns: now_ns, owners: vec![owner] });
        changes
    }

    /// A listener closed by `pid` at `now_ns`. With other owners left (a
    /// SO_REUSEPORT group, workers), the listener stays up.
    pub fn down(&mut self, key: &ListenerKey, pid: u32, now_ns: u64) -> Vec<Change> {
        let Some(live) = self.live.get_mut(key) else {
            return Vec::new();
        };
        // The closer may be a worker that inherited the socket: then the
        // listener's first owner goes.
        let at = live.owners.iter().position(|o| o.pid == pid).unwrap_or(0);
        let owner = live.owners.remove(at);
        if !live.owners.is_empty() {
            return Vec::new();
        }
        let since = live.since_ns;
        self.live.remove(key);
        // A burst of listeners (100,000 held, then closed) would otherwise
        // keep its table's memory for the daemon's whole life.
        if self.live.capacity() > 4096 && self.live.len() * 4 < self.live.capacity() {
            self.live.shrink_to(self.live.len() * 2);
        }
        self.remember_down(key.clone(), now_ns, owner.clone());
        vec![Change::Down { key: key.clone(), owner, lived_ns: now_ns.saturating_sub(since) }]
    }

    fn remember_down(&mut self, key: ListenerKey, at_ns: u64, last: Owner) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.down.insert(key.clone(), Down { at_ns, last, seq });
        self.down_order.push_back((key, seq));
        while self.down.len() > DOWN_REMEMBERED {
            let Some((old, old_seq)) = self.down_order.pop_front() else { break };
            if self.down.get(&old).is_some_and(|d| d.seq == old_seq) {
                self.down.remove(&old);
            }
        }
        // Stale entries pile up when the same keys go down and up again (a
        // flood of listeners cycling through the ephemeral ports). Dropping
        // them all at once leaves at most DOWN_REMEMBERED entries, so this
        // scan runs once per DOWN_REMEMBERED downs at most: O(1) amortized.
        if self.down_order.len() > 2 * DOWN_REMEMBERED {
            let down = &self.down;
            self.down_order.retain(|(k, seq)| down.get(k).is_some_and(|d| d.seq == *seq));
        }
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn live_keys(&self) -> Vec<ListenerKey> {
        self.live.keys().cloned().collect()
    }

    pub fn is_live(&self, key: &ListenerKey) -> bool {
        self.live.contains_key(key)
    }

    /// The pids that hold a live listener (empty when it is not live).
    pub fn owner_pids(&self, key: &ListenerKey) -> Vec<u32> {
        self.live.get(key).map(|l| l.owners.iter().map(|o| o.pid).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn key(port: u16) -> ListenerKey {
        ListenerKey {
            netns: 1,
            proto: Proto::Tcp,
            local: Where::Inet { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port },
        }
    }

    fn owner(pid: u32, exe: &str, uid: u32) -> Owner {
        Owner {
            pid,
            uid: Some(uid),
            exe: Some(exe.as_bytes().to_vec()),
            cmdline: Some(vec![exe.as_bytes().to_vec()]),
            ..Owner::default()
        }
    }

    #[test]
    fn up_down_and_restart_with_gap() {
        let mut t = ListenerTable::default();
        assert!(matches!(t.up(key(80), owner(1, "/usr/sbin/httpd", 0), 1_000)[..], [Change::Up { .. }]));
        assert_eq!(t.up(key(80), owner(1, "/usr/sbin/httpd", 0), 1_100), vec![], "its own second sighting");
        let down = t.down(&key(80), 1, 5_000);
        assert!(matches!(down[..], [Change::Down { lived_ns: 4_000, .. }]));
        assert_eq!(t.live_count(), 0);
        let back = t.up(key(80), owner(2, "/usr/sbin/httpd", 0), 7_500);
        assert!(matches!(back[0], Change::Up { .. }));
        let Change::Restarted { gap_ns, same_exe, same_user, same_cmdline, .. } = &back[1] else { panic!("{back:?}") };
        assert_eq!((*gap_ns, *same_exe, *same_user, *same_cmdline), (2_500, true, true, true));
        assert_eq!(back.len(), 2, "same owner: no owner_changed");
    }

    #[test]
    fn another_program_on_a_known_port_is_an_owner_change() {
        let mut t = ListenerTable::default();
        t.up(key(22), owner(1, "/usr/sbin/sshd", 0), 0);
        t.down(&key(22), 1, 10);
        let back = t.up(key(22), owner(9, "/usr/bin/nc", 65534), 20);
        assert!(matches!(back[1], Change::Restarted { same_exe: false, same_user: false, .. }));
        assert!(matches!(&back[2], Change::OwnerChanged { previous, .. } if previous.pid == 1));
    }

    #[test]
    fn reuseport_group_and_workers() {
        let mut t = ListenerTable::default();
        t.up(key(443), owner(1, "/usr/sbin/nginx", 0), 0);
        // A second nginx process on the same key: a worker, nothing to say.
        assert_eq!(t.up(key(443), owner(2, "/usr/sbin/nginx", 0), 1), vec![]);
        // Another program joining the group.
        assert!(matches!(t.up(key(443), owner(3, "/tmp/x", 0), 2)[..], [Change::ReuseportJoined { .. }]));
        assert_eq!(t.down(&key(443), 3, 3), vec![]);
        assert_eq!(t.down(&key(443), 2, 4), vec![]);
        assert!(matches!(t.down(&key(443), 77, 5)[..], [Change::Down { .. }]), "closed by an inheriting worker");
    }

    #[test]
    fn remembered_downs_are_bounded() {
        let mut t = ListenerTable::default();
        for port in 0..(DOWN_REMEMBERED as u16 + 100) {
            t.up(key(port), owner(1, "/x", 0), 0);
            t.down(&key(port), 1, 1);
        }
        assert!(t.down.len() <= DOWN_REMEMBERED);
        assert!(t.down_order.len() <= 2 * DOWN_REMEMBERED + 1);
    }

    /// The same keys going down and up again and again (a flood cycling
    /// through the ephemeral ports) must neither let the order queue grow
    /// nor make every down scan it, and must not forget a recent down
    /// because an older entry of the same key reached the front.
    #[test]
    fn cycling_keys_keep_the_queue_short_and_the_latest_downs() {
        let mut t = ListenerTable::default();
        let ports = DOWN_REMEMBERED as u16 / 2;
        for round in 0..8u64 {
            for port in 0..ports {
                t.up(key(port), owner(1, "/x", 0), round);
                t.down(&key(port), 1, round);
            }
        }
        assert_eq!(t.down.len(), ports as usize);
        assert!(t.down_order.len() <= 2 * DOWN_REMEMBERED + 1, "{}", t.down_order.len());
        // Every key's latest down is still there to recognise a restart.
        for port in [0, ports / 2, ports - 1] {
            assert!(matches!(
                t.up(key(port), owner(1, "/x", 0), 10)[..],
                [Change::Up { .. }, Change::Restarted { gap_ns: 3, .. }]
            ));
        }
    }

    /// The table gives memory back after a burst of listeners closes.
    #[test]
    fn live_table_shrinks_after_a_burst() {
        let mut t = ListenerTable::default();
        for port in 0..60_000 {
            t.up(key(port), owner(1, "/x", 0), 0);
        }
        let burst = t.live.capacity();
        for port in 0..60_000 {
            t.down(&key(port), 1, 1);
        }
        assert_eq!(t.live_count(), 0);
        assert!(t.live.capacity() <= 4096 && burst >= 60_000, "{} after {burst}", t.live.capacity());
    }
}
