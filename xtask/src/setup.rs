//! Installs what the build and the tests need, skipping what is already
//! there, so that a fresh machine and a warm one run the same commands.
//! The recipe for bpf-linker is the one in shared/KERNEL-AND-TOOLCHAIN.md.
use std::{fs, os::unix::fs::symlink, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{cargo_home_bin, output, run};

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the tests and benches drive: real peers and real daemons.
const TEST_PACKAGES: &[(&str, &str)] = &[
    // (package, a file it installs, to tell whether it is there)
    ("socat", "/usr/bin/socat"),
    ("iproute2", "/usr/bin/ss"),
    ("lsof", "/usr/bin/lsof"),
    ("util-linux", "/usr/bin/setpriv"),
    ("bpftrace", "/usr/bin/bpftrace"),
    ("python3", "/usr/bin/python3"),
    // systemd-analyze verifies the unit file.
    ("systemd", "/usr/bin/systemd-analyze"),
    // The daemon's syslog output is tested against a real rsyslogd that the
    // test starts on loopback with its own configuration.
    ("rsyslog", "/usr/sbin/rsyslogd"),
    // The shipped logrotate snippet is run by the real logrotate.
    ("logrotate", "/usr/sbin/logrotate"),
    // A real Prometheus scrapes the daemon's metrics (started by the test
    // on loopback with its own configuration; the package's own service is
    // enabled by its postinst where systemd runs).
    ("prometheus", "/usr/bin/prometheus"),
];

pub fn setup(test_deps: bool) -> anyhow::Result<()> {
    ensure_nightly_with_rust_src()?;
    ensure_component(NIGHTLY, "rustfmt")?;
    ensure_component("stable", "clippy")?;
    ensure_bpf_linker()?;
    if test_deps {
        ensure_packages(TEST_PACKAGES)?;
    }
    Ok(())
}

fn ensure_nightly_with_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]));
    match installed {
        Some(list) if list.lines().any(|l| l.starts_with("rust-src")) => {
            eprintln!("xtask: rust-src for {NIGHTLY}: present");
            Ok(())
        }
        Some(_) => run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY])),
        None => run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("no nightly toolchain, and installing one failed: the eBPF crate needs nightly for -Z build-std"),
    }
}

/// The checks of `cargo xtask test`: rustfmt from the nightly (rustfmt.toml
/// uses its unstable import grouping) and clippy from the stable toolchain.
fn ensure_component(toolchain: &str, component: &str) -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", toolchain]));
    if installed.is_some_and(|list| list.lines().any(|l| l.starts_with(component))) {
        eprintln!("xtask: {component} for {toolchain}: present");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", component, "--toolchain", toolchain]))
        .with_context(|| format!("installing {component} for the {toolchain} toolchain"))
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version"));
    if version.as_deref().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        eprintln!("xtask: bpf-linker {BPF_LINKER_VERSION}: present");
        return Ok(());
    }
    let (prefix, llvm_major) = llvm_prefix_for_nightly()?;
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the {NIGHTLY} toolchain's LLVM {llvm_major} (about a minute)"
    );
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--locked", "--force", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", &format!("llvm-{llvm_major}")])
        .env("LLVM_PREFIX", &prefix))
    .or_else(|_| {
        // --locked can fail when the published lock file names a yanked crate.
        run(Command::new("cargo")
            .args(["install", "bpf-linker", "--force", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &format!("llvm-{llvm_major}")])
            .env("LLVM_PREFIX", &prefix))
    })
    .context("building bpf-linker")?;
    eprintln!("xtask: bpf-linker installed in {}", cargo_home_bin().display());
    Ok(())
}

/// A folder that looks like an LLVM install to bpf-linker's build (a
/// `lib/libLLVM.so`) but is links to the nightly's own libLLVM, so that
/// bpf-linker emits bitcode that nightly rustc reads. It must outlive the
/// build: the binary finds libLLVM through its rpath.
fn llvm_prefix_for_nightly() -> anyhow::Result<(PathBuf, String)> {
    let sysroot = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))
        .context("asking the nightly rustc for its sysroot")?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    // libLLVM.so.22.1-rust-1.97.0-nightly → 22
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split(['.', '-'])
        .next()
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM version from {llvm}"))?
        .to_owned();
    let home = std::env::var_os("HOME").context("HOME not set")?;
    let prefix = PathBuf::from(home).join(".local/share/watcher/llvm-nightly");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib).with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", llvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        symlink(lib.join(&llvm), &link).with_context(|| format!("linking {}", link.display()))?;
    }
    Ok((prefix, major))
}

fn ensure_packages(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> =
        packages.iter().filter(|(_, file)| !PathBuf::from(file).exists()).map(|&(package, _)| package).collect();
    if missing.is_empty() {
        eprintln!("xtask: test packages: present");
        return Ok(());
    }
    if !nix_is_root() {
        bail!("installing {} needs root (apt-get)", missing.join(" "));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}
