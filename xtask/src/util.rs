use std::{
    env,
    ffi::OsString,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Compiles the workspace's C program `source` (a path from the workspace
/// root) with `cc -O2` into `out`/`name`, and returns that path.
pub fn compile_c(source: &str, out: &std::path::Path, name: &str) -> anyhow::Result<PathBuf> {
    let src = workspace_root().join(source);
    let bin = out.join(name);
    let status = Command::new("cc").arg("-O2").arg("-o").arg(&bin).arg(&src).status().context("running cc")?;
    if !status.success() {
        bail!("compiling {} failed: {status}", src.display());
    }
    Ok(bin)
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn cargo_home_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with cargo's bin folder first, where `cargo install` put bpf-linker.
pub fn path_with_cargo_bin() -> OsString {
    let mut dirs = vec![cargo_home_bin()];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).expect("PATH entries hold no separator")
}

/// Runs a command, inheriting stdio, and fails with its name if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.env("PATH", path_with_cargo_bin()).status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout, or None if it could not run or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.env("PATH", path_with_cargo_bin()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn cargo(args: &[impl AsRef<std::ffi::OsStr>]) -> anyhow::Result<()> {
    cargo_with_env(args, &[])
}

/// [`cargo`] with these variables set for it and what it runs.
pub fn cargo_with_env(args: &[impl AsRef<std::ffi::OsStr>], vars: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args).current_dir(workspace_root());
    for (name, value) in vars {
        command.env(name, value);
    }
    run(&mut command)
}

/// `cargo +nightly fmt --check` on every crate (the eBPF crate is outside the
/// default members, so it is named), then clippy with warnings as errors.
pub fn check_format_and_lints() -> anyhow::Result<()> {
    run(Command::new("cargo").args(["+nightly", "fmt", "--all", "--check"]).current_dir(workspace_root()))
        .context("formatting differs from rustfmt.toml: run `cargo +nightly fmt --all`")?;
    run(Command::new("cargo").args(["+nightly", "fmt", "--check"]).current_dir(workspace_root().join("watcher-ebpf")))
        .context("formatting of watcher-ebpf differs from rustfmt.toml: run `cargo +nightly fmt` in watcher-ebpf")?;
    cargo(&["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"])
        .context("clippy found warnings")
}

pub fn build_release() -> anyhow::Result<()> {
    cargo(&["build", "--release", "--package", "watcher"])
}

/// Where cargo builds: CARGO_TARGET_DIR when set (relative to the
/// workspace, as cargo reads it), else target/ in the workspace.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

pub fn watcher_binary() -> PathBuf {
    target_dir().join("release/watcher")
}

pub fn run_watcher(args: &[String]) -> anyhow::Result<()> {
    run(Command::new(watcher_binary()).args(args))
}

/// CI=true (or 1): whatever cannot run is a failure, never a skip.
pub fn is_ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
