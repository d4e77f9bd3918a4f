//! `watcher daemon`: what an administrator leaves running. Every event goes
//! out as a JSON line, as `watch --json` prints it (or as ECS or OCSF, as
//! `[output] format` says); listeners feed the
//! lifecycle table (listener_up / listener_down / restarted / owner_changed
//! / reuseport_joined / holders_changed); each new listener and each raw or
//! packet socket is judged against the allowlist, and one that no rule
//! allows raises an `alert` at once (and, if asked, every process holding
//! it is killed). SIGHUP reloads the configuration; a bad one is reported
//! and the old one kept.
//!
//! Glue only: the table is `state::lifecycle`, the verdicts
//! `policy::allowlist`, the kill `policy::kill`, the lines
//! `output::daemon_lines`.
use std::{
    io::{self, Write},
    path::PathBuf,
};

use chrono::{DateTime, Utc};
use log::{error, info, warn};

use crate::{
    cli::DaemonArgs,
    config::{Config, RuleProto},
    enrich::report::{Report, What},
    host::{pid_file::PidFile, process::ProcessLookup},
    kernel::{loader::Attached, privileges},
    model::{
        event_name::EventName,
        holder::Holder,
        socket::{Family, Local, Proto},
    },
    output::{
        daemon_lines::DaemonLines,
        event::{Alert, Event, KillOutcome},
        fleet::Fleet,
        json_file::JsonOutput,
        sink::{PipelineStats, Sink},
    },
    pipeline::{PipelineOptions, monotonic_ns, run_pipeline},
    policy::{
        allowlist::{Subject, Verdict, judge},
        enforce::{self, Enforcement},
        filter::Filter,
        kill,
    },
    record::decode::Record,
    snapshot::{
        holders::{self, HolderInfo},
        sock_diag::ExistingSocket,
    },
    state::{
        lifecycle::{Change, ListenerKey, Socket},
        tracker::{self, Sighting, Tracker, existing_socket, holder_of},
    },
};

/// A configuration that could not be used at start: the daemon exits 2.
#[derive(Debug)]
pub struct BadConfig(pub anyhow::Error);

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad configuration: {:#}", self.0)
    }
}

impl std::error::Error for BadConfig {}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config).map_err(BadConfig)?;
    config.enforce |= args.enforce;
    let enforcement = if config.enforce {
        Some(Enforcement::new(&config).map_err(BadConfig)?)
    } else if config.kill_unexpected && privileges::can_kill() {
        // The maps also let the kernel stop a listen no rule allows; rules
        // they cannot hold leave the kills to userspace alone. Without
        // CAP_KILL nothing is stopped: the kill would fail, and so would
        // the SIGCONT that lets a stopped process go on.
        Enforcement::new(&config)
            .inspect_err(|e| warn!("kill_unexpected: {e:#}; listens are killed, not stopped in the kernel"))
            .ok()
    } else {
        None
    };
    privileges::check()?;
    let _pid_file = args.pid_file.as_deref().map(PidFile::create).transpose()?;
    info!("{} allowlist rules from {}", config.rules.len(), args.config.display());
    // A metrics address that cannot be bound is a configuration to fix: exit 2.
    let fleet = Fleet::start(&config).map_err(BadConfig)?;
    // Never fails once open: a full disk or a closed pipe is counted (see
    // json_file), and the other outputs go on.
    let out = match &config.output.json_file {
        Some(path) => JsonOutput::file(path, config.output.json_file_mode, fleet.output_counters("json_file"))
            .map_err(BadConfig)?,
        None => JsonOutput::stdout(fleet.output_counters("stdout")),
    };
    out.set_format(config.output.format);
    let sink = DaemonSink {
        lines: DaemonLines::new(out.clone(), fleet, config.output.format),
        output: out,
        config,
        config_path: args.config,
        tracker: Tracker::default(),
        lookup: ProcessLookup::default(),
        enforcement,
        killed: Vec::new(),
    };
    let options = PipelineOptions {
        filter: Filter::default(),
        accept: false,
        light: args.light,
        snapshot: true,
        ring_bytes: args.ring.bytes(),
        stop_when_stdout_closes: false,
    };
    run_pipeline(options, sink).await
}

pub struct DaemonSink<W: Write> {
    lines: DaemonLines<W>,
    /// What `lines` writes into, kept to reopen it at SIGHUP.
    output: JsonOutput,
    config: Config,
    config_path: PathBuf,
    /// The listener table, and who holds each listener.
    tracker: Tracker,
    lookup: ProcessLookup,
    /// Binds refused in the kernel, when `enforce` is on (see `enforce`);
    /// with `kill_unexpected`, TCP listens stopped in the kernel.
    enforcement: Option<Enforcement>,
    /// The pids killed while the current record was handled.
    killed: Vec<u32>,
}

/// When a socket came up, as far as kill_unexpected is concerned: what
/// already ran when the daemon started is alerted on but never killed, so
/// that starting with an incomplete allowlist cannot take down sshd.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    BeforeDaemon,
    New,
}

impl<W: Write> DaemonSink<W> {
    fn emit(&mut self, event: &Event<'_>) -> io::Result<()> {
        self.lines.emit(event)
    }

    /// Lifecycle changes, then a verdict for each listener that came up.
    fn changes(
        &mut self,
        changes: Vec<Change>,
        rule_proto: RuleProto,
        time: DateTime<Utc>,
        start: Start,
    ) -> io::Result<()> {
        // The verdicts after every change, so an alert follows the
        // restarted / owner_changed that explains it.
        for change in &changes {
            self.emit(&Event::Lifecycle { time, change })?;
        }
        for change in &changes {
            if let Change::Up { key, socket } = change {
                let subject = subject_of(Some(key), &socket.creator, rule_proto);
                self.judge(&subject, socket, EventName::ListenerUp, Some(key), time, start)?;
            }
        }
        Ok(())
    }

    /// Raises an alert (and kills, when configured and the socket is new)
    /// if no rule allows `subject`.
    fn judge(
        &mut self,
        subject: &Subject<'_>,
        socket: &Socket,
        what: EventName,
        key: Option<&ListenerKey>,
        time: DateTime<Utc>,
        start: Start,
    ) -> io::Result<()> {
        let Verdict::Alert { rule, severity, reason } = judge(&self.config, subject) else {
            return Ok(());
        };
        warn!("alert ({}): {reason}; pid {}", severity.name(), socket.creator.pid);
        let alert = Alert {
            severity,
            rule,
            reason,
            subject: what,
            key: key.cloned(),
            holder: Holder::clone(&socket.creator),
            holders: socket.other_holders().iter().map(|h| Holder::clone(h)).collect(),
        };
        self.emit(&Event::Alert { time, alert: &alert })?;
        let pid = socket.creator.pid;
        if self.config.kill_unexpected && start == Start::New && pid > 1 {
            let killing = kill::kill_holders(&mut self.lookup, key.map(|k| (k.proto, &k.local)), pid);
            self.killed.extend(&killing.killed);
            let outcome = KillOutcome {
                reason: alert.reason,
                key: alert.key,
                holder: alert.holder,
                killed: killing.killed,
                survivors: killing.survivors,
            };
            self.emit(&Event::Kill { time: Utc::now(), outcome: &outcome })?;
        }
        Ok(())
    }

    /// After records were lost, the table may be wrong: read what listens
    /// now and report what changed while watcher was blind.
    fn resync(&mut self) -> io::Result<()> {
        let (snapshot, holders) = match holders::take_named(&mut self.lookup, &[]) {
            Ok(s) => s,
            Err(e) => {
                error!("after the loss, no fresh snapshot to rebuild the listener table: {e:#}");
                return Ok(());
            }
        };
        let now = monotonic_ns();
        let time = Utc::now();
        let netns = snapshot.netns.unwrap_or(0);
        let mut now_there = Vec::new();
        for socket in &snapshot.sockets {
            let Some((key, _)) = key_of_existing(socket, netns) else { continue };
            let infos = holders.get(&socket.inode).map(Vec::as_slice).unwrap_or_default();
            now_there.push((key, existing_socket(socket, infos, &mut self.lookup)));
        }
        for change in self.tracker.resync(now_there, netns, now) {
            let rule_proto = rule_proto_of(change_key(&change).proto);
            self.changes(vec![change], rule_proto, time, Start::New)?;
        }
        let live_listeners = self.tracker.listeners.live_count();
        self.emit(&Event::Resynced { time, live_listeners })
    }
}

impl<W: Write> Sink for DaemonSink<W> {
    fn enforces(&self) -> bool {
        self.enforcement.is_some()
    }

    fn enforces_calls(&self) -> bool {
        self.enforcement.as_ref().is_some_and(Enforcement::refuses_binds)
    }

    fn attached(&mut self, attached: &mut Attached) -> anyhow::Result<()> {
        match &mut self.enforcement {
            Some(enforcement) => enforcement.attach(attached),
            None => Ok(()),
        }
    }

    fn report(&mut self, report: &Report<'_>) -> io::Result<()> {
        if let What::Denied { event, .. } = report.what {
            let why = enforce::explain_denied(self.enforcement.as_ref(), report, event);
            let report = Report { what: What::Denied { event, why: why.as_ref() }, ..*report };
            return self.emit(&Event::Live(&report));
        }
        self.emit(&Event::Live(report))?;
        let time = report.time;
        let holder = holder_of(report);
        if let Some(s) = Sighting::of(report) {
            let rule_proto = rule_proto_of(s.key.proto);
            let changes = if s.up {
                self.tracker.up(s.key, Socket::new(s.id, holder, Vec::new()), report.task.ktime_ns)
            } else {
                self.tracker.closed(&s.key, s.id, Some(report.task), report.task.ktime_ns)
            };
            self.killed.clear();
            let judged = self.changes(changes, rule_proto, time, Start::New);
            if let What::Socket { event, .. } = &report.what
                && event.stopped
                && !self.killed.contains(&event.task.pid)
            {
                // The kernel stopped it, and userspace's judgment (the rules
                // by path, a reload since) let it be, or it was the same
                // socket again: it goes on.
                info!("kill_unexpected: pid {} was stopped at its listen and is allowed: SIGCONT", event.task.pid);
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(event.task.pid as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
            return judged;
        }
        // Passive sockets: judged as they come, no lifecycle.
        let proto = match &report.what {
            What::PassiveSocket { socket, .. } if socket.family == Family::Packet => RuleProto::Packet,
            What::PassiveSocket { .. } => RuleProto::Raw,
            What::FilterAttached { socket: Some(s), .. } if s.family != Family::Packet => RuleProto::Raw,
            What::FilterAttached { .. } => RuleProto::Packet,
            _ => return Ok(()),
        };
        let what = report.what.event_name();
        let socket = Socket::new(None, holder, Vec::new());
        self.judge(&subject_of(None, &socket.creator, proto), &socket, what, None, time, Start::New)
    }

    fn existing(
        &mut self,
        time: DateTime<Utc>,
        socket: &ExistingSocket,
        holders: &[HolderInfo],
        netns: Option<u64>,
    ) -> io::Result<()> {
        for holder in holders::rows(holders) {
            self.emit(&Event::Existing { time, socket, holder, netns })?;
        }
        let netns = netns.unwrap_or(0);
        if let Some((key, rule_proto)) = key_of_existing(socket, netns) {
            let socket = existing_socket(socket, holders, &mut self.lookup);
            let changes = self.tracker.up(key, socket, monotonic_ns());
            return self.changes(changes, rule_proto, time, Start::BeforeDaemon);
        }
        if matches!(socket.local, Local::Raw { .. } | Local::Packet { .. }) {
            let proto = if matches!(socket.local, Local::Packet { .. }) { RuleProto::Packet } else { RuleProto::Raw };
            let socket = existing_socket(socket, holders, &mut self.lookup);
            let subject = subject_of(None, &socket.creator, proto);
            return self.judge(&subject, &socket, EventName::Existing, None, time, Start::BeforeDaemon);
        }
        Ok(())
    }

    fn process(&mut self, record: &Record) -> io::Result<()> {
        self.tracker.process(record);
        Ok(())
    }

    fn lost(&mut self, count: u64, total: u64, time: DateTime<Utc>) -> io::Result<()> {
        self.emit(&Event::Lost { time, count, total })?;
        self.resync()
    }

    fn flush(&mut self) -> io::Result<()> {
        // Once a batch is in: who holds the listeners whose named holders exited.
        for change in self.tracker.settle(&mut self.lookup) {
            let rule_proto = rule_proto_of(change_key(&change).proto);
            self.changes(vec![change], rule_proto, Utc::now(), Start::New)?;
        }
        self.lines.fleet.live_listeners(self.tracker.listeners.live_count());
        let flushed = self.lines.flush();
        // The JSON output's own `output_dropped` lines go to syslog too.
        for line in self.output.take_notices() {
            self.lines.fleet.output_line(EventName::OutputDropped, &line);
        }
        flushed
    }

    fn tick(&mut self, stats: &PipelineStats) -> io::Result<()> {
        self.lines.fleet.live_listeners(self.tracker.listeners.live_count());
        self.lines.fleet.process_table_size(stats.processes);
        self.lines.fleet.program_errors(&stats.program_errors);
        self.tracker.tidy();
        Ok(())
    }

    fn hangup(&mut self) -> bool {
        // With enforcement on, the new rules must also fit the kernel's maps.
        let loaded = Config::load(&self.config_path)
            .and_then(|config| enforce::on_reload(self.enforcement.as_mut(), &config).map(|()| config));
        // logrotate's postrotate: the JSON file is opened again (a new
        // path or mode from a good file applies here too).
        let reopened = match &loaded {
            Ok(new) if new.output != self.config.output => match (&self.config.output.json_file, &new.output.json_file)
            {
                (Some(_), Some(path)) => self.output.retarget(path, new.output.json_file_mode),
                _ => {
                    warn!("[output] json_file: a switch between stdout and a file applies at the next start");
                    self.output.reopen()
                }
            },
            _ => self.output.reopen(),
        };
        if let Err(e) = reopened {
            error!("{e:#}; the lines are counted as dropped until it opens");
        }
        let path = self.config_path.clone();
        let written = match loaded {
            Ok(config) => {
                info!("reloaded {}: {} allowlist rules", path.display(), config.rules.len());
                let enforce = self.config.enforce;
                self.config = config;
                self.config.enforce |= enforce;
                self.lines.fleet.reconfigure(&self.config);
                self.lines.set_format(self.config.output.format);
                self.output.set_format(self.config.output.format);
                let rules = self.config.rules.len();
                self.emit(&Event::ConfigReloaded { time: Utc::now(), path: &path, rules })
            }
            Err(e) => {
                error!("reloading {}: {e:#}; keeping the configuration in force", path.display());
                let reason = format!("{e:#}");
                self.emit(&Event::ConfigRejected { time: Utc::now(), path: &path, reason: &reason })
            }
        };
        if let Err(e) = written.and_then(|()| self.lines.flush()) {
            error!("writing the reload event: {e}");
        }
        true
    }
}

/// A snapshot socket as a listener, and the rules' protocol for it.
fn key_of_existing(socket: &ExistingSocket, netns: u64) -> Option<(ListenerKey, RuleProto)> {
    tracker::key_of_existing(socket, netns).map(|key| {
        let proto = rule_proto_of(key.proto);
        (key, proto)
    })
}

fn change_key(change: &Change) -> &ListenerKey {
    match change {
        Change::Up { key, .. }
        | Change::Down { key, .. }
        | Change::Restarted { key, .. }
        | Change::OwnerChanged { key, .. }
        | Change::ReuseportJoined { key, .. }
        | Change::HoldersChanged { key, .. } => key,
    }
}

fn rule_proto_of(proto: Proto) -> RuleProto {
    match proto {
        Proto::Udp => RuleProto::Udp,
        Proto::Unix => RuleProto::Unix,
        Proto::Raw => RuleProto::Raw,
        Proto::Packet => RuleProto::Packet,
        Proto::Tcp | Proto::Other(_) => RuleProto::Tcp,
    }
}

fn subject_of<'a>(key: Option<&'a ListenerKey>, holder: &'a Holder, proto: RuleProto) -> Subject<'a> {
    let (addr, port, path) = match key.map(|k| &k.local) {
        Some(Local::Inet { addr, port }) => (Some(*addr), Some(*port), None),
        Some(Local::Unix { path }) => (None, None, Some(path.as_slice())),
        _ => (None, None, None),
    };
    Subject {
        proto,
        addr,
        port,
        path,
        exe: holder.exe.as_deref(),
        comm: &holder.comm,
        user: holder.user.as_deref(),
        uid: holder.uid,
    }
}
