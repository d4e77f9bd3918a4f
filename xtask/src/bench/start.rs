//! `cargo xtask bench start`: how long each tool takes from launch to
//! watching (watcher's ready line, bpftrace's "Attaching", each then proven
//! by a test listener it reports), and how long each takes to list 10,000
//! listeners that already exist: `watcher list`, `watcher watch`'s snapshot,
//! `ss -lntup -p` and `lsof -i -n -P`, every output checked for all of them.
use std::{
    cell::Cell,
    collections::{HashMap, HashSet},
    fs,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Args as ClapArgs, value_parser};

use super::{
    background::{Background, Stdout},
    child::ListenerChild,
    duration, ensure_tracefs,
    holder::{self, Held, Holders, Proto},
    machine, monotonic_ns, print_machine, ratio,
    resources::{TempDir, json_pid},
};
use crate::util::watcher_binary;

#[derive(ClapArgs)]
pub struct Args {
    /// Times each tool is started, and each listing taken.
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// TCP listeners the holders keep open for the listing part (on
    /// 127.0.0.2 and up, explicit ports; one process per share of at most
    /// the RLIMIT_NOFILE hard limit).
    #[arg(long, default_value_t = 10_000, value_parser = value_parser!(u32).range(1..=500_000))]
    pub existing: u32,
    /// Bound UDP sockets the holders keep open besides them.
    #[arg(long, default_value_t = 0, value_parser = value_parser!(u32).range(0..=500_000))]
    pub udp: u32,
}

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The same one-liner as the latency bench's, host-wide: TCP sockets
/// entering LISTEN.
const BPFTRACE_PROGRAM: &str = "tracepoint:sock:inet_sock_set_state /args->newstate == 10 && args->protocol == 6/ \
     { printf(\"%llu %d %d\\n\", nsecs, pid, args->sport); }";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Launched {
    WatchNoSnapshot,
    Watch,
    Daemon,
    Bpftrace,
}

impl Launched {
    const ALL: [Self; 4] = [Self::WatchNoSnapshot, Self::Watch, Self::Daemon, Self::Bpftrace];

    fn label(self) -> &'static str {
        match self {
            Self::WatchNoSnapshot => "`watcher watch --json --no-snapshot`",
            Self::Watch => "`watcher watch --json` (snapshot first)",
            Self::Daemon => "`watcher daemon --config <one rule>`",
            Self::Bpftrace => "bpftrace one-liner",
        }
    }

    fn signal(self) -> &'static str {
        match self {
            Self::Bpftrace => "\"Attaching 1 probe...\"",
            _ => "`watcher: ready:`",
        }
    }

    fn command(self, config: &std::path::Path) -> Command {
        let mut cmd = Command::new(watcher_binary());
        match self {
            Self::WatchNoSnapshot => {
                cmd.args(["watch", "--json", "--no-snapshot"]);
            }
            Self::Watch => {
                cmd.args(["watch", "--json"]);
            }
            Self::Daemon => {
                cmd.arg("daemon").arg("--config").arg(config);
            }
            Self::Bpftrace => {
                cmd = Command::new("/usr/bin/bpftrace");
                cmd.args(["-B", "line", "-e", BPFTRACE_PROGRAM]);
            }
        }
        cmd
    }

    fn ready(self) -> fn(&str) -> bool {
        match self {
            Self::Bpftrace => |l| l.starts_with("Attaching "),
            _ => |l| l.starts_with("watcher: ready:"),
        }
    }

    /// Does `line` report a listener of `pid` on `port`?
    #[cfg(test)]
    fn reports(self, line: &str, pid: u32, port: u16) -> bool {
        self.reported_port(line, pid) == Some(port)
    }

    /// The port of `pid`'s listener `line` reports, if it does.
    fn reported_port(self, line: &str, pid: u32) -> Option<u16> {
        match self {
            // "<nsecs> <pid> <sport>"
            Self::Bpftrace => {
                let mut f = line.split_whitespace().skip(1);
                if f.next()?.parse::<u32>().ok()? != pid {
                    return None;
                }
                f.next()?.parse().ok()
            }
            _ => {
                if !json_names(line, pid) {
                    return None;
                }
                let rest = &line[line.find("\"port\":")? + 7..];
                rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
            }
        }
    }
}

fn json_names(line: &str, pid: u32) -> bool {
    line.contains(&format!("\"pid\":{pid},")) || line.contains(&format!("\"pid\":{pid}}}"))
}

/// One launch: ns from spawn to the ready line, and to the listen() call
/// of the first test listener the tool reported.
struct Launch {
    ready_ns: u64,
    proven_ns: u64,
    /// Spawn → the bench read the tool's report of that test listener.
    reported_ns: u64,
    probes: usize,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Both forks first, while the bench is single-threaded.
    let mut generator = ListenerChild::start()?;
    let mut holders = Holders::start(u64::from(args.existing) + u64::from(args.udp))?;
    let machine = machine();
    ensure_tracefs()?;
    let dir = TempDir::new("start")?;
    let config = dir.0.join("watcher.toml");
    fs::write(&config, "[[allow]]\nname = \"bench loopback\"\nproto = \"tcp\"\nscope = \"loopback\"\n")
        .with_context(|| format!("writing {}", config.display()))?;

    // Part 1: launch → ready, with none of the bench's listeners open.
    // Rounds interleave the tools, so a busy spell on the machine hits all.
    let mut launches: HashMap<usize, Vec<Launch>> = HashMap::new();
    for round in 0..args.runs {
        for (i, which) in Launched::ALL.into_iter().enumerate() {
            eprintln!("xtask: bench start: launch {}/{}: {}", round + 1, args.runs, which.label());
            launches.entry(i).or_default().push(launch(which, &config, &mut generator)?);
        }
    }

    // Part 2: the holders' sockets, listed by each tool.
    eprintln!(
        "xtask: bench start: {} holders open {} TCP listeners and {} UDP sockets on 127.0.0.{}+",
        holders.pids().len(),
        args.existing,
        args.udp,
        holder::FIRST_OCTET
    );
    let held = holders.open(u64::from(args.existing), u64::from(args.udp), 0)?;
    let expected: HashSet<Held> = held.iter().copied().collect();
    let pids: HashSet<u32> = holders.pids().into_iter().collect();
    let mut listings: HashMap<usize, Vec<Listing>> = HashMap::new();
    for round in 0..args.runs {
        for (i, which) in Lister::ALL.into_iter().enumerate() {
            eprintln!("xtask: bench start: listing {}/{}: {}", round + 1, args.runs, which.label());
            listings.entry(i).or_default().push(which.time(&config, &pids, &expected)?);
        }
    }
    drop(holders);
    drop(generator);

    println!("## `cargo xtask bench start --runs {} --existing {} --udp {}`\n", args.runs, args.existing, args.udp);
    print_machine(&machine);
    println!();
    println!("### Launch → ready, and → attached (first test listener reported)\n");
    println!(
        "| tool | ready signal | launch → signal, median | max | launch → attached, median | max | \
         launch → its report of that listener read, median | max | test listeners opened, median (max) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, which) in Launched::ALL.into_iter().enumerate() {
        let runs = &launches[&i];
        let ready: Vec<u64> = runs.iter().map(|l| l.ready_ns).collect();
        let proven: Vec<u64> = runs.iter().map(|l| l.proven_ns).collect();
        let reported: Vec<u64> = runs.iter().map(|l| l.reported_ns).collect();
        let probes: Vec<u64> = runs.iter().map(|l| l.probes as u64).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) |",
            which.label(),
            which.signal(),
            duration(median(&ready)),
            duration(max(&ready)),
            duration(median(&proven)),
            duration(max(&proven)),
            duration(median(&reported)),
            duration(max(&reported)),
            median(&probes),
            max(&probes)
        );
    }
    println!();
    println!(
        "### Listing {} existing TCP listeners{} held by {}\n",
        args.existing,
        if args.udp > 0 { format!(" and {} bound UDP sockets", args.udp) } else { String::new() },
        match pids.len() {
            1 => "one process".to_owned(),
            n => format!("{n} processes"),
        }
    );
    println!(
        "| command | median | max | the holder's sockets in its output (worst run) | output lines | median / `watcher list` |"
    );
    println!("|---|---|---|---|---|---|");
    let base = median(&listings[&1].iter().map(|l| l.ns).collect::<Vec<_>>());
    for (i, which) in Lister::ALL.into_iter().enumerate() {
        let runs = &listings[&i];
        let times: Vec<u64> = runs.iter().map(|l| l.ns).collect();
        let worst = runs.iter().min_by_key(|l| l.found).expect("at least one run");
        let found = worst.found;
        let complete = runs.iter().filter(|l| l.found == expected.len()).count();
        println!(
            "| {} | {} | {} | {found}/{}{} | {} | {} |",
            which.label(),
            duration(median(&times)),
            duration(max(&times)),
            expected.len(),
            if found == expected.len() {
                String::new()
            } else {
                format!(
                    " (incomplete; {} more listed without the holder; {complete}/{} runs complete)",
                    worst.unattributed,
                    runs.len()
                )
            },
            runs.iter().map(|l| l.lines).max().unwrap_or(0),
            ratio(median(&times), base)
        );
    }
    println!();
    let first = held.iter().min().map(Held::addr).unwrap_or_default();
    let last = held.iter().max().map(Held::addr).unwrap_or_default();
    let mut pids: Vec<u32> = pids.into_iter().collect();
    pids.sort_unstable();
    println!(
        "- the holders (`{}`, pid {}) held {} sockets on {first} … {last} (one address each), ports {}–{}",
        holder::HOLDER_COMM,
        pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        held.len(),
        holder::FIRST_PORT,
        holder::LAST_PORT
    );
    println!("- {} runs of each; load average is the machine's, shared with other jobs", args.runs);
    Ok(())
}

/// Starts `which`, waits for its ready signal, then opens test listeners
/// one after another (about one a millisecond at first) until it reports
/// one; then stops it.
fn launch(which: Launched, config: &std::path::Path, generator: &mut ListenerChild) -> anyhow::Result<Launch> {
    let pid = generator.pid();
    let launched_ns = monotonic_ns();
    let mut tool =
        Background::start(which.label(), &mut which.command(config), Stdout::Count, which.ready(), START_TIMEOUT)?;
    let ready_ns = monotonic_ns() - launched_ns;
    let mut probes: HashMap<u16, u64> = HashMap::new();
    let deadline = monotonic_ns() + START_TIMEOUT.as_nanos() as u64;
    loop {
        if monotonic_ns() > deadline {
            bail!("{} did not report any of {} test listeners within {START_TIMEOUT:?}", which.label(), probes.len());
        }
        let probe = generator.probe()?;
        probes.insert(probe.port, probe.before_ns);
        let hit = Cell::new(None);
        // Probes come about every millisecond just after the ready signal,
        // then more slowly (at most 5 % of the time since it), so as not to
        // load a tool that is slow to catch up.
        let since_ready = Duration::from_nanos(monotonic_ns() - launched_ns - ready_ns);
        let wait = (since_ready / 20).clamp(Duration::from_millis(1), Duration::from_millis(100));
        // Any earlier probe counts too: a report can come late.
        let seen = tool.wait_for_line(
            |l| {
                let port = which.reported_port(l, pid).filter(|port| probes.contains_key(port));
                hit.set(port);
                port.is_some()
            },
            wait,
        )?;
        if seen && let Some(port) = hit.get() {
            let reported_ns = monotonic_ns() - launched_ns;
            let proven_ns = probes[&port].saturating_sub(launched_ns);
            tool.stop();
            return Ok(Launch { ready_ns, proven_ns, reported_ns, probes: probes.len() });
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lister {
    ListJson,
    List,
    Ss,
    Lsof,
    WatchSnapshot,
    DaemonSnapshot,
}

/// One listing: ns from spawn to the last of the holder's sockets read
/// (for the one-shot commands, to their exit), and how many it showed.
struct Listing {
    ns: u64,
    found: usize,
    /// Of the holders' sockets, those listed without the holder's pid.
    unattributed: usize,
    lines: usize,
}

impl Lister {
    const ALL: [Self; 6] =
        [Self::ListJson, Self::List, Self::Ss, Self::Lsof, Self::WatchSnapshot, Self::DaemonSnapshot];

    fn label(self) -> &'static str {
        match self {
            Self::ListJson => "`watcher list --json`",
            Self::List => "`watcher list`",
            Self::Ss => "`ss -lntup -p`",
            Self::Lsof => "`lsof -i -n -P`",
            Self::WatchSnapshot => "`watcher watch --json`, launch → last `existing` line of the holder's",
            Self::DaemonSnapshot => "`watcher daemon`, launch → last `existing` line of the holder's",
        }
    }

    fn time(self, config: &std::path::Path, pids: &HashSet<u32>, expected: &HashSet<Held>) -> anyhow::Result<Listing> {
        let mut cmd = match self {
            Self::ListJson => {
                let mut c = Command::new(watcher_binary());
                c.args(["list", "--json"]);
                c
            }
            Self::List => {
                let mut c = Command::new(watcher_binary());
                c.arg("list");
                c
            }
            Self::Ss => {
                let mut c = Command::new("/usr/bin/ss");
                c.args(["-lntup", "-p"]);
                c
            }
            Self::Lsof => {
                let mut c = Command::new("/usr/bin/lsof");
                c.args(["-i", "-n", "-P"]);
                c
            }
            Self::WatchSnapshot => {
                let mut c = Command::new(watcher_binary());
                c.args(["watch", "--json"]);
                c
            }
            Self::DaemonSnapshot => {
                let mut c = Command::new(watcher_binary());
                c.arg("daemon").arg("--config").arg(config);
                c
            }
        };
        match self {
            Self::WatchSnapshot | Self::DaemonSnapshot => self.stream(&mut cmd, pids, expected),
            _ => self.one_shot(&mut cmd, pids, expected),
        }
    }

    fn one_shot(self, cmd: &mut Command, pids: &HashSet<u32>, expected: &HashSet<Held>) -> anyhow::Result<Listing> {
        let started = monotonic_ns();
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        let ns = monotonic_ns() - started;
        // lsof exits 1 when some of what it was asked found nothing; the
        // check below is what matters.
        if !out.status.success() && self != Self::Lsof {
            bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut found = HashSet::new();
        let mut elsewise = HashSet::new();
        for (held, pid) in text.lines().filter_map(|l| self.parse_any(l)) {
            if !expected.contains(&held) {
                continue;
            }
            if pid.is_some_and(|pid| pids.contains(&pid)) {
                found.insert(held);
            } else {
                elsewise.insert(held);
            }
        }
        Ok(Listing {
            ns,
            found: found.len(),
            unattributed: elsewise.difference(&found).count(),
            lines: text.lines().count(),
        })
    }

    /// Launch → the last of the holder's `existing` lines read (watcher
    /// prints the snapshot before its ready line, so that is waited for
    /// as well); then the tool is stopped.
    fn stream(self, cmd: &mut Command, pids: &HashSet<u32>, expected: &HashSet<Held>) -> anyhow::Result<Listing> {
        let started = monotonic_ns();
        let mut tool =
            Background::start(self.label(), cmd, Stdout::Keep, |l| l.starts_with("watcher: ready:"), START_TIMEOUT)?;
        // While the clock runs, lines are only matched by substring (std's
        // search is optimised even in this debug build; serde_json is not);
        // they are parsed and checked once it has stopped.
        let mut candidates = Vec::new();
        let mut lines = 0;
        let mut last_ns = started;
        let deadline = started + START_TIMEOUT.as_nanos() as u64;
        loop {
            let batch = tool.take_lines();
            let now = monotonic_ns();
            lines += batch.len();
            let before = candidates.len();
            candidates.extend(batch.into_iter().filter(|l| {
                l.contains("\"event\":\"existing\"") && json_pid(l).is_some_and(|pid| pids.contains(&pid))
            }));
            if candidates.len() > before {
                last_ns = now;
            }
            if candidates.len() >= expected.len() || now > deadline {
                break;
            }
            // Wakes at the next line (on either stream) or after 5 ms.
            tool.wait_for_line(|_| true, Duration::from_millis(5))?;
        }
        tool.stop();
        let found: HashSet<Held> =
            candidates.iter().filter_map(|l| self.parse(l, pids)).filter(|h| expected.contains(h)).collect();
        Ok(Listing { ns: last_ns - started, found: found.len(), unattributed: 0, lines })
    }

    /// The holders' socket a line of this tool's output names, if any.
    fn parse(self, line: &str, pids: &HashSet<u32>) -> Option<Held> {
        self.parse_any(line).and_then(|(held, pid)| pids.contains(&pid?).then_some(held))
    }

    /// A loopback socket a line names, and the pid it names with it (None:
    /// no process, as for a socket whose holder was not found).
    fn parse_any(self, line: &str) -> Option<(Held, Option<u32>)> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (proto, local, pid) = match self {
            Self::ListJson | Self::WatchSnapshot | Self::DaemonSnapshot => {
                if !line.contains("\"event\":\"existing\"") {
                    return None;
                }
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                let local = format!("{}:{}", v.get("addr")?.as_str()?, v.get("port")?.as_u64()?);
                let pid = v.get("pid").and_then(serde_json::Value::as_u64);
                (v.get("proto")?.as_str()?.to_owned(), local, pid)
            }
            // USER COMMAND PID FD PROTO INODE LOCAL-ADDRESS [(service name)]
            Self::List => (
                fields.get(4)?.trim_end_matches(['4', '6']).to_owned(),
                (*fields.get(6)?).to_owned(),
                fields.get(2)?.parse().ok(),
            ),
            // Netid State Recv-Q Send-Q Local Peer users:(("comm",pid=N,fd=N))
            Self::Ss => (
                (*fields.first()?).to_owned(),
                (*fields.get(4)?).to_owned(),
                line.split_once("pid=").and_then(|(_, rest)| rest.split(',').next()?.parse().ok()),
            ),
            // COMMAND PID USER FD TYPE DEVICE SIZE/OFF NODE NAME [(STATE)]
            Self::Lsof => (fields.get(7)?.to_lowercase(), (*fields.get(8)?).to_owned(), fields.get(1)?.parse().ok()),
        };
        let proto = match proto.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return None,
        };
        let (addr, port) = local.rsplit_once(':')?;
        let octet = addr.strip_prefix("127.0.0.")?.parse().ok()?;
        let held = Held { proto, octet, port: port.parse().ok()? };
        Some((held, pid.and_then(|p| u32::try_from(p).ok())))
    }
}

fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => v[n / 2 - 1] / 2 + v[n / 2] / 2,
    }
}

fn max(values: &[u64]) -> u64 {
    values.iter().copied().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_parsed() {
        let (ours, theirs) = (HashSet::from([77, 99]), HashSet::from([7, 78]));
        let held = Held { proto: Proto::Tcp, octet: 3, port: 20001 };
        let want = Some(held);
        let json =
            r#"{"event":"existing","proto":"tcp","family":"ipv4","addr":"127.0.0.3","port":20001,"pid":77,"fd":5}"#;
        assert_eq!(Lister::ListJson.parse(json, &ours), want);
        assert_eq!(Lister::ListJson.parse(json, &theirs), None);
        let table = "root       bench-holder     77       5    tcp4   123456     127.0.0.3:20001";
        assert_eq!(Lister::List.parse(table, &ours), want);
        let named = "root       bench-holder     77       5    tcp4   123456     127.0.0.3:20001 (dcap)";
        assert_eq!(Lister::List.parse(named, &ours), want);
        let ss = r#"tcp   LISTEN 0      16     127.0.0.3:20001      0.0.0.0:*    users:(("bench-holder",pid=77,fd=5))"#;
        assert_eq!(Lister::Ss.parse(ss, &ours), want);
        assert_eq!(Lister::Ss.parse(ss, &theirs), None);
        let lsof = "bench-hol 77 root 5u IPv4 123456 0t0 TCP 127.0.0.3:20001 (LISTEN)";
        assert_eq!(Lister::Lsof.parse(lsof, &ours), want);
        let orphan = "-          -                -        -    tcp4   123456     127.0.0.3:20001";
        assert_eq!(Lister::List.parse_any(orphan), Some((held, None)));
        assert!(Launched::Bpftrace.reports("123 77 20001", 77, 20001));
        assert!(!Launched::Bpftrace.reports("123 77 20001", 77, 2000));
        assert!(Launched::Watch.reports(json, 77, 20001));
        assert_eq!(median(&[5, 1, 3]), 3);
        assert_eq!(median(&[4, 1, 3, 10]), 3);
    }
}
