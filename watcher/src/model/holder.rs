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

use std::{fmt, ops::Deref, sync::Arc};

/// An executable's path, as bytes (a path need not be UTF-8), shared: every
/// event of a process, its forked children and the listeners it holds name
/// the same one, so a copy is a reference count, not an allocation.
pub type Exe = Arc<[u8]>;
/// argv, each argument as bytes, shared like [`Exe`].
pub type Argv = Arc<[Vec<u8>]>;

/// A task's comm as the kernel keeps it (at most 15 bytes and a NUL), held
/// inline: every record and every holder has one, and a heap allocation
/// each was a fifth of a listener's memory in the daemon's table. Raw
/// bytes, a process chooses them: escaped only when printed.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Comm {
    bytes: [u8; COMM_MAX],
    len: u8,
}

/// The kernel's TASK_COMM_LEN.
const COMM_MAX: usize = 16;

impl Comm {
    /// The first 16 bytes of `bytes` (a kernel comm is never longer).
    pub fn new(bytes: &[u8]) -> Self {
        let len = bytes.len().min(COMM_MAX);
        let mut comm = Self { bytes: [0; COMM_MAX], len: len as u8 };
        comm.bytes[..len].copy_from_slice(&bytes[..len]);
        comm
    }
}

impl Deref for Comm {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl From<&[u8]> for Comm {
    fn from(bytes: &[u8]) -> Self {
        Self::new(bytes)
    }
}

impl<const N: usize> From<&[u8; N]> for Comm {
    fn from(bytes: &[u8; N]) -> Self {
        Self::new(bytes)
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Comm {
    fn eq(&self, other: &[u8; N]) -> bool {
        **self == other[..]
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Comm {
    fn eq(&self, other: &&[u8; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<[u8]> for Comm {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self), f)
    }
}

/// A process, as far as it could be named; `None` fields were unknowable
/// (the process was gone before /proc could be read, or hid them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    /// 0 when no process is known.
    pub pid: u32,
    /// The real uid.
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// The kernel's comm; empty when unknown.
    pub comm: Comm,
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

    /// The same arguments; or one side's is a title the process wrote
    /// over its argv (setproctitle: sshd's `/proc/PID/cmdline` reads `sshd:
    /// /usr/sbin/sshd -p 22 [listener] 0 of 10-100 startups`) that holds
    /// the other's arguments. The snapshot reads /proc, a live exec's
    /// argv is read at the exec, before any rewrite.
    pub fn same_cmdline(&self, other: &Self) -> bool {
        match (&self.cmdline, &other.cmdline) {
            (Some(a), Some(b)) => a == b || retitled(a, b) || retitled(b, a),
            _ => true,
        }
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

/// Whether `title` is one argument (what a rewritten argv reads as) that
/// contains `argv` joined by spaces.
fn retitled(title: &[Vec<u8>], argv: &[Vec<u8>]) -> bool {
    let [title] = title else { return false };
    let joined = argv.join(&b' ');
    !joined.is_empty() && title.len() > joined.len() && title.windows(joined.len()).any(|w| w == joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cmdline(args: &[&str]) -> Holder {
        Holder { cmdline: Some(args.iter().map(|a| a.as_bytes().to_vec()).collect()), ..Holder::default() }
    }

    /// sshd after a restart: the old one's cmdline from /proc (its title),
    /// the new one's from its exec.
    #[test]
    fn a_rewritten_title_holding_the_arguments_is_the_same_cmdline() {
        let exec = with_cmdline(&["/usr/sbin/sshd", "-o", "ListenAddress=127.0.0.1", "-p", "2222"]);
        let title =
            with_cmdline(&["sshd: /usr/sbin/sshd -o ListenAddress=127.0.0.1 -p 2222 [listener] 0 of 10-100 startups"]);
        assert!(title.same_cmdline(&exec) && exec.same_cmdline(&title));
        let other = with_cmdline(&["/usr/sbin/sshd", "-p", "2223"]);
        assert!(!title.same_cmdline(&other) && !other.same_cmdline(&title));
        assert!(!exec.same_cmdline(&other));
    }
}
