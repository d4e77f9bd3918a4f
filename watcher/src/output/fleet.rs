//! The daemon's outputs for the fleet: syslog and the Prometheus endpoint.
//!
//! Both receive every typed [`Event`] the daemon writes, with the JSON line
//! it was written as: the metrics count it by its [`EventName`](crate::model::event_name::EventName),
//! syslog sends the line as the MSG when it is an event syslog wants. So
//! syslog carries exactly what stdout carries, and nothing is parsed back.

use anyhow::Context as _;
use log::{error, info};

use crate::{
    config::{Config, MetricsConfig, SyslogConfig, SyslogTarget as Target},
    model::event_name::EventName,
    output::{
        event::Event,
        metrics::{Endpoint, Metrics},
        syslog::Syslog,
    },
};

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

    /// One event, and its JSON line as the daemon wrote it (syslog's MSG).
    pub fn event(&mut self, event: &Event<'_>, json_line: &[u8]) {
        let name = event.name();
        self.metrics.event(name);
        let alert = event.alert();
        if let Some(alert) = alert {
            self.metrics.alert(alert.rule.as_deref(), alert.severity.name());
        }
        if let Event::Lost { count, .. } = event {
            self.metrics.records_lost(*count);
        }
        if let Some(syslog) = &mut self.syslog
            && syslog.wants(name)
            && let Ok(text) = std::str::from_utf8(json_line.strip_suffix(b"\n").unwrap_or(json_line))
        {
            syslog.send(name, alert.map(|a| a.severity.name()), text);
        }
    }

    /// A line an output wrote on its own (the JSON output's
    /// `output_dropped`): counted by its name, and sent to syslog as the
    /// events are.
    pub fn output_line(&mut self, name: EventName, json_line: &[u8]) {
        self.metrics.event(name);
        if let Some(syslog) = &mut self.syslog
            && syslog.wants(name)
            && let Ok(text) = std::str::from_utf8(json_line.strip_suffix(b"\n").unwrap_or(json_line))
        {
            syslog.send(name, None, text);
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

    /// Once a second: what the kernel programs could not do since the last time.
    pub fn program_errors(&self, grown: &[(watcher_common::ProgramError, u64)]) {
        for (kind, count) in grown {
            self.metrics.program_errors(kind.name(), *count);
        }
    }

    /// Once a second: the process table's size.
    pub fn process_table_size(&self, n: usize) {
        self.metrics.set_process_table_size(n);
    }
}
