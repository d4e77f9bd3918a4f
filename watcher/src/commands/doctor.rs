//! `watcher doctor`: what this kernel lets watcher do, checked for real.
//! It reads the kernel version, BTF, lockdown and the active LSMs, asks the
//! kernel which program types load, then loads and attaches watcher's own
//! programs exactly as `watch` does (and detaches them) and says, for each
//! fact watcher reports, the hook that carries it or why none does and what
//! goes unreported. Exit 0 when the default set is complete.
use std::fs;

use anyhow::{Context as _, bail};
use aya::{
    programs::{LsmAttachType, ProgramType},
    sys::is_program_supported,
};
use serde_json::{Value, json};

use crate::{
    cli::DoctorArgs,
    kernel::{
        loader::{self, LoadOptions, MissingHook},
        privileges,
    },
};

/// The facts watcher reports and the programs that carry each; `optional`
/// ones are off by default (`--accept`) and do not make the set incomplete.
const FACTS: &[(&str, &[&str], bool)] = &[
    ("TCP listen up / down", &["inet_sock_set_state"], false),
    ("bind success (v4/v6, the port the kernel chose)", &["post_bind4", "post_bind6"], false),
    ("close of bound UDP sockets", &["sock_release"], false),
    (
        "bind/listen failures and errno; UNIX bind and listen; fd and backlog",
        &["sys_enter_bind", "sys_exit_bind", "sys_enter_listen", "sys_exit_listen"],
        false,
    ),
    ("close of UNIX listeners", &["sys_enter_close"], false),
    ("raw and packet sockets created", &["sys_enter_socket", "sys_exit_socket"], false),
    ("filters attached; listener socket options", &["sys_enter_setsockopt", "sys_exit_setsockopt"], false),
    ("exec: exe and argv", &["sched_process_exec"], false),
    ("fork and exit (the process table)", &["sched_process_fork", "sched_process_exit"], false),
    (
        "accepted connections (opt-in: --accept)",
        &["sys_enter_accept", "sys_exit_accept", "sys_enter_accept4", "sys_exit_accept4"],
        true,
    ),
];

/// Program types worth knowing about for the hooks watcher could use.
const PROGRAM_TYPES: &[(&str, ProgramType)] = &[
    ("tracepoint", ProgramType::TracePoint),
    ("raw_tracepoint", ProgramType::RawTracePoint),
    ("kprobe", ProgramType::KProbe),
    ("cgroup_sock", ProgramType::CgroupSock),
    ("cgroup_sock_addr", ProgramType::CgroupSockAddr),
    ("tracing (fentry/fexit)", ProgramType::Tracing),
    ("lsm", ProgramType::Lsm(LsmAttachType::Mac)),
];

/// The program's name in a hook's description: `tracepoint sock/x` → `x`,
/// `cgroup/post_bind4 on /sys/fs/cgroup` → `post_bind4`.
fn program_name(hook: &str) -> &str {
    hook.split_whitespace().find(|w| w.contains('/')).and_then(|w| w.rsplit('/').next()).unwrap_or(hook)
}

pub fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    privileges::check()?;
    let report = report()?;
    if args.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    if report["complete"] != true {
        bail!("the default set of hooks is incomplete on this kernel (see above)");
    }
    Ok(())
}

fn report() -> anyhow::Result<Value> {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    let btf = match loader::kernel_offsets() {
        Ok(_) => {
            json!({"ok": true, "detail": "/sys/kernel/btf/vmlinux: every struct offset watcher follows was found"})
        }
        Err(e) => json!({"ok": false, "detail": format!("{e:#}")}),
    };
    let securityfs = mount_securityfs();
    let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|s| s.split_whitespace().find(|w| w.starts_with('[')).map(|w| w.trim_matches(['[', ']']).to_owned()));
    let lsm: Option<Vec<String>> =
        fs::read_to_string("/sys/kernel/security/lsm").ok().map(|s| s.trim().split(',').map(str::to_owned).collect());
    let program_types: Vec<Value> = PROGRAM_TYPES
        .iter()
        .map(|&(name, ty)| match is_program_supported(ty) {
            Ok(loads) => json!({"type": name, "loads": loads}),
            Err(e) => json!({"type": name, "loads": false, "error": format!("{:#}", anyhow::Error::from(e))}),
        })
        .collect();
    // A kprobe program loads even where kprobes cannot be attached (no
    // CONFIG_KPROBES); tracefs has kprobe_events only where they can.
    let kprobes_attach = std::path::Path::new("/sys/kernel/tracing/kprobe_events").exists();

    // The real programs, attached as `watch` attaches them, then dropped.
    let attached = loader::load_and_attach(LoadOptions { accept: true, ..LoadOptions::default() })
        .context("loading and attaching watcher's programs")?;
    let facts: Vec<Value> = FACTS
        .iter()
        .map(|&(fact, programs, optional)| {
            let hooks: Vec<&str> =
                attached.hooks.iter().filter(|h| programs.contains(&program_name(h))).map(String::as_str).collect();
            let missing: Vec<&MissingHook> =
                attached.missing.iter().filter(|m| programs.contains(&program_name(&m.hook))).collect();
            json!({
                "fact": fact,
                "optional": optional,
                "hooks": hooks,
                "refused": missing.iter().map(|m| json!({"hook": m.hook, "reason": m.reason})).collect::<Vec<_>>(),
                "not_reported": missing.iter().map(|m| m.not_covered()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let complete = facts.iter().all(|f| f["optional"] == true || f["refused"].as_array().is_some_and(Vec::is_empty));
    Ok(json!({
        "kernel": kernel,
        "btf": btf,
        "lockdown": lockdown,
        "securityfs": securityfs.err().map(|e| format!("{e:#}")),
        "kprobes_attach": kprobes_attach,
        "lsm": lsm,
        "bpf_lsm": lsm.as_ref().is_some_and(|l| l.iter().any(|m| m == "bpf")),
        "program_types": program_types,
        "facts": facts,
        "complete": complete,
    }))
}

/// Lockdown and the LSM list live in securityfs, which hosts without
/// systemd may not mount.
fn mount_securityfs() -> anyhow::Result<()> {
    const SECURITYFS: &str = "/sys/kernel/security";
    if std::path::Path::new(SECURITYFS).join("lsm").exists() {
        return Ok(());
    }
    nix::mount::mount(Some("securityfs"), SECURITYFS, Some("securityfs"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting securityfs on {SECURITYFS}"))
}

fn print_text(r: &Value) {
    let s = |v: &Value| v.as_str().map_or_else(|| "unknown".to_owned(), str::to_owned);
    println!("kernel:   {}", s(&r["kernel"]));
    println!("BTF:      {} ({})", if r["btf"]["ok"] == true { "yes" } else { "NO" }, s(&r["btf"]["detail"]));
    let unknown_why = r["securityfs"].as_str().map(|e| format!(" ({e})")).unwrap_or_default();
    println!("lockdown: {}{unknown_why}", s(&r["lockdown"]));
    let lsm = r["lsm"].as_array().map(|l| l.iter().map(s).collect::<Vec<_>>().join(","));
    println!(
        "LSMs:     {} (BPF LSM {})",
        lsm.unwrap_or_else(|| "unknown".into()),
        if r["bpf_lsm"] == true { "active" } else { "not active" }
    );
    println!("program types that load:");
    for t in r["program_types"].as_array().into_iter().flatten() {
        let detail = t["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default();
        println!("  {:<24} {}{detail}", s(&t["type"]), if t["loads"] == true { "yes" } else { "no" });
    }
    println!(
        "kprobes attach: {}",
        if r["kprobes_attach"] == true {
            "yes"
        } else {
            "no (no kprobe_events in tracefs: the kernel has no CONFIG_KPROBES)"
        }
    );
    println!("facts:");
    for f in r["facts"].as_array().into_iter().flatten() {
        println!("  {}", s(&f["fact"]));
        for h in f["hooks"].as_array().into_iter().flatten() {
            println!("      hook: {}", s(h));
        }
        for m in f["refused"].as_array().into_iter().flatten() {
            println!("      REFUSED: {}: {}", s(&m["hook"]), s(&m["reason"]));
        }
        for n in f["not_reported"].as_array().into_iter().flatten() {
            println!("      not reported: {}", s(n));
        }
    }
    println!("complete: {}", if r["complete"] == true { "yes, every default hook is attached" } else { "NO" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_programs_in_hook_descriptions() {
        assert_eq!(program_name("tracepoint sock/inet_sock_set_state"), "inet_sock_set_state");
        assert_eq!(program_name("cgroup/post_bind4 on /sys/fs/cgroup/unified"), "post_bind4");
        assert_eq!(program_name("cgroup/sock_release"), "sock_release");
    }

    #[test]
    fn every_default_program_belongs_to_a_fact() {
        let named: Vec<&str> = FACTS.iter().flat_map(|(_, p, _)| p.iter().copied()).collect();
        for (_, name) in loader::default_tracepoints() {
            assert!(named.contains(name), "{name} has no fact");
        }
    }
}
