//! Command line (clap).
use clap::{Args, Parser, Subcommand, ValueEnum};
use watcher_common::EVENTS_BYTES;

use crate::{
    model::socket::Family,
    policy::filter::{Filter, ProtoFilter},
};

#[derive(Debug, Parser)]
#[command(
    name = "watcher",
    version,
    about = "See every socket that starts listening on this host, the instant it does, and the process behind it.",
    long_about = "watcher attaches eBPF programs to the kernel's socket, bind, listen, setsockopt \
                  and accept paths and reports each socket that starts waiting for others (TCP \
                  listener, bound UDP socket, UNIX listener, raw or packet socket, a filter \
                  attached to one) the moment it appears, with the process that owns it, and its \
                  close. Nothing is polled: unlike `ss -ltnup` or `lsof -i`, a listener that lives \
                  for a millisecond is still seen.\n\n\
                  Start with `watcher watch` (a live table), `watcher list` (what waits now), or \
                  `watcher baseline` then `watcher daemon` (alerts on what the allowlist does not \
                  expect).\n\n\
                  Needs root, or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN + CAP_SYS_ADMIN. \
                  Logs go to stderr (RUST_LOG=debug for more); events go to stdout."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream listener events as they happen (until Ctrl-C or SIGTERM).
    #[command(after_help = "Examples:\n  \
        watcher watch                      # every new listener, as a table\n  \
        watcher watch --json | jq .        # one JSON object per event\n  \
        watcher watch --format ecs         # Elastic Common Schema documents, one a line\n  \
        watcher watch --format ocsf        # OCSF events (Network Activity, Detection Finding)\n  \
        watcher watch --proto tcp --port 22 --port 2222\n  \
        watcher watch --comm nginx -6")]
    Watch(WatchArgs),
    /// List the sockets that already wait for others, and every process that holds each.
    #[command(
        long_about = "List every existing TCP listener, bound UDP socket, UNIX listener (stream, \
                      seqpacket) and bound UNIX datagram socket, raw socket and packet socket of \
                      this network namespace, with each process that holds it (pid, fd, user, \
                      command): a listener shared by a parent and its forked workers lists each \
                      of them. A socket no process holds (a kernel socket) is listed once, \
                      without a process. Read once from netlink sock_diag and /proc/<pid>/fd, in \
                      the spirit of `sockstat -l` and `ss -lntupx -p`; `watcher watch` then \
                      reports what comes after.\n\n\
                      Needs root (CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH) to read other \
                      processes' open files.",
        after_help = "Examples:\n  \
        watcher list                       # one row per (socket, holding process)\n  \
        watcher list --json | jq .         # one JSON object per row, event \"existing\"\n  \
        watcher list --proto tcp --port 22\n  \
        watcher list --proto unix --comm sshd\n  \
        watcher list --proto packet        # who can see every frame (sniffers, BPFDoor)"
    )]
    List(ListArgs),
    /// Run as a monitoring daemon: every event as JSON lines, listener
    /// lifecycle, and an alert for anything the allowlist does not expect.
    #[command(
        long_about = "Run as a monitoring daemon. Every event goes out as a JSON line (stdout, or the \
                      file the configuration names); listeners feed a lifecycle table that reports \
                      listener_up, listener_down, restarted (with the gap and whether the same program \
                      came back), owner_changed and reuseport_joined; each new listener and each raw or \
                      packet socket that no [[allow]] rule expects raises an `alert` at once. Starts \
                      with the sockets already there. SIGHUP reloads the configuration (a bad one is \
                      reported and the old one kept); a bad configuration at start exits 2. Without \
                      `enforce` or `kill_unexpected` it changes nothing other programs see.",
        after_help = "Examples:\n  \
            watcher baseline > /etc/watcher/watcher.toml     # allow what listens now, then edit\n  \
            watcher daemon --config /etc/watcher/watcher.toml\n  \
            watcher daemon --config /etc/watcher/watcher.toml --pid-file /run/watcher.pid\n  \
            kill -HUP $(cat /run/watcher.pid)        # reload the allowlist, reopen json_file"
    )]
    Daemon(DaemonArgs),
    /// Write an allowlist (TOML, for `daemon --config`) from what listens now.
    #[command(after_help = "Example:\n  watcher baseline > /etc/watcher/watcher.toml")]
    Baseline(BaselineArgs),
    /// Say what this kernel lets watcher see: kernel, BTF, lockdown, the
    /// program types that load, and per fact the hook attached or why none
    /// is (exit 0 when every default hook attaches).
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// One JSON object per line on stdout instead of the table (the same
    /// as `--format json`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// How events are printed: a table, watcher's own JSON lines, or JSON
    /// lines in a SIEM's schema (ECS 8.x, OCSF 1.3).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<WatchFormat>,
    /// Only events of this process id (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only events whose kernel comm (first 15 bytes of the program name) is exactly this (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only this local port (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only this kind of socket.
    #[arg(long, value_enum)]
    pub proto: Option<ProtoFilter>,
    /// Only IPv4 sockets.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6 sockets.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Only events in this network namespace (its inode, as in
    /// `readlink /proc/PID/ns/net` or `lsns -t net`; repeatable).
    #[arg(long, value_name = "INODE")]
    pub netns: Vec<u32>,
    /// Start streaming at once, without first reporting the sockets that
    /// already wait (events `existing`, as `watcher list` shows them).
    #[arg(long)]
    pub no_snapshot: bool,
    /// Also report every accepted connection (event `accept`), with both
    /// ends. Off by default: it costs each accept() on the host a little.
    #[arg(long)]
    pub accept: bool,
    /// Attach no syscall tracepoint, for hosts where every syscall must
    /// not pay for watcher (+50 to +90 ns each where one is enabled). Where
    /// the kernel refuses cheaper hooks (tracing programs), the facts only
    /// syscall tracepoints carry are then not reported: failed binds and
    /// listens, UNIX sockets, raw and packet sockets, attached filters and
    /// socket options, the fd and backlog of binds and listens (the ready
    /// line and `doctor --light` name them). Where fentry/fexit load, the
    /// same as the default.
    #[arg(long)]
    pub light: bool,
    #[command(flatten)]
    pub ring: RingArgs,
}

/// The kernel's ring buffer, between the programs and this process.
#[derive(Debug, Args)]
pub struct RingArgs {
    /// Size of the ring buffer the kernel programs write records into, in
    /// MiB (a power of two, 1 to 256). It is mapped twice into watcher, so
    /// its RSS holds twice this; a larger ring rides out longer bursts
    /// without loss (what is lost is counted and said).
    #[arg(long = "ring-buffer-mib", value_name = "MIB", default_value_t = EVENTS_BYTES >> 20, value_parser = ring_mib)]
    pub mib: u32,
}

impl RingArgs {
    pub fn bytes(&self) -> u32 {
        self.mib << 20
    }
}

fn ring_mib(text: &str) -> Result<u32, String> {
    let mib: u32 = text.parse().map_err(|_| format!("{text:?} is not a number of MiB"))?;
    if !(1..=256).contains(&mib) || !mib.is_power_of_two() {
        return Err(format!("{mib} MiB: the ring buffer must be a power of two from 1 to 256 MiB"));
    }
    Ok(mib)
}

/// `watch --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WatchFormat {
    /// Aligned columns for people (the default).
    Table,
    /// watcher's own JSON lines (as `--json`).
    Json,
    /// Elastic Common Schema 8.x documents, one per line.
    Ecs,
    /// OCSF 1.3 events, one per line: Network Activity (4001).
    Ocsf,
}

impl WatchArgs {
    pub fn output_format(&self) -> WatchFormat {
        match (self.json, self.format) {
            (true, _) => WatchFormat::Json,
            (false, format) => format.unwrap_or(WatchFormat::Table),
        }
    }

    pub fn filter(&self) -> Filter {
        Filter {
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            ports: self.port.clone(),
            proto: self.proto,
            netns: self.netns.clone(),
            family: match (self.ipv4, self.ipv6) {
                (true, _) => Some(Family::Ipv4),
                (_, true) => Some(Family::Ipv6),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The configuration: allowlist, outputs, enforcement (see watcher.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: std::path::PathBuf,
    /// Refuse binds the allowlist does not allow, as `enforce = true` does.
    #[arg(long)]
    pub enforce: bool,
    /// Attach no syscall tracepoint, as `watch --light` (the ready line
    /// names what that gives up on this kernel).
    #[arg(long)]
    pub light: bool,
    #[command(flatten)]
    pub ring: RingArgs,
    /// Write the daemon's pid to this file (removed at exit), for scripts
    /// that signal it without systemd (logrotate's postrotate: SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per line on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only sockets this process id holds (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only sockets held by a process whose kernel comm (first 15 bytes of the program name) is exactly this (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only this local port (repeatable; UNIX, raw and packet sockets have none).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only this kind of socket.
    #[arg(long, value_enum)]
    pub proto: Option<ProtoFilter>,
    /// Only IPv4 sockets.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6 sockets.
    #[arg(short = '6')]
    pub ipv6: bool,
}

impl ListArgs {
    pub fn filter(&self) -> Filter {
        Filter {
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            ports: self.port.clone(),
            proto: self.proto,
            family: match (self.ipv4, self.ipv6) {
                (true, _) => Some(Family::Ipv4),
                (_, true) => Some(Family::Ipv6),
                _ => None,
            },
            // Every listed socket is in watcher's own namespace.
            ..Default::default()
        }
    }
}

/// `watcher doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Say what `watch --light` would attach and give up.
    #[arg(long)]
    pub light: bool,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn format(args: &[&str]) -> Result<WatchFormat, clap::Error> {
        let cli = Cli::try_parse_from(["watcher", "watch"].iter().chain(args))?;
        match cli.command {
            Command::Watch(watch) => Ok(watch.output_format()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_is_the_long_format_json() {
        assert_eq!(format(&[]).unwrap(), WatchFormat::Table);
        assert_eq!(format(&["--json"]).unwrap(), WatchFormat::Json);
        assert_eq!(format(&["--format", "json"]).unwrap(), WatchFormat::Json);
        assert_eq!(format(&["--format", "ecs"]).unwrap(), WatchFormat::Ecs);
        assert_eq!(format(&["--format", "ocsf"]).unwrap(), WatchFormat::Ocsf);
        assert_eq!(format(&["--format", "table"]).unwrap(), WatchFormat::Table);
        assert!(format(&["--json", "--format", "ecs"]).is_err());
        let e = format(&["--format", "cef"]).unwrap_err().to_string();
        assert!(e.contains("table, json, ecs, ocsf"), "{e}");
    }
}
