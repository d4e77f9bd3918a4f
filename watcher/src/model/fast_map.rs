//! The hash tables looked up for every event (pid → process, cgroup id →
//! name, listener key → sockets): foldhash instead of SipHash, which was a
//! tenth of the per-record cost. Seeded at random per process like the
//! standard one, though not built, as SipHash is, to resist keys chosen to
//! collide; the keys here are this host's pids, cgroups and listeners.
use std::collections::{HashMap, HashSet};

pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;
