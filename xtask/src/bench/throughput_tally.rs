//! The throughput bench's books: what watcher and bpftrace printed, counted
//! line by line as the bench takes them, without keeping the lines.
/// A listener opened after a step to show that a tool has caught up: the
/// first line a tool prints for it comes after everything the step made.
#[derive(Clone, Copy, Debug)]
pub struct Marker {
    pub port: u16,
    /// Just before its socket() call, CLOCK_MONOTONIC.
    pub start_ns: u64,
}

/// watcher's JSON lines, counted.
#[derive(Debug, Default)]
pub struct WatcherTally {
    /// bind, listen and close events of the generator's pid.
    pub by_kind: [u64; 3],
    /// Sum of the `count` of every `lost` line.
    pub lost: u64,
    /// The last `lost` line's `total` (all records lost since watcher started).
    pub lost_total: u64,
    pub lost_lines: u64,
    /// Lines that are none of the above (an event of another kind or pid).
    pub other: u64,
    pub other_sample: Vec<String>,
    /// When the bench took the first line of a marker from the tool's
    /// reader (CLOCK_MONOTONIC).
    pub marker_seen_ns: Option<u64>,
    /// Largest `seen_ktime_ns - ktime_ns` (kernel → watcher's userspace)
    /// since the last reset.
    pub max_delay_ns: u64,
    /// Every such delay since the last reset, for its percentiles (8 bytes
    /// a record: 16 MB for a step of two million).
    pub delays_ns: Vec<u64>,
}

const KINDS: [&str; 3] = ["bind", "listen", "close"];

impl WatcherTally {
    pub fn read(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    /// Counts one line, which the bench took at `taken_ns`. Only the few top-level fields needed are looked
    /// up, without parsing the whole line: at 100,000+ lines a second a
    /// full parse would take a core of its own from the tools measured.
    pub fn line(&mut self, line: &str, pid: u32, markers: &[Marker], taken_ns: u64) {
        let event = string_field(line, "event");
        if let Some(kind) = KINDS.iter().position(|k| event == Some(k))
            && number_field(line, "pid") == Some(u64::from(pid))
        {
            self.by_kind[kind] += 1;
            let ktime = number_field(line, "ktime_ns").unwrap_or(0);
            let seen = number_field(line, "seen_ktime_ns").unwrap_or(0);
            self.max_delay_ns = self.max_delay_ns.max(seen.saturating_sub(ktime));
            self.delays_ns.push(seen.saturating_sub(ktime));
            // Its close is a marker's last record: everything made before
            // it has been read or counted lost.
            if self.marker_seen_ns.is_none() && kind == 2 {
                let port = number_field(line, "port").unwrap_or(0);
                if markers.iter().any(|m| u64::from(m.port) == port && ktime >= m.start_ns) {
                    self.marker_seen_ns = Some(taken_ns);
                }
            }
            return;
        }
        // Rare lines: parsed in full.
        let value: Option<serde_json::Value> = serde_json::from_str(line).ok();
        match value.as_ref().filter(|v| v["event"] == "lost") {
            Some(v) => {
                self.lost_lines += 1;
                self.lost += v["count"].as_u64().unwrap_or(0);
                self.lost_total = v["total"].as_u64().unwrap_or(0);
            }
            None => {
                self.other += 1;
                if self.other_sample.len() < 3 {
                    self.other_sample.push(line.chars().take(200).collect());
                }
            }
        }
    }
}

/// The bpftrace one-liner's lines ("nsecs pid port"), counted.
#[derive(Debug, Default)]
pub struct BpftraceTally {
    /// Event lines of the generator's pid.
    pub lines: u64,
    /// Sum of N over its "Lost N events" lines.
    pub lost: u64,
    pub lost_lines: u64,
    pub other: u64,
    pub other_sample: Vec<String>,
    pub marker_seen_ns: Option<u64>,
}

impl BpftraceTally {
    /// As `WatcherTally::line`; `boot_offset_ns`: CLOCK_BOOTTIME − CLOCK_MONOTONIC, as bpftrace's
    /// `nsecs` is CLOCK_BOOTTIME (see mod.rs).
    pub fn line(&mut self, line: &str, pid: u32, markers: &[Marker], taken_ns: u64, boot_offset_ns: i64) {
        let mut words = line.split_whitespace();
        if let Some(lost) = line.strip_prefix("Lost ").and_then(|r| r.strip_suffix(" events"))
            && let Ok(n) = lost.trim().parse::<u64>()
        {
            self.lost += n;
            self.lost_lines += 1;
            return;
        }
        if line.starts_with("Attaching ") {
            return;
        }
        let parsed = (|| {
            let nsecs = words.next()?.parse::<i64>().ok()?;
            let event_pid = words.next()?.parse::<u32>().ok()?;
            let port = words.next()?.parse::<u16>().ok()?;
            words.next().is_none().then_some((nsecs, event_pid, port))
        })();
        match parsed {
            Some((nsecs, event_pid, port)) if event_pid == pid => {
                self.lines += 1;
                // bpftrace reads each CPU's buffer in turn, so a marker can
                // come before an earlier event of the other CPU: the bench
                // then waits for the books to balance as well. 50 µs of
                // slack for the clock conversion, as catch_rate.rs allows.
                let ktime = (nsecs - boot_offset_ns).max(0) as u64 + 50_000;
                if self.marker_seen_ns.is_none() && markers.iter().any(|m| m.port == port && ktime >= m.start_ns) {
                    self.marker_seen_ns = Some(taken_ns);
                }
            }
            _ => {
                self.other += 1;
                if self.other_sample.len() < 3 {
                    self.other_sample.push(line.chars().take(200).collect());
                }
            }
        }
    }
}

/// The value of a top-level string field of one of watcher's JSON lines.
/// `"key":` cannot occur inside a JSON string (a quote there is escaped),
/// and watcher's lines have no nested objects, so the first match is the
/// field. Values with escapes are not needed here and come back raw.
fn string_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = after_key(line, key)?.strip_prefix('"')?;
    rest.split_once('"').map(|(value, _)| value)
}

fn number_field(line: &str, key: &str) -> Option<u64> {
    let rest = after_key(line, key)?;
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn after_key<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut pattern = String::with_capacity(key.len() + 3);
    pattern.push('"');
    pattern.push_str(key);
    pattern.push_str("\":");
    line.find(&pattern).map(|at| &line[at + pattern.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    // README's example line, with a hostile comm and argv.
    const LISTEN: &str = r#"{"time":"2026-11-23T00:07:21.714793Z","ktime_ns":6614495858020,"seen_ktime_ns":6614497434014,"event":"listen","proto":"tcp","family":"ipv4","addr":"127.0.0.1","port":35055,"pid":8435,"tid":8435,"ppid":8294,"comm":"x\",\"pid\":1,\"port\":2","exe":"/usr/bin/python3.11","cmdline":["python3","\"event\":\"close\""],"uid":0,"gid":0,"user":"root","cgroup_id":1,"sock_id":6048307342155210000}"#;

    #[test]
    fn watcher_lines() {
        assert_eq!(string_field(LISTEN, "event"), Some("listen"));
        assert_eq!(number_field(LISTEN, "pid"), Some(8435));
        assert_eq!(number_field(LISTEN, "port"), Some(35055));
        assert_eq!(number_field(LISTEN, "ktime_ns"), Some(6614495858020));
        let mut t = WatcherTally::default();
        t.line(LISTEN, 8435, &[], 1);
        t.line(&LISTEN.replace("\"listen\"", "\"close\""), 8435, &[Marker { port: 35055, start_ns: 1 }], 7);
        assert_eq!(t.marker_seen_ns, Some(7));
        t.line(LISTEN, 1, &[], 1);
        t.line(r#"{"time":"x","event":"lost","count":5,"total":12}"#, 8435, &[], 1);
        assert_eq!(t.by_kind, [0, 1, 1]);
        assert_eq!(t.max_delay_ns, 6614497434014 - 6614495858020);
        assert!(t.marker_seen_ns.is_some());
        assert_eq!((t.lost, t.lost_total, t.lost_lines, t.other), (5, 12, 1, 1));
    }

    #[test]
    fn bpftrace_lines() {
        let mut t = BpftraceTally::default();
        let markers = [Marker { port: 80, start_ns: 1_000_000 }];
        t.line("Attaching 1 probe...", 7, &markers, 1, 0);
        t.line("900000 7 80", 7, &markers, 1, 0);
        assert!(t.marker_seen_ns.is_none(), "before the marker opened");
        t.line("5000000 7 81", 7, &markers, 1, 0);
        t.line("5000000 8 80", 7, &markers, 1, 0);
        t.line("Lost 12 events", 7, &markers, 1, 0);
        t.line("5000000 7 80", 7, &markers, 1, 0);
        assert!(t.marker_seen_ns.is_some());
        assert_eq!((t.lines, t.lost, t.lost_lines, t.other), (3, 12, 1, 1));
    }
}
