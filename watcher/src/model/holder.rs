//! Who holds a socket. One type for the process behind a live event, a
//! holder found in the snapshot's fd tables, a listener's creator in the
//! lifecycle table, the subject the allowlist judges and the target of a
//! kill.
//!
//! A socket has one creator (the task whose bind or listen made it wait,
//! with its uid then) and any number of holders (the processes with it in
//! their fd table: a parent and its forked workers hold one socket). That
//! is not a SO_REUSEPORT group, where several sockets share one address;
//! the listener table ([`crate::state::lifecycle`]) keeps the two apart.

use std::sync::Arc;

/// An executable's path, as bytes (a path need not be UTF-8), shared: every
/// event of a process, its forked children and the listeners it holds name
/// the same one, so a copy is a reference count, not an allocation.
pub type Exe = Arc<[u8]>;
/// argv, each argument as bytes, shared like [`Exe`].
pub type Argv = Arc<[Vec<u8>]>;

/// A process, as far as it could be named; `None` fields were unknowable
/// (the process was gone before /proc could be read, or hid them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    /// 0 when no process is known.
    pub pid: u32,
    /// The real uid.
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// The kernel's comm, as bytes; empty when unknown.
    pub comm: Vec<u8>,
    pub exe: Option<Exe>,
    pub cmdline: Option<Argv>,
}

impl Holder {
    /// Same program and user: an unknown side never counts as different.
    pub fn same_service(&self, other: &Self) -> bool {
        same(&self.exe, &other.exe) && self.same_user(other)
    }

    pub fn same_exe(&self, other: &Self) -> bool {
        same(&self.exe, &other.exe)
    }

    pub fn same_cmdline(&self, other: &Self) -> bool {
        same(&self.cmdline, &other.cmdline)
    }

    pub fn same_user(&self, other: &Self) -> bool {
        match (self.uid, other.uid) {
            (Some(x), Some(y)) => x == y,
            _ => same(&self.user, &other.user),
        }
    }
}

fn same<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}
