//! Seeding the kernel side's socket maps with the sockets already there at
//! start. The programs learn a bound UDP socket at its bind (post_bind) and
//! a named UNIX socket at its bind() in one process (by that process's fd):
//! a socket made before watcher attached is in neither map, so its close
//! would never be reported. Userspace writes what the snapshot found into
//! the same maps, as the hooks would have.
//!
//! Entries are inserted with `BPF_NOEXIST`: one the hooks made meanwhile (a
//! socket bound while the snapshot was taken) is theirs and stays.
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
};
use watcher_common::{
    AF_UNIX, BOUND_SOCKETS_MAX, BOUND_UDP_MAP, BoundSocket, SOCKADDR_BYTES, UNIX_SOCKETS_MAP, UNIX_SOCKETS_MAX,
    UnixSocket,
};

/// `BPF_NOEXIST`: insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;
/// At most this share of a map is seeded, so that the LRU maps keep room
/// for what the hooks add (a full LRU map evicts its oldest entries).
const SEED_SHARE: u32 = 2;

/// How a seeding went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub inserted: usize,
    /// Already there (the hook saw that bind itself).
    pub present: usize,
    /// Not inserted: no room left for seeding, or the insert failed.
    pub skipped: usize,
    /// The first insert failure, for the warning.
    pub first_error: Option<String>,
}

/// The kernel key of a UNIX socket held by `pid` as `fd`: (tgid, fd).
pub fn unix_key(pid: u32, fd: i32) -> u64 {
    u64::from(pid) << 32 | u64::from(fd as u32)
}

/// The entry the bind() hook would have made for a UNIX socket bound to
/// `path` (an abstract name starts with a NUL), already reported.
pub fn unix_entry(path: &[u8], fd: i32, sock_type: u32) -> Option<UnixSocket> {
    let mut addr = [0u8; SOCKADDR_BYTES];
    if 2 + path.len() > SOCKADDR_BYTES {
        return None;
    }
    addr[..2].copy_from_slice(&AF_UNIX.to_ne_bytes());
    addr[2..2 + path.len()].copy_from_slice(path);
    Some(UnixSocket { addr, fd, addr_len: (2 + path.len()) as u32, sock_type, reported: 1 })
}

/// Bound UDP sockets already there, by cookie: their closes are then
/// reported by `sock_release`.
pub fn seed_bound_udp(ebpf: &mut Ebpf, sockets: &[(u64, BoundSocket)]) -> anyhow::Result<Seeded> {
    let map = ebpf.map_mut(BOUND_UDP_MAP).context("map BOUND_UDP missing from the eBPF object")?;
    let mut map: HashMap<_, u64, BoundSocket> = HashMap::try_from(map).context("opening the BOUND_UDP map")?;
    Ok(insert_all(sockets.iter().copied(), BOUND_SOCKETS_MAX, |k, v| map.insert(k, v, BPF_NOEXIST)))
}

/// UNIX sockets already there, one entry per (pid, fd) holding one: their
/// close() in any holder is then reported, as the binder's would be.
pub fn seed_unix(ebpf: &mut Ebpf, held: &[(u32, UnixSocket)]) -> anyhow::Result<Seeded> {
    let mut map = unix_map(ebpf)?;
    Ok(insert_all(held.iter().map(|(pid, s)| (unix_key(*pid, s.fd), *s)), UNIX_SOCKETS_MAX, |k, v| {
        map.insert(k, v, BPF_NOEXIST)
    }))
}

/// Takes back a seeded UNIX entry whose fd turned out closed (or reused)
/// before the entry was written. Only a seeded entry: one the close() hook
/// removed or the bind() hook replaced is left alone.
pub fn unseed_unix(ebpf: &mut Ebpf, pid: u32, seeded: &UnixSocket) -> anyhow::Result<()> {
    let mut map = unix_map(ebpf)?;
    let key = unix_key(pid, seeded.fd);
    match map.get(&key, 0) {
        Ok(now) if now.addr_len == seeded.addr_len && now.addr == seeded.addr && now.reported == 1 => {
            match map.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(e).context("removing a UNIX_SOCKETS entry"),
            }
        }
        _ => Ok(()),
    }
}

fn unix_map(ebpf: &mut Ebpf) -> anyhow::Result<HashMap<&mut MapData, u64, UnixSocket>> {
    let map = ebpf.map_mut(UNIX_SOCKETS_MAP).context("map UNIX_SOCKETS missing from the eBPF object")?;
    HashMap::try_from(map).context("opening the UNIX_SOCKETS map")
}

fn insert_all<V>(
    entries: impl Iterator<Item = (u64, V)>,
    capacity: u32,
    mut insert: impl FnMut(u64, V) -> Result<(), MapError>,
) -> Seeded {
    let room = (capacity / SEED_SHARE) as usize;
    let mut seeded = Seeded::default();
    for (key, value) in entries {
        if seeded.inserted >= room {
            seeded.skipped += 1;
            continue;
        }
        match insert(key, value) {
            Ok(()) => seeded.inserted += 1,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => seeded.present += 1,
            Err(e) => {
                seeded.skipped += 1;
                seeded.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    if seeded.skipped > 0 && seeded.first_error.is_none() {
        seeded.first_error = Some(format!("seeding is limited to {room} entries of the {capacity}"));
    }
    seeded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_entries_are_what_bind_gave() {
        let e = unix_entry(b"/run/x.sock", 7, 1).unwrap();
        assert_eq!((e.fd, e.addr_len, e.sock_type, e.reported), (7, 2 + 11, 1, 1));
        assert_eq!(u16::from_ne_bytes([e.addr[0], e.addr[1]]), AF_UNIX);
        assert_eq!(&e.addr[2..13], b"/run/x.sock");
        let abstract_name = unix_entry(b"\0notify", 3, 2).unwrap();
        assert_eq!(abstract_name.addr_len, 2 + 7, "an abstract name is exactly as long as it is");
        assert!(unix_entry(&[b'a'; 200], 3, 1).is_none());
        assert_eq!(unix_key(5, 3), 5 << 32 | 3);
    }

    #[test]
    fn seeding_keeps_room_and_counts_what_was_there() {
        let mut calls = 0;
        let seeded = insert_all((0..10u64).map(|k| (k, ())), 8, |k, ()| {
            calls += 1;
            if k == 1 {
                Err(MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_elem",
                    io_error: std::io::Error::from_raw_os_error(libc::EEXIST),
                }))
            } else {
                Ok(())
            }
        });
        assert_eq!((seeded.inserted, seeded.present, seeded.skipped), (4, 1, 5));
        assert_eq!(calls, 5);
        assert!(seeded.first_error.unwrap().contains("limited to 4"));
    }
}
