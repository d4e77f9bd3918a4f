//! Loads the embedded eBPF object, attaches every program, and keeps them
//! attached for as long as [`Attached`] lives (dropping it detaches).
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupAttachMode, CgroupSock, FEntry, FExit, Lsm, RawTracePoint, TracePoint},
};
use log::{debug, warn};
use watcher_common::{
    ENFORCE_CLASS_SLOTS, ENFORCE_CLASSES_MAP, ENFORCE_PORT_SLOTS, ENFORCE_PORTS_MAP, ENFORCE_UNIX_MAP,
    ENFORCE_UNIX_PATHS, EVENTS_MAP, FILTER_TGID_GLOBAL, KernelOffsets, OFFSETS_GLOBAL, SYSCALL_REGISTERS_GLOBAL,
    SyscallRegisters, TRACEPOINT_OFFSETS_GLOBAL,
};

use crate::kernel::{
    btf::Btf,
    hooks::{self, Fact, Hook, OptIn},
    kernel_log::{self, KernelLog, KernelLogLevel},
    tracepoint_format,
};

/// The object built by aya-build from watcher-ebpf (see build.rs).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watcher"));

const TRACEFS: &str = "/sys/kernel/tracing";

/// What to load and attach, and the run-time settings passed to the
/// kernel programs as globals.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Report only this tgid; 0 for every process.
    pub tgid: u32,
    /// Attach the accept() hooks (they cost every accept on the host a
    /// little; see BENCHMARKS.md).
    pub accept: bool,
    /// Size the enforcement maps, for the daemon to fill and attach its
    /// bind programs (see `enforce`); nothing is attached here for it.
    pub enforce: bool,
    /// With `enforce`: attach enforcement's BPF LSM hooks where the kernel
    /// has them. They refuse nothing until the daemon has filled the maps
    /// and says so (`ENFORCE_LSM`).
    pub enforce_lsm: bool,
    /// Attach no syscall tracepoint: a fact only one of them carries on
    /// this kernel goes unreported (named in `Attached::given_up`), and no
    /// syscall of the host pays for watcher.
    pub light: bool,
    /// Bytes in the EVENTS ring buffer (a power of two, at least a page);
    /// 0 for the object's own EVENTS_BYTES.
    pub ring_bytes: u32,
}

/// The kernel struct offsets the programs follow, from the kernel's BTF.
/// Without BTF, `valid` stays 0: events then carry netns 0 (printed as
/// unknown) and accepts no addresses, and watcher says so at start.
pub fn kernel_offsets() -> anyhow::Result<KernelOffsets> {
    let btf = Btf::from_sys_fs()?;
    Ok(KernelOffsets {
        valid: 1,
        task_nsproxy: btf.offset("task_struct", &["nsproxy"])?,
        task_files: btf.offset("task_struct", &["files"])?,
        nsproxy_net_ns: btf.offset("nsproxy", &["net_ns"])?,
        net_ns_inum: btf.offset("net", &["ns", "inum"])?,
        files_fdt: btf.offset("files_struct", &["fdt"])?,
        fdtable_fd: btf.offset("fdtable", &["fd"])?,
        fdtable_max_fds: btf.offset("fdtable", &["max_fds"])?,
        file_private_data: btf.offset("file", &["private_data"])?,
        socket_sk: btf.offset("socket", &["sk"])?,
        socket_type: btf.offset("socket", &["type"])?,
        skc_daddr: btf.offset("sock_common", &["skc_daddr"])?,
        skc_rcv_saddr: btf.offset("sock_common", &["skc_rcv_saddr"])?,
        skc_dport: btf.offset("sock_common", &["skc_dport"])?,
        skc_num: btf.offset("sock_common", &["skc_num"])?,
        skc_family: btf.offset("sock_common", &["skc_family"])?,
        skc_net: btf.offset("sock_common", &["skc_net"])?,
        skc_v6_daddr: btf.offset("sock_common", &["skc_v6_daddr"])?,
        skc_v6_rcv_saddr: btf.offset("sock_common", &["skc_v6_rcv_saddr"])?,
        task_mm: btf.offset("task_struct", &["mm"])?,
        mm_arg_start: btf.offset("mm_struct", &["arg_start"])?,
        mm_arg_end: btf.offset("mm_struct", &["arg_end"])?,
        task_signal: btf.offset("task_struct", &["signal"])?,
        signal_live: btf.offset("signal_struct", &["live"])?,
        // Only names sockets better (the daemon tells an old socket from a
        // new one on a key): a kernel without it is not refused.
        // `sock_common.skc_cookie` on 6.18 (`sk_cookie` is a macro for it),
        // `sock.sk_cookie` on older kernels such as 6.1.
        sk_cookie: btf
            .offset("sock_common", &["skc_cookie"])
            .or_else(|_| btf.offset("sock", &["sk_cookie"]))
            .unwrap_or(0),
        // Only for the cheaper hook on TCP state changes (the raw
        // tracepoint reads the socket itself): without it, the perf one.
        sk_protocol: btf
            .int_bits("sock", &["sk_protocol"])
            .ok()
            .filter(|&(bits, width)| width == 16 && bits % 8 == 0)
            .map_or(0, |(bits, _)| bits / 8),
        inet_sport: btf.offset("inet_sock", &["inet_sport"]).unwrap_or(0),
        // Only for bind()'s exit without its entry (see
        // `syscall_registers`): without them, the entry is kept.
        unix_addr: btf.offset("unix_sock", &["addr"]).unwrap_or(0),
        unix_address_len: btf.offset("unix_address", &["len"]).unwrap_or(0),
        unix_address_name: btf.offset("unix_address", &["name"]).unwrap_or(0),
        task_nvcsw: btf.offset("task_struct", &["nvcsw"]).unwrap_or(0),
        task_nivcsw: btf.offset("task_struct", &["nivcsw"]).unwrap_or(0),
    })
}

/// Where this kernel keeps a task's syscall number and first arguments
/// (`struct pt_regs`, from BTF), for the programs to read a call's
/// arguments from there rather than keep them from its entry. Only on
/// x86-64, where those are whole 8-byte registers, and only with the
/// kernel's own record of a UNIX socket's name (bind()'s exit reads it
/// from the kernel, the caller's buffer being its own to rewrite by then)
/// and the task's context-switch counts (which spare that read after an
/// inet bind).
/// The helper that finds the registers (`bpf_task_pt_regs`, Linux 5.15)
/// is offered to every program type used here from 6.1 on (bpftool
/// feature probe on Debian 12's 6.1 and this host's 6.18); older kernels
/// keep the entry tracepoints and their maps.
pub fn syscall_registers(btf: &Btf, offsets: &KernelOffsets, kernel_release: &str) -> SyscallRegisters {
    let off = SyscallRegisters::default();
    if !cfg!(target_arch = "x86_64") || !at_least(kernel_release, (6, 1)) {
        return off;
    }
    let needed = [
        offsets.unix_addr,
        offsets.unix_address_len,
        offsets.unix_address_name,
        offsets.task_nvcsw,
        offsets.task_nivcsw,
    ];
    if offsets.valid == 0 || needed.contains(&0) {
        return off;
    }
    let register = |name: &str| match btf.int_bits("pt_regs", &[name]) {
        Ok((bits, 64)) if bits % 64 == 0 => Some(bits / 8),
        _ => None,
    };
    let (Some(nr), Some(di), Some(si), Some(dx)) =
        (register("orig_ax"), register("di"), register("si"), register("dx"))
    else {
        return off;
    };
    SyscallRegisters {
        valid: 1,
        nr,
        args: [di, si, dx],
        bind_nr: libc::SYS_bind as u32,
        listen_nr: libc::SYS_listen as u32,
        reserved: 0,
    }
}

/// Whether a kernel release ("6.1.0-57-amd64", "6.18.44-fc-v1045") is at
/// least `(major, minor)`; an unreadable one is not.
fn at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

pub struct Attached {
    pub ebpf: Ebpf,
    /// One line per attached program, e.g. `cgroup/post_bind4 on /sys/fs/cgroup/unified`.
    pub hooks: Vec<String>,
    /// The programs the kernel or this host refused, of facts that got no
    /// hook at all; watcher runs without them.
    pub missing: Vec<MissingHook>,
    /// Per fact of the hook table (optional ones only when asked for):
    /// what carries it, and every hook refused on the way.
    pub facts: Vec<FactHooks>,
    /// Facts left out by `LoadOptions::light`: only a syscall tracepoint
    /// carries them on this kernel.
    pub given_up: Vec<&'static Fact>,
    /// Where cgroup v2 is mounted, if it is.
    pub cgroup_root: Option<PathBuf>,
    /// The reader of the programs' own log, when RUST_LOG asks for it.
    pub kernel_log: Option<KernelLog>,
    /// Whether the programs read syscall arguments from the saved
    /// registers (see `syscall_registers`).
    pub syscall_registers: bool,
}

/// How one fact of the hook table is carried on this kernel.
pub struct FactHooks {
    pub fact: &'static Fact,
    /// The attached hooks (one rung), as in `Attached::hooks`; empty when none could be.
    pub hooks: Vec<String>,
    /// Every hook refused, cheapest rung first, and why.
    pub refused: Vec<MissingHook>,
    /// Whether the attached rung is made of syscall tracepoints.
    pub syscall_tracepoints: bool,
}

/// A program that could not be attached, why, and what goes unseen for it.
pub struct MissingHook {
    pub hook: String,
    pub reason: String,
    /// False for a hook not tried because another of its rung was refused
    /// (`reason` is that one's).
    pub tried: bool,
}

impl MissingHook {
    fn new(hook: String, reason: &anyhow::Error) -> Self {
        Self { hook, reason: format!("{reason:#}"), tried: true }
    }

    /// What watcher cannot report without this hook, in a user's words.
    pub fn not_covered(&self) -> &'static str {
        not_covered(&self.hook)
    }
}

/// What watcher cannot report (or, for enforcement's hooks, enforce)
/// without `hook`, described as [`Hook::describe`] does, in a user's words.
pub fn not_covered(hook: &str) -> &'static str {
    // "tracepoint syscalls/sys_enter_bind", "cgroup/post_bind4",
    // "fexit __sys_bind" or "lsm socket_listen": the program's name,
    // the kernel function's or the LSM hook's.
    let name = hook.split_whitespace().last().and_then(|w| w.rsplit('/').next()).unwrap_or_default();
    match name {
        "inet_sock_set_state" => "TCP listen events and listener closes",
        "post_bind4" | "post_bind6" => {
            "successful binds (a bound UDP socket is not seen at all, a TCP one only once it listens)"
        }
        "sock_release" => "closes of bound UDP sockets",
        "sched_process_exec" => "exe and argv of processes that exit before /proc is read",
        "sched_process_fork" | "sched_process_exit" => {
            "the process table (names then come from /proc, and a process gone by then is unknown)"
        }
        "sys_enter_bind" | "sys_exit_bind" | "__sys_bind" => "failed binds, the fd of binds, UNIX binds",
        "sys_enter_listen" | "sys_exit_listen" | "__sys_listen" => "failed listens, the backlog, UNIX listeners",
        "sys_enter_close" | "close_fd" => "closes of UNIX listeners (until their process exits)",
        "sys_enter_socket" | "sys_exit_socket" | "__sys_socket" => "raw and packet sockets",
        "sys_enter_setsockopt" | "sys_exit_setsockopt" | "__sys_setsockopt" => {
            "attached socket filters and listener socket options"
        }
        "sys_enter_accept" | "sys_exit_accept" | "sys_enter_accept4" | "sys_exit_accept4" | "__sys_accept4" => {
            "accepted connections"
        }
        // Enforcement's: what is then not enforced, rather than unseen.
        "socket_listen" => "listen() on TCP ports and UNIX names",
        "socket_create" => "the creation of raw and packet sockets",
        _ => "its events",
    }
}

/// Set to 1, fentry and fexit programs are not tried, as on a kernel that
/// refuses them: the guest scenario measures and tests the tracepoint
/// rungs on a kernel that would take the cheaper ones.
pub const SKIP_TRACING_ENV: &str = "WATCHER_SKIP_TRACING";

/// Set to 1, syscall arguments are not read from the saved registers, as
/// on a kernel older than 6.1: the entry tracepoints and their maps carry
/// them (tests run that path on kernels that would not take it).
pub const NO_REGISTERS_ENV: &str = "WATCHER_NO_SYSCALL_REGISTERS";

/// Programs that see listeners at all: without one of them watcher would
/// run blind, so it exits instead.
const SEES_LISTENERS: [&str; 4] = [
    "raw_tracepoint inet_sock_set_state",
    "tracepoint sock/inet_sock_set_state",
    "cgroup/post_bind4",
    "cgroup/post_bind6",
];

/// What the attach of each hook needs from the host, found once.
struct Host {
    /// Why tracefs is missing, if it is (tracepoints are still tried: aya
    /// also looks under debugfs).
    tracefs: Option<anyhow::Error>,
    cgroup: anyhow::Result<(PathBuf, File)>,
    /// The kernel's BTF, which fentry, fexit and LSM programs are loaded
    /// against, and watcher's own reading of it (the functions' parameters).
    btf: anyhow::Result<(aya::Btf, Btf)>,
    /// Set when SKIP_TRACING_ENV asks to do without fentry and fexit.
    skip_tracing: bool,
    /// Why BPF LSM programs would not run here, if they would not.
    bpf_lsm: anyhow::Result<()>,
    layouts: tracepoint_format::Layouts,
    /// The socket layout the raw tracepoint's program reads, if BTF gave it.
    sock_layout: bool,
    /// Whether the programs read syscall arguments from the saved
    /// registers (`syscall_registers`): the entry tracepoints are then left out.
    registers: bool,
}

/// Loads the programs and attaches, for each fact of the hook table, the
/// cheapest rung the kernel and host allow. A hook refused (tracing
/// programs refused, no tracefs, no cgroup v2, a missing tracepoint) is
/// named in [`FactHooks::refused`], and in [`Attached::missing`] when its
/// fact got nothing; only when nothing that sees listeners could be
/// attached does this fail.
pub fn load_and_attach(options: LoadOptions) -> anyhow::Result<Attached> {
    if EBPF_OBJECT.is_empty() {
        bail!(
            "this watcher binary was built without its eBPF programs (bpf-linker was missing); run `cargo xtask setup`, then rebuild"
        );
    }
    let tracefs = ensure_tracefs().err();
    let cgroup = cgroup2_mount().and_then(|root| {
        let file = File::open(&root).with_context(|| format!("opening the cgroup v2 root {}", root.display()))?;
        Ok((root, file))
    });
    let skip_tracing = std::env::var_os(SKIP_TRACING_ENV).is_some_and(|v| v == "1");
    let btf = aya::Btf::from_sys_fs()
        .context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")
        .and_then(|aya_btf| Ok((aya_btf, Btf::from_sys_fs()?)));
    let bpf_lsm = if options.enforce_lsm { bpf_lsm_active() } else { Ok(()) };

    let offsets = kernel_offsets().unwrap_or_else(|e| {
        warn!("network namespaces, accept addresses and the argv of short-lived processes will be unknown: {e:#}");
        KernelOffsets::default()
    });
    let mut registers = match &btf {
        Ok((_, btf)) => {
            let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            syscall_registers(btf, &offsets, release.trim())
        }
        Err(_) => SyscallRegisters::default(),
    };
    if std::env::var_os(NO_REGISTERS_ENV).is_some_and(|v| v == "1") {
        registers = SyscallRegisters::default();
    }
    // Record layouts from this kernel's format files, for every tracepoint
    // a rung may attach; one whose record lacks a field its program reads
    // is refused below.
    let tracepoints: Vec<(&str, &str)> = hooks::tracepoints(options.accept)
        .into_iter()
        .filter(|(category, _)| !(options.light && *category == "syscalls"))
        .collect();
    let layouts = tracepoint_format::layouts(&tracepoints, |category, name| {
        tracepoint_format::read(Path::new(TRACEFS), category, name)
    });
    for note in &layouts.notes {
        warn!("{note}");
    }
    let kernel_log_level = KernelLogLevel::from_env();
    let mut loader = EbpfLoader::new();
    kernel_log::configure(&mut loader, &kernel_log_level);
    loader
        .override_global(FILTER_TGID_GLOBAL, &options.tgid, true)
        .override_global(OFFSETS_GLOBAL, &offsets, true)
        .override_global(TRACEPOINT_OFFSETS_GLOBAL, &layouts.offsets, true)
        .override_global(SYSCALL_REGISTERS_GLOBAL, &registers, true);
    if options.ring_bytes != 0 {
        loader.map_max_entries(EVENTS_MAP, options.ring_bytes);
    }
    if options.enforce {
        // One entry each in the object, so that `watch` holds no memory for them.
        loader
            .map_max_entries(ENFORCE_PORTS_MAP, ENFORCE_PORT_SLOTS)
            .map_max_entries(ENFORCE_CLASSES_MAP, ENFORCE_CLASS_SLOTS)
            .map_max_entries(ENFORCE_UNIX_MAP, ENFORCE_UNIX_PATHS);
    }
    let mut ebpf = loader.load(EBPF_OBJECT).context("loading the eBPF object into the kernel")?;
    release_embedded_object();
    let sock_layout = offsets.valid != 0 && offsets.sk_protocol != 0 && offsets.inet_sport != 0;
    let host =
        Host { tracefs, cgroup, btf, skip_tracing, bpf_lsm, layouts, sock_layout, registers: registers.valid != 0 };

    let mut hooks = Vec::new();
    let mut missing = Vec::new();
    let mut facts = Vec::new();
    let mut given_up = Vec::new();
    for fact in hooks::FACTS.iter().filter(|f| f.wanted(options.accept, options.enforce && options.enforce_lsm)) {
        let mut carried = FactHooks { fact, hooks: Vec::new(), refused: Vec::new(), syscall_tracepoints: false };
        let mut last_refused = Vec::new();
        for rung in fact.rungs {
            let syscall = rung.iter().any(Hook::is_syscall_tracepoint);
            if syscall && options.light {
                continue;
            }
            match attach_rung(&mut ebpf, rung, &host) {
                Ok(attached) => {
                    carried.hooks = attached;
                    carried.syscall_tracepoints = syscall;
                    break;
                }
                Err(refused) => {
                    if let Some(first) = refused.first() {
                        debug!("{}: {} refused ({}); trying the next hook", fact.name, first.hook, first.reason);
                    }
                    last_refused = refused
                        .iter()
                        .map(|m| MissingHook { hook: m.hook.clone(), reason: m.reason.clone(), tried: m.tried })
                        .collect();
                    carried.refused.extend(refused);
                }
            }
        }
        if carried.hooks.is_empty() {
            if options.light && fact.has_syscall_rung() {
                given_up.push(fact);
            } else if fact.opt_in != Some(OptIn::Enforce) {
                // Enforcement's are not unseen events: the daemon says
                // once what is not enforced (see `unenforced`).
                missing.extend(last_refused);
            }
        }
        hooks.extend(carried.hooks.iter().cloned());
        facts.push(carried);
    }
    let cgroup_root = host.cgroup.as_ref().ok().map(|(root, _)| root.clone());

    if !hooks.iter().any(|h| SEES_LISTENERS.iter().any(|s| h.starts_with(s))) {
        let reasons: Vec<String> = missing
            .iter()
            .filter(|m| SEES_LISTENERS.iter().any(|s| m.hook.starts_with(s)))
            .map(|m| format!("{}: {}", m.hook, m.reason))
            .collect();
        bail!("no hook that sees listeners could be attached ({})", reasons.join("; "));
    }
    for hook in &hooks {
        debug!("attached {hook}");
    }
    // One warning per cause, naming every hook it took and what goes unseen.
    let mut causes: Vec<(&str, Vec<&MissingHook>)> = Vec::new();
    for m in &missing {
        match causes.iter_mut().find(|(reason, _)| *reason == m.reason) {
            Some((_, hooks)) => hooks.push(m),
            None => causes.push((&m.reason, vec![m])),
        }
    }
    for (reason, hooks) in causes {
        let names: Vec<&str> = hooks.iter().map(|m| m.hook.as_str()).collect();
        let mut unseen: Vec<&str> = Vec::new();
        for m in &hooks {
            if !unseen.contains(&m.not_covered()) {
                unseen.push(m.not_covered());
            }
        }
        warn!("not attached ({reason}): {}; not reported: {}", names.join(", "), unseen.join("; "));
    }
    // Without it the programs still run, their lines unread.
    let kernel_log = kernel_log::attach(&mut ebpf, kernel_log_level)
        .inspect_err(|e| warn!("the kernel programs' log will not be read: {e:#}"))
        .unwrap_or(None);
    Ok(Attached { ebpf, hooks, missing, facts, given_up, cgroup_root, kernel_log, syscall_registers: host.registers })
}

/// Attaches every hook of one rung, in order, or none: on the first
/// refusal the ones already attached are unloaded (which detaches them),
/// and the refusal is returned.
fn attach_rung(ebpf: &mut Ebpf, rung: &[Hook], host: &Host) -> Result<Vec<String>, Vec<MissingHook>> {
    let mut attached = Vec::new();
    for (i, hook) in rung.iter().enumerate() {
        if host.registers && matches!(hook, Hook::SyscallEntry { .. }) {
            // The registers carry what it would keep.
            continue;
        }
        match attach_hook(ebpf, hook, host) {
            Ok(description) => attached.push(description),
            Err(e) => {
                for done in &rung[..=i] {
                    unload(ebpf, done);
                }
                // The hooks after it go with it, untried, for the same reason.
                let mut refused = vec![MissingHook::new(hook.describe(), &e)];
                refused.extend(
                    rung[i + 1..].iter().map(|h| MissingHook { tried: false, ..MissingHook::new(h.describe(), &e) }),
                );
                return Err(refused);
            }
        }
    }
    Ok(attached)
}

fn attach_hook(ebpf: &mut Ebpf, hook: &Hook, host: &Host) -> anyhow::Result<String> {
    match *hook {
        Hook::Tracepoint { .. } | Hook::SyscallEntry { .. } => {
            let (category, name) = hook.tracepoint().context("a tracepoint hook names its tracepoint")?;
            let attached = match host.layouts.unusable_reason(category, name) {
                Some(reason) => Err(anyhow::anyhow!("tracepoint {category}/{name}: {reason}")),
                None => attach_tracepoint(ebpf, category, name),
            };
            // Without tracefs every tracepoint fails alike: say the cause once.
            attached.map_err(|e| match &host.tracefs {
                Some(t) => anyhow::anyhow!("no tracefs: {t:#}"),
                None => e,
            })?;
        }
        Hook::RawTracepoint { program, name } => {
            if !host.sock_layout {
                bail!(
                    "the kernel's BTF did not give the socket layout it reads (sock.sk_protocol, inet_sock.inet_sport)"
                );
            }
            let p: &mut RawTracePoint = program_mut(ebpf, program)?;
            let started = Instant::now();
            p.load().with_context(|| format!("loading raw_tracepoint {name}"))?;
            debug!("loaded raw_tracepoint {name} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
            p.attach(name).with_context(|| format!("attaching raw_tracepoint {name}"))?;
        }
        Hook::FEntry { program, function } => {
            let btf = tracing_btf(host, function)?;
            let p: &mut FEntry = program_mut(ebpf, program)?;
            let started = Instant::now();
            p.load(function, btf).with_context(|| format!("loading fentry {function}"))?;
            debug!("loaded fentry {function} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
            p.attach().with_context(|| format!("attaching fentry {function}"))?;
        }
        Hook::FExit { program, function } => {
            let btf = tracing_btf(host, function)?;
            let p: &mut FExit = program_mut(ebpf, program)?;
            let started = Instant::now();
            p.load(function, btf).with_context(|| format!("loading fexit {function}"))?;
            debug!("loaded fexit {function} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
            p.attach().with_context(|| format!("attaching fexit {function}"))?;
        }
        Hook::CgroupSock { program } => {
            let (root, file) = host.cgroup.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            return attach_cgroup_sock(ebpf, program, root, file);
        }
        Hook::Lsm { program, hook } => {
            // A program loaded and attached where the BPF LSM is not
            // active would never run: enforcement that enforces nothing.
            host.bpf_lsm.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let btf = function_btf(host, &format!("bpf_lsm_{hook}"))?;
            let p: &mut Lsm = program_mut(ebpf, program)?;
            let started = Instant::now();
            p.load(hook, btf).with_context(|| format!("loading lsm {hook}"))?;
            debug!("loaded lsm {hook} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
            p.attach().with_context(|| format!("attaching lsm {hook}"))?;
        }
    }
    Ok(hook.describe())
}

/// The BTF to load an fentry/fexit program on `function` against (see
/// [`function_btf`]), unless SKIP_TRACING_ENV says not to try.
fn tracing_btf<'a>(host: &'a Host, function: &str) -> anyhow::Result<&'a aya::Btf> {
    if host.skip_tracing {
        bail!("not tried: {SKIP_TRACING_ENV}=1");
    }
    function_btf(host, function)
}

/// The BTF to load a program on `function` against, once the kernel's
/// `function` is known to take the parameters the program reads.
fn function_btf<'a>(host: &'a Host, function: &str) -> anyhow::Result<&'a aya::Btf> {
    let (aya_btf, btf) = host.btf.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let want = hooks::params(function);
    let have = btf.function_params(function)?;
    if have != want {
        bail!("this kernel's {function} takes ({}), the program reads ({})", have.join(", "), want.join(", "));
    }
    Ok(aya_btf)
}

/// Unloads a hook's program if it was loaded (detaching it); a program
/// never loaded has nothing to undo.
fn unload(ebpf: &mut Ebpf, hook: &Hook) {
    let result = match *hook {
        Hook::Tracepoint { name, .. } | Hook::SyscallEntry { name } => {
            program_mut::<TracePoint>(ebpf, name).map(|p| p.unload())
        }
        Hook::RawTracepoint { program, .. } => program_mut::<RawTracePoint>(ebpf, program).map(|p| p.unload()),
        Hook::FEntry { program, .. } => program_mut::<FEntry>(ebpf, program).map(|p| p.unload()),
        Hook::FExit { program, .. } => program_mut::<FExit>(ebpf, program).map(|p| p.unload()),
        Hook::CgroupSock { program } => program_mut::<CgroupSock>(ebpf, program).map(|p| p.unload()),
        Hook::Lsm { program, .. } => program_mut::<Lsm>(ebpf, program).map(|p| p.unload()),
    };
    if let Ok(Err(e)) = result {
        debug!("unloading {}: {e}", hook.describe());
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, category: &str, name: &str) -> anyhow::Result<()> {
    let program: &mut TracePoint = program_mut(ebpf, name)?;
    let started = Instant::now();
    program.load().with_context(|| format!("loading tracepoint {category}/{name}"))?;
    debug!("loaded tracepoint {category}/{name} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    program.attach(category, name).with_context(|| format!("attaching tracepoint {category}/{name}"))?;
    Ok(())
}

fn attach_cgroup_sock(ebpf: &mut Ebpf, name: &str, root: &Path, cgroup: &File) -> anyhow::Result<String> {
    let program: &mut CgroupSock = program_mut(ebpf, name)?;
    let started = Instant::now();
    program.load().with_context(|| format!("loading cgroup/{name}"))?;
    debug!("loaded cgroup/{name} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    // aya attaches through a BPF link (kernel >= 5.7), which is always
    // multi-attach: another watcher (a daemon, a parallel test) can sit
    // on the same cgroup. The kernel refuses link flags with EINVAL, so
    // the mode that passes none (Single) is the right one here.
    program
        .attach(cgroup, CgroupAttachMode::Single)
        .with_context(|| format!("attaching cgroup/{name} to {}", root.display()))?;
    Ok(format!("cgroup/{name} on {}", root.display()))
}

pub(crate) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).with_context(|| format!("program {name} missing from the eBPF object"))?;
    program.try_into().with_context(|| format!("program {name} has an unexpected type"))
}

const SECURITYFS: &str = "/sys/kernel/security";

/// Lockdown and the LSM list live in securityfs, which hosts without
/// systemd may not mount.
pub fn ensure_securityfs() -> anyhow::Result<()> {
    if Path::new(SECURITYFS).join("lsm").exists() {
        return Ok(());
    }
    nix::mount::mount(Some("securityfs"), SECURITYFS, Some("securityfs"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting securityfs on {SECURITYFS}"))
}

/// The active LSMs, in the kernel's order (`/sys/kernel/security/lsm`).
pub fn active_lsms() -> anyhow::Result<Vec<String>> {
    ensure_securityfs()?;
    let path = Path::new(SECURITYFS).join("lsm");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect())
}

/// Whether the kernel runs BPF LSM programs: `bpf` among the active LSMs.
/// A kernel built with it but booted without it in `lsm=` loads and
/// attaches them, and never calls them.
fn bpf_lsm_active() -> anyhow::Result<()> {
    let lsms = active_lsms().context("cannot tell whether the BPF LSM is active")?;
    if !lsms.iter().any(|m| m == "bpf") {
        bail!("the BPF LSM is not active (/sys/kernel/security/lsm is {:?}; boot with `bpf` in lsm=)", lsms.join(","));
    }
    Ok(())
}

/// The embedded object (about 2 MiB, most of it BTF and debug info) is
/// read once, by the load above, which copies what it keeps: its pages
/// are dropped from this process's RSS. They are the binary's own
/// read-only file pages, never written, so a later read (none is made)
/// would fault the same bytes back in from the page cache.
fn release_embedded_object() {
    const PAGE: usize = 4096;
    let start = EBPF_OBJECT.as_ptr() as usize;
    let first = start.div_ceil(PAGE) * PAGE;
    let end = (start + EBPF_OBJECT.len()) / PAGE * PAGE;
    if end > first {
        // SAFETY: whole pages inside a static, read-only, file-backed
        // mapping; MADV_DONTNEED on such pages keeps their contents.
        let ret = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED) };
        if ret != 0 {
            debug!("the embedded eBPF object stays resident: madvise: {}", std::io::Error::last_os_error());
        }
    }
}

/// aya finds tracepoints under /sys/kernel/tracing, which this host does
/// not mount at boot.
pub fn ensure_tracefs() -> anyhow::Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    nix::mount::mount(Some("tracefs"), TRACEFS, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting tracefs on {TRACEFS}"))
}

/// The cgroup v2 mount point, from /proc/self/mountinfo: it is
/// /sys/fs/cgroup on a unified host and /sys/fs/cgroup/unified on a hybrid one.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    find_cgroup2(&mountinfo).context("no cgroup v2 filesystem is mounted (see /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")
}

fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent major:minor root mount-point options... - fstype source super-options
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        let mount_point = before.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_kernel_releases() {
        assert!(at_least("6.1.0-57-amd64", (6, 1)));
        assert!(at_least("6.18.44-fc-v1045", (6, 1)));
        assert!(at_least("10.0", (6, 1)));
        assert!(!at_least("5.15.0-91-generic", (6, 1)));
        assert!(!at_least("6.0.12", (6, 1)));
        assert!(!at_least("", (6, 1)));
        assert!(!at_least("six", (6, 1)));
    }

    /// On this host's kernel (x86-64, BTF): the registers are found, at
    /// pt_regs' offsets as x86-64's ptrace ABI fixes them; an older kernel,
    /// or offsets missing the UNIX name, gets none.
    #[test]
    fn finds_the_syscall_registers_in_btf() {
        let (Ok(btf), Ok(offsets)) = (Btf::from_sys_fs(), kernel_offsets()) else {
            assert!(std::env::var_os("CI").is_none_or(|v| v != "true"), "no kernel BTF to read in CI");
            eprintln!("skipped: no kernel BTF here");
            return;
        };
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let found = syscall_registers(&btf, &offsets, "6.18.0");
        assert_eq!((found.valid, found.nr, found.args), (1, 120, [112, 104, 96]));
        assert_eq!((found.bind_nr, found.listen_nr), (49, 50));
        assert_eq!(syscall_registers(&btf, &offsets, "5.15.0").valid, 0);
        let without_unix = KernelOffsets { unix_address_name: 0, ..offsets };
        assert_eq!(syscall_registers(&btf, &without_unix, "6.18.0").valid, 0);
    }

    #[test]
    fn finds_hybrid_and_unified_cgroup2() {
        let hybrid = "30 24 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n\
                      35 24 0:31 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw\n";
        assert_eq!(find_cgroup2(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let unified = "25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_cgroup2(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        let odd = "25 20 0:22 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(find_cgroup2(odd), Some(PathBuf::from("/mnt/my cgroups")));
        assert_eq!(find_cgroup2("25 20 0:22 / /sys rw - sysfs sysfs rw\n"), None);
    }
}
