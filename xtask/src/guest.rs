//! `cargo xtask guest`: boots Debian 12's kernel (6.1) in a qemu guest with
//! virtme-ng and runs tests/guest/scenario.py there against the freshly
//! built target/release/watcher. The guest sees this machine's root
//! read-only over 9p (so the build tree is at the same path) and writes
//! into one read-write folder; its console mangles long output, so the
//! scenario writes its results into files there and this side checks them.
//! Facts behind the choices: shared/KERNEL-AND-TOOLCHAIN.md.
use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    setup,
    util::{path_with_cargo_bin, target_dir, watcher_binary, workspace_root},
};

/// How long a KVM guest may take to run its first command. A working
/// KVM guest does it in seconds; a nested one here hangs after "Probing
/// EDD" forever, so this is the bound after which TCG is tried.
const KVM_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Under TCG the boot takes about 20 s on an idle machine, more when the
/// other cores are busy building.
const TCG_BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The whole scenario: loading and verifying every program is emulated
/// too (minutes), each check then takes seconds. The scenario has its own
/// watchdog at 20 minutes, which dumps where it hung and exits.
const RUN_TIMEOUT: Duration = Duration::from_secs(22 * 60);
/// How long the scenario's guest may write nothing at all into its folder
/// (results, watcher's logs copied every 15 s, measurements) before it is
/// taken for wedged. A healthy run writes something every few seconds; the
/// slowest quiet stretch, a watcher verifying its programs, still logs
/// each one. Seen twice in about ten runs under TCG (once in CI): qemu
/// busy, the guest silent, for the rest of the budget. A script with
/// longer quiet waits of its own passes its bound to [`run_script`].
pub const STALL_TIMEOUT: Duration = Duration::from_secs(8 * 60);
/// A wedged TCG guest is booted again this many times, each try's files
/// kept in OUT/stalled-N and its diagnostics printed; checks that fail are
/// never retried. Two: a TCG guest has been seen wedged for good (soft
/// lockups on both vCPUs in `syscall_trace_enter` while watcher attached
/// its syscall tracepoints, 2026-12-02) and pass on the next boot; each
/// try costs at most STALL_TIMEOUT and a boot.
const STALL_RETRIES: u32 = 2;
/// How long the guest may take to power off once the scenario has written
/// its last line: past it the results are in, and qemu is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(90);

/// Runs the scenario in the guest and fails unless every check passed.
pub fn guest(ci: bool) -> anyhow::Result<()> {
    let tools = match setup::ensure_guest_tools() {
        Ok(tools) => tools,
        Err(e) if !ci => {
            eprintln!("xtask: SKIP guest kernel run: {e:#} (under CI=true this fails)");
            return Ok(());
        }
        Err(e) => return Err(e.context("the guest kernel run cannot start, and CI=true")),
    };
    let out = fresh_out_dir("guest")?;
    // A space in its name checks that exe survives one.
    let flash = compile_program(&out, "flash_listener.c", "flash listener")?;
    let daemonizing = compile_program(&out, "daemonizing_listener.c", "daemonizing_listener")?;
    let script = workspace_root().join("tests/guest/scenario.py");
    run_script(&tools, &out, &script, &[&flash, &daemonizing], scenario_finished, STALL_TIMEOUT)?;
    check_results(&out)
}

/// target/NAME, emptied: the guest's one read-write folder.
pub fn fresh_out_dir(name: &str) -> anyhow::Result<PathBuf> {
    let watcher = watcher_binary();
    if !watcher.is_file() {
        bail!("{} is missing: build it first (cargo xtask build)", watcher.display());
    }
    let out = target_dir().join(name);
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    Ok(out)
}

/// Boots the guest (KVM first, then TCG) and runs `python3 SCRIPT WATCHER
/// OUT ARGS...` there, its output in OUT/scenario.log. `finished(out)` says
/// the script has written its last result: a guest that then does not
/// power off is killed, the results being in. A guest that writes nothing
/// for `stall_timeout` is taken for wedged (see [`STALL_TIMEOUT`]).
pub fn run_script(
    tools: &GuestTools,
    out: &Path,
    script: &Path,
    args: &[&Path],
    finished: fn(&Path) -> bool,
    stall_timeout: Duration,
) -> anyhow::Result<()> {
    // The guest runs one shell command; its first act says it is up.
    let booted = out.join("booted");
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let command = format!(
        "echo up > {booted} && /usr/bin/python3 {script} {watcher} {out} {args} > {out}/scenario.log 2>&1",
        booted = shell_quote(&booted),
        script = shell_quote(script),
        watcher = shell_quote(&watcher_binary()),
        out = shell_quote(out),
        args = args.join(" "),
    );
    let started = Instant::now();
    let kvm = Path::new("/dev/kvm").exists();
    let mut stalls = 0;
    let mut use_kvm = kvm;
    loop {
        let mode = if use_kvm { "KVM" } else { "TCG (--disable-kvm)" };
        eprintln!("xtask: booting {} under {mode}", tools.kernel.display());
        let boot_timeout = if use_kvm { KVM_BOOT_TIMEOUT } else { TCG_BOOT_TIMEOUT };
        match run_vng(tools, out, &command, use_kvm, (boot_timeout, stall_timeout), finished)? {
            Outcome::Finished => {
                eprintln!("xtask: guest run took {:.0} s", started.elapsed().as_secs_f64());
                return Ok(());
            }
            Outcome::NoBoot if use_kvm => {
                eprintln!("xtask: the {mode} guest did not come up (it must run its command within {boot_timeout:?})");
                let _ = fs::remove_file(&booted);
                use_kvm = false;
            }
            Outcome::NoBoot => {
                bail!("the guest kernel did not come up under KVM nor TCG (console: {})", out.join("vng.log").display())
            }
            Outcome::Stalled if stalls < STALL_RETRIES => {
                stalls += 1;
                let kept = set_aside(out, stalls)?;
                eprintln!(
                    "xtask: RETRY {stalls} of {STALL_RETRIES}: the guest wrote nothing for {stall_timeout:?} and was \
                     killed; its files are in {}; booting it again",
                    kept.display()
                );
            }
            Outcome::Stalled => bail!(
                "the guest wrote nothing for {stall_timeout:?}, {} times; killed (console in {})",
                stalls + 1,
                out.join("vng.log").display()
            ),
        }
    }
}

/// Binaries the guest needs to find at the same path as here, and the kernel.
pub struct GuestTools {
    pub vng: PathBuf,
    pub kernel: PathBuf,
}

enum Outcome {
    /// The guest ran the command to its end (whatever the checks said).
    Finished,
    /// The guest did not start the command in time; it was killed.
    NoBoot,
    /// The guest started, then wrote nothing for its stall timeout; it was
    /// killed and its diagnostics printed.
    Stalled,
}

/// What the guest has written so far, as one number that grows: the sizes
/// of the files in its folder (the console excepted, which a wedged
/// kernel may go on filling with its own reports).
fn written(out: &Path) -> u64 {
    let Ok(dir) = fs::read_dir(out) else { return 0 };
    dir.filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with("vng"))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Moves a stalled try's files (console included) into OUT/stalled-N.
fn set_aside(out: &Path, n: u32) -> anyhow::Result<PathBuf> {
    let kept = out.join(format!("stalled-{n}"));
    fs::create_dir_all(&kept).with_context(|| format!("creating {}", kept.display()))?;
    for entry in fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let entry = entry?;
        let path = entry.path();
        // The programs the guest runs (built here) stay in place.
        if path.is_file() && !is_executable(&path) {
            let to = kept.join(entry.file_name());
            fs::rename(&path, &to).with_context(|| format!("moving {} to {}", path.display(), to.display()))?;
        }
    }
    Ok(kept)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

fn run_vng(
    tools: &GuestTools,
    out: &Path,
    command: &str,
    kvm: bool,
    (boot_timeout, stall_timeout): (Duration, Duration),
    finished: fn(&Path) -> bool,
) -> anyhow::Result<Outcome> {
    let vng = &tools.vng;
    let log_path = out.join(if kvm { "vng-kvm.log" } else { "vng.log" });
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(vng);
    cmd.arg("--run").arg(&tools.kernel);
    if !kvm {
        cmd.arg("--disable-kvm");
    }
    // --verbose: the kernel's console goes to the log, so that a wedged
    // guest's lockup, RCU stall or hung-task reports are there to read.
    cmd.args(["--verbose", "--user", "root", "--memory", "2G", "--cpus", "2", "--rwdir"])
        .arg(out)
        .arg("--")
        .arg(command)
        .env("PATH", path_with_cargo_bin())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the console log's fd")?)
        .stderr(log)
        // Its own process group, so that a hung guest (qemu under vng) is
        // killed whole.
        .process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("starting {}", vng.display()))?;
    let booted = out.join("booted");
    let started = Instant::now();
    let mut done_since: Option<Instant> = None;
    let (mut last_written, mut last_growth) = (written(out), Instant::now());
    loop {
        if let Some(status) = child.try_wait().context("waiting for vng")? {
            if !booted.exists() {
                eprintln!(
                    "xtask: vng exited ({status}) before the guest ran its command; console in {}",
                    log_path.display()
                );
                return Ok(Outcome::NoBoot);
            }
            if !status.success() {
                eprintln!("xtask: vng exited with {status} (console in {})", log_path.display());
            }
            return Ok(Outcome::Finished);
        }
        let waited = started.elapsed();
        if !booted.exists() && waited > boot_timeout {
            kill_group(&mut child);
            return Ok(Outcome::NoBoot);
        }
        if finished(out) {
            let since = *done_since.get_or_insert_with(Instant::now);
            if since.elapsed() > POWEROFF_GRACE {
                eprintln!(
                    "xtask: the scenario finished but the guest did not power off within {POWEROFF_GRACE:?}; killed it"
                );
                kill_group(&mut child);
                return Ok(Outcome::Finished);
            }
        }
        let now_written = written(out);
        if now_written != last_written {
            (last_written, last_growth) = (now_written, Instant::now());
        } else if booted.exists() && last_growth.elapsed() > stall_timeout {
            kill_group(&mut child);
            eprintln!("xtask: the guest has written nothing for {stall_timeout:?}: wedged; what it left:");
            print_diagnostics(out, &log_path);
            return Ok(Outcome::Stalled);
        }
        if waited > RUN_TIMEOUT {
            kill_group(&mut child);
            print_diagnostics(out, &log_path);
            bail!("the guest run took longer than {RUN_TIMEOUT:?}; killed (console in {})", log_path.display());
        }
        // Polling two facts (a file, the child's exit) at a human pace:
        // neither has a notification this side could wait on.
        thread::sleep(Duration::from_millis(500));
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the group this code created for the child.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

/// Whether results.txt holds the scenario's last line.
fn scenario_finished(out: &Path) -> bool {
    fs::read_to_string(out.join("results.txt")).is_ok_and(|text| text.lines().any(|l| l == "DONE"))
}

/// What a failed or hung run leaves behind, printed so that CI's log alone
/// says where it went wrong (the folder is gone with CI's checkout).
pub fn print_diagnostics(out: &Path, console: &Path) {
    print_tail(&out.join("results.txt"), 200);
    print_tail(&out.join("scenario.log"), 80);
    let mut stderrs: Vec<PathBuf> =
        fs::read_dir(out).map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    stderrs.retain(|p| p.extension().is_some_and(|e| e == "stderr"));
    stderrs.sort();
    for path in &stderrs {
        print_tail(path, 40);
    }
    print_tail(console, 40);
}

fn print_tail(path: &Path, lines: usize) {
    let Ok(text) = fs::read_to_string(path) else {
        eprintln!("xtask: {} is missing or unreadable", path.display());
        return;
    };
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    eprintln!("xtask: --- {} (last {} of {} lines) ---", path.display(), all.len() - from, all.len());
    for line in &all[from..] {
        eprintln!("  {line}");
    }
}

/// The scenario's results: every line printed, the run failed on any
/// FAIL, on no PASS at all, or when the scenario did not reach its end.
fn check_results(out: &Path) -> anyhow::Result<()> {
    let path = out.join("results.txt");
    let Ok(text) = fs::read_to_string(&path) else {
        print_diagnostics(out, &out.join("vng.log"));
        bail!("the guest wrote no {}", path.display());
    };
    eprintln!("xtask: guest results ({}):", path.display());
    for line in text.lines() {
        eprintln!("  {line}");
    }
    let passed = text.lines().filter(|l| l.starts_with("PASS ")).count();
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL ")).collect();
    let finished = text.lines().any(|l| l == "DONE");
    if !failed.is_empty() || !finished || passed == 0 {
        print_diagnostics(out, &out.join("vng.log"));
        let stderr = out.join("watcher.stderr");
        bail!(
            "guest scenario on Debian 12's kernel: {passed} passed, {} failed{}; watcher's stderr in {}, scenario output in {}",
            failed.len(),
            if finished { "" } else { ", and it did not finish" },
            stderr.display(),
            out.join("scenario.log").display()
        );
    }
    eprintln!("xtask: guest scenario on Debian 12's kernel: all {passed} checks passed");
    Ok(())
}

/// A C program of tests/programs, built here (the guest has no writable
/// place for a compiler's output but `out`).
pub fn compile_program(out: &Path, source: &str, name: &str) -> anyhow::Result<PathBuf> {
    crate::util::compile_c(&format!("tests/programs/{source}"), out, name)
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
