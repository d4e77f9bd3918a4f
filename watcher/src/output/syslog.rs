//! `[syslog]`: the daemon's events as syslog messages: RFC 5424 to a remote
//! host over UDP (RFC 5426) or TCP (RFC 6587, octet-counted framing), and the
//! local format of syslog(3) to the local socket (/dev/log) or another UNIX
//! datagram socket. The MSG is the event's JSON line, as stdout carries it.
//!
//! fasyslog formats RFC 5424 (PRI, VERSION, TIMESTAMP, HOSTNAME, APP-NAME
//! `watcher`, PROCID the daemon's pid, MSGID the event name). A local socket
//! gets `<PRI>TIMESTAMP watcher[PID]: MSG` instead, as glibc's syslog(3)
//! writes it: that is what the local daemons parse out of the box — rsyslog's
//! imuxsock (its default "special parser" reads an RFC 5424 header as the
//! message text, with APP-NAME `1`), journald, syslog-ng's unix-dgram().
//! The transport is ours: fasyslog's TCP sender frames messages with a
//! trailing newline (RFC 6587's non-transparent framing, which a newline
//! inside a message would break), and none of its senders reconnects.
//!
//! Messages leave from a thread of their own behind a bounded queue, so that
//! a slow or dead syslog server never holds up the event pipeline. While the
//! server cannot be reached they wait there and the thread reconnects with
//! backoff; when the queue is full, lifecycle messages make room for alerts,
//! and what is dropped is counted.
use std::{
    borrow::Cow,
    collections::VecDeque,
    io::{self, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        mpsc::{self, Receiver},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use fasyslog::{Facility, Severity, format::SyslogContext};
use log::{debug, info, warn};
use prometheus_client::metrics::counter::Counter;

use crate::{
    config::{SyslogConfig, SyslogFacility, SyslogTarget as Target},
    model::{escape::escape_bytes, event_name::EventName},
};

/// Messages waiting for the sender thread, or for the server to come back.
const CAPACITY: usize = 4096;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Reconnection attempts back off up to this period.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// A connect or write that takes longer fails: a stuck server must not
/// stall the sender thread for good.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Dropped messages are said on stderr at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long the daemon, on its way out, waits for the queue to drain.
const DRAIN_AT_EXIT: Duration = Duration::from_secs(2);

/// Events sent when `all_events` is off: alerts, actions taken, listener
/// lifecycle changes and the daemon's own state changes.
const DEFAULT_EVENTS: &[EventName] = &[
    EventName::Alert,
    EventName::Killed,
    EventName::KillFailed,
    EventName::Denied,
    EventName::ListenerUp,
    EventName::ListenerDown,
    EventName::Restarted,
    EventName::OwnerChanged,
    EventName::ReuseportJoined,
    EventName::ConfigReloaded,
    EventName::ConfigRejected,
    EventName::Lost,
    EventName::Resynced,
    EventName::HoldersChanged,
    EventName::OutputDropped,
];

/// The counters the sender keeps (exposed by the metrics endpoint).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Messages the server took.
    pub sent: Counter,
    /// Failed connection and send attempts.
    pub errors: Counter,
    /// Messages given up on: the queue or the backlog was full.
    pub dropped: Counter,
}

/// The syslog severity of an event: an alert's own severity; actions and
/// failures above lifecycle changes; plain events informational.
pub fn severity(event: EventName, alert_severity: Option<&str>) -> Severity {
    use EventName as E;
    match event {
        E::Alert => match alert_severity {
            Some("critical") => Severity::CRITICAL,
            Some("info") => Severity::INFORMATIONAL,
            _ => Severity::WARNING,
        },
        E::Killed | E::Denied | E::Lost | E::OutputDropped => Severity::WARNING,
        E::KillFailed | E::ConfigRejected => Severity::ERROR,
        E::OwnerChanged | E::Restarted | E::ReuseportJoined | E::HoldersChanged | E::ConfigReloaded | E::Resynced => {
            Severity::NOTICE
        }
        _ => Severity::INFORMATIONAL,
    }
}

fn facility(f: SyslogFacility) -> Facility {
    match f {
        SyslogFacility::User => Facility::USER,
        SyslogFacility::Daemon => Facility::DAEMON,
        SyslogFacility::Auth => Facility::AUTH,
        SyslogFacility::Authpriv => Facility::AUTHPRIV,
        SyslogFacility::Local0 => Facility::LOCAL0,
        SyslogFacility::Local1 => Facility::LOCAL1,
        SyslogFacility::Local2 => Facility::LOCAL2,
        SyslogFacility::Local3 => Facility::LOCAL3,
        SyslogFacility::Local4 => Facility::LOCAL4,
        SyslogFacility::Local5 => Facility::LOCAL5,
        SyslogFacility::Local6 => Facility::LOCAL6,
        SyslogFacility::Local7 => Facility::LOCAL7,
    }
}

/// MSGID is 1 to 32 printable US-ASCII characters (RFC 5424 §6.2.7);
/// anything else is sent as the NILVALUE.
fn msgid(event: EventName) -> Option<&'static str> {
    let event = event.as_str();
    let ok = (1..=32).contains(&event.len()) && event.bytes().all(|b| (33..=126).contains(&b));
    ok.then_some(event)
}

/// The MSG: the JSON line, with any control character escaped. The daemon's
/// lines have none (process-chosen strings are escaped before they are
/// serialized); this keeps it so whatever a future event carries, since a
/// raw newline would let a process forge a line in a receiver's log file.
fn message(line: &str) -> Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() {
            out.push_str(&escape_bytes(c.encode_utf8(&mut [0; 4]).as_bytes()));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `<PRI>Mmm dd hh:mm:ss watcher[PID]: MSG`, local time, as syslog(3)
/// sends it to /dev/log (no hostname: the local daemon adds its own).
fn local_format(facility: Facility, severity: Severity, message: &str) -> String {
    let pri = (facility.code() << 3) | severity.code();
    let time = chrono::Local::now().format("%b %e %H:%M:%S");
    format!("<{pri}>{time} watcher[{}]: {message}", std::process::id())
}

/// The daemon's side of the sender: formats messages and queues them.
pub struct Syslog {
    target: Target,
    all_events: bool,
    /// RFC 5424's header fields (network targets); None: the local format.
    context: Option<SyslogContext>,
    facility: Facility,
    queue: Arc<Queue>,
    /// Signalled by the thread once it has delivered what it could.
    finished: Receiver<()>,
    counters: Counters,
    /// When dropping was last said, and how many were dropped since: said
    /// at most every WARN_EVERY, not per message.
    dropped_warning: Option<Instant>,
    dropped_unsaid: u64,
    /// How long dropping this waits for the queue to drain.
    drain_wait: Duration,
}

impl Syslog {
    pub fn start(config: &SyslogConfig, counters: Counters) -> anyhow::Result<Self> {
        let target = Target::parse(&config.target).with_context(|| format!("[syslog] target {:?}", config.target))?;
        let context = match target {
            Target::Unix(_) => None,
            Target::Udp(_) | Target::Tcp(_) => {
                let mut context = SyslogContext::new();
                context.facility(facility(config.facility)).appname("watcher").procid(std::process::id().to_string());
                Some(context)
            }
        };
        let queue = Arc::new(Queue::default());
        let (done, finished) = mpsc::sync_channel(1);
        let link = Link::new(target.clone(), counters.clone());
        let theirs = queue.clone();
        thread::Builder::new()
            .name("syslog".into())
            .spawn(move || {
                link.run(&theirs);
                let _ = done.send(());
            })
            .context("starting the syslog sender thread")?;
        Ok(Self {
            target,
            all_events: config.all_events,
            context,
            facility: facility(config.facility),
            queue,
            finished,
            counters,
            dropped_warning: None,
            dropped_unsaid: 0,
            drain_wait: DRAIN_AT_EXIT,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether `event` goes to syslog.
    pub fn wants(&self, event: EventName) -> bool {
        self.all_events || DEFAULT_EVENTS.contains(&event)
    }

    /// Queues one event's JSON line (without its newline); never blocks on
    /// the network.
    pub fn send(&mut self, event: EventName, alert_severity: Option<&str>, line: &str) {
        let severity = severity(event, alert_severity);
        let bytes = match &self.context {
            Some(context) => {
                context.format_rfc5424(severity, msgid(event), Vec::new(), Some(message(line))).to_string()
            }
            None => local_format(self.facility, severity, &message(line)),
        }
        .into_bytes();
        if self.queue.push(Message { bytes, urgent: severity <= Severity::WARNING }) {
            self.counters.dropped.inc();
            self.dropped_unsaid += 1;
            if self.dropped_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                warn!(
                    "syslog: {CAPACITY} messages wait for {}; {} of the least urgent dropped",
                    self.target, self.dropped_unsaid
                );
                self.dropped_warning = Some(Instant::now());
                self.dropped_unsaid = 0;
            }
        }
    }

    /// Replaced on reload: do not hold up the pipeline for the old queue;
    /// the old thread delivers what it can on its own, then ends.
    pub fn retire(mut self) {
        self.drain_wait = Duration::ZERO;
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        // Tells the thread to deliver what is left and end.
        self.queue.close();
        if !self.drain_wait.is_zero() && self.finished.recv_timeout(self.drain_wait).is_err() {
            warn!("syslog: gave up waiting for the last messages to reach {}", self.target);
        }
    }
}

struct Message {
    bytes: Vec<u8>,
    /// Warning or worse (alerts, kills, loss): kept before lifecycle
    /// messages when the queue is full, so that a flood of harmless
    /// listeners cannot push an alert out.
    urgent: bool,
}

/// The messages between the daemon and the sender thread, at most
/// CAPACITY. It also holds them while the server cannot be reached.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

#[derive(Default)]
struct QueueState {
    messages: VecDeque<Message>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding the lock; were it poisoned, the
        // state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `message`; true if a message was dropped to make room (the
    /// oldest one that is not urgent, else the oldest one if `message` is
    /// urgent, else `message` itself).
    fn push(&self, message: Message) -> bool {
        let mut state = self.lock();
        let mut dropped = false;
        if state.messages.len() >= CAPACITY {
            dropped = true;
            if let Some(i) = state.messages.iter().position(|m| !m.urgent) {
                state.messages.remove(i);
            } else if message.urgent {
                state.messages.pop_front();
            } else {
                return true;
            }
        }
        state.messages.push_back(message);
        drop(state);
        self.wake.notify_one();
        dropped
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// The sender thread's side: one connection and a retry schedule.
struct Link {
    target: Target,
    connection: Option<Connection>,
    /// No attempt before this (after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Failing since the last delivery (warned once), and the dropped
    /// count when it began.
    failing: Option<u64>,
    counters: Counters,
}

impl Link {
    fn new(target: Target, counters: Counters) -> Self {
        Self { target, connection: None, retry_at: None, backoff: FIRST_RETRY, failing: None, counters }
    }

    fn run(mut self, queue: &Queue) {
        // Connect at once, so that a wrong target is reported at start,
        // not at the first alert.
        match Connection::open(&self.target) {
            Ok(c) => self.connection = Some(c),
            Err(e) => self.failed(&e),
        }
        while let Some(message) = self.next(queue) {
            self.deliver(queue, message);
        }
        // The daemon is stopping: one last attempt at what is left, backoff
        // or not, until the first failure.
        self.retry_at = None;
        loop {
            let Some(message) = queue.lock().messages.pop_front() else { break };
            if !self.deliver(queue, message) {
                break;
            }
        }
    }

    /// The next message to send, once a retry is due; None once closed.
    fn next(&self, queue: &Queue) -> Option<Message> {
        let mut state = queue.lock();
        loop {
            if state.closed {
                return None;
            }
            let now = Instant::now();
            if let Some(at) = self.retry_at.filter(|at| now < *at) {
                state = queue.wake.wait_timeout(state, at - now).unwrap_or_else(PoisonError::into_inner).0;
                continue;
            }
            if let Some(message) = state.messages.pop_front() {
                return Some(message);
            }
            state = queue.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Sends `message`, or puts it back first in line; whether it went.
    fn deliver(&mut self, queue: &Queue, message: Message) -> bool {
        if let Err(e) = self.send(&message.bytes) {
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                // This message will never fit a datagram: retrying it would
                // hold up every message behind it.
                warn!("syslog: a {}-byte message is too long for {}: dropped", message.bytes.len(), self.target);
                self.counters.dropped.inc();
                return true;
            }
            self.failed(&e);
            queue.lock().messages.push_front(message);
            return false;
        }
        self.counters.sent.inc();
        if let Some(dropped_before) = self.failing.take() {
            let dropped = self.counters.dropped.get().saturating_sub(dropped_before);
            info!("syslog: delivering to {} again ({dropped} messages were dropped meanwhile)", self.target);
        }
        self.retry_at = None;
        self.backoff = FIRST_RETRY;
        true
    }

    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        if self.connection.as_ref().is_some_and(|c| !c.alive()) {
            debug!("syslog: {} closed the connection; reconnecting", self.target);
            self.connection = None;
        }
        let connection = match &mut self.connection {
            Some(c) => c,
            None => self.connection.insert(Connection::open(&self.target)?),
        };
        let sent = connection.send(message);
        if sent.is_err() {
            // Half-written or refused: start over on a fresh connection.
            self.connection = None;
        }
        sent
    }

    fn failed(&mut self, e: &io::Error) {
        self.counters.errors.inc();
        if self.failing.is_some() {
            debug!("syslog: {} still unreachable: {e}", self.target);
        } else {
            warn!(
                "syslog: cannot deliver to {}: {e}; retrying, with up to {CAPACITY} messages kept meanwhile \
                 (watcher_syslog_errors_total counts the failures)",
                self.target
            );
            self.failing = Some(self.counters.dropped.get());
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
    }
}

enum Connection {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Connection {
    fn open(target: &Target) -> io::Result<Self> {
        match target {
            Target::Unix(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                socket.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Self::Unix(socket))
            }
            Target::Udp(host_port) => first_address(host_port, |addr| {
                let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let socket = UdpSocket::bind(local)?;
                socket.connect(addr)?;
                Ok(Self::Udp(socket))
            }),
            Target::Tcp(host_port) => first_address(host_port, |addr| {
                let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Self::Tcp(stream))
            }),
        }
    }

    /// False when a TCP server has closed its end: a write would still be
    /// taken by the kernel, and the message lost.
    fn alive(&self) -> bool {
        let Self::Tcp(stream) = self else { return true };
        let mut byte = [0u8; 1];
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let alive = match stream.peek(&mut byte) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        stream.set_nonblocking(false).is_ok() && alive
    }

    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        match self {
            Self::Unix(socket) => socket.send(message).map(drop),
            Self::Udp(socket) => socket.send(message).map(drop),
            Self::Tcp(stream) => {
                // RFC 6587 §3.4.1 octet counting: "LEN SP MSG".
                let mut frame = Vec::with_capacity(message.len() + 8);
                frame.extend_from_slice(message.len().to_string().as_bytes());
                frame.push(b' ');
                frame.extend_from_slice(message);
                stream.write_all(&frame)
            }
        }
    }
}

/// `open` on each address `host_port` resolves to, until one works.
fn first_address(
    host_port: &str,
    mut open: impl FnMut(SocketAddr) -> io::Result<Connection>,
) -> io::Result<Connection> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host_port} resolves to no address"));
    for addr in host_port.to_socket_addrs()? {
        match open(addr) {
            Ok(c) => return Ok(c),
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("local").unwrap(), Target::Unix("/dev/log".into()));
        assert_eq!(Target::parse("unix:/run/x.sock").unwrap(), Target::Unix("/run/x.sock".into()));
        assert_eq!(Target::parse("udp://127.0.0.1:514").unwrap(), Target::Udp("127.0.0.1:514".into()));
        assert_eq!(Target::parse("tcp://[::1]:601").unwrap(), Target::Tcp("[::1]:601".into()));
        for bad in ["udp://nohost", "tcp://:514", "tcp://h:0", "unix:relative", "http://h:1", ""] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn severities() {
        assert_eq!(severity(EventName::Alert, Some("critical")), Severity::CRITICAL);
        assert_eq!(severity(EventName::Alert, Some("warning")), Severity::WARNING);
        assert_eq!(severity(EventName::Alert, Some("info")), Severity::INFORMATIONAL);
        assert_eq!(severity(EventName::Killed, None), Severity::WARNING);
        assert_eq!(severity(EventName::OwnerChanged, None), Severity::NOTICE);
        assert_eq!(severity(EventName::ListenerUp, None), Severity::INFORMATIONAL);
        assert_eq!(severity(EventName::Bind, None), Severity::INFORMATIONAL);
    }

    #[test]
    fn control_characters_cannot_reach_the_wire() {
        assert_eq!(message("{\"comm\":\"ok\"}"), "{\"comm\":\"ok\"}");
        let forged = message("{\"comm\":\"x\"}\n<2>1 - forged");
        assert!(!forged.chars().any(char::is_control), "{forged}");
        assert!(forged.contains("\\n<2>1"), "{forged}");
        // Backslashes of the JSON itself are left as they are.
        assert_eq!(message("{\"a\":\"\\\\n\"}\r"), "{\"a\":\"\\\\n\"}\\r");
        // Every event name is a valid MSGID (1 to 32 printable ASCII characters).
        for name in EventName::ALL {
            assert_eq!(msgid(*name), Some(name.as_str()));
        }
    }

    #[test]
    fn the_local_socket_gets_the_syslog3_format() {
        let line = local_format(Facility::AUTHPRIV, Severity::CRITICAL, r#"{"event":"alert"}"#);
        // authpriv = 10, crit = 2: PRI 82; "Nov 23 03:40:01" is 15 characters.
        assert!(line.starts_with("<82>"), "{line}");
        assert_eq!(&line[4 + 15..], format!(" watcher[{}]: {{\"event\":\"alert\"}}", std::process::id()), "{line}");
    }

    #[test]
    fn a_full_queue_keeps_alerts() {
        let queue = Queue::default();
        let message = |urgent, tag: u16| Message { bytes: tag.to_be_bytes().to_vec(), urgent };
        let tags = |q: &Queue| {
            q.lock().messages.iter().map(|m| u16::from_be_bytes([m.bytes[0], m.bytes[1]])).collect::<Vec<_>>()
        };
        for i in 0..CAPACITY as u16 {
            assert!(!queue.push(message(false, i)));
        }
        // Lifecycle messages make room for an alert, oldest first...
        assert!(queue.push(message(true, 9000)));
        assert_eq!(tags(&queue)[0], 1);
        assert_eq!(*tags(&queue).last().unwrap(), 9000);
        // ...and a new lifecycle message pushes out an older one.
        assert!(queue.push(message(false, 9001)));
        assert_eq!(tags(&queue)[0], 2);
        let mut q = Queue::default();
        for i in 0..CAPACITY as u16 {
            q.push(message(true, i));
        }
        // All alerts: a lifecycle message is the one dropped; an alert
        // replaces the oldest alert.
        assert!(q.push(message(false, 9002)));
        assert!(!tags(&q).contains(&9002));
        assert!(q.push(message(true, 9003)));
        assert_eq!((tags(&q)[0], q.lock().messages.len()), (1, CAPACITY));
        q = Queue::default();
        q.close();
        assert!(q.lock().closed);
    }

    /// A message too long for a datagram is dropped and counted; the ones
    /// after it still go.
    #[test]
    fn an_oversized_datagram_does_not_block_the_rest() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let config = SyslogConfig {
            target: format!("udp://{}", server.local_addr().unwrap()),
            all_events: true,
            facility: SyslogFacility::Daemon,
        };
        let counters = Counters::default();
        let mut syslog = Syslog::start(&config, counters.clone()).unwrap();
        syslog.send(EventName::Bind, None, &format!("{{\"x\":\"{}\"}}", "a".repeat(70_000)));
        syslog.send(EventName::Bind, None, r#"{"event":"bind"}"#);
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).unwrap();
        assert!(buf[..n].ends_with(br#"{"event":"bind"}"#), "{:?}", String::from_utf8_lossy(&buf[..n]));
        drop(syslog);
        assert_eq!((counters.sent.get(), counters.dropped.get(), counters.errors.get()), (1, 1, 0));
    }

    /// A TCP server that reads two octet-counted frames; the format is the
    /// one RFC 5424 gives: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`.
    #[test]
    fn tcp_frames_are_octet_counted() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let config = SyslogConfig {
            target: format!("tcp://127.0.0.1:{port}"),
            all_events: false,
            facility: SyslogFacility::Local3,
        };
        let counters = Counters::default();
        let mut syslog = Syslog::start(&config, counters.clone()).unwrap();
        assert!(syslog.wants(EventName::Alert) && !syslog.wants(EventName::Bind));
        syslog.send(EventName::Alert, Some("critical"), r#"{"event":"alert","port":4444}"#);
        syslog.send(EventName::ListenerUp, None, r#"{"event":"listener_up"}"#);
        let (mut conn, _) = server.accept().unwrap();
        drop(syslog); // waits for the queue to drain
        let mut wire = Vec::new();
        conn.read_to_end(&mut wire).unwrap();
        let mut frames = Vec::new();
        let mut rest = wire.as_slice();
        while !rest.is_empty() {
            let space = rest.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..space]).unwrap().parse().unwrap();
            frames.push(String::from_utf8(rest[space + 1..space + 1 + len].to_vec()).unwrap());
            rest = &rest[space + 1 + len..];
        }
        assert_eq!(frames.len(), 2, "{frames:?}");
        // local3 = 19, crit = 2: PRI 19 * 8 + 2 = 154.
        let fields: Vec<&str> = frames[0].splitn(8, ' ').collect();
        assert_eq!(fields[0], "<154>1", "{}", frames[0]);
        assert_eq!(
            (fields[3], fields[4], fields[5], fields[6]),
            ("watcher", &*std::process::id().to_string(), "alert", "-")
        );
        assert_eq!(fields[7], r#"{"event":"alert","port":4444}"#);
        assert!(frames[1].starts_with("<158>1 ") && frames[1].contains(" listener_up - "), "{}", frames[1]);
        assert_eq!(counters.sent.get(), 2);
        assert_eq!(counters.errors.get(), 0);
    }

    /// Nothing listens: the failure is counted, the caller never blocks, and
    /// what was queued is delivered once a server appears.
    #[test]
    fn a_dead_server_is_counted_then_reached() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = SyslogConfig {
            target: format!("tcp://127.0.0.1:{port}"),
            all_events: true,
            facility: SyslogFacility::Daemon,
        };
        let counters = Counters::default();
        let mut syslog = Syslog::start(&config, counters.clone()).unwrap();
        syslog.send(EventName::Bind, None, r#"{"event":"bind"}"#);
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.errors.get() == 0 {
            assert!(Instant::now() < deadline, "no error counted");
            thread::yield_now();
        }
        let server = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (mut conn, _) = server.accept().unwrap();
        let mut head = [0u8; 3];
        conn.read_exact(&mut head).unwrap();
        assert!(head[0].is_ascii_digit(), "{head:?}");
        assert_eq!(counters.dropped.get(), 0);
        syslog.retire();
    }
}
