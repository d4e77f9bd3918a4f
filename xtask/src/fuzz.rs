//! `cargo xtask fuzz`: runs each cargo-fuzz target of watcher/fuzz for a
//! fixed number of inputs (libFuzzer's -runs), failing on the first crash.
//! Installs cargo-fuzz when it is missing.
use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::util::{cargo_home_bin, run, workspace_root};

pub const TARGETS: [&str; 2] = ["decode_record", "parse_config"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Inputs to try per target.
    #[arg(long, default_value_t = 200_000)]
    pub runs: u64,
    /// Only this target (decode_record, parse_config); all by default.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
}

pub fn fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("watcher/fuzz");
    let scratch = std::env::temp_dir().join("watcher-fuzz-corpus");
    for target in TARGETS.iter().filter(|t| args.target.as_deref().is_none_or(|only| only == **t)) {
        // New inputs go to a scratch corpus, so the repository holds only
        // the seeds; the seeds directory is read, never written.
        let corpus = scratch.join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .current_dir(&fuzz_dir)
            // The fuzzed code never loads BPF: no need to build the eBPF
            // object, and the instrumentation flags must not reach it.
            .env("WATCHER_STUB_EBPF", "1");
        let seeds = fuzz_dir.join("seeds").join(target);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.args(["--", &format!("-runs={}", args.runs), "-max_len=4096", "-print_final_stats=1"]);
        eprintln!("fuzzing {target} for {} inputs", args.runs);
        run(&mut cmd).with_context(|| {
            format!("fuzz target {target} failed (its crashing input is under watcher/fuzz/artifacts/{target})")
        })?;
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if Path::new(&cargo_home_bin()).join("cargo-fuzz").is_file() {
        return Ok(());
    }
    eprintln!("installing cargo-fuzz");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}
