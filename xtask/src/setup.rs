//! Installs what the build and the tests need, skipping what is already
//! there, so that a fresh machine and a warm one run the same commands.
//! The recipe for bpf-linker is the one in shared/KERNEL-AND-TOOLCHAIN.md.
use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::PathBuf,
    process::Command,
};

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
    // test starts on loopback with its own configuration; tests/debian starts
    // it too, beside the seven other daemons of a minimal Debian server.
    ("rsyslog", "/usr/sbin/rsyslogd"),
    // The shipped logrotate snippet is run by the real logrotate.
    ("logrotate", "/usr/sbin/logrotate"),
    // A real Prometheus scrapes the daemon's metrics (started by the test
    // on loopback with its own configuration; the package's own service is
    // enabled by its postinst where systemd runs).
    ("prometheus", "/usr/bin/prometheus"),
    // tests/debian (issue 11): the daemons a minimal Debian server runs, each
    // started directly by the tests (no systemd), never by the packages.
    ("rpcbind", "/usr/sbin/rpcbind"),
    ("nfs-common", "/sbin/rpc.statd"),
    ("openssh-server", "/usr/sbin/sshd"),
    ("exim4-daemon-light", "/usr/sbin/exim4"),
    ("apache2", "/usr/sbin/apache2ctl"),
    ("canna", "/usr/sbin/cannaserver"),
    ("lpr", "/usr/sbin/lpd"),
];

/// Debian's hook that invoke-rc.d and deb-systemd-invoke ask before a
/// package's maintainer scripts start or restart a service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

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
    // The daemons' postinst scripts would start them (rpcbind on port 111,
    // exim4 on 25, apache2 on 80, ...): the tests start their own and a
    // running copy would take their ports. Forbid every start while apt runs.
    let _no_starts = ForbidServiceStarts::install(PathBuf::from(POLICY_RC_D))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        // Keep any configuration file already there, ask nothing.
        .args(["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// A policy-rc.d that answers 101 ("action forbidden") to every request,
/// present while it lives. One already there (a container image's, an
/// administrator's) is left as it is and in force.
struct ForbidServiceStarts {
    path: PathBuf,
    ours: bool,
}

impl ForbidServiceStarts {
    fn install(path: PathBuf) -> anyhow::Result<Self> {
        if path.exists() {
            eprintln!("xtask: {} present: apt's service starts follow it", path.display());
            return Ok(Self { path, ours: false });
        }
        fs::write(&path, "#!/bin/sh\n# Written by `cargo xtask setup` while it installs packages.\nexit 101\n")
            .with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
        Ok(Self { path, ours: true })
    }
}

impl Drop for ForbidServiceStarts {
    fn drop(&mut self) {
        if self.ours
            && let Err(e) = fs::remove_file(&self.path)
        {
            eprintln!("xtask: warning: removing {}: {e}", self.path.display());
        }
    }
}

fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

/// Debian packages the guest kernel run needs: qemu, busybox (virtme-ng's
/// init uses it), bpftool (the scenario checks what the kernel says is
/// attached). The kernel itself is looked for separately.
const GUEST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("bpftool", "/usr/sbin/bpftool"),
];
/// Debian's generic kernel: the `cloud` flavour has no 9p, which
/// virtme-ng shares the root with.
const GUEST_KERNEL_PACKAGE: &str = "linux-image-amd64";

/// Installs what `cargo xtask guest` needs, skipping what is there, and
/// says where virtme-ng and the guest kernel are.
pub fn ensure_guest_tools() -> anyhow::Result<crate::guest::GuestTools> {
    let mut packages: Vec<(&str, &str)> = GUEST_PACKAGES.to_vec();
    if guest_kernel().is_none() {
        // No file to test for: its name carries the version.
        packages.push((GUEST_KERNEL_PACKAGE, "/nonexistent"));
    }
    ensure_packages(&packages).context("installing the guest's Debian packages")?;
    let kernel = guest_kernel()
        .with_context(|| format!("{GUEST_KERNEL_PACKAGE} is installed but no /boot/vmlinuz-*-amd64 is there"))?;
    let vng = ensure_vng()?;
    Ok(crate::guest::GuestTools { vng, kernel })
}

/// The newest Debian kernel image in /boot (`vmlinuz-6.1.0-NN-amd64`).
/// The guest tools, and bcc's tools with the guest kernel's headers (bcc
/// compiles its programs against them at start), for `bench guest-peers`.
pub fn ensure_guest_peers() -> anyhow::Result<crate::guest::GuestTools> {
    let tools = ensure_guest_tools()?;
    let release = tools
        .kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .with_context(|| format!("no kernel release in {}", tools.kernel.display()))?
        .to_owned();
    let headers = format!("linux-headers-{release}");
    let build = format!("/lib/modules/{release}/build/Makefile");
    ensure_packages(&[("bpfcc-tools", "/usr/sbin/bindsnoop-bpfcc"), (&headers, &build)])
        .context("installing bcc's tools and the guest kernel's headers")?;
    Ok(tools)
}

fn guest_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = fs::read_dir("/boot")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-amd64"))
        })
        .collect();
    // vmlinuz-6.1.0-9-amd64 < vmlinuz-6.1.0-57-amd64: compare numerically.
    kernels.sort_by_key(|p| {
        p.to_string_lossy()
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    kernels.pop()
}

/// `vng` from virtme-ng, installed with pip when missing.
fn ensure_vng() -> anyhow::Result<PathBuf> {
    if let Some(vng) = find_vng() {
        eprintln!("xtask: virtme-ng: present ({})", vng.display());
        return Ok(vng);
    }
    eprintln!("xtask: installing virtme-ng with pip");
    run(Command::new("python3").args(["-m", "pip", "install", "-q", "virtme-ng"]))
        .or_else(|_| {
            // Debian's own python refuses to install beside its packages
            // (PEP 668) unless told to.
            run(Command::new("python3").args(["-m", "pip", "install", "-q", "--break-system-packages", "virtme-ng"]))
        })
        .context("pip install virtme-ng")?;
    find_vng().context("pip installed virtme-ng, but no vng is on PATH nor in python's scripts folder")
}

fn find_vng() -> Option<PathBuf> {
    if output(Command::new("vng").arg("--version")).is_some() {
        return Some(PathBuf::from("vng"));
    }
    // pip puts it in python's scripts folder, which may not be on PATH
    // (pyenv's shims only learn of it at the next rehash).
    let scripts =
        output(Command::new("python3").args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]))?;
    let vng = PathBuf::from(scripts.trim()).join("vng");
    output(Command::new(&vng).arg("--version")).map(|_| vng)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Ours answers 101 while it lives and is gone after; one already
    /// there is left as it was.
    #[test]
    fn policy_rc_d_forbids_starts_while_apt_runs() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        {
            let _guard = ForbidServiceStarts::install(path.clone()).unwrap();
            let status = Command::new(&path).args(["rpcbind", "start"]).status().unwrap();
            assert_eq!(status.code(), Some(101));
        }
        assert!(!path.exists(), "removed when dropped");
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        drop(ForbidServiceStarts::install(path.clone()).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "#!/bin/sh\nexit 0\n", "someone else's is kept");
        fs::remove_dir_all(&dir).unwrap();
    }
}
