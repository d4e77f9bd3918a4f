//! The one typed event every sink receives: a live kernel event, a socket
//! of the snapshot, a loss, and what the daemon derives (lifecycle
//! changes, alerts, actions, reloads). Sinks take an [`Event`]; none reads
//! another's text. [`Event::write_json`] is the JSON line of each, with the
//! field names the README documents.
use std::{borrow::Borrow, cell::RefCell, io, path::Path, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer, ser::SerializeMap};

use crate::{
    config::Severity,
    enrich::report::Report,
    host::services,
    model::{
        escape::{escape, escape_bytes},
        event_name::EventName,
        holder::Holder,
        socket::Local,
        text::{rfc3339, unix_path},
    },
    output::json_line::{Fragment, ObjectWriter, SecondsCache, same},
    snapshot::{holders::HolderInfo, sock_diag::ExistingSocket},
    state::lifecycle::{Change, ListenerKey, Socket},
};

/// An alert: a socket no rule allows.
#[derive(Clone, Debug)]
pub struct Alert {
    pub severity: Severity,
    /// The rule whose port or path another program took; None: no rule covers it.
    pub rule: Option<String>,
    pub reason: String,
    /// The event that raised it (`listener_up`, `raw_socket`, `existing`…).
    pub subject: EventName,
    /// The listener, when the subject has an address.
    pub key: Option<ListenerKey>,
    /// The socket's creator.
    pub holder: Holder,
    /// Its other holders, when known.
    pub holders: Vec<Holder>,
}

/// What `kill_unexpected` did about an alert.
#[derive(Clone, Debug)]
pub struct KillOutcome {
    pub reason: String,
    pub key: Option<ListenerKey>,
    /// The socket's creator, as the alert named it.
    pub holder: Holder,
    /// Every process SIGKILLed, forked children included.
    pub killed: Vec<u32>,
    /// Processes that still hold the socket, and why they survived; empty
    /// means nothing holds the socket any more.
    pub survivors: Vec<(u32, String)>,
}

impl KillOutcome {
    pub fn succeeded(&self) -> bool {
        self.survivors.is_empty() && !self.killed.is_empty()
    }
}

/// Everything that can be written, typed.
pub enum Event<'a> {
    Live(&'a Report<'a>),
    Existing {
        time: DateTime<Utc>,
        socket: &'a ExistingSocket,
        holder: Option<&'a HolderInfo>,
        netns: Option<u64>,
    },
    Lost {
        time: DateTime<Utc>,
        count: u64,
        total: u64,
    },
    Lifecycle {
        time: DateTime<Utc>,
        change: &'a Change,
    },
    Alert {
        time: DateTime<Utc>,
        alert: &'a Alert,
    },
    Kill {
        time: DateTime<Utc>,
        outcome: &'a KillOutcome,
    },
    ConfigReloaded {
        time: DateTime<Utc>,
        path: &'a Path,
        rules: usize,
    },
    ConfigRejected {
        time: DateTime<Utc>,
        path: &'a Path,
        reason: &'a str,
    },
    Resynced {
        time: DateTime<Utc>,
        live_listeners: usize,
    },
    /// An output could not write: `dropped` lines lost since `since`
    /// (written by the output itself, see `json_file`).
    OutputDropped {
        time: DateTime<Utc>,
        output: &'a str,
        dropped: u64,
        since: DateTime<Utc>,
        error: &'a str,
    },
}

impl Event<'_> {
    pub fn name(&self) -> EventName {
        match self {
            Self::Live(report) => report.what.event_name(),
            Self::Existing { .. } => EventName::Existing,
            Self::Lost { .. } => EventName::Lost,
            Self::Lifecycle { change, .. } => change_name(change),
            Self::Alert { .. } => EventName::Alert,
            Self::Kill { outcome, .. } if outcome.succeeded() => EventName::Killed,
            Self::Kill { .. } => EventName::KillFailed,
            Self::ConfigReloaded { .. } => EventName::ConfigReloaded,
            Self::ConfigRejected { .. } => EventName::ConfigRejected,
            Self::Resynced { .. } => EventName::Resynced,
            Self::OutputDropped { .. } => EventName::OutputDropped,
        }
    }

    /// The JSON line of a daemon-derived event, newline included, added
    /// to `out` (a buffer the caller reuses from line to line). Live,
    /// existing and lost events are written by [`crate::output::format::Printer`].
    pub fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let event = self.name();
        match self {
            Self::Live(_) | Self::Existing { .. } | Self::Lost { .. } => return Ok(()),
            // Written by hand: a listener's up and down lines are most of
            // what the daemon adds to the live events, and serde's
            // flattened fields cost twice the hand-written line.
            Self::Lifecycle { time, change } => write_change(out, *time, event, change),
            Self::Alert { time, alert } => serde_json::to_writer(
                &mut *out,
                &Line {
                    time: rfc3339(*time),
                    event,
                    body: AlertLine {
                        severity: alert.severity.name(),
                        rule: alert.rule.as_deref(),
                        reason: &alert.reason,
                        subject: alert.subject,
                        key: alert.key.as_ref().map(KeyFields),
                        holder: HolderFields { keys: &HOLDER, holder: &alert.holder },
                        holders: HolderList(&alert.holders),
                    },
                },
            )?,
            Self::Kill { time, outcome } => serde_json::to_writer(
                &mut *out,
                &Line {
                    time: rfc3339(*time),
                    event,
                    body: KillLine {
                        reason: &outcome.reason,
                        error: (!outcome.survivors.is_empty()).then(|| {
                            outcome
                                .survivors
                                .iter()
                                .map(|(pid, why)| format!("pid {pid}: {why}"))
                                .collect::<Vec<_>>()
                                .join("; ")
                        }),
                        killed: &outcome.killed,
                        survivors: outcome.survivors.iter().map(|(pid, _)| *pid).collect(),
                        key: outcome.key.as_ref().map(KeyFields),
                        holder: HolderFields { keys: &HOLDER, holder: &outcome.holder },
                    },
                },
            )?,
            Self::ConfigReloaded { time, path, rules } => serde_json::to_writer(
                &mut *out,
                &Line {
                    time: rfc3339(*time),
                    event,
                    body: ConfigLine { path: path_text(path), rules: Some(*rules), reason: None },
                },
            )?,
            Self::ConfigRejected { time, path, reason } => serde_json::to_writer(
                &mut *out,
                &Line {
                    time: rfc3339(*time),
                    event,
                    body: ConfigLine { path: path_text(path), rules: None, reason: Some(reason) },
                },
            )?,
            Self::Resynced { time, live_listeners } => serde_json::to_writer(
                &mut *out,
                &Line { time: rfc3339(*time), event, body: ResyncLine { live_listeners: *live_listeners } },
            )?,
            Self::OutputDropped { time, output, dropped, since, error } => serde_json::to_writer(
                &mut *out,
                &Line {
                    time: rfc3339(*time),
                    event,
                    body: DroppedLine { output, dropped: *dropped, since: rfc3339(*since), error },
                },
            )?,
        }
        out.push(b'\n');
        Ok(())
    }

    /// An alert's severity and rule, for syslog and the metrics.
    pub fn alert(&self) -> Option<&Alert> {
        match self {
            Self::Alert { alert, .. } => Some(alert),
            _ => None,
        }
    }
}

pub fn change_name(change: &Change) -> EventName {
    match change {
        Change::Up { .. } => EventName::ListenerUp,
        Change::Down { .. } => EventName::ListenerDown,
        Change::Restarted { .. } => EventName::Restarted,
        Change::OwnerChanged { .. } => EventName::OwnerChanged,
        Change::ReuseportJoined { .. } => EventName::ReuseportJoined,
        Change::HoldersChanged { .. } => EventName::HoldersChanged,
    }
}

fn path_text(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_encoded_bytes())
}

#[derive(Serialize)]
struct Line<T: Serialize> {
    time: String,
    event: EventName,
    #[serde(flatten)]
    body: T,
}

/// proto, family, addr, port, service (inet) or path (UNIX), netns.
struct KeyFields<'a>(&'a ListenerKey);

impl Serialize for KeyFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let key = self.0;
        let mut m = s.serialize_map(None)?;
        let proto = key.proto.name();
        m.serialize_entry("proto", &proto)?;
        match &key.local {
            Local::Inet { addr, port } => {
                m.serialize_entry("family", if addr.is_ipv4() { "ipv4" } else { "ipv6" })?;
                m.serialize_entry("addr", &addr.to_string())?;
                m.serialize_entry("port", port)?;
                if let Some(name) = services::name(&proto, *port) {
                    m.serialize_entry("service", name)?;
                }
            }
            Local::Unix { path } => {
                m.serialize_entry("family", "unix")?;
                m.serialize_entry("path", &unix_path(path))?;
            }
            Local::Raw { .. } | Local::Packet { .. } => {}
        }
        m.serialize_entry("netns", &(key.netns != 0).then_some(key.netns))?;
        m.end()
    }
}

/// A holder's pid, comm, exe, cmdline, uid and user, each name prefixed
/// (`previous_`, `existing_`) or not.
struct HolderFields<'a> {
    keys: &'static HolderKeys,
    holder: &'a Holder,
}

/// A holder's field names: pid, comm, exe, cmdline, uid, user.
type HolderKeys = [&'static str; 6];
const HOLDER: HolderKeys = ["pid", "comm", "exe", "cmdline", "uid", "user"];
const PREVIOUS: HolderKeys =
    ["previous_pid", "previous_comm", "previous_exe", "previous_cmdline", "previous_uid", "previous_user"];
const EXISTING: HolderKeys =
    ["existing_pid", "existing_comm", "existing_exe", "existing_cmdline", "existing_uid", "existing_user"];

impl Serialize for HolderFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = self.holder;
        let [pid, comm, exe, cmdline, uid, user] = self.keys;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry(pid, &(h.pid != 0).then_some(h.pid))?;
        m.serialize_entry(comm, &(!h.comm.is_empty()).then(|| escape(&h.comm)))?;
        m.serialize_entry(exe, &h.exe.as_deref().map(escape))?;
        m.serialize_entry(cmdline, &h.cmdline.as_ref().map(|a| a.iter().map(|x| escape(x)).collect::<Vec<_>>()))?;
        m.serialize_entry(uid, &h.uid)?;
        m.serialize_entry(user, &h.user)?;
        m.end()
    }
}

/// `holders`: the processes that hold the socket besides its creator.
/// Left out when there are none, so a plain listener's line is unchanged.
struct HolderList<'a, H = Arc<Holder>>(&'a [H]);

impl<H: Borrow<Holder>> Serialize for HolderList<'_, H> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if !self.0.is_empty() {
            m.serialize_entry("holders", &HolderArray(self.0))?;
        }
        m.end()
    }
}

struct HolderArray<'a, H = Arc<Holder>>(&'a [H]);

impl<H: Borrow<Holder>> Serialize for HolderArray<'_, H> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|h| HolderFields { keys: &HOLDER, holder: h.borrow() }))
    }
}

/// A lifecycle line's fields; [`write_change`] writes them. Its serde form
/// (what the daemon wrote before) is used by no line any more: it is the
/// reference the unit test holds the hand-written bytes to.
#[derive(Serialize)]
struct ChangeLine<'a> {
    #[serde(flatten)]
    key: KeyFields<'a>,
    #[serde(flatten)]
    holder: HolderFields<'a>,
    #[serde(flatten)]
    holders: HolderList<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lived_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gap_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    same_exe: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    same_user: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    same_cmdline: Option<bool>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    previous: Option<HolderFields<'a>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    existing: Option<HolderFields<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_holders: Option<HolderArray<'a>>,
}

impl<'a> ChangeLine<'a> {
    fn of(change: &'a Change) -> Self {
        let (key, socket) = match change {
            Change::Up { key, socket }
            | Change::Down { key, socket, .. }
            | Change::Restarted { key, socket, .. }
            | Change::OwnerChanged { key, socket, .. }
            | Change::ReuseportJoined { key, socket, .. }
            | Change::HoldersChanged { key, socket, .. } => (key, socket),
        };
        let mut line = Self {
            key: KeyFields(key),
            holder: HolderFields { keys: &HOLDER, holder: &socket.creator },
            holders: HolderList(&[]),
            lived_ms: None,
            gap_ms: None,
            same_exe: None,
            same_user: None,
            same_cmdline: None,
            previous: None,
            existing: None,
            previous_holders: None,
        };
        let others = |socket: &'a Socket| HolderList(other_holders(socket));
        match change {
            Change::Up { socket, .. } => line.holders = others(socket),
            Change::Down { socket, lived_ns, .. } => {
                // Everyone who held it in its life: a forked child that
                // exited on its own is named here.
                line.holders = HolderList(&socket.held_by);
                line.lived_ms = Some(*lived_ns as f64 / 1e6);
            }
            Change::Restarted { socket, previous, gap_ns, same_exe, same_user, same_cmdline, .. } => {
                line.holders = others(socket);
                line.gap_ms = Some(*gap_ns as f64 / 1e6);
                (line.same_exe, line.same_user, line.same_cmdline) =
                    (Some(*same_exe), Some(*same_user), Some(*same_cmdline));
                line.previous = Some(HolderFields { keys: &PREVIOUS, holder: previous });
            }
            Change::OwnerChanged { socket, previous, .. } => {
                line.holders = others(socket);
                line.previous = Some(HolderFields { keys: &PREVIOUS, holder: previous });
            }
            Change::ReuseportJoined { existing, .. } => {
                line.existing = Some(HolderFields { keys: &EXISTING, holder: existing })
            }
            Change::HoldersChanged { socket, previous, .. } => {
                line.holders = HolderList(&socket.holders);
                line.previous_holders = Some(HolderArray(previous));
            }
        }
        line
    }
}

/// [`ChangeLine`]'s JSON, the bytes serde writes for it (a test holds the
/// two together), through the hand-written writer of the live events.
fn write_change(out: &mut Vec<u8>, time: DateTime<Utc>, event: EventName, change: &Change) {
    thread_local! {
        // Lines come many to a second, and in runs about one process: the
        // time's seconds are formatted once, and the creator's fields.
        static KEPT: RefCell<(SecondsCache, Fragment<Holder>)> = RefCell::default();
    }
    let line = ChangeLine::of(change);
    let mut w = ObjectWriter::start(out);
    KEPT.with_borrow_mut(|(seconds, creator)| {
        w.time("time", time, seconds);
        w.name("event", event.as_str());
        key_fields(&mut w, line.key.0);
        // The creator's fields have no prefix (ChangeLine::of).
        let h = line.holder.holder;
        w.cached(creator, |of| same_holder(of, h), || h.clone(), |w| holder_fields(w, &HOLDER, h));
    });
    if !line.holders.0.is_empty() {
        w.objects("holders", line.holders.0, |w, h| holder_fields(w, &HOLDER, h));
    }
    for (key, value) in [("lived_ms", line.lived_ms), ("gap_ms", line.gap_ms)] {
        if let Some(value) = value {
            w.f64(key, value);
        }
    }
    for (key, value) in
        [("same_exe", line.same_exe), ("same_user", line.same_user), ("same_cmdline", line.same_cmdline)]
    {
        if let Some(value) = value {
            w.bool(key, value);
        }
    }
    for fields in [&line.previous, &line.existing].into_iter().flatten() {
        holder_fields(&mut w, fields.keys, fields.holder);
    }
    if let Some(previous) = &line.previous_holders {
        w.objects("previous_holders", previous.0, |w, h| holder_fields(w, &HOLDER, h));
    }
    w.end();
}

/// [`KeyFields`] by hand.
fn key_fields(w: &mut ObjectWriter<'_>, key: &ListenerKey) {
    let proto = key.proto.known_name();
    w.name("proto", &proto);
    match &key.local {
        Local::Inet { addr, port } => {
            w.name("family", if addr.is_ipv4() { "ipv4" } else { "ipv6" });
            w.addr("addr", *addr);
            w.u64("port", u64::from(*port));
            if let Some(name) = services::name(&proto, *port) {
                w.str("service", name);
            }
        }
        Local::Unix { path } => {
            w.name("family", "unix");
            w.str("path", &unix_path(path));
        }
        Local::Raw { .. } | Local::Packet { .. } => {}
    }
    w.opt_u64("netns", (key.netns != 0).then_some(key.netns));
}

/// [`HolderFields`] by hand.
fn holder_fields(w: &mut ObjectWriter<'_>, keys: &HolderKeys, h: &Holder) {
    let [pid, comm, exe, cmdline, uid, user] = keys;
    w.opt_u64(pid, (h.pid != 0).then_some(u64::from(h.pid)));
    w.escaped(comm, (!h.comm.is_empty()).then_some(&h.comm[..]));
    w.escaped(exe, h.exe.as_deref());
    w.escaped_list(cmdline, h.cmdline.as_ref().map(|argv| argv.iter().map(Vec::as_slice)));
    w.opt_u64(uid, h.uid.map(u64::from));
    w.opt_str(user, h.user.as_deref());
}

/// `a == b`, exe and argv told equal by address first (see [`same`]).
fn same_holder(a: &Holder, b: &Holder) -> bool {
    // Every field, named: one added to Holder is a compile error here.
    let Holder { pid, uid, user, comm, exe, cmdline } = a;
    *pid == b.pid
        && *uid == b.uid
        && *comm == b.comm
        && same(exe, &b.exe)
        && same(cmdline, &b.cmdline)
        && *user == b.user
}

/// The holders of a socket other than its creator, as a slice of its own
/// list: the creator, when it still holds the socket, is first or absent.
fn other_holders(socket: &Socket) -> &[Arc<Holder>] {
    match socket.holders.first() {
        Some(first) if first.pid == socket.creator.pid => &socket.holders[1..],
        _ => &socket.holders,
    }
}

#[derive(Serialize)]
struct AlertLine<'a> {
    severity: &'static str,
    rule: Option<&'a str>,
    reason: &'a str,
    subject: EventName,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    key: Option<KeyFields<'a>>,
    #[serde(flatten)]
    holder: HolderFields<'a>,
    #[serde(flatten)]
    holders: HolderList<'a, Holder>,
}

#[derive(Serialize)]
struct KillLine<'a> {
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Every pid SIGKILLed.
    killed: &'a [u32],
    /// Pids that still hold the socket (kill_failed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    survivors: Vec<u32>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    key: Option<KeyFields<'a>>,
    #[serde(flatten)]
    holder: HolderFields<'a>,
}

#[derive(Serialize)]
struct ConfigLine<'a> {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct DroppedLine<'a> {
    output: &'a str,
    dropped: u64,
    since: String,
    error: &'a str,
}

#[derive(Serialize)]
struct ResyncLine {
    live_listeners: usize,
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{model::socket::Proto, state::lifecycle::SocketId};

    fn holder(pid: u32, uid: u32) -> Holder {
        Holder {
            pid,
            uid: Some(uid),
            user: Some(if uid == 0 { "root".into() } else { "www-data".into() }),
            comm: crate::model::holder::Comm::from(b"apache2"),
            exe: Some(b"/usr/sbin/apache2".to_vec().into()),
            cmdline: Some(vec![b"/usr/sbin/apache2".to_vec(), b"-k\nstart".to_vec()].into()),
        }
    }

    fn json(event: &Event<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        event.write_json(&mut out).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).unwrap()
    }

    /// The hand-written lifecycle line is, byte for byte, what serde writes
    /// for [`ChangeLine`]: every kind of change, hostile names, a holder
    /// nothing is known of, IPv4 with a service, IPv6, UNIX path and
    /// abstract names, netns known and not.
    #[test]
    fn lifecycle_lines_are_the_bytes_serde_writes() {
        use chrono::TimeZone as _;

        let hostile = Holder {
            pid: 12,
            uid: Some(1000),
            user: Some("a\"b\\c".into()),
            comm: crate::model::holder::Comm::from(b"ev\x1bil\n\"x"),
            exe: Some(b"/tmp/x\ny \"q\"\x7f".to_vec().into()),
            cmdline: Some(vec![b"\\back".to_vec(), b"\xff\xfe".to_vec(), Vec::new(), b"plain".to_vec()].into()),
        };
        let plain = holder(10, 0);
        let unknown = Holder::default();
        let socket = |creator: &Holder, others: &[Holder]| {
            let mut all = vec![creator.clone()];
            all.extend_from_slice(others);
            Socket::new(Some(SocketId::Inode(1)), creator.clone(), all)
        };
        let keys = [
            ListenerKey {
                netns: 4026531840,
                proto: Proto::Tcp,
                local: Local::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 22 },
            },
            ListenerKey {
                netns: 0,
                proto: Proto::Udp,
                local: Local::Inet { addr: "::1".parse().unwrap(), port: 40000 },
            },
            ListenerKey { netns: 7, proto: Proto::Unix, local: Local::Unix { path: b"\0abs\nname".to_vec() } },
            ListenerKey { netns: 7, proto: Proto::Unix, local: Local::Unix { path: b"/run/x \"y\".sock".to_vec() } },
        ];
        let time = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        let mut checked = 0;
        for key in keys {
            let changes = [
                Change::Up { key: key.clone(), socket: socket(&plain, std::slice::from_ref(&hostile)) },
                Change::Up { key: key.clone(), socket: socket(&unknown, &[]) },
                Change::Down {
                    key: key.clone(),
                    socket: socket(&hostile, std::slice::from_ref(&plain)),
                    lived_ns: 1_234_567,
                },
                Change::Down { key: key.clone(), socket: socket(&plain, &[]), lived_ns: 3_000_000_000 },
                Change::Restarted {
                    key: key.clone(),
                    socket: socket(&plain, &[]),
                    previous: hostile.clone().into(),
                    gap_ns: 1,
                    same_exe: false,
                    same_user: true,
                    same_cmdline: false,
                },
                Change::OwnerChanged {
                    key: key.clone(),
                    socket: socket(&hostile, &[]),
                    previous: plain.clone().into(),
                },
                Change::ReuseportJoined {
                    key: key.clone(),
                    socket: socket(&plain, &[]),
                    existing: unknown.clone().into(),
                },
                Change::HoldersChanged {
                    key: key.clone(),
                    socket: socket(&plain, std::slice::from_ref(&hostile)),
                    previous: vec![unknown.clone().into(), hostile.clone().into()],
                },
            ];
            for change in &changes {
                let event = change_name(change);
                let mut hand = Vec::new();
                write_change(&mut hand, time, event, change);
                let serde =
                    serde_json::to_vec(&Line { time: rfc3339(time), event, body: ChangeLine::of(change) }).unwrap();
                assert_eq!(String::from_utf8_lossy(&hand), String::from_utf8_lossy(&serde), "{change:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 32);
    }

    /// The creator's fields kept from one lifecycle line to the next are
    /// written again when any of the creator's fields changes, and back.
    #[test]
    fn kept_creator_fields_follow_every_change() {
        let key = ListenerKey {
            netns: 1,
            proto: Proto::Tcp,
            local: Local::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 80 },
        };
        let base = holder(10, 0);
        let changed: [&dyn Fn(&mut Holder); 9] = [
            &|h| h.pid = 11,
            &|h| h.uid = None,
            &|h| h.user = Some("rooT".into()),
            &|h| h.comm = crate::model::holder::Comm::from(b"apache3"),
            &|h| h.exe = Some(b"/usr/sbin/apache3".to_vec().into()),
            // The same bytes in another allocation.
            &|h| h.exe = Some(b"/usr/sbin/apache2".to_vec().into()),
            &|h| h.exe = None,
            &|h| h.cmdline = Some(vec![b"/usr/sbin/apache2".to_vec()].into()),
            &|h| h.cmdline = None,
        ];
        let time = Utc::now();
        for change in changed {
            let mut other = base.clone();
            change(&mut other);
            for creator in [&base, &other, &base] {
                let change = Change::Up { key: key.clone(), socket: Socket::new(None, creator.clone(), vec![]) };
                let mut hand = Vec::new();
                write_change(&mut hand, time, EventName::ListenerUp, &change);
                let serde = serde_json::to_vec(&Line {
                    time: rfc3339(time),
                    event: EventName::ListenerUp,
                    body: ChangeLine::of(&change),
                })
                .unwrap();
                assert_eq!(String::from_utf8_lossy(&hand), String::from_utf8_lossy(&serde), "{creator:?}");
            }
        }
    }

    #[test]
    fn listener_up_names_the_creator_and_the_other_holders() {
        let key = ListenerKey {
            netns: 4026531840,
            proto: Proto::Tcp,
            local: Local::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 80 },
        };
        let socket = Socket::new(Some(SocketId::Inode(1)), holder(10, 0), vec![holder(10, 0), holder(11, 33)]);
        let change = Change::Up { key, socket };
        let v = json(&Event::Lifecycle { time: Utc::now(), change: &change });
        assert_eq!(v["event"], "listener_up");
        assert_eq!(
            (v["proto"].as_str(), v["family"].as_str(), v["addr"].as_str()),
            (Some("tcp"), Some("ipv4"), Some("127.0.0.1"))
        );
        assert_eq!(
            (v["port"].as_u64(), v["netns"].as_u64(), v["pid"].as_u64()),
            (Some(80), Some(4026531840), Some(10))
        );
        assert_eq!(v["user"], "root");
        assert_eq!(v["cmdline"][1], "-k\\nstart", "escaped");
        assert_eq!(v["holders"].as_array().map(Vec::len), Some(1));
        assert_eq!((v["holders"][0]["pid"].as_u64(), v["holders"][0]["user"].as_str()), (Some(11), Some("www-data")));
    }

    #[test]
    fn a_lone_listener_has_no_holders_field_and_unix_keys_have_a_path() {
        let key = ListenerKey { netns: 0, proto: Proto::Unix, local: Local::Unix { path: b"\0abstract".to_vec() } };
        let change = Change::Down { key, socket: Socket::new(None, holder(5, 0), vec![]), lived_ns: 1_500_000 };
        let v = json(&Event::Lifecycle { time: Utc::now(), change: &change });
        assert_eq!(
            (v["event"].as_str(), v["path"].as_str(), v["family"].as_str()),
            (Some("listener_down"), Some("@abstract"), Some("unix"))
        );
        assert!(v.get("holders").is_none() && v["netns"].is_null());
        assert_eq!(v["lived_ms"].as_f64(), Some(1.5));
    }
}
