//! `watcher watch`: the pipeline, printing to stdout as a table, JSON
//! lines, or ECS / OCSF lines.
use std::io;

use crate::{
    cli::{WatchArgs, WatchFormat},
    kernel::privileges,
    output::{
        format::{Format, Printer},
        siem::{Schema, SiemPrinter},
    },
    pipeline::{PipelineOptions, run_pipeline},
};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    privileges::check()?;
    let out = io::BufWriter::new(io::stdout().lock());
    let options = PipelineOptions {
        filter: args.filter(),
        accept: args.accept,
        light: args.light,
        snapshot: !args.no_snapshot,
        ring_bytes: args.ring.bytes(),
        stop_when_stdout_closes: true,
    };
    let (native, schema) = match args.output_format() {
        WatchFormat::Table => (Format::Table, None),
        WatchFormat::Json => (Format::Json, None),
        WatchFormat::Ecs => (Format::Json, Some(Schema::Ecs)),
        WatchFormat::Ocsf => (Format::Json, Some(Schema::Ocsf)),
    };
    match schema {
        None => run_pipeline(options, Printer::new(native, out)).await,
        Some(schema) => run_pipeline(options, SiemPrinter::new(schema, out)).await,
    }
}
