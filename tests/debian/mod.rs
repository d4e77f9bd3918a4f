//! The daemons of a minimal Debian server (issue 11), from Debian's own
//! packages, started as root the way their init scripts would start them
//! on a machine without systemd: rpcbind, rpc.statd (nfs-common), sshd,
//! exim4, apache2, cannaserver (canna), lpd (lpr) and rsyslogd.
//!
//! - Each starts from its own command line. Those that can be given a
//!   private port, configuration and pid file (sshd, exim4, apache2,
//!   rsyslogd) get one in a temporary folder, so that a copy another test
//!   or the host runs is not disturbed; rpcbind (111), rpc.statd (random
//!   ports, registered with rpcbind), cannaserver (5680,
//!   /tmp/.iroha_unix/IROHA) and lpd (/dev/printer) have fixed places.
//! - The test process is a child subreaper (PR_SET_CHILD_SUBREAPER): a
//!   daemon that forks and lets its launcher exit is reparented to the test,
//!   not to init, so the daemons' processes are exactly the test's
//!   descendants running their programs. Other processes of the host (it is
//!   shared) never count.
//! - Readiness is polled from `ss` (the daemon's sockets, held by its
//!   processes) with a deadline, never slept for.
//! - [`Daemons`] stops every daemon when it is dropped, even when the test
//!   failed: SIGTERM, then SIGKILL after a while, and the processes reaped.
//!   One lock serializes the tests that use them.
#![allow(dead_code, reason = "each test uses a different part of the harness")]

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, Once},
    thread,
    time::{Duration, Instant},
};

/// How often `ss` and /proc are looked at again while waiting.
pub const POLL: Duration = Duration::from_millis(25);
/// How long a daemon may take to come up or go away.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);
/// After SIGTERM, how long before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// The eight daemons, in the order they are started (rpc.statd registers
/// with rpcbind, so rpcbind comes first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Rpcbind,
    Statd,
    Sshd,
    Exim4,
    Apache2,
    Canna,
    Lpd,
    Rsyslog,
}

pub const ALL: [Kind; 8] =
    [Kind::Rpcbind, Kind::Statd, Kind::Sshd, Kind::Exim4, Kind::Apache2, Kind::Canna, Kind::Lpd, Kind::Rsyslog];

impl Kind {
    /// The name used in tables (the Debian package's daemon).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rpcbind => "rpcbind",
            Kind::Statd => "rpc.statd",
            Kind::Sshd => "sshd",
            Kind::Exim4 => "exim4",
            Kind::Apache2 => "apache2",
            Kind::Canna => "cannaserver",
            Kind::Lpd => "lpd",
            Kind::Rsyslog => "rsyslogd",
        }
    }

    /// The file names of the executables the daemon's processes run
    /// (rpc.statd runs sm-notify at start).
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Kind::Rpcbind => &["rpcbind"],
            Kind::Statd => &["rpc.statd", "sm-notify"],
            Kind::Sshd => &["sshd"],
            Kind::Exim4 => &["exim4"],
            Kind::Apache2 => &["apache2"],
            Kind::Canna => &["cannaserver"],
            Kind::Lpd => &["lpd"],
            Kind::Rsyslog => &["rsyslogd"],
        }
    }

    /// The binary `setup --test-deps` installs, to tell whether it is here.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Rpcbind => "/usr/sbin/rpcbind",
            Kind::Statd => "/sbin/rpc.statd",
            Kind::Sshd => "/usr/sbin/sshd",
            Kind::Exim4 => "/usr/sbin/exim4",
            Kind::Apache2 => "/usr/sbin/apache2ctl",
            Kind::Canna => "/usr/sbin/cannaserver",
            Kind::Lpd => "/usr/sbin/lpd",
            Kind::Rsyslog => "/usr/sbin/rsyslogd",
        }
    }

    /// Whether the daemon listens on the same places at every start (all
    /// but rpc.statd, which picks new ports each time).
    pub fn fixed_places(self) -> bool {
        self != Kind::Statd
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------- processes

/// Makes the test process a child subreaper, once.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER: {}", std::io::Error::last_os_error());
    });
}

/// One process of /proc, as much as the tests need.
#[derive(Clone, Debug)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// The file name of /proc/PID/exe (empty when unreadable: a zombie).
    pub program: String,
    pub uid: u32,
    pub zombie: bool,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    let program = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()?;
    Some(Proc { pid, ppid, comm, program, uid, zombie: state == "Z" || state == "X" })
}

/// Every process now.
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(read_proc)
        .collect()
}

/// The live (not zombie) descendants of this test process.
pub fn descendants() -> Vec<Proc> {
    let all = processes();
    let children: BTreeMap<u32, Vec<&Proc>> = all.iter().fold(BTreeMap::new(), |mut m, p| {
        m.entry(p.ppid).or_default().push(p);
        m
    });
    let mut out = Vec::new();
    let mut todo = vec![std::process::id()];
    while let Some(pid) = todo.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            todo.push(child.pid);
            if !child.zombie {
                out.push((*child).clone());
            }
        }
    }
    out
}

/// Reaps those of these pids that are exited children of the test process
/// (the daemons' processes were reparented to it), without blocking. Only
/// the pids given: another test may want the exit status of its own.
pub fn reap_exited(pids: &BTreeSet<u32>) {
    for p in processes() {
        if p.zombie && p.ppid == std::process::id() && pids.contains(&p.pid) {
            let mut status = 0;
            // SAFETY: waitpid on a zombie child of ours, WNOHANG.
            unsafe { libc::waitpid(p.pid as i32, &mut status, libc::WNOHANG) };
        }
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Killed,
    OtherSignal(i32),
    /// Still running a second later.
    Alive,
    /// Not a child of the test (it could not be waited for).
    Unknown,
}

impl End {
    pub fn of(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => End::Exited(code),
            (_, Some(libc::SIGKILL)) => End::Killed,
            (_, Some(signal)) => End::OtherSignal(signal),
            _ => End::Unknown,
        }
    }
}

/// Waits (up to a second) for a child of the test process to end and says how.
pub fn end_of(pid: u32) -> End {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one pid, WNOHANG.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if rc == pid as i32 {
            return if libc::WIFEXITED(status) {
                End::Exited(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
                End::Killed
            } else if libc::WIFSIGNALED(status) {
                End::OtherSignal(libc::WTERMSIG(status))
            } else {
                End::Unknown
            };
        }
        if rc < 0 {
            return End::Unknown;
        }
        if Instant::now() > deadline {
            return End::Alive;
        }
        thread::sleep(POLL);
    }
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

// ---------------------------------------------------------------- ss

/// A process holding a socket, as `ss -p` shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SsHolder {
    pub comm: String,
    pub pid: u32,
    pub fd: u32,
}

/// One listening or bound socket as `ss` shows it.
#[derive(Clone, Debug)]
pub struct SsSocket {
    /// `tcp`, `udp`, `u_str`, `u_dgr`, `u_seq`, ...
    pub netid: String,
    pub state: String,
    /// The local column as ss printed it.
    pub local: String,
    /// For inet sockets: the address (without brackets, `*` as `::`) and port.
    pub addr: Option<String>,
    pub port: Option<u16>,
    /// For UNIX sockets: the path (`@name` for an abstract one).
    pub path: Option<String>,
    pub inode: Option<u64>,
    pub holders: Vec<SsHolder>,
}

impl SsSocket {
    /// watcher's `proto` for this socket.
    pub fn proto(&self) -> &'static str {
        match self.netid.as_str() {
            "tcp" => "tcp",
            "udp" => "udp",
            n if n.starts_with("u_") => "unix",
            "raw" => "raw",
            _ => "other",
        }
    }

    /// The place: `tcp 127.0.0.1:22`, `unix /dev/log (dgram)`.
    pub fn place(&self) -> String {
        match (&self.addr, self.port, &self.path) {
            (Some(a), Some(p), _) if a.contains(':') => format!("{} [{a}]:{p}", self.netid),
            (Some(a), Some(p), _) => format!("{} {a}:{p}", self.netid),
            (_, _, Some(path)) => format!("{} {path}", self.netid),
            _ => format!("{} {}", self.netid, self.local),
        }
    }

    pub fn held_by(&self, pid: u32) -> bool {
        self.holders.iter().any(|h| h.pid == pid)
    }

    pub fn holder_pids(&self) -> BTreeSet<u32> {
        self.holders.iter().map(|h| h.pid).collect()
    }
}

fn parse_holders(text: &str) -> Vec<SsHolder> {
    // users:(("rpcbind",pid=16832,fd=5),("x",pid=2,fd=3))
    let mut out = Vec::new();
    for part in text.split("),(") {
        let comm = part.split('"').nth(1).unwrap_or_default().to_owned();
        let field = |name: &str| {
            part.split(',').find_map(|f| f.trim_end_matches(')').strip_prefix(name)).and_then(|v| v.parse().ok())
        };
        if let (Some(pid), Some(fd)) = (field("pid="), field("fd=")) {
            out.push(SsHolder { comm, pid, fd });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `127.0.0.1:111`, `[::]:111`, `*:111`, `127.0.0.1%lo:53` → (addr, port).
fn split_inet(local: &str) -> Option<(String, u16)> {
    let (addr, port) = local.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let addr = addr.split('%').next().unwrap_or(addr);
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr = if addr == "*" { "::" } else { addr };
    Some((addr.to_owned(), port))
}

fn parse_ss_line(line: &str) -> Option<SsSocket> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let netid = (*words.first()?).to_owned();
    let state = (*words.get(1)?).to_owned();
    let users = words.iter().find(|w| w.starts_with("users:")).map(|w| parse_holders(w)).unwrap_or_default();
    if netid.starts_with("u_") {
        // u_dgr UNCONN 0 0 /dev/log 12345 * 0 users:(...)
        let path = (*words.get(4)?).to_owned();
        let inode = words.get(5)?.parse().ok();
        return Some(SsSocket {
            netid,
            state,
            local: path.clone(),
            addr: None,
            port: None,
            path: (path != "*").then_some(path),
            inode,
            holders: users,
        });
    }
    let local = (*words.get(4)?).to_owned();
    let (addr, port) = split_inet(&local)?;
    let inode = words.iter().find_map(|w| w.strip_prefix("ino:")).and_then(|i| i.parse().ok());
    Some(SsSocket { netid, state, local, addr: Some(addr), port: Some(port), path: None, inode, holders: users })
}

fn run_ss(args: &[&str]) -> Vec<SsSocket> {
    let out = Command::new("ss").args(args).output().expect("running ss (iproute2)");
    assert!(out.status.success(), "ss {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(parse_ss_line).collect()
}

/// What `ss -lntupx -p` and `ss -xa -p` show together: every listening
/// TCP and UNIX socket, every bound UDP socket, and every UNIX datagram
/// socket bound to a name (those are only in `ss -xa`). Inet sockets carry
/// their inode (`-e`).
pub fn ss_sockets() -> Vec<SsSocket> {
    let mut all = run_ss(&["-H", "-lntupx", "-p", "-e"]);
    for s in run_ss(&["-H", "-xa", "-p"]) {
        if s.netid == "u_dgr" && s.path.is_some() && !all.iter().any(|a| a.netid == s.netid && a.inode == s.inode) {
            all.push(s);
        }
    }
    all
}

/// The sockets held by any of these pids.
pub fn sockets_of(sockets: &[SsSocket], pids: &BTreeSet<u32>) -> Vec<SsSocket> {
    sockets.iter().filter(|s| s.holders.iter().any(|h| pids.contains(&h.pid))).cloned().collect()
}

// ---------------------------------------------------------------- daemons

/// Serializes the tests that run the daemons (they share ports 111 and
/// 5680, /dev/printer, exim's notify socket).
static LOCK: Mutex<()> = Mutex::new(());

/// Why the daemons cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    let missing: Vec<&str> = ALL.iter().map(|k| k.binary()).filter(|b| !Path::new(b).exists()).collect();
    (!missing.is_empty())
        .then(|| format!("{} missing (`cargo xtask setup --test-deps` installs the daemons)", missing.join(", ")))
}

/// Whether a test that drives the daemons may run; like
/// `common::require_bpf`, it fails loudly under CI=true.
pub fn require_daemons(test: &str) -> bool {
    let Some(reason) = missing() else { return true };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{test}: {reason}, and CI=true: failing instead of skipping");
    eprintln!("SKIP {test}: {reason}");
    false
}

/// One daemon: how to start, stop and recognize it.
pub struct Daemon {
    pub kind: Kind,
    /// Its private folder (configuration, pid file, logs).
    pub dir: PathBuf,
    /// The TCP port given to sshd, exim4 and apache2.
    pub port: Option<u16>,
    /// Every pid seen running its programs, for matching events later.
    pub seen_pids: BTreeSet<u32>,
}

/// A free TCP port on loopback (v4 and v6 both free, for exim4), below the
/// kernel's ephemeral range: a fixed port as a service's would be, which
/// `baseline` must not take for one picked at random (it widens unnamed
/// ephemeral ports into a range rule).
fn free_tcp_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    // Spread over 20000..low by pid and a counter, so parallel runs rarely try the same one.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(low.saturating_sub(20000).max(1));
    for _ in 0..span {
        let n = NEXT.fetch_add(7919, std::sync::atomic::Ordering::Relaxed) + std::process::id();
        let port = 20000 + (n % span) as u16;
        let v4 = std::net::TcpListener::bind(("127.0.0.1", port));
        if v4.is_ok() && std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in 20000..{low} on 127.0.0.1 and ::1");
}

impl Daemon {
    fn new(kind: Kind, root: &Path) -> Self {
        let dir = root.join(kind.name());
        std::fs::create_dir_all(&dir).unwrap();
        let port = matches!(kind, Kind::Sshd | Kind::Exim4 | Kind::Apache2).then(free_tcp_port);
        let this = Self { kind, dir, port, seen_pids: BTreeSet::new() };
        this.write_config();
        this
    }

    /// rsyslogd's socket: a private /dev/log.
    pub fn syslog_socket(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn write_config(&self) {
        let dir = self.dir.display();
        match self.kind {
            Kind::Apache2 => {
                // apache2ctl reads $APACHE_CONFDIR/envvars and passes
                // `-d $APACHE_CONFDIR` to apache2, which reads apache2.conf
                // there: a private instance of Debian's apache2, mpm_event,
                // one loopback port.
                std::fs::write(
                    self.dir.join("envvars"),
                    format!(
                        "export APACHE_RUN_USER=www-data\nexport APACHE_RUN_GROUP=www-data\n\
                         export APACHE_PID_FILE={dir}/apache2.pid\nexport APACHE_RUN_DIR={dir}\n\
                         export APACHE_LOCK_DIR={dir}\nexport APACHE_LOG_DIR={dir}\nexport LANG=C\n"
                    ),
                )
                .unwrap();
                std::fs::write(
                    self.dir.join("apache2.conf"),
                    format!(
                        "Mutex file:${{APACHE_LOCK_DIR}} default\nDefaultRuntimeDir ${{APACHE_RUN_DIR}}\n\
                         PidFile ${{APACHE_PID_FILE}}\nUser ${{APACHE_RUN_USER}}\nGroup ${{APACHE_RUN_GROUP}}\n\
                         ErrorLog ${{APACHE_LOG_DIR}}/error.log\nLogLevel warn\nServerName localhost\n\
                         LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
                         LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
                         DocumentRoot /var/www/html\nListen 127.0.0.1:{}\n",
                        self.port.unwrap()
                    ),
                )
                .unwrap();
            }
            Kind::Rsyslog => {
                // Debian's rsyslog.conf minus the files and imklog: the
                // system socket (imuxsock) at a private path.
                std::fs::write(
                    self.dir.join("rsyslog.conf"),
                    format!(
                        "global(workDirectory=\"{dir}\")\n\
                         module(load=\"imuxsock\" SysSock.Name=\"{dir}/log\")\n\
                         action(type=\"omfile\" file=\"{dir}/messages\")\n"
                    ),
                )
                .unwrap();
            }
            _ => {}
        }
    }

    /// The commands that start it, as its init script would (they return
    /// once the daemon has detached, except sshd's and rsyslogd's which
    /// fork too).
    fn start_command(&self) -> Command {
        let dir = &self.dir;
        let mut c;
        match self.kind {
            Kind::Rpcbind => {
                c = Command::new("/usr/sbin/rpcbind");
                c.arg("-w");
            }
            Kind::Statd => c = Command::new("/sbin/rpc.statd"),
            Kind::Sshd => {
                std::fs::create_dir_all("/run/sshd").unwrap();
                c = Command::new("/usr/sbin/sshd");
                c.args(["-o", "ListenAddress=127.0.0.1", "-p", &self.port.unwrap().to_string()]);
                c.arg("-o").arg(format!("PidFile={}", dir.join("sshd.pid").display()));
            }
            Kind::Exim4 => {
                c = Command::new("/usr/sbin/exim4");
                c.args(["-bd", "-q30m", "-oX", &self.port.unwrap().to_string()]);
                c.arg("-oP").arg(dir.join("exim4.pid"));
            }
            Kind::Apache2 => {
                c = Command::new("/usr/sbin/apache2ctl");
                c.arg("start").env("APACHE_CONFDIR", dir);
            }
            Kind::Canna => {
                c = Command::new("/usr/sbin/cannaserver");
                c.arg("-inet");
            }
            Kind::Lpd => {
                c = Command::new("/usr/sbin/lpd");
                c.arg("-s");
            }
            Kind::Rsyslog => {
                c = Command::new("/usr/sbin/rsyslogd");
                c.arg("-f").arg(dir.join("rsyslog.conf")).arg("-i").arg(dir.join("rsyslogd.pid"));
            }
        }
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    /// The daemon's processes now: the test's descendants running its programs.
    pub fn procs(&self) -> Vec<Proc> {
        descendants().into_iter().filter(|p| self.kind.programs().contains(&p.program.as_str())).collect()
    }

    pub fn pids(&self) -> BTreeSet<u32> {
        self.procs().iter().map(|p| p.pid).collect()
    }

    /// Whether the daemon serves: its sockets are there, held by its
    /// processes alone, and (apache2) its workers hold the listener too.
    fn ready(&self, sockets: &[SsSocket], pids: &BTreeSet<u32>) -> bool {
        if pids.is_empty() {
            return false;
        }
        let mine = sockets_of(sockets, pids);
        let tcp = |addr: &str, port: u16| {
            mine.iter().find(|s| s.netid == "tcp" && s.addr.as_deref() == Some(addr) && s.port == Some(port))
        };
        let unix = |netid: &str, path: &str| mine.iter().any(|s| s.netid == netid && s.path.as_deref() == Some(path));
        match self.kind {
            Kind::Rpcbind => {
                tcp("0.0.0.0", 111).is_some() && tcp("::", 111).is_some() && unix("u_str", "/run/rpcbind.sock")
            }
            // Two TCP listeners (v4, v6) and its UDP ports, on ports it picks.
            Kind::Statd => {
                mine.iter().filter(|s| s.netid == "tcp").count() >= 2
                    && mine.iter().filter(|s| s.netid == "udp").count() >= 2
                    && std::fs::read_to_string("/run/rpc.statd.pid")
                        .ok()
                        .and_then(|p| p.trim().parse::<u32>().ok())
                        .is_some_and(|p| pids.contains(&p))
            }
            Kind::Sshd => tcp("127.0.0.1", self.port.unwrap()).is_some(),
            Kind::Exim4 => {
                let port = self.port.unwrap();
                tcp("127.0.0.1", port).is_some()
                    && tcp("::1", port).is_some()
                    && unix("u_dgr", "@/var/spool/exim4/exim_daemon_notify")
            }
            Kind::Apache2 => tcp("127.0.0.1", self.port.unwrap()).is_some_and(|s| s.holders.len() >= 2),
            Kind::Canna => tcp("0.0.0.0", 5680).is_some() && unix("u_str", "/tmp/.iroha_unix/IROHA"),
            Kind::Lpd => unix("u_str", "/dev/printer"),
            Kind::Rsyslog => unix("u_dgr", &self.syslog_socket().display().to_string()),
        }
    }

    /// Starts it and returns once it is ready; panics with its stderr if
    /// it does not come up.
    pub fn start(&mut self) {
        let mut child = self.start_command().spawn().unwrap_or_else(|e| panic!("starting {}: {e}", self.kind));
        let mut stderr = child.stderr.take().unwrap();
        // Each of these commands returns once the daemon has detached.
        let status = child.wait().unwrap();
        let mut said = String::new();
        if !status.success() {
            use std::io::Read as _;
            let _ = stderr.read_to_string(&mut said);
            panic!("{} failed to start ({status}): {said}", self.kind);
        }
        // Its stderr stays open in the daemon when it keeps it: do not wait on it.
        drop(stderr);
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            let pids = self.pids();
            self.seen_pids.extend(&pids);
            if self.ready(&ss_sockets(), &pids) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {DAEMON_TIMEOUT:?}: {}",
                self.kind,
                self.diagnose()
            );
            thread::sleep(POLL);
        }
    }

    fn diagnose(&self) -> String {
        let pids = self.pids();
        let socks: Vec<String> = sockets_of(&ss_sockets(), &pids).iter().map(SsSocket::place).collect();
        format!("pids {pids:?}, sockets {socks:?}")
    }

    /// Stops it and returns once none of its processes is left (SIGTERM,
    /// apache2 through `apache2ctl stop`, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        let before = self.pids();
        self.seen_pids.extend(&before);
        if before.is_empty() {
            return;
        }
        if self.kind == Kind::Apache2 {
            let status = Command::new("/usr/sbin/apache2ctl")
                .arg("stop")
                .env("APACHE_CONFDIR", &self.dir)
                .stdout(Stdio::null())
                .status()
                .expect("apache2ctl stop");
            assert!(status.success(), "apache2ctl stop: {status}");
        } else {
            signal_all(&before, libc::SIGTERM);
        }
        let term_at = Instant::now();
        loop {
            reap_exited(&self.seen_pids);
            let left = self.pids();
            if left.is_empty() {
                return;
            }
            if term_at.elapsed() > TERM_GRACE {
                signal_all(&left, libc::SIGKILL);
            }
            assert!(term_at.elapsed() < DAEMON_TIMEOUT, "{} does not stop: {left:?} left", self.kind);
            thread::sleep(POLL);
        }
    }

    /// Stops it and starts it again.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }
}

fn signal_all(pids: &BTreeSet<u32>, signal: i32) {
    for &pid in pids {
        // SAFETY: kill(2) on a daemon process this test started.
        unsafe { libc::kill(pid as i32, signal) };
    }
}

/// The eight daemons of one test, stopped when dropped.
pub struct Daemons {
    pub list: Vec<Daemon>,
    _dir: tempfile::TempDir,
    _lock: MutexGuard<'static, ()>,
}

impl Daemons {
    /// Prepares the eight (nothing runs yet), after checking that none of
    /// their fixed places is taken by a process this test did not start.
    pub fn new() -> Self {
        let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        become_subreaper();
        let taken: Vec<String> = ss_sockets()
            .into_iter()
            .filter(|s| {
                (s.netid == "tcp" && matches!(s.port, Some(111 | 5680)))
                    || s.path.as_deref() == Some("/dev/printer")
                    || s.path.as_deref() == Some("@/var/spool/exim4/exim_daemon_notify")
            })
            .map(|s| format!("{} held by {:?}", s.place(), s.holders))
            .collect();
        assert!(
            taken.is_empty(),
            "a daemon of the host already holds what the test's daemons need: {taken:?} (stop it first)"
        );
        let dir = tempfile::Builder::new().prefix("watcher-debian-").tempdir().unwrap();
        // apache2 workers (www-data) and others read their folders.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let list = ALL.iter().map(|&k| Daemon::new(k, dir.path())).collect();
        Self { list, _dir: dir, _lock: lock }
    }

    pub fn get(&mut self, kind: Kind) -> &mut Daemon {
        self.list.iter_mut().find(|d| d.kind == kind).unwrap()
    }

    pub fn start_all(&mut self) {
        for d in &mut self.list {
            d.start();
        }
    }

    pub fn stop_all(&mut self) {
        // The reverse order: rpc.statd before rpcbind.
        for d in self.list.iter_mut().rev() {
            d.stop();
        }
    }

    /// Every pid of every daemon now.
    pub fn all_pids(&self) -> BTreeSet<u32> {
        self.list.iter().flat_map(|d| d.pids()).collect()
    }

    /// Which daemon runs this pid (now or earlier in the test).
    pub fn owner_of(&self, pid: u32) -> Option<Kind> {
        self.list.iter().find(|d| d.seen_pids.contains(&pid)).map(|d| d.kind)
    }

    /// A table of each daemon's processes: pid, ppid, user, program.
    pub fn process_table(&self) -> String {
        let mut out = String::from("DAEMON        PID      PPID     USER         PROGRAM\n");
        for d in &self.list {
            for p in d.procs() {
                out.push_str(&format!(
                    "{:<13} {:<8} {:<8} {:<12} {}\n",
                    d.kind.name(),
                    p.pid,
                    p.ppid,
                    user_name(p.uid),
                    p.program
                ));
            }
        }
        out
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        // Never a panic while unwinding: stop what can be stopped, then
        // SIGKILL whatever of theirs is left.
        for d in self.list.iter_mut().rev() {
            let pids = d.pids();
            if d.kind == Kind::Apache2 && !pids.is_empty() {
                let _ = Command::new("/usr/sbin/apache2ctl")
                    .arg("stop")
                    .env("APACHE_CONFDIR", &d.dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            signal_all(&pids, libc::SIGTERM);
            d.seen_pids.extend(pids);
        }
        let deadline = Instant::now() + TERM_GRACE;
        let mut seen: BTreeSet<u32> = self.list.iter().flat_map(|d| d.seen_pids.iter().copied()).collect();
        loop {
            let left: BTreeSet<u32> = self.list.iter().flat_map(|d| d.pids()).collect();
            seen.extend(&left);
            reap_exited(&seen);
            let left: BTreeSet<u32> = self.list.iter().flat_map(|d| d.pids()).collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                signal_all(&left, libc::SIGKILL);
                thread::sleep(POLL);
                reap_exited(&seen);
                break;
            }
            thread::sleep(POLL);
        }
    }
}

/// The user name of a uid, from /etc/passwd.
pub fn user(uid: u32) -> String {
    user_name(uid)
}
