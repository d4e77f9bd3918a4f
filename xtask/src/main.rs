//! Project tasks: `cargo xtask setup | build | run | test | guest | bench | install | fuzz`.
mod bench;
mod fuzz;
mod guest;
mod install;
mod setup;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "watcher's build, test and bench tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building watcher needs (rust-src for the nightly,
    /// bpf-linker built against the nightly's LLVM), skipping what is there.
    Setup {
        /// Also install the Debian packages the tests and benches use.
        #[arg(long)]
        test_deps: bool,
    },
    /// Set up, then build target/release/watcher.
    Build,
    /// Set up, build, then run watcher with these arguments (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up (with test packages), build, and run every test against the
    /// real kernel, then the guest scenario on Debian 12's kernel (see
    /// `guest`). Under CI=true a test that cannot load BPF fails, and so
    /// does a guest that cannot run.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, then boot Debian 12's kernel in a qemu guest
    /// (virtme-ng; KVM, else TCG) and run tests/guest/scenario.py there
    /// with the built watcher; fails on any failed check.
    Guest,
    /// Measure watcher against its peers; see BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Set up, build, then install the daemon as a systemd service:
    /// the binary, watcher.service, and /etc/watcher/watcher.toml if absent.
    Install(install::InstallArgs),
    /// Fuzz the record decoder and the config parser (cargo-fuzz, installed
    /// if missing) for a fixed number of inputs each; fails on a crash.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup { test_deps } => setup::setup(test_deps),
        Task::Build => setup::setup(false).and_then(|()| util::build_release()),
        Task::Run { args } => {
            setup::setup(false).and_then(|()| util::build_release()).and_then(|()| util::run_watcher(&args))
        }
        Task::Test { args } => setup::setup(true)
            .and_then(|()| util::check_format_and_lints())
            .and_then(|()| util::build_release())
            .and_then(|()| {
                let mut test =
                    ["test", "--release", "--workspace", "--exclude", "watcher-ebpf"].map(String::from).to_vec();
                test.extend(args.iter().cloned());
                util::cargo(&test)
            })
            .and_then(|()| {
                // The other way of carrying syscall arguments, which kernels
                // older than 6.1 take: kept from the entry tracepoints in
                // maps. The tests of what those arguments give, again.
                let mut test = ["test", "--release", "-p", "watcher", "--test", "coverage", "--test", "kernel_log"]
                    .map(String::from)
                    .to_vec();
                test.extend(args);
                eprintln!("xtask: again with WATCHER_NO_SYSCALL_REGISTERS=1 (the entry tracepoints' maps)");
                util::cargo_with_env(&test, &[("WATCHER_NO_SYSCALL_REGISTERS", "1")])
            })
            .and_then(|()| guest::guest(util::is_ci())),
        Task::Guest => {
            setup::setup(false).and_then(|()| util::build_release()).and_then(|()| guest::guest(util::is_ci()))
        }
        Task::Bench(args) => setup::setup(true).and_then(|()| util::build_release()).and_then(|()| bench::run(args)),
        Task::Install(args) => {
            setup::setup(false).and_then(|()| util::build_release()).and_then(|()| install::install(&args))
        }
        Task::Fuzz(args) => setup::setup(false).and_then(|()| fuzz::fuzz(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
