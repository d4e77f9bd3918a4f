//! Builds the eBPF programs (watcher-ebpf) with aya-build, so that
//! `target/release/watcher` embeds them and runs alone on another host.
//!
//! Without bpf-linker (a machine where only `cargo check` or clippy runs) an
//! empty object is written instead, as aya's own integration tests do; the
//! binary then says at start that it was built without its programs.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=WATCHER_STUB_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let stub = env::var_os("WATCHER_STUB_EBPF").is_some_and(|v| v == "1") || which_bpf_linker().is_none();
    if stub {
        println!(
            "cargo:warning=bpf-linker not on PATH (or WATCHER_STUB_EBPF=1): embedding an empty eBPF object; run `cargo xtask setup` for a working binary"
        );
        fs::write(out_dir.join("watcher"), []).context("writing the stub eBPF object")?;
        return Ok(());
    }
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root_dir =
        PathBuf::from(manifest_dir).parent().ok_or_else(|| anyhow!("watcher/ has no parent"))?.join("watcher-ebpf");
    let root_dir = root_dir.to_str().context("non UTF-8 path to watcher-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "watcher-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join("bpf-linker")).find(|candidate| candidate.is_file())
}
