//! Processes that hold many listeners open at once: forks of the bench
//! (named `bench-holder`), each binding explicit ports on its own loopback
//! address (127.0.0.2, 127.0.0.3, …), TCP listen and optionally bound UDP,
//! and keeping them until told to close them or until dropped. One process
//! holds at most its RLIMIT_NOFILE hard limit of sockets: without
//! CAP_SYS_RESOURCE (this VM) that limit cannot be raised, so 100,000
//! listeners take several holders. The resources and start benches use them
//! for "100,000 live listeners" and "10,000 existing listeners".
use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, bail};

use super::{
    forked::{Forked, errno, sleep_until},
    monotonic_ns,
};

/// The kernel name of the holder (its comm), as tools show it.
pub const HOLDER_COMM: &str = "bench-holder";
const HOLDER_COMM_C: &std::ffi::CStr = c"bench-holder";

/// Which ports the holder tries on each address: above the usual service
/// ports and below most of the ephemeral range, so that collisions are
/// rare; a port already taken is skipped.
pub const FIRST_PORT: u16 = 20_000;
pub const LAST_PORT: u16 = 59_999;
/// Holder i binds on 127.0.0.(FIRST_OCTET + i); 127.0.0.1 is left to the
/// rest of the machine.
pub const FIRST_OCTET: u8 = 2;
/// Descriptors a holder keeps for other things (stdio, its pipes, those it
/// inherited from the bench).
const SPARE_FDS: u64 = 64;

const OP_OPEN: u32 = 1;
const OP_CLOSE: u32 = 2;
const COMMAND_BYTES: usize = 16;
const HEADER_BYTES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One socket the holder holds: 127.0.0.`octet`:`port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Held {
    pub proto: Proto,
    pub octet: u8,
    pub port: u16,
}

impl Held {
    pub fn addr(&self) -> String {
        format!("127.0.0.{}", self.octet)
    }
}

/// As many holders as `count` sockets need, each on its own address.
pub struct Holders {
    holders: Vec<Holder>,
    per_holder: u64,
}

impl Holders {
    /// Forks enough holders for `count` sockets. Must run while the bench
    /// is single-threaded (checked by each fork).
    pub fn start(count: u64) -> anyhow::Result<Self> {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: limit is a valid rlimit to write to.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
        }
        let per_holder = limit.rlim_max.saturating_sub(SPARE_FDS).min(u64::from(LAST_PORT - FIRST_PORT) + 1);
        if per_holder == 0 {
            bail!("RLIMIT_NOFILE's hard limit ({}) leaves no room for listeners", limit.rlim_max);
        }
        let n = count.div_ceil(per_holder).max(1);
        if n > u64::from(254 - FIRST_OCTET) {
            bail!("{count} sockets need {n} holders of {per_holder}: more than the loopback addresses left");
        }
        let holders = (0..n).map(|_| Holder::start()).collect::<anyhow::Result<_>>()?;
        // Even shares: no holder is filled to its limit.
        Ok(Self { holders, per_holder: count.div_ceil(n).max(1) })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.holders.iter().map(Holder::pid).collect()
    }

    /// Opens `tcp` TCP listeners and `udp` bound UDP sockets, filling one
    /// holder after the other, at most `per_sec` a second in all (0: as fast
    /// as they can). Ports in use are skipped.
    pub fn open(&mut self, tcp: u64, udp: u64, per_sec: u32) -> anyhow::Result<Vec<Held>> {
        let (mut tcp_left, mut udp_left) = (tcp, udp);
        let mut held = Vec::new();
        for (i, h) in self.holders.iter_mut().enumerate() {
            let t = tcp_left.min(self.per_holder);
            let u = udp_left.min(self.per_holder - t);
            if t + u == 0 {
                break;
            }
            (tcp_left, udp_left) = (tcp_left - t, udp_left - u);
            held.extend(h.open(FIRST_OCTET + i as u8, t as u32, u as u32, per_sec)?);
        }
        if tcp_left + udp_left > 0 {
            bail!("{} holders cannot hold {} sockets", self.holders.len(), tcp + udp);
        }
        Ok(held)
    }

    pub fn close_all(&mut self) -> anyhow::Result<()> {
        self.holders.iter_mut().try_for_each(Holder::close_all)
    }
}

/// One holder. Dropping it kills the process, and the kernel closes its
/// sockets when it dies.
pub struct Holder(Forked);

impl Holder {
    /// Forks the holder. Like the listener child, it must be forked while
    /// the bench is single-threaded, which is checked.
    pub fn start() -> anyhow::Result<Self> {
        Forked::start("listener holder", |commands, results| {
            // SAFETY: prctl takes a NUL-terminated name of at most 16
            // bytes, which HOLDER_COMM_C is.
            unsafe { libc::prctl(libc::PR_SET_NAME, HOLDER_COMM_C.as_ptr()) };
            serve(commands, results)
        })
        .map(Self)
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Opens `tcp` TCP listeners and `udp` bound UDP sockets (in that
    /// order) on 127.0.0.`octet`, at most `per_sec` a second (0: as fast as
    /// it can), and returns them. Ports in use are skipped.
    pub fn open(&mut self, octet: u8, tcp: u32, udp: u32, per_sec: u32) -> anyhow::Result<Vec<Held>> {
        let mut command = [0u8; COMMAND_BYTES];
        let op = OP_OPEN | u32::from(octet) << 8;
        for (i, v) in [op, tcp, udp, per_sec].into_iter().enumerate() {
            command[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        self.send(&command)?;
        let header = self.header()?;
        let (got, errno) = (header[1] as usize, header[2] as i32);
        let mut entries = vec![0u8; got * 4];
        self.0.results().read_exact(&mut entries).context("reading the listener holder's sockets")?;
        let held: Vec<Held> = entries
            .chunks_exact(4)
            .map(|e| Held {
                proto: if e[1] == 0 { Proto::Tcp } else { Proto::Udp },
                octet: e[0],
                port: u16::from_ne_bytes([e[2], e[3]]),
            })
            .collect();
        if errno != 0 {
            bail!("the listener holder stopped after {got} sockets: {}", std::io::Error::from_raw_os_error(errno));
        }
        Ok(held)
    }

    /// Closes every socket the holder holds.
    pub fn close_all(&mut self) -> anyhow::Result<()> {
        let mut command = [0u8; COMMAND_BYTES];
        command[0..4].copy_from_slice(&OP_CLOSE.to_ne_bytes());
        self.send(&command)?;
        self.header()?;
        Ok(())
    }

    fn send(&mut self, command: &[u8; COMMAND_BYTES]) -> anyhow::Result<()> {
        self.0.send(command, "a command")
    }

    fn header(&mut self) -> anyhow::Result<[u32; 4]> {
        let mut bytes = [0u8; HEADER_BYTES];
        self.0.receive(&mut bytes)?;
        Ok(std::array::from_fn(|i| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"))))
    }
}

// ---- in the holder ----

fn serve(commands: &mut File, results: &mut File) -> i32 {
    let mut held: Vec<(Held, OwnedFd)> = Vec::new();
    loop {
        let mut bytes = [0u8; COMMAND_BYTES];
        if commands.read_exact(&mut bytes).is_err() {
            return 0;
        }
        let word = |i: usize| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let mut out = Vec::new();
        match word(0) & 0xff {
            OP_OPEN => {
                let before = held.len();
                let octet = (word(0) >> 8) as u8;
                let errno = open_all(&mut held, octet, word(1), word(2), word(3)).err().unwrap_or(0);
                let new = &held[before..];
                out.reserve(HEADER_BYTES + new.len() * 4);
                for v in [OP_OPEN, new.len() as u32, errno as u32, 0] {
                    out.extend_from_slice(&v.to_ne_bytes());
                }
                for (h, _) in new {
                    out.push(h.octet);
                    out.push(u8::from(h.proto == Proto::Udp));
                    out.extend_from_slice(&h.port.to_ne_bytes());
                }
            }
            OP_CLOSE => {
                held.clear();
                for v in [OP_CLOSE, 0, 0, 0] {
                    out.extend_from_slice(&v.to_ne_bytes());
                }
            }
            _ => return 2,
        }
        if results.write_all(&out).is_err() {
            return 1;
        }
    }
}

/// Opens the sockets on 127.0.0.`octet`, pacing them at `per_sec`;
/// Err(errno) on a failure other than a port being taken.
fn open_all(held: &mut Vec<(Held, OwnedFd)>, octet: u8, tcp: u32, udp: u32, per_sec: u32) -> Result<(), i32> {
    // Each socket is one descriptor: the soft limit goes up to the hard one
    // (raising that needs CAP_SYS_RESOURCE; Holders sizes its shares to it).
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: limit is a valid rlimit, read then written.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(errno());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(errno());
        }
    }
    let start_ns = monotonic_ns();
    let mut made = 0u64;
    for (proto, count) in [(Proto::Tcp, tcp), (Proto::Udp, udp)] {
        let mut port = FIRST_PORT;
        let mut opened = 0;
        while opened < count {
            match open_one(proto, octet, port) {
                Ok(Some(fd)) => {
                    held.push((Held { proto, octet, port }, fd));
                    opened += 1;
                    made += 1;
                    if per_sec > 0 && made.is_multiple_of(64) {
                        pace(start_ns, made, per_sec);
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            if port == LAST_PORT {
                return Err(libc::EADDRNOTAVAIL);
            }
            port += 1;
        }
    }
    Ok(())
}

/// Sleeps until `made` sockets are due at `per_sec` from `start_ns`.
fn pace(start_ns: u64, made: u64, per_sec: u32) {
    sleep_until(start_ns + made * 1_000_000_000 / u64::from(per_sec));
}

/// socket, bind to 127.0.0.`octet`:`port`, and for TCP listen; Ok(None) if
/// the address is taken (by anyone, on any address of that port).
fn open_one(proto: Proto, octet: u8, port: u16) -> Result<Option<OwnedFd>, i32> {
    let kind = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: plain socket syscalls on a descriptor this function owns, with
    // a pointer to a properly sized local sockaddr_in.
    unsafe {
        let raw = libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(errno());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, octet]) },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) != 0 {
            return match errno() {
                libc::EADDRINUSE | libc::EACCES => Ok(None),
                e => Err(e),
            };
        }
        if proto == Proto::Tcp && libc::listen(fd.as_raw_fd(), 16) != 0 {
            return match errno() {
                libc::EADDRINUSE => Ok(None),
                e => Err(e),
            };
        }
        Ok(Some(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree() {
        assert_eq!(HOLDER_COMM_C.to_str(), Ok(HOLDER_COMM));
        assert!(HOLDER_COMM.len() < 16, "comm holds 15 bytes");
    }
}
