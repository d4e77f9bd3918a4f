//! `watcher doctor`: what this kernel lets watcher do, checked for real.
//! It reads the kernel version, BTF, lockdown and the active LSMs, asks the
//! kernel which program types load, then loads and attaches watcher's own
//! programs exactly as `watch` does (and detaches them) and says, for each
//! fact watcher reports, the hook that carries it or why none does and what
//! goes unreported. Enforcement's BPF LSM hooks (opt-in, `enforce`) are
//! attached too, to see whether they can be: until the daemon fills their
//! maps they refuse nothing. Exit 0 when the default set is complete.
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
        hooks::OptIn,
        loader::{self, LoadOptions},
        privileges,
    },
};

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

pub fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    privileges::check()?;
    let report = report(args.light)?;
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

fn report(light: bool) -> anyhow::Result<Value> {
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
    let securityfs = loader::ensure_securityfs();
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
    let attached = loader::load_and_attach(LoadOptions {
        accept: true,
        enforce: true,
        enforce_lsm: true,
        light,
        ..LoadOptions::default()
    })
    .context("loading and attaching watcher's programs")?;
    let facts: Vec<Value> = attached
        .facts
        .iter()
        .map(|f| {
            let given_up = attached.given_up.iter().any(|g| std::ptr::eq(*g, f.fact));
            let not_reported: Vec<&str> = if f.hooks.is_empty() {
                let mut unseen: Vec<&str> = Vec::new();
                for m in &f.refused {
                    if !unseen.contains(&m.not_covered()) {
                        unseen.push(m.not_covered());
                    }
                }
                unseen
            } else {
                Vec::new()
            };
            // Enforcement's hooks refuse calls: without them those calls are
            // not enforced, and everything is still reported.
            let (not_reported, not_enforced) = if f.fact.opt_in == Some(OptIn::Enforce) {
                (Vec::new(), not_reported)
            } else {
                (not_reported, Vec::new())
            };
            json!({
                "fact": f.fact.name,
                "optional": f.fact.optional(),
                "opt_in": f.fact.opt_in.map(OptIn::name),
                "hooks": f.hooks,
                // Cheaper hooks refused on the way (this kernel's reasons).
                "refused": f
                    .refused
                    .iter()
                    .map(|m| json!({"hook": m.hook, "reason": m.reason, "tried": m.tried}))
                    .collect::<Vec<_>>(),
                // Every syscall on the host pays for these (see --light).
                "syscall_tracepoints": f.syscall_tracepoints,
                "given_up_by_light": given_up,
                "not_reported": not_reported,
                "not_enforced": not_enforced,
            })
        })
        .collect();
    // Complete: every default fact has its hooks (`--light`: every fact
    // it does not give up on purpose).
    let complete = facts.iter().all(|f| {
        f["optional"] == true || f["given_up_by_light"] == true || f["hooks"].as_array().is_some_and(|h| !h.is_empty())
    });
    Ok(json!({
        "kernel": kernel,
        "btf": btf,
        "lockdown": lockdown,
        "securityfs": securityfs.err().map(|e| format!("{e:#}")),
        "kprobes_attach": kprobes_attach,
        "lsm": lsm,
        "bpf_lsm": lsm.as_ref().is_some_and(|l| l.iter().any(|m| m == "bpf")),
        "program_types": program_types,
        // Where bind(), listen() and socket() arguments come from: the
        // saved registers (no entry tracepoint), or the entry tracepoints.
        "syscall_args_from_registers": attached.syscall_registers,
        "light": light,
        "facts": facts,
        "complete": complete,
    }))
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
    println!(
        "syscall arguments: {}",
        if r["syscall_args_from_registers"] == true {
            "from the saved registers (bpf_task_pt_regs): no entry tracepoint for bind, listen, socket"
        } else {
            "kept from the entry tracepoints (no saved registers known here: x86-64, 6.1+ and BTF's pt_regs)"
        }
    );
    println!("facts:");
    for f in r["facts"].as_array().into_iter().flatten() {
        println!("  {}", s(&f["fact"]));
        for h in f["hooks"].as_array().into_iter().flatten() {
            println!("      hook: {}", s(h));
        }
        for m in f["refused"].as_array().into_iter().flatten() {
            let label = if f["hooks"].as_array().is_some_and(|h| !h.is_empty()) { "refused" } else { "REFUSED" };
            let untried = if m["tried"] == false { " (not tried: its rung was refused)" } else { "" };
            println!("      {label}: {}{untried}: {}", s(&m["hook"]), s(&m["reason"]));
        }
        if f["syscall_tracepoints"] == true {
            println!(
                "      (syscall tracepoints: every syscall on the host pays for them; --light gives this fact up)"
            );
        }
        if f["given_up_by_light"] == true {
            println!("      given up by --light: only syscall tracepoints carry it on this kernel");
        }
        for n in f["not_reported"].as_array().into_iter().flatten() {
            println!("      not reported: {}", s(n));
        }
        for n in f["not_enforced"].as_array().into_iter().flatten() {
            println!("      not enforced: {}", s(n));
        }
    }
    println!("complete: {}", if r["complete"] == true { "yes, every default hook is attached" } else { "NO" });
}
