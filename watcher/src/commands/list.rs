//! `watcher list`: the sockets that already wait for others, each with every
//! process that holds it, as a table or as JSON lines (`event` =
//! `"existing"`), filtered like `watch`. The sockets come from
//! [`crate::snapshot::sock_diag`]; this module names the holders, filters and prints.
//!
//! One row (one JSON line) per (socket, holder) pair: a listener that a
//! parent shares with its forked workers has a row for each of them. A
//! socket that no process holds still has one row, its process fields null
//! (`-` in the table). Everything a process chooses (comm, exe, argv, UNIX
//! paths) is escaped with [`escape_bytes`], so no row can be forged.
use std::io::{self, Write as _};

use anyhow::Context as _;
use log::warn;

use crate::{
    cli::ListArgs,
    host::process::ProcessLookup,
    kernel::privileges,
    output::{existing, format::Format},
    policy::filter,
    snapshot::{holders, sock_diag},
};

pub fn run(args: &ListArgs) -> anyhow::Result<()> {
    privileges::check_list()?;
    let filter = args.filter();
    let format = if args.json { Format::Json } else { Format::Table };
    let mut lookup = ProcessLookup::default();
    let snapshot = sock_diag::take(lookup.proc_root(), &filter.pids)?;
    if snapshot.unreadable > 0 {
        warn!(
            "could not read the open files of {} process(es): sockets they hold may be listed without them",
            snapshot.unreadable
        );
    }
    let holders = holders::name_holders(&snapshot, &mut lookup);
    let rows = filter::rows(&snapshot, &holders, &filter);
    let mut out = io::BufWriter::new(io::stdout().lock());
    existing::print(&mut out, format, snapshot.netns, &rows).context("writing to stdout")?;
    out.flush().context("writing to stdout")
}
