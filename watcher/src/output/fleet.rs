//! The daemon's outputs for the fleet: syslog and the Prometheus endpoint.
//!
//! Both hang off the daemon's JSON output ([`Tee`]): every line the daemon
//! writes also counts in the metrics and, if it is an event syslog wants,
//! goes to syslog as the MSG. So syslog carries exactly what stdout
//! carries, and no event kind — today's or one added later — is left out.
use std::{
    borrow::Cow,
    cell::RefCell,
    io::{self, Write},
    rc::Rc,
};

use anyhow::Context as _;
use log::{error, info};
use serde::Deserialize;

use crate::{
    config::{Config, MetricsConfig, SyslogConfig},
    output::{
        metrics::{Endpoint, Metrics},
        syslog::{Syslog, Target},
    },
};

/// A line longer than this is not the daemon's: it is passed on but not read.
const MAX_LINE: usize = 1 << 20;

/// The fields of an event line that the outputs need.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    severity: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    rule: Option<Cow<'a, str>>,
    #[serde(default)]
    count: Option<u64>,
}

pub struct Fleet {
    metrics: Metrics,
    endpoint: Option<Endpoint>,
    metrics_config: Option<MetricsConfig>,
    syslog: Option<Syslog>,
    syslog_config: Option<SyslogConfig>,
}

impl Fleet {
    /// Binds the metrics endpoint (an error if the address is taken) and
    /// starts the syslog sender (which never fails for an unreachable
    /// server: it warns and retries).
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        metrics.prepare(config);
        let endpoint = match &config.metrics {
            Some(m) => Some(
                Endpoint::bind(m.listen, metrics.clone()).with_context(|| format!("[metrics] listen {}", m.listen))?,
            ),
            None => None,
        };
        let syslog = match &config.syslog {
            Some(s) => Some(Syslog::start(s, metrics.syslog_counters())?),
            None => None,
        };
        let fleet = Self {
            metrics,
            endpoint,
            metrics_config: config.metrics.clone(),
            syslog,
            syslog_config: config.syslog.clone(),
        };
        fleet.say_where();
        Ok(fleet)
    }

    fn say_where(&self) {
        if let Some(e) = &self.endpoint {
            info!("metrics: serving http://{}/metrics", e.addr);
        }
        if let (Some(s), Some(c)) = (&self.syslog, &self.syslog_config) {
            let what = if c.all_events { "every event" } else { "alerts, actions and lifecycle changes" };
            let format = match s.target() {
                Target::Unix(_) => "the syslog(3) format",
                Target::Udp(_) | Target::Tcp(_) => "RFC 5424",
            };
            info!("syslog: sending {what} to {} ({format})", s.target());
        }
    }

    /// Whether any output reads the lines.
    fn active(&self) -> bool {
        self.endpoint.is_some() || self.syslog.is_some()
    }

    /// SIGHUP with a good file: applies changed [syslog] and [metrics]
    /// sections. A new metrics address that cannot be bound is logged and
    /// the old endpoint kept.
    pub fn reconfigure(&mut self, config: &Config) {
        self.metrics.prepare(config);
        if config.metrics != self.metrics_config {
            let endpoint = match &config.metrics {
                Some(m) => match Endpoint::bind(m.listen, self.metrics.clone()) {
                    Ok(e) => Some(Some(e)),
                    Err(e) => {
                        error!("metrics: [metrics] listen {}: {e:#}; the endpoint stays as it was", m.listen);
                        None
                    }
                },
                None => Some(None),
            };
            if let Some(endpoint) = endpoint {
                self.endpoint = endpoint;
                self.metrics_config = config.metrics.clone();
                if self.endpoint.is_none() {
                    info!("metrics: endpoint closed");
                }
            }
        }
        if config.syslog != self.syslog_config {
            let syslog = match &config.syslog {
                Some(s) => match Syslog::start(s, self.metrics.syslog_counters()) {
                    Ok(s) => Some(Some(s)),
                    Err(e) => {
                        error!("syslog: {e:#}; sending as before");
                        None
                    }
                },
                None => Some(None),
            };
            if let Some(syslog) = syslog {
                if let Some(old) = std::mem::replace(&mut self.syslog, syslog) {
                    old.retire();
                }
                self.syslog_config = config.syslog.clone();
                if self.syslog.is_none() {
                    info!("syslog: no longer sending");
                }
            }
        }
        self.say_where();
    }

    /// One line the daemon wrote, without its newline.
    fn line(&mut self, line: &[u8]) {
        let Ok(head) = serde_json::from_slice::<Head<'_>>(line) else {
            return;
        };
        self.metrics.event(&head.event);
        match &*head.event {
            "alert" => self.metrics.alert(head.rule.as_deref(), head.severity.as_deref().unwrap_or("?")),
            "lost" => self.metrics.records_lost(head.count.unwrap_or(0)),
            _ => {}
        }
        if let Some(syslog) = &mut self.syslog
            && syslog.wants(&head.event)
            && let Ok(text) = std::str::from_utf8(line)
        {
            syslog.send(&head.event, head.severity.as_deref(), text);
        }
    }

    /// The dropped / errors counters of the JSON output named `output`.
    pub fn output_counters(&self, output: &str) -> crate::output::json_file::OutputCounters {
        self.metrics.output_counters(output)
    }

    /// After each batch of events: the lifecycle table's size.
    pub fn live_listeners(&self, n: usize) {
        self.metrics.set_live_listeners(n);
    }

    /// Once a second: the process table's size.
    pub fn process_table_size(&self, n: usize) {
        self.metrics.set_process_table_size(n);
    }
}

/// The daemon's JSON writer: passes everything on to `inner`, and hands
/// each complete line to the [`Fleet`].
pub struct Tee<W: Write> {
    inner: W,
    fleet: Rc<RefCell<Fleet>>,
    line: Vec<u8>,
    /// The current line grew past MAX_LINE: skip it up to its newline.
    overlong: bool,
}

impl<W: Write> Tee<W> {
    pub fn new(inner: W, fleet: Rc<RefCell<Fleet>>) -> Self {
        Self { inner, fleet, line: Vec::new(), overlong: false }
    }

    fn take(&mut self, mut bytes: &[u8]) {
        // Single-threaded and not re-entered: the borrow is always free;
        // were it not, a line is skipped rather than a panic.
        let Ok(mut fleet) = self.fleet.try_borrow_mut() else {
            return;
        };
        if !fleet.active() {
            return;
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            if !self.overlong && self.line.len() + end <= MAX_LINE {
                self.line.extend_from_slice(&bytes[..end]);
                fleet.line(&self.line);
            }
            self.line.clear();
            self.overlong = false;
            bytes = &bytes[end + 1..];
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.line.clear();
            self.overlong = true;
        } else if !self.overlong {
            self.line.extend_from_slice(bytes);
        }
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.take(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_feed_the_counters_in_pieces_as_written() {
        let config = Config::parse("[metrics]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        let fleet = Rc::new(RefCell::new(Fleet::start(&config).unwrap()));
        let mut tee = Tee::new(Vec::new(), fleet.clone());
        // serde_json writes a line in many small pieces.
        for piece in [
            &b"{\"event\":\"alert\",\"sev"[..],
            b"erity\":\"critical\",\"rule\":null}",
            b"\n{\"event\":\"lost\",\"count\":5}\n{\"ev",
        ] {
            tee.write_all(piece).unwrap();
        }
        tee.write_all(b"ent\":\"listener_up\"}\nnot json\n").unwrap();
        let text = fleet.borrow().metrics.encode();
        for line in [
            "watcher_alerts_total{rule=\"-\",severity=\"critical\"} 1",
            "watcher_records_lost_total 5",
            "watcher_events_total{event=\"listener_up\"} 1",
            "watcher_events_total{event=\"lost\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(tee.inner.ends_with(b"not json\n"), "everything is passed on");
    }
}
