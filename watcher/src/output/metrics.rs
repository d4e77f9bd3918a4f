//! `[metrics]`: the daemon's counters and gauges for Prometheus, served as
//! OpenMetrics text on `GET /metrics` (prometheus-client encodes, hyper
//! serves, on a thread of its own, so that a scrape is answered at once
//! even while the event loop works through a flood).
//!
//! Counters are fed from the event lines the daemon writes (see
//! [`crate::output::fleet`]); gauges from the pipeline's tables once a second and
//! after each batch of events.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, thread, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    config::Config,
    model::event_name::EventName,
    output::{json_file::OutputCounters, syslog},
};

/// The `rule` label of an alert that no rule speaks for.
pub const NO_RULE: &str = "-";

/// OpenMetrics text, as prometheus-client writes it.
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A client that sends no request within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabels {
    output: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    rule: String,
    severity: String,
}

/// Every metric, shareable: clones update the same values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    live_listeners: Gauge,
    process_table_size: Gauge,
    /// The `events` family's counter of each [`EventName`], indexed by
    /// it: found once, not by hashing a freshly allocated label at every line.
    event_counters: Arc<[Counter]>,
    alerts: Family<AlertLabels, Counter>,
    records_lost: Counter,
    syslog: syslog::Counters,
    output_dropped: Family<OutputLabels, Counter>,
    output_errors: Family<OutputLabels, Counter>,
    program_errors: Family<KindLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let live_listeners = Gauge::default();
        let process_table_size = Gauge::default();
        let events = Family::<EventLabels, Counter>::default();
        let alerts = Family::<AlertLabels, Counter>::default();
        let records_lost = Counter::default();
        let syslog = syslog::Counters::default();
        let mut r = Registry::with_prefix("watcher");
        r.register(
            "live_listeners",
            "Listeners in the lifecycle table (TCP listeners, bound UDP and UNIX sockets)",
            live_listeners.clone(),
        );
        r.register(
            "process_table_size",
            "Processes in the process table, exited ones still kept included",
            process_table_size.clone(),
        );
        r.register("events", "Events written, by kind", events.clone());
        r.register(
            "alerts",
            "Alerts raised, by the rule that did not allow the socket (\"-\": none did) and severity",
            alerts.clone(),
        );
        r.register("records_lost", "Records the kernel could not deliver (ring buffer full)", records_lost.clone());
        r.register("syslog_messages", "Messages the syslog server took", syslog.sent.clone());
        r.register("syslog_errors", "Failed attempts to connect or send to the syslog server", syslog.errors.clone());
        r.register("syslog_dropped", "Syslog messages given up on (queue or backlog full)", syslog.dropped.clone());
        let output_dropped = Family::<OutputLabels, Counter>::default();
        let output_errors = Family::<OutputLabels, Counter>::default();
        r.register(
            "output_dropped",
            "Lines an output could not write (disk full, I/O error, closed pipe), by output",
            output_dropped.clone(),
        );
        r.register("output_errors", "Failed writes and reopens, by output", output_errors.clone());
        let program_errors = Family::<KindLabels, Counter>::default();
        r.register(
            "program_errors",
            "What the kernel programs could not do (a read of kernel or user memory, a map update), by kind",
            program_errors.clone(),
        );
        for kind in watcher_common::ProgramError::ALL {
            drop(program_errors.get_or_create(&KindLabels { kind: kind.name().to_owned() }));
        }
        // Every event name has a series at 0 from the start, so that a rate
        // or an increase over the first one is right (a series born at 1
        // shows no increase in Prometheus).
        let event_counters = EventName::ALL
            .iter()
            .map(|event| events.get_or_create(&EventLabels { event: event.as_str().to_owned() }).clone())
            .collect();
        Self {
            registry: Arc::new(r),
            live_listeners,
            process_table_size,
            event_counters,
            alerts,
            records_lost,
            syslog,
            output_dropped,
            output_errors,
            program_errors,
        }
    }

    pub fn program_errors(&self, kind: &str, count: u64) {
        self.program_errors.get_or_create(&KindLabels { kind: kind.to_owned() }).inc_by(count);
    }

    /// Creates, at 0, the alert counters the configuration can raise.
    pub fn prepare(&self, config: &Config) {
        let put = |rule: &str, severity: &str| {
            drop(self.alerts.get_or_create(&AlertLabels { rule: rule.to_owned(), severity: severity.to_owned() }));
        };
        put(NO_RULE, config.default_severity.name());
        for rule in &config.rules {
            put(&rule.label(), rule.severity.name());
        }
    }

    pub fn syslog_counters(&self) -> syslog::Counters {
        self.syslog.clone()
    }

    /// The counters of one output (`json_file`, `stdout`), created at 0.
    pub fn output_counters(&self, output: &str) -> OutputCounters {
        let labels = OutputLabels { output: output.to_owned() };
        OutputCounters {
            dropped: self.output_dropped.get_or_create(&labels).clone(),
            errors: self.output_errors.get_or_create(&labels).clone(),
        }
    }

    pub fn event(&self, event: EventName) {
        // `ALL` lists the names in their declared order: a name's discriminant is its place.
        self.event_counters[event as usize].inc();
    }

    pub fn alert(&self, rule: Option<&str>, severity: &str) {
        let labels = AlertLabels { rule: rule.unwrap_or(NO_RULE).to_owned(), severity: severity.to_owned() };
        self.alerts.get_or_create(&labels).inc();
    }

    pub fn records_lost(&self, count: u64) {
        self.records_lost.inc_by(count);
    }

    pub fn set_live_listeners(&self, n: usize) {
        self.live_listeners.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_process_table_size(&self, n: usize) {
        self.process_table_size.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            // Writing to a String cannot fail; a failing metric's encoder could.
            warn!("metrics: encoding: {e}");
        }
        text
    }
}

/// The HTTP endpoint; dropping it stops accepting and ends its thread.
pub struct Endpoint {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Endpoint {
    /// Binds at once (so that a taken address is an error now, not a
    /// warning later) and serves from a thread with a runtime of its own:
    /// on the daemon's runtime a scrape would wait behind every batch of
    /// events, and time out during the very flood it should show.
    pub fn bind(addr: SocketAddr, metrics: Metrics) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true).context("making the metrics socket non-blocking")?;
        let addr = listener.local_addr().context("reading the metrics socket's address")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the metrics thread's tokio runtime")?;
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener).context("registering the metrics socket with tokio")?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = serve(listener, metrics) => {}
                        _ = stopped => {}
                    }
                });
            })
            .context("starting the metrics thread")?;
        Ok(Self { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Dropping the runtime at the thread's end drops the connections'
        // tasks too; none of them blocks, so this returns at once.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, metrics: Metrics) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, typically: pause rather than spin.
                warn!("metrics: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(&metrics, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                debug!("metrics: a connection ended with {e}");
            }
        });
    }
}

fn respond(metrics: &Metrics, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if path != "/metrics" {
        return text(StatusCode::NOT_FOUND, "watcher serves GET /metrics only\n".into());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n".into());
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = text(StatusCode::OK, metrics.encode());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name of the one list has its counter at 0 from the start: a
    /// name added to the enum is counted without another list to update.
    #[test]
    fn every_event_name_has_a_zeroed_counter() {
        let text = Metrics::new().encode();
        for name in EventName::ALL {
            let line = format!("watcher_events_total{{event=\"{name}\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        let series = text.lines().filter(|l| l.starts_with("watcher_events_total{")).count();
        assert_eq!(series, EventName::ALL.len(), "no series but the enum's");
        for (place, name) in EventName::ALL.iter().enumerate() {
            assert_eq!(*name as usize, place, "{name} indexes its own counter");
        }
    }

    #[test]
    fn names_labels_and_zeroes() {
        let config = Config::parse(
            "default_severity = \"critical\"\n[[allow]]\nname = \"we\\\"b\"\nproto = \"tcp\"\nport = 80\n",
        )
        .unwrap();
        let m = Metrics::new();
        m.prepare(&config);
        m.event(EventName::ListenerUp);
        m.alert(None, "critical");
        m.records_lost(3);
        m.set_live_listeners(7);
        m.set_process_table_size(120);
        m.syslog_counters().errors.inc();
        let json_file = m.output_counters("json_file");
        json_file.dropped.inc_by(5);
        m.output_counters("json_file").errors.inc();
        drop(m.output_counters("stdout"));
        let text = m.encode();
        for line in [
            "watcher_live_listeners 7",
            "watcher_process_table_size 120",
            "watcher_events_total{event=\"listener_up\"} 1",
            "watcher_events_total{event=\"alert\"} 0",
            "watcher_alerts_total{rule=\"-\",severity=\"critical\"} 1",
            // A rule's name is escaped in its label value.
            "watcher_alerts_total{rule=\"we\\\"b\",severity=\"warning\"} 0",
            "watcher_records_lost_total 3",
            "watcher_syslog_errors_total 1",
            "watcher_syslog_messages_total 0",
            "watcher_output_dropped_total{output=\"json_file\"} 5",
            "watcher_output_errors_total{output=\"json_file\"} 1",
            "watcher_output_dropped_total{output=\"stdout\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn only_get_metrics() {
        let m = Metrics::new();
        assert_eq!(respond(&m, &Method::GET, "/metrics").status(), StatusCode::OK);
        assert_eq!(respond(&m, &Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&m, &Method::POST, "/metrics").status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
