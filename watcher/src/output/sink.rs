//! Where reports go: `watch` prints them ([`Printer`]); `daemon` also feeds
//! its listener table, allowlist and outputs.
use std::io::{self, Write};

use chrono::{DateTime, Utc};

use crate::{
    enrich::report::Report,
    kernel::loader::Attached,
    output::format::Printer,
    record::decode::Record,
    snapshot::{
        holders::{self, HolderInfo},
        sock_diag::ExistingSocket,
    },
    state::lifecycle::Change,
};

/// What the pipeline itself holds that a sink may report (the daemon's
/// metrics).
#[derive(Clone, Debug, Default)]
pub struct PipelineStats {
    /// Processes in the process table.
    pub processes: usize,
    /// What the kernel programs could not do since the last tick, by kind.
    pub program_errors: Vec<(watcher_common::ProgramError, u64)>,
}

pub trait Sink {
    /// Whether this sink refuses binds in the kernel: the loader then sizes
    /// the enforcement maps (they hold nothing otherwise).
    fn enforces(&self) -> bool {
        false
    }
    /// Whether it also refuses listen() and raw and packet sockets
    /// (`enforce`, where the kernel has BPF LSM): the loader then attaches
    /// enforcement's LSM hooks, which refuse nothing until `attached` has
    /// filled the maps.
    fn enforces_calls(&self) -> bool {
        false
    }
    /// Once the watching programs are attached, before the ready line: a
    /// sink that enforces fills its maps and attaches its programs here.
    fn attached(&mut self, _attached: &mut Attached) -> anyhow::Result<()> {
        Ok(())
    }
    /// Before anything else (a table's header).
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// A live event, its process named.
    fn report(&mut self, report: &Report<'_>) -> io::Result<()>;
    /// A socket that was already there when watching began, and every
    /// process that holds it (none: a kernel socket).
    fn existing(
        &mut self,
        time: DateTime<Utc>,
        socket: &ExistingSocket,
        holders: &[HolderInfo],
        netns: Option<u64>,
    ) -> io::Result<()>;
    /// Whether the pipeline should follow the holders of the listeners it
    /// reports and say (`lifecycle`) when they all went and others hold one.
    /// The daemon follows them in its own listener table.
    fn follows_holders(&self) -> bool {
        false
    }
    /// A change of the listeners' lifecycle the pipeline derived.
    fn lifecycle(&mut self, _time: DateTime<Utc>, _change: &Change) -> io::Result<()> {
        Ok(())
    }
    /// A fork, exec or exit, once the process table has it.
    fn process(&mut self, _record: &Record) -> io::Result<()> {
        Ok(())
    }
    /// Records the kernel could not deliver.
    fn lost(&mut self, count: u64, total: u64, time: DateTime<Utc>) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// Once before the ready line, then once a second, for upkeep.
    fn tick(&mut self, _stats: &PipelineStats) -> io::Result<()> {
        Ok(())
    }
    /// SIGHUP: whether to go on (a daemon reloads) or stop (a terminal hung up).
    fn hangup(&mut self) -> bool {
        false
    }
}

impl<W: Write> Sink for Printer<W> {
    fn start(&mut self) -> io::Result<()> {
        self.header()
    }

    fn report(&mut self, report: &Report<'_>) -> io::Result<()> {
        Printer::report(self, report)
    }

    fn existing(
        &mut self,
        time: DateTime<Utc>,
        socket: &ExistingSocket,
        holders: &[HolderInfo],
        netns: Option<u64>,
    ) -> io::Result<()> {
        holders::rows(holders).try_for_each(|holder| self.existing_socket(time, socket, holder, netns))
    }

    fn lost(&mut self, count: u64, total: u64, time: DateTime<Utc>) -> io::Result<()> {
        Printer::lost(self, count, total, time)
    }

    fn follows_holders(&self) -> bool {
        true
    }

    fn lifecycle(&mut self, time: DateTime<Utc>, change: &Change) -> io::Result<()> {
        self.change(time, change)
    }

    fn flush(&mut self) -> io::Result<()> {
        Printer::flush(self)
    }
}
