//! The daemon's JSON lines, to `[output] json_file` or to stdout, written so
//! that the destination failing never stops the daemon.
//!
//! - The file is opened for append and given exactly `json_file_mode`
//!   (0600 unless configured), whatever the umask, whether this creates it
//!   or finds it there.
//! - [`JsonOutput::reopen`] (SIGHUP, logrotate's `postrotate`) writes what is
//!   pending into the file it has, then opens the path again.
//! - A write that fails (ENOSPC, EIO, EPIPE …) drops the lines it carried:
//!   they are counted (`dropped`, and `errors` per failed attempt), a warning
//!   is logged at most every [`WARN_EVERY`], and the next batch is tried
//!   again (a file is reopened first). The first lines written after a gap
//!   are preceded by one `output_dropped` line saying how many were lost.
//!   A line cut short by a full disk is cut off the file again, so the file
//!   holds only whole lines.
//! - [`Write`] never fails: the caller (the printer, the fleet's tee) goes
//!   on, and so do the other outputs.
//!
//! Clones share one writer: the printer writes through one, the daemon
//! keeps another to reopen it.
use std::{
    cell::RefCell,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use log::{info, warn};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::{
    config::{FileMode, LineFormat},
    model::{escape::escape_bytes, event_name::EventName, text::rfc3339},
    output::{
        event::Event,
        siem::{Schema, Siem},
    },
};

/// A failing output is warned about at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Complete lines are written once this much is pending, or at each flush.
const FLUSH_AT: usize = 64 << 10;

/// What an output counts (the metrics endpoint exposes them, labelled
/// with the output's name).
#[derive(Clone, Debug, Default)]
pub struct OutputCounters {
    /// Lines that could not be written.
    pub dropped: Counter,
    /// Failed writes and failed (re)opens.
    pub errors: Counter,
}

/// Where the lines go. A trait so that the gap handling can be tested
/// against a destination that fills up on demand.
trait Destination {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Opens the destination again (a file: its path, which may now be a
    /// new file). The old handle is closed either way.
    fn reopen(&mut self) -> io::Result<()>;
    /// Cuts the last `n` bytes written (a line cut short) off again.
    fn cut(&mut self, n: usize) -> io::Result<()>;
    /// For messages and the `output` field: a path, or `stdout`.
    fn name(&self) -> String;
    /// Reopened before the next write after a failure.
    fn reopens(&self) -> bool;
}

struct FileDestination {
    path: PathBuf,
    mode: FileMode,
    /// None after a reopen failed; the next write opens again.
    file: Option<File>,
}

/// Opens `path` for append, and gives it exactly `mode` (a file this
/// creates, whatever the umask; an existing regular file, said so when that
/// changes its mode; a device or FIFO is left as it is).
fn open_private(path: &Path, mode: FileMode) -> io::Result<File> {
    match OpenOptions::new().append(true).create_new(true).mode(mode.0).open(path) {
        Ok(file) => {
            // The umask may have taken bits away: set exactly what was asked.
            file.set_permissions(std::fs::Permissions::from_mode(mode.0))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = OpenOptions::new().append(true).open(path)?;
            let metadata = file.metadata()?;
            let current = metadata.permissions().mode() & 0o7777;
            if metadata.is_file() && current != mode.0 {
                file.set_permissions(std::fs::Permissions::from_mode(mode.0))?;
                warn!("{}: mode {current:04o} set to json_file_mode {mode}", path.display());
            }
            Ok(file)
        }
        Err(e) => Err(e),
    }
}

impl Destination for FileDestination {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            self.file = Some(open_private(&self.path, self.mode)?);
        }
        self.file.as_mut().map_or(Ok(0), |f| f.write(bytes))
    }

    fn reopen(&mut self) -> io::Result<()> {
        // On failure the old handle goes too: it may be what failed (EIO),
        // or a file renamed or deleted, where lines would vanish unseen;
        // without it they are counted as dropped until the path opens.
        match open_private(&self.path, self.mode) {
            Ok(file) => {
                self.file = Some(file);
                Ok(())
            }
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    fn cut(&mut self, n: usize) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("not open"))?;
        let len = file.metadata()?.len();
        file.set_len(len.saturating_sub(n as u64))
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn reopens(&self) -> bool {
        true
    }
}

struct StdoutDestination;

impl Destination for StdoutDestination {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // Straight to the descriptor: std's line buffer would take bytes
        // it may fail to write later, out of this count.
        nix::unistd::write(io::stdout(), bytes).map_err(io::Error::from)
    }

    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn cut(&mut self, _n: usize) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    fn name(&self) -> String {
        "stdout".to_owned()
    }

    fn reopens(&self) -> bool {
        false
    }
}

/// Lines lost since the last line that was written.
struct Gap {
    dropped: u64,
    since: DateTime<Utc>,
    error: String,
}

#[derive(Serialize)]
struct DroppedLine<'a> {
    time: String,
    event: EventName,
    output: &'a str,
    dropped: u64,
    since: String,
    error: &'a str,
}

struct Inner {
    destination: Box<dyn Destination>,
    /// Written by the caller, not yet to the destination: whole lines, and
    /// the start of the next at the end.
    pending: Vec<u8>,
    gap: Option<Gap>,
    /// A line cut short is in the destination (it could not be cut off):
    /// the next write starts with a newline that ends it.
    torn: bool,
    /// The last attempt failed: reopen before the next.
    failed: bool,
    counters: OutputCounters,
    /// The `output_dropped` lines written, for the other outputs
    /// ([`JsonOutput::take_notices`]).
    notices: Vec<Vec<u8>>,
    /// `[output] format` ECS or OCSF: the notices are in it too.
    siem: Option<Siem>,
    /// When a failure, and when a recovery, was last logged.
    warned: Option<Instant>,
    recovered: Option<Instant>,
}

/// The daemon's JSON lines writer; see the module's documentation.
#[derive(Clone)]
pub struct JsonOutput(Rc<RefCell<Inner>>);

impl JsonOutput {
    /// Opens (creating it with `mode`) the file for append. An error here
    /// is the configuration's: the daemon exits 2.
    pub fn file(path: &Path, mode: FileMode, counters: OutputCounters) -> anyhow::Result<Self> {
        let file =
            open_private(path, mode).with_context(|| format!("opening [output] json_file {}", path.display()))?;
        let destination = FileDestination { path: path.to_owned(), mode, file: Some(file) };
        Ok(Self::new(Box::new(destination), counters))
    }

    pub fn stdout(counters: OutputCounters) -> Self {
        Self::new(Box::new(StdoutDestination), counters)
    }

    fn new(destination: Box<dyn Destination>, counters: OutputCounters) -> Self {
        Self(Rc::new(RefCell::new(Inner {
            destination,
            pending: Vec::new(),
            gap: None,
            torn: false,
            failed: false,
            counters,
            notices: Vec::new(),
            siem: None,
            warned: None,
            recovered: None,
        })))
    }

    /// SIGHUP: what is pending goes to the file as it is, then the path is
    /// opened again (a new file after logrotate renamed the old one). On
    /// failure the next write tries again; the error names the path.
    pub fn reopen(&self) -> anyhow::Result<()> {
        let mut inner = self.0.borrow_mut();
        inner.write_lines();
        if !inner.destination.reopens() {
            return Ok(());
        }
        let result = inner.destination.reopen();
        inner.failed = result.is_err();
        if inner.failed {
            inner.counters.errors.inc();
        }
        result.with_context(|| format!("reopening [output] json_file {}", inner.destination.name()))
    }

    /// After a reload that names another file or mode: writes what is
    /// pending where it was going, then opens the new path with the new
    /// mode. Stdout stays stdout.
    pub fn retarget(&self, path: &Path, mode: FileMode) -> anyhow::Result<()> {
        {
            let mut inner = self.0.borrow_mut();
            inner.write_lines();
            if !inner.destination.reopens() {
                return Ok(());
            }
            inner.destination = Box::new(FileDestination { path: path.to_owned(), mode, file: None });
        }
        self.reopen()
    }

    /// `[output] format`: the schema of the `output_dropped` notices (the
    /// other lines come written).
    pub fn set_format(&self, format: LineFormat) {
        let mut inner = self.0.borrow_mut();
        if Schema::of(format) != inner.siem.as_ref().map(Siem::schema) {
            inner.siem = Schema::of(format).map(Siem::new);
        }
    }

    /// The `output_dropped` lines written since the last call (newline
    /// included), for the daemon to hand to syslog and the metrics.
    pub fn take_notices(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.0.borrow_mut().notices)
    }

    /// Lines dropped and not yet reported by an `output_dropped` line.
    pub fn unreported_drops(&self) -> u64 {
        self.0.borrow().gap.as_ref().map_or(0, |g| g.dropped)
    }
}

impl Write for JsonOutput {
    /// Takes everything; never fails (see the module's documentation).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self.0.borrow_mut();
        inner.pending.extend_from_slice(buf);
        if inner.pending.len() >= FLUSH_AT {
            inner.write_lines();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().write_lines();
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.write_lines();
    }
}

impl Inner {
    /// Writes every complete pending line (after the gap notice, if any);
    /// on failure drops them, counted.
    fn write_lines(&mut self) {
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else {
            return;
        };
        // The start of the next line stays pending; the whole lines leave
        // without being copied.
        let rest = self.pending.split_off(end);
        let lines = std::mem::replace(&mut self.pending, rest);
        let mut spent = self.send(lines);
        // The next lines go into the buffer these went out of: `rest` has
        // no room, and growing it again, doubling from nothing, at every
        // flush was a twentieth of the daemon's instructions per record.
        spent.clear();
        spent.extend_from_slice(&self.pending);
        self.pending = spent;
    }

    /// Writes `lines` (whole lines) after the gap notice, if any; on
    /// failure drops them, counted. Gives back a buffer to reuse.
    fn send(&mut self, lines: Vec<u8>) -> Vec<u8> {
        if self.failed && self.destination.reopens() {
            if let Err(e) = self.destination.reopen() {
                self.counters.errors.inc();
                self.dropped(count_lines(&lines), &e);
                return lines;
            }
            self.failed = false;
        }
        let mut out = Vec::new();
        if self.torn {
            out.push(b'\n');
        }
        let notice_start = out.len();
        if let (Some(gap), Some(siem)) = (&self.gap, &self.siem) {
            let output = escape_bytes(self.destination.name().as_bytes());
            let notice = Event::OutputDropped {
                time: Utc::now(),
                output: &output,
                dropped: gap.dropped,
                since: gap.since,
                error: &gap.error,
            };
            // Into a Vec: cannot fail.
            let _ = siem.write(&notice, &mut out);
        } else if let Some(gap) = &self.gap {
            let line = DroppedLine {
                time: rfc3339(Utc::now()),
                event: EventName::OutputDropped,
                output: &escape_bytes(self.destination.name().as_bytes()),
                dropped: gap.dropped,
                since: rfc3339(gap.since),
                error: &gap.error,
            };
            // Serializing plain strings and numbers cannot fail.
            if serde_json::to_writer(&mut out, &line).is_ok() {
                out.push(b'\n');
            }
        }
        // Where the caller's lines start in `out`: the notice is before.
        let notice_end = out.len();
        if out.is_empty() {
            out = lines;
        } else {
            out.extend_from_slice(&lines);
        }
        let mut done = 0;
        while done < out.len() {
            match self.destination.write(&out[done..]) {
                Ok(0) => {
                    self.failed_at(&out, done, (notice_start, notice_end), &io::Error::from(io::ErrorKind::WriteZero));
                    return out;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed_at(&out, done, (notice_start, notice_end), &e);
                    return out;
                }
            }
        }
        self.torn = false;
        if notice_end > notice_start {
            self.noticed(&out[notice_start..notice_end]);
        }
        if let Some(gap) = self.gap.take()
            && at_most_every(&mut self.recovered, WARN_EVERY)
        {
            info!("json output: writing to {} again; {} lines were dropped", self.destination.name(), gap.dropped);
        }
        out
    }

    /// `out[..done]` was written, the rest not; the notice, if any, is
    /// `out[notice.0..notice.1]`.
    fn failed_at(&mut self, out: &[u8], done: usize, notice: (usize, usize), error: &io::Error) {
        let (notice_start, notice_end) = notice;
        self.counters.errors.inc();
        self.failed = true;
        let written = &out[..done];
        let partial = written.iter().rev().position(|&b| b == b'\n').unwrap_or(written.len());
        if partial > 0 {
            // A line cut short: take it off again, or end it next time.
            self.torn = self.destination.cut(partial).is_err();
        } else if done > 0 {
            self.torn = false;
        }
        if done >= notice_end {
            // The notice went out: what is lost now is a new gap.
            self.gap = None;
            if notice_end > notice_start {
                self.noticed(&out[notice_start..notice_end]);
            }
        }
        self.dropped(count_lines(&out[done.max(notice_end)..]), error);
    }

    /// Keeps a notice written for [`JsonOutput::take_notices`]; the oldest
    /// go when nobody takes them.
    fn noticed(&mut self, line: &[u8]) {
        if self.notices.len() >= 64 {
            self.notices.remove(0);
        }
        self.notices.push(line.to_vec());
    }

    fn dropped(&mut self, lines: u64, error: &io::Error) {
        self.counters.dropped.inc_by(lines);
        let gap = self.gap.get_or_insert_with(|| Gap { dropped: 0, since: Utc::now(), error: String::new() });
        gap.dropped += lines;
        gap.error = error.to_string();
        let total = gap.dropped;
        if at_most_every(&mut self.warned, WARN_EVERY) {
            warn!(
                "json output: writing to {}: {error}; {total} lines dropped so far, writing again when it can (said at most every {}s)",
                self.destination.name(),
                WARN_EVERY.as_secs()
            );
        }
    }
}

/// Whether to log now: not within `every` of the last time (`last`).
fn at_most_every(last: &mut Option<Instant>, every: Duration) -> bool {
    let now = Instant::now();
    if last.is_some_and(|at| now.duration_since(at) < every) {
        return false;
    }
    *last = Some(now);
    true
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use serde_json::Value;

    use super::*;

    /// A destination with room for `room` more bytes (None: unlimited).
    #[derive(Clone, Default)]
    struct Disk(Rc<RefCell<DiskState>>);

    #[derive(Default)]
    struct DiskState {
        bytes: Vec<u8>,
        room: Option<usize>,
        reopened: u32,
    }

    impl Disk {
        fn text(&self) -> String {
            String::from_utf8(self.0.borrow().bytes.clone()).unwrap()
        }

        fn room(&self, room: Option<usize>) {
            self.0.borrow_mut().room = room;
        }

        fn reopened(&self) -> u32 {
            self.0.borrow().reopened
        }
    }

    impl Destination for Disk {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut state = self.0.borrow_mut();
            let n = match state.room {
                Some(0) => return Err(io::Error::from_raw_os_error(libc::ENOSPC)),
                Some(room) => room.min(bytes.len()),
                None => bytes.len(),
            };
            state.bytes.extend_from_slice(&bytes[..n]);
            if let Some(room) = &mut state.room {
                *room -= n;
            }
            Ok(n)
        }

        fn reopen(&mut self) -> io::Result<()> {
            self.0.borrow_mut().reopened += 1;
            Ok(())
        }

        fn cut(&mut self, n: usize) -> io::Result<()> {
            let mut state = self.0.borrow_mut();
            let len = state.bytes.len();
            state.bytes.truncate(len - n);
            if let Some(room) = &mut state.room {
                *room += n;
            }
            Ok(())
        }

        fn name(&self) -> String {
            "/var/log/test.jsonl".into()
        }

        fn reopens(&self) -> bool {
            true
        }
    }

    fn line(out: &mut JsonOutput, n: u32) {
        writeln!(out, "{{\"event\":\"listen\",\"n\":{n}}}").unwrap();
    }

    fn parsed(text: &str) -> Vec<Value> {
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect()
    }

    #[test]
    fn a_full_disk_drops_whole_lines_counts_them_and_says_so_after() {
        let disk = Disk::default();
        let counters = OutputCounters::default();
        let mut out = JsonOutput::new(Box::new(disk.clone()), counters.clone());
        line(&mut out, 1);
        out.flush().unwrap();
        // Room for half a line: the half written is cut off again.
        disk.room(Some(10));
        line(&mut out, 2);
        line(&mut out, 3);
        out.flush().unwrap();
        line(&mut out, 4);
        out.flush().unwrap();
        assert_eq!(counters.dropped.get(), 3);
        assert_eq!(counters.errors.get(), 2);
        assert_eq!(out.unreported_drops(), 3);
        assert_eq!(disk.text().lines().count(), 1, "only whole lines: {:?}", disk.text());
        assert!(disk.reopened() >= 1, "a failed file is reopened before the next try");

        disk.room(None);
        line(&mut out, 5);
        out.flush().unwrap();
        let lines = parsed(&disk.text());
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["n"], 1);
        assert_eq!(lines[1]["event"], EventName::OutputDropped.as_str());
        assert_eq!(lines[1]["dropped"], 3);
        assert_eq!(lines[1]["output"], "/var/log/test.jsonl");
        assert!(lines[1]["error"].as_str().unwrap().contains("No space left"), "{}", lines[1]);
        assert!(lines[1]["since"].is_string() && lines[1]["time"].is_string());
        assert_eq!(lines[2]["n"], 5);
        assert_eq!(out.unreported_drops(), 0);
        let notices = out.take_notices();
        assert_eq!(notices.len(), 1);
        assert_eq!(serde_json::from_slice::<Value>(&notices[0]).unwrap(), lines[1], "the notice, as written");
        assert!(out.take_notices().is_empty());

        // The next gap is a new count.
        disk.room(Some(0));
        line(&mut out, 6);
        out.flush().unwrap();
        disk.room(None);
        line(&mut out, 7);
        out.flush().unwrap();
        let lines = parsed(&disk.text());
        assert_eq!(lines[3]["dropped"], 1, "{lines:?}");
        assert_eq!(counters.dropped.get(), 4);
    }

    #[test]
    fn a_notice_cut_short_is_written_again_whole() {
        let disk = Disk::default();
        let counters = OutputCounters::default();
        let mut out = JsonOutput::new(Box::new(disk.clone()), counters.clone());
        disk.room(Some(0));
        line(&mut out, 1);
        out.flush().unwrap();
        disk.room(Some(20)); // part of the notice
        line(&mut out, 2);
        out.flush().unwrap();
        disk.room(None);
        line(&mut out, 3);
        out.flush().unwrap();
        let lines = parsed(&disk.text());
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            (lines[0]["event"].as_str(), lines[0]["dropped"].as_u64()),
            (Some(EventName::OutputDropped.as_str()), Some(2))
        );
        assert_eq!(lines[1]["n"], 3);
    }

    /// With `[output] format = "ecs"` or `"ocsf"`, the notice is a line
    /// of that schema too, the gap's facts in its native names.
    #[test]
    fn the_notice_is_in_the_configured_format() {
        for format in [LineFormat::Ecs, LineFormat::Ocsf] {
            let disk = Disk::default();
            let mut out = JsonOutput::new(Box::new(disk.clone()), OutputCounters::default());
            out.set_format(format);
            disk.room(Some(0));
            line(&mut out, 1);
            out.flush().unwrap();
            disk.room(None);
            line(&mut out, 2);
            out.flush().unwrap();
            let lines = parsed(&disk.text());
            assert_eq!(lines.len(), 2, "{lines:?}");
            let notice = &lines[0];
            let (extra, action) = match format {
                LineFormat::Ecs => (&notice["watcher"], &notice["event"]["action"]),
                _ => (&notice["unmapped"], &notice["metadata"]["event_code"]),
            };
            assert_eq!(action, "output_dropped", "{notice}");
            assert_eq!(extra["dropped"], 1, "{notice}");
            assert_eq!(extra["output"], "/var/log/test.jsonl", "{notice}");
            assert!(extra["error"].as_str().unwrap().contains("No space left"), "{notice}");
            if format == LineFormat::Ocsf {
                assert_eq!((notice["class_uid"].as_u64(), notice["status_id"].as_u64()), (Some(4001), Some(2)));
            } else {
                assert_eq!(notice["event"]["outcome"], "failure", "{notice}");
            }
            assert_eq!(lines[1]["n"], 2);
        }
    }

    #[test]
    fn lines_wait_for_their_newline_and_a_flush() {
        let disk = Disk::default();
        let mut out = JsonOutput::new(Box::new(disk.clone()), OutputCounters::default());
        out.write_all(b"{\"a\":").unwrap();
        out.flush().unwrap();
        assert_eq!(disk.text(), "");
        out.write_all(b"1}\n{\"b\"").unwrap();
        assert_eq!(disk.text(), "", "written at the flush, not before");
        out.flush().unwrap();
        assert_eq!(disk.text(), "{\"a\":1}\n");
        out.write_all(b":2}\n").unwrap();
        drop(out);
        assert_eq!(disk.text(), "{\"a\":1}\n{\"b\":2}\n", "dropping the last clone writes the rest");
    }

    #[test]
    fn the_file_is_private_and_reopens_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let counters = OutputCounters::default();
        let mut out = JsonOutput::file(&path, FileMode::default(), counters.clone()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        line(&mut out, 1);
        out.flush().unwrap();
        let rotated = dir.path().join("events.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        line(&mut out, 2);
        out.reopen().unwrap();
        line(&mut out, 3);
        out.flush().unwrap();
        assert_eq!(parsed(&std::fs::read_to_string(&rotated).unwrap()).len(), 2, "pending lines go to the old file");
        assert_eq!(parsed(&std::fs::read_to_string(&path).unwrap())[0]["n"], 3);
        assert_eq!(mode(&path), 0o600);

        // An existing file gets the mode too; a new mode applies at retarget.
        let other = dir.path().join("other.jsonl");
        std::fs::write(&other, "").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o666)).unwrap();
        out.retarget(&other, FileMode(0o640)).unwrap();
        assert_eq!(mode(&other), 0o640);
        line(&mut out, 4);
        out.flush().unwrap();
        assert_eq!(parsed(&std::fs::read_to_string(&other).unwrap())[0]["n"], 4);
        out.retarget(&other, FileMode(0o600)).unwrap();
        assert_eq!(mode(&other), 0o600);
        assert_eq!(counters.errors.get(), 0);
    }

    #[test]
    fn a_reopen_that_fails_names_the_path_and_the_next_write_tries_again() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("events.jsonl");
        let counters = OutputCounters::default();
        let mut out = JsonOutput::file(&path, FileMode::default(), counters.clone()).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        let e = format!("{:#}", out.reopen().unwrap_err());
        assert!(e.contains(&path.display().to_string()) && e.contains("No such file"), "{e}");
        line(&mut out, 1);
        out.flush().unwrap();
        assert_eq!((counters.errors.get(), counters.dropped.get()), (2, 1));
        std::fs::create_dir(&sub).unwrap();
        line(&mut out, 2);
        out.flush().unwrap();
        let lines = parsed(&std::fs::read_to_string(&path).unwrap());
        assert_eq!((lines[0]["dropped"].as_u64(), lines[1]["n"].as_u64()), (Some(1), Some(2)), "{lines:?}");
    }
}
