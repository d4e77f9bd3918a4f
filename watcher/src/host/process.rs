//! Names the process behind an event by reading /proc/<pid> of that one
//! process when its event arrives. A process that has already exited keeps
//! what the kernel captured (pid, tid, uid, comm) and the rest is unknown:
//! the event is still reported, never dropped.
use std::{
    collections::HashMap,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use nix::unistd::{Uid, User};

use crate::model::holder::{Argv, Exe};

/// What /proc told about a process; `None` fields were unknowable (the
/// process was gone, or hid them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub ppid: Option<u32>,
    pub exe: Option<Exe>,
    pub cmdline: Option<Argv>,
}

pub struct ProcessLookup {
    proc_root: PathBuf,
    /// uid → user name; the passwd database rarely changes while watching.
    users: HashMap<u32, Option<Arc<str>>>,
}

impl Default for ProcessLookup {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcessLookup {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self { proc_root: proc_root.into(), users: HashMap::new() }
    }

    pub fn process(&self, pid: u32) -> ProcessInfo {
        let dir = self.proc_root.join(pid.to_string());
        ProcessInfo {
            ppid: fs::read(dir.join("stat")).ok().and_then(|stat| parse_ppid(&stat)),
            exe: fs::read_link(dir.join("exe")).ok().map(|p| p.as_os_str().as_bytes().into()),
            cmdline: fs::read(dir.join("cmdline"))
                .ok()
                .filter(|raw| !raw.is_empty())
                .map(|raw| split_cmdline(&raw).into()),
        }
    }

    pub fn user_name(&mut self, uid: u32) -> Option<String> {
        self.shared_user_name(uid).map(|name| name.to_string())
    }

    /// [`Self::user_name`] without a copy, for the per-event path.
    pub fn shared_user_name(&mut self, uid: u32) -> Option<Arc<str>> {
        self.users
            .entry(uid)
            .or_insert_with(|| User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name.into()))
            .clone()
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }
}

/// The fourth field of /proc/<pid>/stat. The second field (comm) may hold
/// spaces and parentheses, so parsing starts after its last ')'.
fn parse_ppid(stat: &[u8]) -> Option<u32> {
    let after_comm = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let text = std::str::from_utf8(after_comm).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn split_cmdline(raw: &[u8]) -> Vec<Vec<u8>> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    raw.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_survives_hostile_comm() {
        assert_eq!(parse_ppid(b"42 (a) b) c) S 17 42 42 0"), Some(17));
        assert_eq!(parse_ppid(b"42 (sshd) S 1 42"), Some(1));
        assert_eq!(parse_ppid(b"garbage"), None);
    }

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(
            split_cmdline(b"python3\0-m\0http.server\0"),
            vec![b"python3".to_vec(), b"-m".to_vec(), b"http.server".to_vec()]
        );
        assert_eq!(split_cmdline(b"a\0\0b\0"), vec![b"a".to_vec(), b"".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn own_process_is_found_and_a_missing_one_is_unknown() {
        let lookup = ProcessLookup::default();
        let me = lookup.process(std::process::id());
        assert_eq!(me.ppid, Some(std::os::unix::process::parent_id()));
        assert!(me.exe.is_some());
        assert!(me.cmdline.is_some_and(|argv| !argv.is_empty()));
        // Beyond pid_max (at most 2^22), so never a live process.
        assert_eq!(lookup.process(u32::MAX - 1), ProcessInfo::default());
    }
}
