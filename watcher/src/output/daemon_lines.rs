//! The daemon's one output path: each typed [`Event`] is written once as a
//! line — watcher's own JSON, or ECS or OCSF as `[output] format` says —
//! to stdout or the `[output]` file, and handed with that line to the
//! fleet's outputs (metrics, syslog). No output reads another's text.
use std::io::{self, Write};

use crate::{
    config::LineFormat,
    output::{
        event::Event,
        fleet::Fleet,
        format::{Format, Printer},
        siem::{Schema, Siem},
    },
};

pub struct DaemonLines<W: Write> {
    /// Renders live, existing and lost events; its buffer holds one line.
    printer: Printer<Vec<u8>>,
    /// ECS or OCSF instead of the native JSON.
    siem: Option<Siem>,
    out: W,
    pub fleet: Fleet,
}

impl<W: Write> DaemonLines<W> {
    pub fn new(out: W, fleet: Fleet, format: LineFormat) -> Self {
        Self {
            printer: Printer::new(Format::Json, Vec::with_capacity(4096)),
            siem: Schema::of(format).map(Siem::new),
            out,
            fleet,
        }
    }

    /// A reload's `[output] format`: the next line is in it.
    pub fn set_format(&mut self, format: LineFormat) {
        if Schema::of(format) != self.siem.as_ref().map(Siem::schema) {
            self.siem = Schema::of(format).map(Siem::new);
        }
    }

    pub fn emit(&mut self, event: &Event<'_>) -> io::Result<()> {
        self.printer.out_mut().clear();
        match (&self.siem, event) {
            (Some(siem), _) => siem.write(event, self.printer.out_mut())?,
            (None, Event::Live(report)) => self.printer.report(report)?,
            (None, Event::Existing { time, socket, holder, netns }) => {
                self.printer.existing_socket(*time, socket, *holder, *netns)?
            }
            (None, Event::Lost { time, count, total }) => self.printer.lost(*count, *total, *time)?,
            (None, other) => other.write_json(self.printer.out_mut())?,
        }
        let line = self.printer.out_mut();
        self.fleet.event(event, line);
        self.out.write_all(line)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
