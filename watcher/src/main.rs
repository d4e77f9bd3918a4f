use std::process::ExitCode;

use clap::Parser as _;
use watcher::cli::{Cli, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).format_target(false).init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("watcher: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => watcher::commands::watch::run(args).await,
            Command::List(args) => watcher::commands::list::run(&args),
            Command::Daemon(args) => watcher::commands::daemon::run(args).await,
            Command::Baseline(args) => watcher::commands::baseline::run(&args),
            Command::Doctor(args) => watcher::commands::doctor::run(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<watcher::commands::daemon::BadConfig>().is_some() => {
            eprintln!("watcher: error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, no backtrace.
            eprintln!("watcher: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
