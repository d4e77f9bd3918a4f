//! The daemon's one output path: each typed [`Event`] is written once as a
//! JSON line, to stdout or the `[output]` file, and handed with that line
//! to the fleet's outputs (metrics, syslog). No output reads another's text.
use std::io::{self, Write};

use crate::output::{
    event::Event,
    fleet::Fleet,
    format::{Format, Printer},
};

pub struct DaemonLines<W: Write> {
    /// Renders live, existing and lost events; its buffer holds one line.
    printer: Printer<Vec<u8>>,
    out: W,
    pub fleet: Fleet,
}

impl<W: Write> DaemonLines<W> {
    pub fn new(out: W, fleet: Fleet) -> Self {
        Self { printer: Printer::new(Format::Json, Vec::with_capacity(4096)), out, fleet }
    }

    pub fn emit(&mut self, event: &Event<'_>) -> io::Result<()> {
        self.printer.out_mut().clear();
        match event {
            Event::Live(report) => self.printer.report(report)?,
            Event::Existing { time, socket, holder, netns } => {
                self.printer.existing_socket(*time, socket, *holder, *netns)?
            }
            Event::Lost { time, count, total } => self.printer.lost(*count, *total, *time)?,
            other => other.write_json(self.printer.out_mut())?,
        }
        let line = self.printer.out_mut();
        self.fleet.event(event, line);
        self.out.write_all(line)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
