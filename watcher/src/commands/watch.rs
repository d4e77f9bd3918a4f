//! `watcher watch`: the pipeline, printing to stdout as a table or JSON lines.
use std::io;

use crate::{
    cli::WatchArgs,
    kernel::privileges,
    output::format::{Format, Printer},
    pipeline::{PipelineOptions, run_pipeline},
};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    privileges::check()?;
    let format = if args.json { Format::Json } else { Format::Table };
    let printer = Printer::new(format, io::BufWriter::new(io::stdout().lock()));
    let options = PipelineOptions {
        filter: args.filter(),
        accept: args.accept,
        snapshot: !args.no_snapshot,
        stop_when_stdout_closes: true,
    };
    run_pipeline(options, printer).await
}
