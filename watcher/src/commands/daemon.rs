//! `watcher daemon`: what an administrator leaves running. Every event goes
//! out as a JSON line, as `watch --json` prints it; listeners feed the
//! lifecycle table (listener_up / listener_down / restarted / owner_changed
//! / reuseport_joined); each new listener and each raw or packet socket is
//! judged against the allowlist, and one that no rule allows raises an
//! `alert` at once (and, if asked, its process is killed). SIGHUP reloads
//! the configuration; a bad one is reported and the old one kept.
use std::{
    cell::RefCell,
    fs::OpenOptions,
    io::{self, Write},
    path::PathBuf,
    rc::Rc,
};

use chrono::{DateTime, Utc};
use log::{error, info, warn};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::{Map, Value, json};

use crate::{
    cli::DaemonArgs,
    commands::{
        list::HolderInfo,
        watch::{PipelineOptions, monotonic_ns, run_pipeline},
    },
    config::{Config, RuleProto},
    host::services,
    kernel::privileges,
    model::escape::escape_bytes,
    output::{
        fleet::{Fleet, Tee},
        format::{Format, Printer, Report, What, rfc3339, unix_path},
        sink::{PipelineStats, Sink},
    },
    policy::{
        allowlist::{Subject, Verdict, judge},
        enforce::{self, Enforcement},
        filter::Filter,
    },
    record::decode::{Family, Proto, SocketKind},
    snapshot::sock_diag::{self, ExistingSocket, Local},
    state::lifecycle::{Change, ListenerKey, ListenerTable, Owner, Where},
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
    let enforcement = if config.enforce { Some(Enforcement::new(&config).map_err(BadConfig)?) } else { None };
    privileges::check()?;
    let out: Box<dyn Write> = match &config.output.json_file {
        Some(path) => Box::new(io::BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| BadConfig(anyhow::anyhow!("opening {}: {e}", path.display())))?,
        )),
        None => Box::new(io::BufWriter::new(io::stdout())),
    };
    info!("{} allowlist rules from {}", config.rules.len(), args.config.display());
    // A metrics address that cannot be bound is a configuration to fix: exit 2.
    let fleet = Rc::new(RefCell::new(Fleet::start(&config).map_err(BadConfig)?));
    let sink = DaemonSink {
        printer: Printer::new(Format::Json, Tee::new(out, fleet.clone())),
        fleet,
        config,
        config_path: args.config,
        listeners: ListenerTable::default(),
        enforcement,
    };
    let options = PipelineOptions { filter: Filter::default(), accept: false, snapshot: true };
    run_pipeline(options, sink).await
}

pub struct DaemonSink<W: Write> {
    printer: Printer<W>,
    /// Syslog and metrics; also fed by `printer`'s writer (a [`Tee`]).
    fleet: Rc<RefCell<Fleet>>,
    config: Config,
    config_path: PathBuf,
    listeners: ListenerTable,
    /// Binds refused in the kernel, when `enforce` is on (see `enforce`).
    enforcement: Option<Enforcement>,
}

/// When a socket came up, as far as kill_unexpected is concerned: what
/// already ran when the daemon started is alerted on but never killed, so
/// that starting with an incomplete allowlist cannot take down sshd.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    BeforeDaemon,
    New,
}

/// A listener as the lifecycle and the allowlist see it.
struct Sighting {
    key: ListenerKey,
    owner: Owner,
    rule_proto: RuleProto,
}

impl<W: Write> DaemonSink<W> {
    fn emit(&mut self, line: Value) -> io::Result<()> {
        self.printer.write_json(&line)
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
        let mut ups = Vec::new();
        for change in changes {
            if let Change::Up { key, owner } = &change {
                ups.push((key.clone(), owner.clone()));
            }
            self.emit(change_line(&change, time))?;
        }
        for (key, owner) in ups {
            self.judge(&subject_of(&key, &owner, rule_proto), &owner, "listener_up", &key_fields(&key), time, start)?;
        }
        Ok(())
    }

    /// Raises an alert (and kills, when configured and the socket is new)
    /// if no rule allows `subject`.
    fn judge(
        &mut self,
        subject: &Subject<'_>,
        owner: &Owner,
        what: &str,
        fields: &Map<String, Value>,
        time: DateTime<Utc>,
        start: Start,
    ) -> io::Result<()> {
        let Verdict::Alert { rule, severity, reason } = judge(&self.config, subject) else {
            return Ok(());
        };
        let mut line = base(time, "alert");
        line.insert("severity".into(), severity.name().into());
        line.insert("rule".into(), rule.into());
        line.insert("reason".into(), reason.clone().into());
        line.insert("subject".into(), what.into());
        line.extend(fields.clone());
        line.extend(owner_fields(owner, ""));
        warn!("alert ({}): {reason}; pid {}", severity.name(), owner.pid);
        self.emit(Value::Object(line))?;
        if self.config.kill_unexpected && start == Start::New && owner.pid > 1 {
            let result = nix::sys::signal::kill(Pid::from_raw(owner.pid as i32), Signal::SIGKILL);
            let mut line = base(Utc::now(), if result.is_ok() { "killed" } else { "kill_failed" });
            line.insert("reason".into(), reason.into());
            if let Err(e) = result {
                line.insert("error".into(), e.to_string().into());
            }
            line.extend(fields.clone());
            line.extend(owner_fields(owner, ""));
            self.emit(Value::Object(line))?;
        }
        Ok(())
    }

    fn sighting_of_report(report: &Report<'_>) -> Option<(Sighting, bool)> {
        let t = report.task;
        let owner = Owner {
            pid: t.pid,
            uid: Some(t.uid),
            user: report.user.map(str::to_owned),
            comm: t.comm.clone(),
            exe: report.process.exe.clone(),
            cmdline: report.process.cmdline.clone(),
        };
        let netns = u64::from(t.netns);
        match &report.what {
            What::Socket { event, .. } => {
                let (up, rule_proto) = match (event.kind, event.proto) {
                    (SocketKind::Listen, Proto::Tcp) => (true, RuleProto::Tcp),
                    (SocketKind::Bind, Proto::Udp) => (true, RuleProto::Udp),
                    (SocketKind::Close, Proto::Tcp) => (false, RuleProto::Tcp),
                    (SocketKind::Close, Proto::Udp) => (false, RuleProto::Udp),
                    _ => return None, // a TCP bind: its listen is what counts
                };
                let key = ListenerKey {
                    netns,
                    proto: event.proto,
                    local: Where::Inet { addr: event.addr, port: event.port },
                };
                Some((Sighting { key, owner, rule_proto }, up))
            }
            What::Unix { kind, path, .. } => {
                let key = ListenerKey { netns, proto: Proto::Unix, local: Where::Unix { path: path.to_vec() } };
                // Up at listen(), or at bind() for a datagram socket (it never listens).
                Some((Sighting { key, owner, rule_proto: RuleProto::Unix }, *kind != SocketKind::Close))
            }
            _ => None,
        }
    }

    /// After records were lost, the table may be wrong: read what listens
    /// now and report what changed while watcher was blind.
    fn resync(&mut self) -> io::Result<()> {
        let snapshot = match sock_diag::take(std::path::Path::new("/proc"), &[]) {
            Ok(s) => s,
            Err(e) => {
                error!("after the loss, no fresh snapshot to rebuild the listener table: {e:#}");
                return Ok(());
            }
        };
        let mut lookup = crate::host::process::ProcessLookup::default();
        let holders = crate::commands::list::name_holders(&snapshot, &mut lookup);
        let now = monotonic_ns();
        let time = Utc::now();
        let mut present = std::collections::HashSet::new();
        for socket in &snapshot.sockets {
            let all_holders = holders.get(&socket.inode);
            let holder = all_holders.and_then(|h| h.first());
            if let Some(s) = existing_sighting(socket, holder, snapshot.netns.unwrap_or(0)) {
                present.insert(s.key.clone());
                let known = self.listeners.owner_pids(&s.key);
                // Live in the table but held by none of its known owners:
                // it went down and came back in other hands while we were blind.
                let changed_hands =
                    !known.is_empty() && !all_holders.is_some_and(|hs| hs.iter().any(|h| known.contains(&h.pid)));
                if changed_hands {
                    for pid in known {
                        let changes = self.listeners.down(&s.key, pid, now);
                        self.changes(changes, s.rule_proto, time, Start::New)?;
                    }
                }
                if !self.listeners.is_live(&s.key) {
                    let changes = self.listeners.up(s.key, s.owner, now);
                    self.changes(changes, s.rule_proto, time, Start::New)?;
                }
            }
        }
        // The snapshot sees only our network namespace: a listener in a
        // container's is kept as it is, not declared down.
        let seen_netns = snapshot.netns.unwrap_or(0);
        for key in self.listeners.live_keys() {
            if (key.netns == seen_netns || key.netns == 0) && !present.contains(&key) {
                let changes = self.listeners.down(&key, 0, now);
                self.changes(changes, RuleProto::Tcp, time, Start::New)?;
            }
        }
        let mut line = base(time, "resynced");
        line.insert("live_listeners".into(), self.listeners.live_count().into());
        self.emit(Value::Object(line))
    }
}

impl<W: Write> Sink for DaemonSink<W> {
    fn enforces(&self) -> bool {
        self.enforcement.is_some()
    }

    fn attached(&mut self, attached: &mut crate::kernel::loader::Attached) -> anyhow::Result<()> {
        match &mut self.enforcement {
            Some(enforcement) => enforcement.attach(attached),
            None => Ok(()),
        }
    }

    fn report(&mut self, report: &Report<'_>) -> io::Result<()> {
        if let What::Denied { event, .. } = report.what {
            return enforce::report_denied(self.enforcement.as_ref(), &mut self.printer, report, event);
        }
        self.printer.report(report)?;
        let time = report.time;
        if let Some((s, up)) = Self::sighting_of_report(report) {
            let changes = if up {
                self.listeners.up(s.key, s.owner, report.task.ktime_ns)
            } else {
                self.listeners.down(&s.key, report.task.pid, report.task.ktime_ns)
            };
            return self.changes(changes, s.rule_proto, time, Start::New);
        }
        // Passive sockets: judged as they come, no lifecycle.
        let (proto, fields) = match &report.what {
            What::PassiveSocket { socket, .. } => {
                (if socket.family == Family::Packet { RuleProto::Packet } else { RuleProto::Raw }, Map::new())
            }
            What::FilterAttached { socket, .. } => {
                let proto = match socket {
                    Some(s) if s.family != Family::Packet => RuleProto::Raw,
                    _ => RuleProto::Packet,
                };
                (proto, Map::new())
            }
            _ => return Ok(()),
        };
        let t = report.task;
        let owner = Owner {
            pid: t.pid,
            uid: Some(t.uid),
            user: report.user.map(str::to_owned),
            comm: t.comm.clone(),
            exe: report.process.exe.clone(),
            cmdline: report.process.cmdline.clone(),
        };
        let subject = Subject {
            proto,
            addr: None,
            port: None,
            path: None,
            exe: owner.exe.as_deref(),
            comm: &owner.comm,
            user: owner.user.as_deref(),
            uid: owner.uid,
        };
        let what = report.what.event_name();
        self.judge(&subject.clone(), &owner, what, &fields, time, Start::New)
    }

    fn existing(
        &mut self,
        time: DateTime<Utc>,
        socket: &ExistingSocket,
        holder: Option<&HolderInfo>,
        netns: Option<u64>,
    ) -> io::Result<()> {
        Sink::existing(&mut self.printer, time, socket, holder, netns)?;
        if let Some(s) = existing_sighting(socket, holder, netns.unwrap_or(0)) {
            let changes = self.listeners.up(s.key, s.owner, monotonic_ns());
            return self.changes(changes, s.rule_proto, time, Start::BeforeDaemon);
        }
        if matches!(socket.local, Local::Raw { .. } | Local::Packet { .. }) {
            let owner = holder.map(owner_of_holder).unwrap_or_default();
            let proto = if matches!(socket.local, Local::Packet { .. }) { RuleProto::Packet } else { RuleProto::Raw };
            let subject = Subject {
                proto,
                addr: None,
                port: None,
                path: None,
                exe: owner.exe.as_deref(),
                comm: &owner.comm,
                user: owner.user.as_deref(),
                uid: owner.uid,
            };
            return self.judge(&subject.clone(), &owner, "existing", &Map::new(), time, Start::BeforeDaemon);
        }
        Ok(())
    }

    fn lost(&mut self, count: u64, total: u64, time: DateTime<Utc>) -> io::Result<()> {
        self.printer.lost(count, total, time)?;
        self.resync()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.fleet.borrow().live_listeners(self.listeners.live_count());
        self.printer.flush()
    }

    fn tick(&mut self, stats: &PipelineStats) -> io::Result<()> {
        let fleet = self.fleet.borrow();
        fleet.live_listeners(self.listeners.live_count());
        fleet.process_table_size(stats.processes);
        Ok(())
    }

    fn hangup(&mut self) -> bool {
        // With enforcement on, the new rules must also fit the kernel's maps.
        let loaded = Config::load(&self.config_path)
            .and_then(|config| enforce::on_reload(self.enforcement.as_mut(), &config).map(|()| config));
        let mut line = match loaded {
            Ok(config) => {
                info!("reloaded {}: {} allowlist rules", self.config_path.display(), config.rules.len());
                let enforce = self.config.enforce;
                self.config = config;
                self.config.enforce |= enforce;
                self.fleet.borrow_mut().reconfigure(&self.config);
                let mut line = base(Utc::now(), "config_reloaded");
                line.insert("rules".into(), self.config.rules.len().into());
                line
            }
            Err(e) => {
                error!("reloading {}: {e:#}; keeping the configuration in force", self.config_path.display());
                let mut line = base(Utc::now(), "config_rejected");
                line.insert("reason".into(), format!("{e:#}").into());
                line
            }
        };
        line.insert("path".into(), escape_bytes(self.config_path.as_os_str().as_encoded_bytes()).into());
        if let Err(e) = self.emit(Value::Object(line)).and_then(|()| self.printer.flush()) {
            error!("writing the reload event: {e}");
        }
        true
    }
}

fn owner_of_holder(h: &HolderInfo) -> Owner {
    Owner {
        pid: h.pid,
        uid: h.uid,
        user: h.user.clone(),
        comm: h.comm.clone().unwrap_or_default(),
        exe: h.process.exe.clone(),
        cmdline: h.process.cmdline.clone(),
    }
}

/// A snapshot socket as a listener: TCP listeners, bound UDP and UNIX sockets.
fn existing_sighting(socket: &ExistingSocket, holder: Option<&HolderInfo>, netns: u64) -> Option<Sighting> {
    let (local, rule_proto) = match (&socket.local, socket.proto) {
        (Local::Inet { addr, port }, Proto::Tcp) => (Where::Inet { addr: *addr, port: *port }, RuleProto::Tcp),
        (Local::Inet { addr, port }, Proto::Udp) => (Where::Inet { addr: *addr, port: *port }, RuleProto::Udp),
        (Local::Unix { path }, _) => (Where::Unix { path: path.clone() }, RuleProto::Unix),
        _ => return None,
    };
    Some(Sighting {
        key: ListenerKey { netns, proto: socket.proto, local },
        owner: holder.map(owner_of_holder).unwrap_or_default(),
        rule_proto,
    })
}

fn subject_of<'a>(key: &'a ListenerKey, owner: &'a Owner, proto: RuleProto) -> Subject<'a> {
    let (addr, port, path) = match &key.local {
        Where::Inet { addr, port } => (Some(*addr), Some(*port), None),
        Where::Unix { path } => (None, None, Some(path.as_slice())),
    };
    Subject {
        proto,
        addr,
        port,
        path,
        exe: owner.exe.as_deref(),
        comm: &owner.comm,
        user: owner.user.as_deref(),
        uid: owner.uid,
    }
}

fn base(time: DateTime<Utc>, event: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("time".into(), rfc3339(time).into());
    m.insert("event".into(), event.into());
    m
}

fn key_fields(key: &ListenerKey) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("proto".into(), key.proto.name().into());
    match &key.local {
        Where::Inet { addr, port } => {
            m.insert("family".into(), if addr.is_ipv4() { "ipv4" } else { "ipv6" }.into());
            m.insert("addr".into(), addr.to_string().into());
            m.insert("port".into(), (*port).into());
            if let Some(name) = services::name(&key.proto.name(), *port) {
                m.insert("service".into(), name.into());
            }
        }
        Where::Unix { path } => {
            m.insert("family".into(), "unix".into());
            m.insert("path".into(), unix_path(path).into());
        }
    }
    m.insert("netns".into(), if key.netns == 0 { Value::Null } else { key.netns.into() });
    m
}

/// An owner's fields, each name prefixed (`previous_`, `existing_`) or not.
fn owner_fields(owner: &Owner, prefix: &str) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |name: &str, v: Value| {
        m.insert(format!("{prefix}{name}"), v);
    };
    put("pid", if owner.pid == 0 { Value::Null } else { owner.pid.into() });
    put("comm", if owner.comm.is_empty() { Value::Null } else { escape_bytes(&owner.comm).into() });
    put("exe", owner.exe.as_deref().map(escape_bytes).into());
    put("cmdline", owner.cmdline.as_ref().map(|a| a.iter().map(|x| escape_bytes(x)).collect::<Vec<_>>()).into());
    put("uid", owner.uid.into());
    put("user", owner.user.clone().into());
    m
}

fn change_line(change: &Change, time: DateTime<Utc>) -> Value {
    let (event, key, owner) = match change {
        Change::Up { key, owner } => ("listener_up", key, owner),
        Change::Down { key, owner, .. } => ("listener_down", key, owner),
        Change::Restarted { key, owner, .. } => ("restarted", key, owner),
        Change::OwnerChanged { key, owner, .. } => ("owner_changed", key, owner),
        Change::ReuseportJoined { key, owner, .. } => ("reuseport_joined", key, owner),
    };
    let mut m = base(time, event);
    m.extend(key_fields(key));
    m.extend(owner_fields(owner, ""));
    match change {
        Change::Down { lived_ns, .. } => {
            m.insert("lived_ms".into(), json!(*lived_ns as f64 / 1e6));
        }
        Change::Restarted { previous, gap_ns, same_exe, same_user, same_cmdline, .. } => {
            m.insert("gap_ms".into(), json!(*gap_ns as f64 / 1e6));
            m.insert("same_exe".into(), (*same_exe).into());
            m.insert("same_user".into(), (*same_user).into());
            m.insert("same_cmdline".into(), (*same_cmdline).into());
            m.extend(owner_fields(previous, "previous_"));
        }
        Change::OwnerChanged { previous, .. } => m.extend(owner_fields(previous, "previous_")),
        Change::ReuseportJoined { existing, .. } => m.extend(owner_fields(existing, "existing_")),
        Change::Up { .. } => {}
    }
    Value::Object(m)
}
