//! Benchmarks (filled in by the bench work).
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark: latency.
    pub which: Vec<String>,
}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("no benchmark yet")
}
