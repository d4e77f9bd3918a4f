//! The SIEM formats' one writer: an [`Event`] read into its
//! [`Facts`] once, laid out as ECS or OCSF, one JSON object a line. The
//! daemon writes through [`Siem`] (see `daemon_lines`); `watch --format
//! ecs|ocsf` through [`SiemPrinter`], its sink.
use std::io::{self, Write};

use chrono::{DateTime, Utc};

use crate::{
    config::LineFormat,
    enrich::report::Report,
    output::{
        ecs,
        event::Event,
        facts::{Context, Facts},
        ocsf,
        sink::Sink,
    },
    snapshot::{
        holders::{self, HolderInfo},
        sock_diag::ExistingSocket,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    Ecs,
    Ocsf,
}

impl Schema {
    /// The schema of a line format; None for watcher's own JSON.
    pub fn of(format: LineFormat) -> Option<Self> {
        match format {
            LineFormat::Json => None,
            LineFormat::Ecs => Some(Self::Ecs),
            LineFormat::Ocsf => Some(Self::Ocsf),
        }
    }
}

pub struct Siem {
    schema: Schema,
    context: Context,
}

impl Siem {
    pub fn new(schema: Schema) -> Self {
        Self { schema, context: Context::default() }
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// The event as a JSON value of the schema.
    pub fn value(&self, event: &Event<'_>) -> serde_json::Value {
        let facts = Facts::of(event, &self.context);
        match self.schema {
            Schema::Ecs => ecs::document(&facts, &self.context),
            Schema::Ocsf => ocsf::event(&facts, &self.context),
        }
    }

    /// The event's line, newline included.
    pub fn write(&self, event: &Event<'_>, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, &self.value(event))?;
        out.write_all(b"\n")
    }
}

/// `watch --format ecs|ocsf`: every event as a line of the schema.
pub struct SiemPrinter<W: Write> {
    siem: Siem,
    out: W,
}

impl<W: Write> SiemPrinter<W> {
    pub fn new(schema: Schema, out: W) -> Self {
        Self { siem: Siem::new(schema), out }
    }
}

impl<W: Write> Sink for SiemPrinter<W> {
    fn report(&mut self, report: &Report<'_>) -> io::Result<()> {
        self.siem.write(&Event::Live(report), &mut self.out)
    }

    fn existing(
        &mut self,
        time: DateTime<Utc>,
        socket: &ExistingSocket,
        holders: &[HolderInfo],
        netns: Option<u64>,
    ) -> io::Result<()> {
        for holder in holders::rows(holders) {
            self.siem.write(&Event::Existing { time, socket, holder, netns }, &mut self.out)?;
        }
        Ok(())
    }

    fn lost(&mut self, count: u64, total: u64, time: DateTime<Utc>) -> io::Result<()> {
        self.siem.write(&Event::Lost { time, count, total }, &mut self.out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
