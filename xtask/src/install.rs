//! `cargo xtask install`: the daemon as a systemd service. Copies the binary,
//! the unit file (with ExecStart pointing at that binary) and, when there is
//! none yet, a configuration and the logrotate snippet for its json_file;
//! never overwrites an administrator's config or snippet.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{self, workspace_root};

const UNIT: &str = "watcher/systemd/watcher.service";
const LOGROTATE: &str = "watcher/systemd/watcher.logrotate";
const UNIT_BINARY: &str = "/usr/local/sbin/watcher";

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Stage the files under this directory instead of / (for packaging);
    /// systemd is not told then.
    #[arg(long, default_value = "/")]
    pub destdir: PathBuf,
    /// Where the binary goes (the unit's ExecStart follows it).
    #[arg(long, default_value = UNIT_BINARY)]
    pub bin: PathBuf,
}

pub fn install(args: &InstallArgs) -> anyhow::Result<()> {
    if !args.bin.is_absolute() {
        bail!("--bin must be an absolute path, not {}", args.bin.display());
    }
    let staged = |path: &Path| args.destdir.join(path.strip_prefix("/").unwrap_or(path));

    let binary = staged(&args.bin);
    copy_file(&util::watcher_binary(), &binary, 0o755)?;

    let unit_text = fs::read_to_string(workspace_root().join(UNIT)).with_context(|| format!("reading {UNIT}"))?;
    if !unit_text.contains(UNIT_BINARY) {
        bail!("{UNIT} no longer names {UNIT_BINARY} in ExecStart; update xtask/src/install.rs");
    }
    let unit = staged(Path::new("/etc/systemd/system/watcher.service"));
    write_file(&unit, &unit_text.replace(UNIT_BINARY, &args.bin.display().to_string()), 0o644)?;

    // The snippet names paths an administrator may have edited (json_file).
    let logrotate = staged(Path::new("/etc/logrotate.d/watcher"));
    if logrotate.exists() {
        eprintln!("kept {} (already there)", logrotate.display());
    } else {
        copy_file(&workspace_root().join(LOGROTATE), &logrotate, 0o644)?;
    }

    let config = staged(Path::new("/etc/watcher/watcher.toml"));
    if config.exists() {
        eprintln!("kept {} (already there)", config.display());
    } else {
        copy_file(&workspace_root().join("watcher.example.toml"), &config, 0o600)?;
        eprintln!(
            "wrote the example configuration to {}: replace it with what this host runs, e.g.\n  {} baseline > {}",
            config.display(),
            args.bin.display(),
            config.display()
        );
    }

    if args.destdir == Path::new("/") && Path::new("/run/systemd/system").exists() {
        util::run(Command::new("systemctl").arg("daemon-reload"))?;
        eprintln!("installed; start it with: systemctl enable --now watcher");
    } else {
        eprintln!(
            "installed under {} (systemd not told: not running here, or a staging directory)",
            args.destdir.display()
        );
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_bytes(to, &bytes, mode)
}

fn write_file(to: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    write_bytes(to, text.as_bytes(), mode)
}

/// Writes through a temporary file and a rename, so a running binary or a
/// unit systemd is reading is replaced whole, never half-written.
fn write_bytes(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = to.parent().context("an install path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = to.with_extension("xtask-new");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    eprintln!("installed {}", to.display());
    Ok(())
}
