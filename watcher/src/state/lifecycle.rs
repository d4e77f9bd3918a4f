//! The live listeners, keyed by (netns, proto, address and port, or path),
//! and what their comings and goings mean: a listener up or down, a service
//! restarted (after how long, and whether the same program came back), a
//! port taken over by someone else, a second socket joining a SO_REUSEPORT
//! group, and a listener whose processes handed it on (a daemon that forked
//! and let its parent exit).
//!
//! A key has sockets; a socket has a creator and holders. Several holders
//! of one socket (a parent and its forked workers) are one listener and
//! nothing to report; several sockets on one key are a SO_REUSEPORT group.
//! A listener goes down when its last socket closes in the kernel, whoever
//! of its holders closes it last.
//!
//! Keys that went down are remembered (the most recent ones, bounded) so a
//! comeback can be recognised.
//!
//! The table is shaped for a host with many listeners (100,000 held by a
//! few processes): each key is stored once, in its slot; the index from key
//! to slot holds slot numbers; other tables (who holds what, cookies) name a
//! listener by its [`ListenerId`]; a socket's holders are shared (`Arc`)
//! among the sockets of one process, and the common socket (one holder,
//! nothing in its past) needs no heap block of its own.
use std::{collections::VecDeque, hash::BuildHasher as _, sync::Arc};

use hashbrown::HashTable;
use smallvec::{SmallVec, smallvec};
use thin_vec::ThinVec;

use crate::model::{
    fast_map::FastMap,
    holder::Holder,
    socket::{Local, Proto},
};

/// How many keys that went down are remembered for a comeback.
const DOWN_REMEMBERED: usize = 16_384;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// Network namespace inode; 0 when unknown.
    pub netns: u64,
    pub proto: Proto,
    /// `Local::Inet` or `Local::Unix`: raw and packet sockets have no lifecycle.
    pub local: Local,
}

/// A live listener as other tables name it: its slot in the table, and the
/// generation of the listener in that slot, so that an id kept after its
/// listener went down never names the listener that took the slot next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId {
    slot: u32,
    generation: u32,
}

/// The kernel's identity of a socket. Live records and the snapshot name
/// sockets differently, so an identity only ever equals one of its own
/// kind: the socket cookie (the snapshot's sockets, which sock_diag gives
/// it for, and the live UDP binds and closes, which carry the cgroup
/// hooks' `bpf_get_socket_cookie`), the kernel's socket pointer (live TCP
/// state changes), the inode (a snapshot socket without a cookie).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketId {
    Cookie(u64),
    Kernel(u64),
    Inode(u64),
}

/// One socket on a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub id: Option<SocketId>,
    /// The task whose bind or listen made it wait (for a socket already
    /// there at start: its first holder, with the socket's owner uid).
    pub creator: Arc<Holder>,
    /// The processes known to hold it, the creator among them while it
    /// does; forked children are added as they fork (they inherit it).
    /// Two fit without a heap block: a listener and its first worker.
    pub holders: SmallVec<[Arc<Holder>; 2]>,
    /// The pids events have named as its holders so far; when all are gone
    /// and others still hold it, an event says who holds it now.
    pub named: SmallVec<[u32; 4]>,
    /// The named holders that exited since the last event that named any.
    pub previous_named: ThinVec<Arc<Holder>>,
    /// Every process other than the creator that held it in its life (the
    /// first [`HELD_BY_KEPT`]): forked children that exited on their own
    /// are named by `listener_down`.
    pub held_by: ThinVec<Arc<Holder>>,
}

/// How many past holders a socket remembers.
pub const HELD_BY_KEPT: usize = 32;

impl Socket {
    /// A socket made by `creator`, held by `holders` (none given: by its creator).
    pub fn new(id: Option<SocketId>, creator: impl Into<Arc<Holder>>, holders: Vec<Holder>) -> Self {
        let creator = creator.into();
        let holders: SmallVec<[Arc<Holder>; 2]> = if holders.is_empty() && creator.pid != 0 {
            smallvec![creator.clone()]
        } else {
            holders.into_iter().map(Arc::new).collect()
        };
        let named = holders.iter().map(|h| h.pid).filter(|&p| p != 0).collect();
        let mut socket = Self {
            id,
            creator,
            holders: SmallVec::with_capacity(holders.len()),
            named,
            previous_named: ThinVec::new(),
            held_by: ThinVec::new(),
        };
        for h in holders {
            socket.add_holder(h);
        }
        socket
    }

    /// A holder now, and so one in its life.
    fn add_holder(&mut self, holder: Arc<Holder>) {
        if let Some(known) = self.held_by.iter_mut().find(|h| h.pid == holder.pid) {
            // Named again, as it is now: a forked child was first named
            // after its parent, before it dropped privileges (rpcbind's
            // child, root at its fork, `_rpc` when /proc is read).
            *known = holder.clone();
        } else if holder.pid != 0 && holder.pid != self.creator.pid && self.held_by.len() < HELD_BY_KEPT {
            self.held_by.push(holder.clone());
        }
        match self.holders.iter_mut().find(|h| h.pid == holder.pid) {
            Some(known) => *known = holder,
            None => self.holders.push(holder),
        }
    }

    fn holds(&self, pid: u32) -> bool {
        pid != 0 && (self.creator.pid == pid || self.holders.iter().any(|h| h.pid == pid))
    }

    /// The holders other than the creator: what an event adds to the
    /// creator's fields (workers, or the children a daemon forked).
    pub fn other_holders(&self) -> Vec<Arc<Holder>> {
        self.holders.iter().filter(|h| h.pid != self.creator.pid).cloned().collect()
    }

    /// Every holder named in the socket (creator, holders, past holders):
    /// what [`ListenerTable::share_holders`] gives a shared copy for.
    fn every_holder_mut(&mut self) -> impl Iterator<Item = &mut Arc<Holder>> {
        std::iter::once(&mut self.creator)
            .chain(self.holders.iter_mut())
            .chain(self.held_by.iter_mut())
            .chain(self.previous_named.iter_mut())
    }
}

/// What a sighting changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Up {
        key: ListenerKey,
        socket: Socket,
    },
    Down {
        key: ListenerKey,
        socket: Socket,
        lived_ns: u64,
    },
    Restarted {
        key: ListenerKey,
        socket: Socket,
        previous: Arc<Holder>,
        gap_ns: u64,
        same_exe: bool,
        same_user: bool,
        same_cmdline: bool,
    },
    OwnerChanged {
        key: ListenerKey,
        socket: Socket,
        previous: Arc<Holder>,
    },
    /// Another socket on a live key, made by a different program or user.
    ReuseportJoined {
        key: ListenerKey,
        socket: Socket,
        existing: Arc<Holder>,
    },
    /// Every process the events named for this socket is gone; these hold it now.
    HoldersChanged {
        key: ListenerKey,
        socket: Socket,
        previous: Vec<Arc<Holder>>,
    },
}

struct Live {
    key: ListenerKey,
    /// Which listener of its slot this is (see [`ListenerId`]).
    generation: u32,
    since_ns: u64,
    /// One socket, or a SO_REUSEPORT group; one needs no heap block.
    sockets: SmallVec<[Socket; 1]>,
}

struct Down {
    at_ns: u64,
    last: Arc<Holder>,
    /// Which entry of `down_order` stands for this down: a key that went
    /// down, came back and went down again has older entries there too.
    seq: u64,
}

#[derive(Default)]
pub struct ListenerTable {
    /// Only who holds what is kept (`watch`, whose one lifecycle event is
    /// `holders_changed`): no remembered downs, and no changes built for
    /// sockets coming up or going down, nobody would read them.
    holders_only: bool,
    /// The live listeners, by slot; a free slot is None.
    slots: Vec<Option<Live>>,
    /// Slots freed, to be used again; an entry is only a hint (a slot
    /// past the end or in use again is skipped when it comes up).
    free: Vec<u32>,
    /// Slot numbers, found by their listener's key: the key itself is
    /// stored once, in its slot.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// The generation the next listener gets: unique across slots, so a
    /// slot dropped from the end and made again cannot repeat one.
    next_generation: u32,
    down: FastMap<ListenerKey, Down>,
    /// Downs in the order they happened, with their `Down::seq`; entries
    /// whose key came back up (or went down again since) are stale.
    down_order: VecDeque<(ListenerKey, u64)>,
    next_seq: u64,
}

impl ListenerTable {
    /// The table `watch` keeps: see [`ListenerTable::holders_only`].
    pub fn holders_only() -> Self {
        Self { holders_only: true, ..Self::default() }
    }

    fn slot_of(&self, key: &ListenerKey) -> Option<usize> {
        let slots = &self.slots;
        let found = self.index.find(self.hasher.hash_one(key), |&s| is_key(slots, s, key))?;
        Some(*found as usize)
    }

    fn live(&self, key: &ListenerKey) -> Option<&Live> {
        self.slots[self.slot_of(key)?].as_ref()
    }

    fn live_mut(&mut self, key: &ListenerKey) -> Option<&mut Live> {
        let slot = self.slot_of(key)?;
        self.slots[slot].as_mut()
    }

    fn live_by_id(&mut self, id: ListenerId) -> Option<&mut Live> {
        self.slots.get_mut(id.slot as usize)?.as_mut().filter(|live| live.generation == id.generation)
    }

    /// The id of the live listener on `key`.
    pub fn id_of(&self, key: &ListenerKey) -> Option<ListenerId> {
        // One look-up: the slot, then the generation of what is in it.
        let slot = self.slot_of(key)?;
        let live = self.slots[slot].as_ref()?;
        Some(ListenerId { slot: slot as u32, generation: live.generation })
    }

    /// The key of the listener `id` names, while it is live.
    pub fn key_of(&self, id: ListenerId) -> Option<&ListenerKey> {
        let live = self.slots.get(id.slot as usize)?.as_ref()?;
        (live.generation == id.generation).then_some(&live.key)
    }

    fn insert(&mut self, key: ListenerKey, since_ns: u64, socket: Socket) {
        let hash = self.hasher.hash_one(&key);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let live = Some(Live { key, generation, since_ns, sockets: smallvec![socket] });
        let reusable =
            std::iter::from_fn(|| self.free.pop()).find(|&s| self.slots.get(s as usize).is_some_and(Option::is_none));
        let slot = match reusable {
            Some(slot) => {
                self.slots[slot as usize] = live;
                slot
            }
            None => {
                self.slots.push(live);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| slot_hash(slots, hasher, s));
    }

    fn remove(&mut self, key: &ListenerKey) -> Option<Live> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        let (slot, _) = self.index.find_entry(hash, |&s| is_key(slots, s, key)).ok()?.remove();
        let live = self.slots[slot as usize].take();
        self.free.push(slot);
        // A burst of listeners (100,000 held, then closed) would otherwise
        // keep its table's memory for the daemon's whole life.
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        if self.free.len() > 2 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.free.retain(|&s| slots.get(s as usize).is_some_and(Option::is_none));
        }
        if self.slots.capacity() > 4096 && self.slots.len() * 4 < self.slots.capacity() {
            self.slots.shrink_to(self.slots.len() * 2);
            self.free.shrink_to(self.free.len() * 2);
        }
        if self.index.capacity() > 4096 && self.index.len() * 4 < self.index.capacity() {
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.index.shrink_to(self.index.len() * 2, |&s| slot_hash(slots, hasher, s));
        }
        live
    }

    /// A socket seen waiting on `key` at `now_ns` (CLOCK_MONOTONIC): a live
    /// bind or listen (one holder), or a snapshot row (every holder).
    pub fn up(&mut self, key: ListenerKey, socket: Socket, now_ns: u64) -> Vec<Change> {
        let holders_only = self.holders_only;
        if let Some(live) = self.live_mut(&key) {
            // The same socket again: its identity, or (identities of another
            // kind) a process that already holds a socket of this key — a
            // bind then its listen, a worker's sighting.
            let same = live
                .sockets
                .iter()
                .position(|s| matches!((s.id, socket.id), (Some(a), Some(b)) if a == b))
                .or_else(|| {
                    live.sockets.iter().position(|s| {
                        socket.holders.iter().any(|h| s.holds(h.pid))
                            && !matches!((s.id, socket.id), (Some(a), Some(b)) if std::mem::discriminant(&a) == std::mem::discriminant(&b))
                    })
                });
            if let Some(at) = same {
                let known = &mut live.sockets[at];
                known.id = known.id.or(socket.id);
                for h in socket.holders {
                    if !known.holds(h.pid) {
                        known.add_holder(h);
                    }
                }
                return Vec::new();
            }
            if holders_only {
                live.sockets.push(socket);
                return Vec::new();
            }
            let existing = live.sockets[0].creator.clone();
            let joined = !live.sockets.iter().any(|s| s.creator.same_service(&socket.creator));
            live.sockets.push(socket.clone());
            return if joined { vec![Change::ReuseportJoined { key, socket, existing }] } else { Vec::new() };
        }
        if holders_only {
            self.insert(key, now_ns, socket);
            return Vec::new();
        }
        let mut changes = vec![Change::Up { key: key.clone(), socket: socket.clone() }];
        if let Some(down) = self.down.remove(&key) {
            let previous = down.last;
            let owner = &socket.creator;
            let (same_exe, same_user) = (previous.same_exe(owner), previous.same_user(owner));
            changes.push(Change::Restarted {
                key: key.clone(),
                socket: socket.clone(),
                previous: previous.clone(),
                gap_ns: now_ns.saturating_sub(down.at_ns),
                same_exe,
                same_user,
                same_cmdline: previous.same_cmdline(owner),
            });
            if !same_exe || !same_user {
                changes.push(Change::OwnerChanged { key: key.clone(), socket: socket.clone(), previous });
            }
        }
        self.insert(key, now_ns, socket);
        changes
    }

    /// A socket of `key` closed in the kernel at `now_ns`, by `pid` (its last
    /// holder to let go; 0 when unknown). The key stays up while other
    /// sockets of a SO_REUSEPORT group remain.
    pub fn closed(&mut self, key: &ListenerKey, id: Option<SocketId>, pid: u32, now_ns: u64) -> Vec<Change> {
        let Some(live) = self.live_mut(key) else {
            return Vec::new();
        };
        let at = id
            .and_then(|id| live.sockets.iter().position(|s| s.id == Some(id)))
            .or_else(|| live.sockets.iter().position(|s| s.holds(pid)))
            .unwrap_or(0);
        let socket = live.sockets.remove(at);
        if !live.sockets.is_empty() {
            return Vec::new();
        }
        let Some(live) = self.remove(key) else {
            return Vec::new();
        };
        if !self.holders_only {
            self.remember_down(key.clone(), now_ns, socket.creator.clone());
        }
        vec![Change::Down { key: live.key, socket, lived_ns: now_ns.saturating_sub(live.since_ns) }]
    }

    /// The holders of `socket` that are equal to one in `known` become
    /// copies of it: the sockets of one process share its holder.
    pub fn share_holders(socket: &mut Socket, known: impl Fn(u32) -> Option<Arc<Holder>>) {
        for holder in socket.every_holder_mut() {
            if let Some(shared) = known(holder.pid)
                && !Arc::ptr_eq(&shared, holder)
                && shared == *holder
            {
                *holder = shared;
            }
        }
    }

    /// `parent` forked `child`: the child inherits every socket the parent
    /// holds. Not an event (a server's workers fork all the time); the
    /// inheritance is checked in /proc only when it comes to matter.
    pub fn forked(&mut self, parent: u32, child: &Arc<Holder>, ids: &[ListenerId]) {
        for &id in ids {
            let Some(live) = self.live_by_id(id) else { continue };
            for socket in live.sockets.iter_mut().filter(|s| s.holders.iter().any(|h| h.pid == parent)) {
                socket.add_holder(child.clone());
            }
        }
    }

    /// Process `pid` exited: it holds nothing any more. Returns the keys
    /// whose sockets have lost every holder the events named while others
    /// may still hold them: the caller checks those in /proc and calls
    /// [`Self::holders_now`].
    pub fn exited(&mut self, pid: u32, ids: &[ListenerId]) -> Vec<ListenerKey> {
        let mut orphaned = Vec::new();
        for &id in ids {
            let Some(live) = self.live_by_id(id) else { continue };
            let mut lost_every_named = false;
            for socket in &mut live.sockets {
                let was_named = socket.named.contains(&pid);
                if was_named && let Some(gone) = socket.holders.iter().find(|h| h.pid == pid) {
                    socket.previous_named.push(gone.clone());
                }
                socket.holders.retain(|h| h.pid != pid);
                socket.named.retain(|p| *p != pid);
                lost_every_named |= was_named && socket.named.is_empty();
            }
            if lost_every_named && !orphaned.contains(&live.key) {
                orphaned.push(live.key.clone());
            }
        }
        orphaned
    }

    /// Process `pid` is seen as `uid` (at its exit, or as it closes a
    /// socket): a holder first named after its parent (at its fork) or from
    /// /proc that changed user since (exim4's, apache2's and rpcbind's
    /// children drop root) is named as it was last, `user` its name.
    pub fn seen_as(&mut self, pid: u32, uid: u32, user: impl Fn() -> Option<String>, ids: &[ListenerId]) {
        for &id in ids {
            let Some(live) = self.live_by_id(id) else { continue };
            for socket in &mut live.sockets {
                for h in socket.holders.iter_mut().chain(socket.held_by.iter_mut()) {
                    if h.pid == pid && h.uid != Some(uid) {
                        let h = Arc::make_mut(h);
                        (h.uid, h.user) = (Some(uid), user());
                    }
                }
            }
        }
    }

    /// `tid` was a thread, not a process: whatever it was taken to hold
    /// (at its clone, reported as a fork) it never held on its own.
    pub fn not_a_holder(&mut self, tid: u32, ids: &[ListenerId]) {
        for &id in ids {
            let Some(live) = self.live_by_id(id) else { continue };
            for socket in &mut live.sockets {
                socket.holders.retain(|h| h.pid != tid);
                socket.held_by.retain(|h| h.pid != tid);
            }
        }
    }

    /// The processes that may hold the sockets of `key` whose named holders
    /// are all gone: what [`Self::holders_now`] needs checked.
    pub fn unconfirmed_holders(&self, key: &ListenerKey) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .sockets(key)
            .iter()
            .filter(|s| s.named.is_empty())
            .flat_map(|s| s.holders.iter().map(|h| h.pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Who holds the sockets of `key` whose named holders are gone, as
    /// /proc says (`holders_of` each such socket: by its identity where
    /// /proc can tell it, so that a new socket on the same key is not taken
    /// for the old one): they become the named holders, and an event says so.
    pub fn holders_now(
        &mut self,
        key: &ListenerKey,
        mut holders_of: impl FnMut(&Socket) -> Vec<Holder>,
    ) -> Vec<Change> {
        let Some(live) = self.live_mut(key) else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        for socket in live.sockets.iter_mut().filter(|s| s.named.is_empty()) {
            let holders = holders_of(socket);
            let previous = std::mem::take(&mut socket.previous_named).into_iter().collect();
            socket.holders.clear();
            socket.named = holders.iter().map(|h| h.pid).collect();
            for h in holders {
                socket.add_holder(Arc::new(h));
            }
            if !socket.named.is_empty() {
                changes.push(Change::HoldersChanged { key: key.clone(), socket: socket.clone(), previous });
            }
        }
        changes
    }

    fn remember_down(&mut self, key: ListenerKey, at_ns: u64, last: Arc<Holder>) {
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
        self.index.len()
    }

    pub fn live_keys(&self) -> Vec<ListenerKey> {
        self.slots.iter().flatten().map(|live| live.key.clone()).collect()
    }

    pub fn is_live(&self, key: &ListenerKey) -> bool {
        self.slot_of(key).is_some()
    }

    /// The sockets of a live key (empty when it is not live).
    pub fn sockets(&self, key: &ListenerKey) -> &[Socket] {
        self.live(key).map_or(&[], |l| &l.sockets)
    }

    /// The sockets of the listener `id` names (empty once it is not live).
    pub fn sockets_of(&self, id: ListenerId) -> &[Socket] {
        match self.slots.get(id.slot as usize) {
            Some(Some(live)) if live.generation == id.generation => &live.sockets,
            _ => &[],
        }
    }

    /// Every pid known to hold a socket of a live key.
    pub fn holder_pids(&self, key: &ListenerKey) -> Vec<u32> {
        pids_of(self.sockets(key))
    }

    /// Whether `pid` is known to hold a socket of the listener `id` names.
    pub fn holds(&self, id: ListenerId, pid: u32) -> bool {
        self.sockets_of(id).iter().any(|s| s.holders.iter().any(|h| h.pid == pid))
    }
}

fn pids_of(sockets: &[Socket]) -> Vec<u32> {
    let mut pids: Vec<u32> = sockets.iter().flat_map(|s| s.holders.iter().map(|h| h.pid)).filter(|&p| p != 0).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Whether slot `slot` holds the listener on `key`.
fn is_key(slots: &[Option<Live>], slot: u32, key: &ListenerKey) -> bool {
    slots.get(slot as usize).and_then(Option::as_ref).is_some_and(|live| live.key == *key)
}

/// The hash of the key in slot `slot`, to place it in the index again when
/// the index grows (every indexed slot is live).
fn slot_hash(slots: &[Option<Live>], hasher: &foldhash::fast::RandomState, slot: u32) -> u64 {
    slots.get(slot as usize).and_then(Option::as_ref).map_or(0, |live| hasher.hash_one(&live.key))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn key(port: u16) -> ListenerKey {
        ListenerKey {
            netns: 1,
            proto: Proto::Tcp,
            local: Local::Inet { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port },
        }
    }

    fn owner(pid: u32, exe: &str, uid: u32) -> Holder {
        Holder {
            pid,
            uid: Some(uid),
            exe: Some(exe.as_bytes().to_vec().into()),
            cmdline: Some(vec![exe.as_bytes().to_vec()].into()),
            ..Holder::default()
        }
    }

    /// A live sighting: one socket, its creator its one holder.
    fn live(id: u64, holder: Holder) -> Socket {
        Socket::new(Some(SocketId::Kernel(id)), holder, Vec::new())
    }

    #[test]
    fn up_down_and_restart_with_gap() {
        let mut t = ListenerTable::default();
        assert!(matches!(t.up(key(80), live(7, owner(1, "/usr/sbin/httpd", 0)), 1_000)[..], [Change::Up { .. }]));
        assert_eq!(t.up(key(80), live(7, owner(1, "/usr/sbin/httpd", 0)), 1_100), vec![], "its own second sighting");
        let down = t.closed(&key(80), Some(SocketId::Kernel(7)), 1, 5_000);
        assert!(matches!(down[..], [Change::Down { lived_ns: 4_000, .. }]));
        assert_eq!(t.live_count(), 0);
        let back = t.up(key(80), live(8, owner(2, "/usr/sbin/httpd", 0)), 7_500);
        assert!(matches!(back[0], Change::Up { .. }));
        let Change::Restarted { gap_ns, same_exe, same_user, same_cmdline, .. } = &back[1] else { panic!("{back:?}") };
        assert_eq!((*gap_ns, *same_exe, *same_user, *same_cmdline), (2_500, true, true, true));
        assert_eq!(back.len(), 2, "same owner: no owner_changed");
    }

    #[test]
    fn another_program_on_a_known_port_is_an_owner_change() {
        let mut t = ListenerTable::default();
        t.up(key(22), live(1, owner(1, "/usr/sbin/sshd", 0)), 0);
        t.closed(&key(22), Some(SocketId::Kernel(1)), 1, 10);
        let back = t.up(key(22), live(2, owner(9, "/usr/bin/nc", 65534)), 20);
        assert!(matches!(back[1], Change::Restarted { same_exe: false, same_user: false, .. }));
        assert!(matches!(&back[2], Change::OwnerChanged { previous, .. } if previous.pid == 1));
    }

    /// A parent and two forked workers hold one socket: one listener, no
    /// reuseport group; it goes down when the socket closes, whichever
    /// holder closes it last.
    #[test]
    fn one_socket_with_three_holders_is_one_listener() {
        let mut t = ListenerTable::default();
        let parent = owner(10, "/usr/sbin/apache2", 0);
        let workers = [owner(11, "/usr/sbin/apache2", 33), owner(12, "/usr/sbin/apache2", 33)];
        let socket = Socket::new(
            Some(SocketId::Inode(500)),
            parent.clone(),
            vec![parent.clone(), workers[0].clone(), workers[1].clone()],
        );
        let changes = t.up(key(80), socket, 0);
        assert!(matches!(&changes[..], [Change::Up { socket, .. }] if socket.holders.len() == 3), "{changes:?}");
        assert_eq!(t.sockets(&key(80)).len(), 1);
        assert_eq!(t.holder_pids(&key(80)), vec![10, 11, 12]);
        // A worker's own sighting of the socket is nothing new.
        assert_eq!(t.up(key(80), live(9, workers[1].clone()), 1), vec![]);
        assert_eq!(t.sockets(&key(80)).len(), 1);
        // Closed in the kernel by the last worker to let go: the listener is down.
        let down = t.closed(&key(80), Some(SocketId::Kernel(9)), 12, 5);
        assert!(matches!(&down[..], [Change::Down { socket, .. }] if socket.creator.pid == 10), "{down:?}");
        // apache2ctl start: the same program back, a restart, no owner change.
        let back = t.up(key(80), live(20, owner(30, "/usr/sbin/apache2", 0)), 9);
        assert!(matches!(&back[..], [Change::Up { .. }, Change::Restarted { same_exe: true, same_user: true, .. }]));
    }

    /// Two sockets on one key (SO_REUSEPORT) are a group: the key is down
    /// only when both closed; another program joining is reported.
    #[test]
    fn two_sockets_on_one_key_are_a_reuseport_group() {
        let mut t = ListenerTable::default();
        t.up(key(443), live(1, owner(1, "/usr/sbin/nginx", 0)), 0);
        assert_eq!(
            t.up(key(443), live(2, owner(2, "/usr/sbin/nginx", 0)), 1),
            vec![],
            "same program: a worker's socket"
        );
        assert_eq!(t.sockets(&key(443)).len(), 2);
        assert!(matches!(t.up(key(443), live(3, owner(3, "/tmp/x", 0)), 2)[..], [Change::ReuseportJoined { .. }]));
        assert_eq!(t.closed(&key(443), Some(SocketId::Kernel(3)), 3, 3), vec![]);
        assert_eq!(t.closed(&key(443), Some(SocketId::Kernel(1)), 1, 4), vec![]);
        assert!(matches!(t.closed(&key(443), Some(SocketId::Kernel(2)), 2, 5)[..], [Change::Down { .. }]));
    }

    /// A daemon that forked after listening and let its parent exit: the
    /// socket is orphaned of every named holder until /proc says who has it.
    #[test]
    fn holders_follow_a_daemon_that_forked() {
        let mut t = ListenerTable::default();
        t.up(key(111), live(1, owner(100, "/sbin/rpcbind", 0)), 0);
        // It forks; the child inherits the socket, nothing to say yet.
        t.forked(100, &Arc::new(owner(101, "/sbin/rpcbind", 0)), &[t.id_of(&key(111)).unwrap()]);
        assert_eq!(t.holder_pids(&key(111)), vec![100, 101]);
        assert_eq!(t.exited(5, &[t.id_of(&key(111)).unwrap()]), vec![], "not a holder");
        // The parent exits: no process the events named holds it any more.
        assert_eq!(t.exited(100, &[t.id_of(&key(111)).unwrap()]), vec![key(111)]);
        assert_eq!(t.unconfirmed_holders(&key(111)), vec![101]);
        let changes = t.holders_now(&key(111), |_| vec![owner(101, "/sbin/rpcbind", 111)]);
        let [Change::HoldersChanged { socket, previous, .. }] = &changes[..] else { panic!("{changes:?}") };
        assert_eq!((socket.holders[0].pid, socket.creator.pid), (101, 100));
        assert_eq!(previous.iter().map(|h| h.pid).collect::<Vec<_>>(), vec![100], "who the events named before");
        assert_eq!(t.holder_pids(&key(111)), vec![101]);
        // Now 101 is named: its exit orphans the socket again.
        assert_eq!(t.exited(101, &[t.id_of(&key(111)).unwrap()]), vec![key(111)]);
        // Its listener_down names the child as /proc found it, after it
        // dropped privileges, not as it was at its fork (root).
        let down = t.closed(&key(111), Some(SocketId::Kernel(1)), 101, 10);
        let [Change::Down { socket, .. }] = &down[..] else { panic!("{down:?}") };
        let child: Vec<(u32, Option<u32>)> = socket.held_by.iter().map(|h| (h.pid, h.uid)).collect();
        assert_eq!(child, vec![(101, Some(111))]);
    }

    /// A worker forked as root drops to www-data and exits: the listener's
    /// down names it as www-data.
    #[test]
    fn a_holder_is_named_with_its_user_at_its_exit() {
        let mut t = ListenerTable::default();
        t.up(key(80), live(1, owner(10, "/usr/sbin/apache2", 0)), 0);
        t.forked(10, &Arc::new(owner(11, "/usr/sbin/apache2", 0)), &[t.id_of(&key(80)).unwrap()]);
        let id = t.id_of(&key(80)).unwrap();
        t.seen_as(11, 33, || Some("www-data".into()), &[id]);
        t.exited(11, &[t.id_of(&key(80)).unwrap()]);
        let down = t.closed(&key(80), Some(SocketId::Kernel(1)), 10, 10);
        let [Change::Down { socket, .. }] = &down[..] else { panic!("{down:?}") };
        let worker: Vec<(u32, Option<u32>, Option<&str>)> =
            socket.held_by.iter().map(|h| (h.pid, h.uid, h.user.as_deref())).collect();
        assert_eq!(worker, vec![(11, Some(33), Some("www-data"))]);
    }

    /// A thread's clone, reported as a fork, was taken for a holder; at the
    /// thread's exit it is none, and the socket's down does not name it.
    #[test]
    fn a_thread_is_not_a_holder() {
        let mut t = ListenerTable::default();
        t.up(key(514), live(1, owner(100, "/usr/sbin/rsyslogd", 0)), 0);
        t.forked(100, &Arc::new(owner(103, "/usr/sbin/rsyslogd", 0)), &[t.id_of(&key(514)).unwrap()]);
        t.not_a_holder(103, &[t.id_of(&key(514)).unwrap()]);
        assert_eq!(t.holder_pids(&key(514)), vec![100]);
        let down = t.closed(&key(514), Some(SocketId::Kernel(1)), 100, 10);
        let [Change::Down { socket, .. }] = &down[..] else { panic!("{down:?}") };
        assert!(socket.held_by.is_empty(), "{:?}", socket.held_by);
    }

    /// A daemon restarted while the old one's socket (from the snapshot,
    /// by its cookie) was still open: two sockets on one key, told apart by
    /// their identity. /proc's holders of the new one are not handed to
    /// the old one, and each close takes down its own socket.
    #[test]
    fn an_old_and_a_new_socket_on_one_key_are_told_apart_by_id() {
        let mut t = ListenerTable::default();
        let old = Socket::new(Some(SocketId::Cookie(41)), owner(100, "/sbin/rpcbind", 0), Vec::new());
        assert!(matches!(t.up(key(111), old, 0)[..], [Change::Up { .. }]));
        // The new daemon binds the same key (SO_REUSEADDR, UDP): its live bind carries its cookie.
        let new = Socket::new(Some(SocketId::Cookie(42)), owner(200, "/sbin/rpcbind", 0), Vec::new());
        assert_eq!(t.up(key(111), new, 1), vec![], "the same service: nothing to say yet");
        assert_eq!(t.sockets(&key(111)).len(), 2);
        // The old daemon exits; /proc says 200 holds cookie 42, nobody 41.
        assert_eq!(t.exited(100, &[t.id_of(&key(111)).unwrap()]), vec![key(111)]);
        let changes = t.holders_now(&key(111), |s| match s.id {
            Some(SocketId::Cookie(42)) => vec![owner(200, "/sbin/rpcbind", 0)],
            _ => Vec::new(),
        });
        assert_eq!(changes, vec![], "the old socket is not handed to the new daemon");
        // The old socket's close (sock_release, by cookie) takes it down,
        // not the new one, though no pid tells them apart.
        assert_eq!(t.closed(&key(111), Some(SocketId::Cookie(41)), 0, 2), vec![]);
        assert_eq!(t.sockets(&key(111)).len(), 1);
        assert_eq!(t.sockets(&key(111))[0].id, Some(SocketId::Cookie(42)));
        assert_eq!(t.sockets(&key(111))[0].creator.pid, 200);
        let down = t.closed(&key(111), Some(SocketId::Cookie(42)), 200, 3);
        assert!(matches!(&down[..], [Change::Down { socket, .. }] if socket.creator.pid == 200), "{down:?}");
    }

    #[test]
    fn remembered_downs_are_bounded() {
        let mut t = ListenerTable::default();
        for port in 0..(DOWN_REMEMBERED as u16 + 100) {
            t.up(key(port), live(1, owner(1, "/x", 0)), 0);
            t.closed(&key(port), None, 1, 1);
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
                t.up(key(port), live(1, owner(1, "/x", 0)), round);
                t.closed(&key(port), None, 1, round);
            }
        }
        assert_eq!(t.down.len(), ports as usize);
        assert!(t.down_order.len() <= 2 * DOWN_REMEMBERED + 1, "{}", t.down_order.len());
        // Every key's latest down is still there to recognise a restart.
        for port in [0, ports / 2, ports - 1] {
            assert!(matches!(
                t.up(key(port), live(1, owner(1, "/x", 0)), 10)[..],
                [Change::Up { .. }, Change::Restarted { gap_ns: 3, .. }]
            ));
        }
    }

    /// `watch`'s table follows sockets and holders only: a restart is not
    /// recognised (nothing is remembered of a key gone down), and a socket
    /// coming up says nothing, but closing still names the socket closed.
    #[test]
    fn a_holders_only_table_keeps_no_downs_and_says_nothing_on_up() {
        let mut t = ListenerTable::holders_only();
        assert_eq!(t.up(key(80), live(1, owner(1, "/usr/sbin/httpd", 0)), 0), vec![]);
        assert_eq!(t.holder_pids(&key(80)), vec![1]);
        assert_eq!(t.up(key(80), live(2, owner(2, "/tmp/x", 0)), 1), vec![], "a second socket");
        assert_eq!(t.sockets(&key(80)).len(), 2);
        assert_eq!(t.closed(&key(80), Some(SocketId::Kernel(2)), 2, 2), vec![]);
        assert!(matches!(t.closed(&key(80), Some(SocketId::Kernel(1)), 1, 3)[..], [Change::Down { .. }]));
        assert!(t.down.is_empty() && t.down_order.is_empty());
        assert_eq!(t.up(key(80), live(3, owner(3, "/tmp/x", 0)), 4), vec![], "no restart to report");
    }

    /// The table gives memory back after a burst of listeners closes.
    #[test]
    fn live_table_shrinks_after_a_burst() {
        let mut t = ListenerTable::default();
        for port in 0..60_000 {
            t.up(key(port), live(1, owner(1, "/x", 0)), 0);
        }
        let burst = t.slots.capacity();
        for port in 0..60_000 {
            t.closed(&key(port), None, 1, 1);
        }
        assert_eq!(t.live_count(), 0);
        assert!(t.slots.capacity() <= 4096 && burst >= 60_000, "{} after {burst}", t.slots.capacity());
        assert!(t.index.capacity() <= 8192 && t.free.len() <= 1024, "{} {}", t.index.capacity(), t.free.len());
    }

    /// What a listener costs in the table, checked: 100,000 listeners are
    /// 100,000 slots (and a quarter more of slack), so every byte of a slot
    /// is about 120 kB of the daemon's memory.
    #[test]
    fn a_listener_is_one_slot_of_at_most_160_bytes() {
        println!("Socket {} B, slot {} B", size_of::<Socket>(), size_of::<Option<Live>>());
        assert!(size_of::<Socket>() <= 88, "{}", size_of::<Socket>());
        assert!(size_of::<Option<Live>>() <= 160, "{}", size_of::<Option<Live>>());
    }
}
