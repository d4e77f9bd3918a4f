//! Opt-in enforcement for `watcher daemon` (`enforce = true` or
//! `--enforce`): a bind() to a TCP or UDP port that no `[[allow]]` rule
//! covers, or that the rules covering it give to someone else, is refused
//! in the kernel with EPERM (`cgroup/bind4`, `cgroup/bind6`, see
//! watcher-ebpf's `probes/enforce.rs`) and reported as `denied`.
//!
//! The rules are compiled into a [`Plan`] and written into two maps:
//! - `ENFORCE_PORTS`, one u32 per (protocol, port), 2 × 65,536 slots: the
//!   class of the port, or `ENFORCE_NO_RULE`. A flat array rather than a
//!   hash of expanded ranges or an LPM trie: one lookup, any range or
//!   portless rule costs nothing more, and 512 KiB, held only while
//!   enforcing.
//! - `ENFORCE_CLASSES`: per class, the owners (uid, executable, comm,
//!   address scope) that the rules covering its ports allow. A class is a
//!   set of rules; the ports between two consecutive range ends share one.
//!
//! An executable is matched by identity, (device, inode), which the kernel
//! side reads from the caller's `task->mm->exe_file->f_inode` (offsets from
//! the kernel's BTF) and userspace from stat(2) of the rule's path at load
//! and at each reload. Paths are awkward to compare in BPF; an inode also
//! names a binary through every link and bind mount. In exchange, a binary
//! replaced after the load (a package upgrade writes a new inode) no longer
//! matches until a SIGHUP reloads the rules.
//!
//! A reload writes the new classes into the half of `ENFORCE_CLASSES` not
//! in use, then points the ports at them, so a bind during a reload sees
//! either the old rules or the new for its port. A configuration the
//! kernel maps cannot hold is refused as a whole, and the maps keep the old
//! rules.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::File,
    io::{self},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    maps::{Array, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use log::{info, warn};
use watcher_common::{
    ENFORCE_CLASS_SLOTS, ENFORCE_CLASSES_MAP, ENFORCE_CLASSES_PER_GENERATION, ENFORCE_LSM, ENFORCE_NO_RULE,
    ENFORCE_OWNERS_PER_CLASS, ENFORCE_PACKET_SLOT, ENFORCE_PORT_SLOTS, ENFORCE_PORTS_MAP, ENFORCE_RAW_SLOT,
    ENFORCE_SETTINGS_MAP, ENFORCE_STOP_AT_LISTEN, ENFORCE_TCP_BASE, ENFORCE_UDP_BASE, ENFORCE_UNIX_MAP,
    ENFORCE_UNIX_OTHER_SLOT, ENFORCE_UNIX_PATHS, EnforceClass, EnforceOwner, EnforceSettings, OWNER_COMM, OWNER_EXE,
    OWNER_LOOPBACK, OWNER_NEVER, OWNER_UID, TASK_COMM_LEN, UNIX_PATH_BYTES, UnixPathKey,
};

use crate::{
    config::{Config, Rule, RuleProto, Scope, Severity},
    enrich::report::{Denial, Report},
    kernel::{
        btf::Btf,
        hooks::OptIn,
        loader::{self, Attached, FactHooks},
        privileges,
    },
    model::{escape::escape_bytes, text::unix_path},
    policy::allowlist,
    record::decode::{DeniedCall, DeniedEvent, SockAddr},
};

/// The kernel programs, and the hook each one attaches to.
const PROGRAMS: [(&str, &str); 2] = [("enforce_bind4", "bind4"), ("enforce_bind6", "bind6")];

/// The protocols a bind can be refused for, in the order of the port slots.
const PROTOS: [(RuleProto, u32); 2] = [(RuleProto::Tcp, ENFORCE_TCP_BASE), (RuleProto::Udp, ENFORCE_UDP_BASE)];

/// The sockets judged by their kind alone (the LSM hooks), each with its
/// ENFORCE_PORTS slot: every raw rule covers every raw socket, every
/// packet rule every packet socket (they have no port or path), and the
/// unix rules without a path every UNIX name no rule names.
const KINDS: [(RuleProto, u32); 3] = [
    (RuleProto::Raw, ENFORCE_RAW_SLOT),
    (RuleProto::Packet, ENFORCE_PACKET_SLOT),
    (RuleProto::Unix, ENFORCE_UNIX_OTHER_SLOT),
];

/// Class slots one generation can use: slot 0 is `ENFORCE_NO_RULE`, so
/// each generation leaves its first slot unused.
const CLASSES_PER_GENERATION: usize = ENFORCE_CLASSES_PER_GENERATION as usize - 1;

/// One rule, as a denial names it.
#[derive(Clone, Debug)]
struct RuleSummary {
    label: String,
    severity: Severity,
    /// `exe=/usr/sbin/sshd user=root scope=loopback`.
    owner: String,
}

/// A set of rules covering the same ports, and the owners they allow.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Class {
    /// Indices into the configuration's rules.
    rules: Vec<usize>,
    /// Distinct owners (at most `ENFORCE_OWNERS_PER_CLASS`).
    owners: Vec<EnforceOwner>,
}

/// Consecutive ports of one protocol that share a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    first: u16,
    last: u16,
    class: usize,
}

/// The allowlist compiled for the kernel's maps.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Per protocol of [`PROTOS`]: the ports some rule covers.
    segments: [Vec<Segment>; 2],
    /// Per kind of [`KINDS`]: the class of the rules covering every such
    /// socket; None when no rule does.
    kinds: [Option<usize>; 3],
    /// The UNIX names some rule names (ENFORCE_UNIX), each with the class
    /// of the rules covering it: those naming it and those naming none.
    unix: Vec<(UnixPathKey, usize)>,
    classes: Vec<Class>,
    /// By rule index.
    rules: Vec<RuleSummary>,
}

/// How a rule's user and executable are resolved; tests give their own.
trait Resolve {
    fn uid(&self, user: &str) -> Option<u32>;
    /// (device in the kernel's encoding, inode) of the file at `path`.
    fn exe(&self, path: &str) -> io::Result<(u32, u64)>;
}

struct System;

impl Resolve for System {
    fn uid(&self, user: &str) -> Option<u32> {
        // As the allowlist reads `user`: a name, or a uid written as a number.
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => Some(u.uid.as_raw()),
            _ => user.parse().ok(),
        }
    }

    fn exe(&self, path: &str) -> io::Result<(u32, u64)> {
        // stat follows links: /usr/bin/python3 names the file it points to,
        // as the kernel's exe_file does.
        let meta = std::fs::metadata(path)?;
        Ok((kernel_dev(meta.dev()), meta.ino()))
    }
}

/// A `dev_t` as stat(2) encodes it, in the kernel's encoding
/// (`MAJOR << 20 | MINOR`, what `super_block.s_dev` holds).
fn kernel_dev(dev: u64) -> u32 {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    ((major << 20) | (minor & 0xf_ffff)) as u32
}

/// The classes of a plan as they are found: one per distinct set of
/// covering rules, its owners those rules' distinct owners.
struct Classes<'a> {
    owners: &'a [EnforceOwner],
    list: Vec<Class>,
    by_rules: HashMap<Vec<usize>, usize>,
}

impl Classes<'_> {
    /// The class of the rules `covering` (sorted); `what` says what they
    /// cover (`udp ports 5000-5001 are`), for the error when the kernel
    /// side cannot hold their owners.
    fn of(&mut self, covering: Vec<usize>, what: impl FnOnce() -> String) -> anyhow::Result<usize> {
        if let Some(&class) = self.by_rules.get(&covering) {
            return Ok(class);
        }
        let mut distinct: Vec<EnforceOwner> = Vec::new();
        for &i in &covering {
            let owner = self.owners[i];
            if !distinct.iter().any(|o| same_owner(o, &owner)) {
                distinct.push(owner);
            }
        }
        if distinct.len() > ENFORCE_OWNERS_PER_CLASS {
            bail!(
                "enforcement: {} covered by {} rules naming {} different owners; the kernel side checks at most {ENFORCE_OWNERS_PER_CLASS} per port, UNIX name or kind of socket",
                what(),
                covering.len(),
                distinct.len()
            );
        }
        self.list.push(Class { rules: covering.clone(), owners: distinct });
        self.by_rules.insert(covering, self.list.len() - 1);
        Ok(self.list.len() - 1)
    }
}

impl Plan {
    pub fn compile(config: &Config) -> anyhow::Result<Self> {
        Self::compile_with(config, &System)
    }

    fn compile_with(config: &Config, resolve: &dyn Resolve) -> anyhow::Result<Self> {
        let mut rules = Vec::with_capacity(config.rules.len());
        let mut owners = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let (owner, description) = owner_of(i, rule, resolve);
            rules.push(RuleSummary { label: rule.label(), severity: rule.severity, owner: description });
            owners.push(owner);
        }

        let mut classes = Classes { owners: &owners, list: Vec::new(), by_rules: HashMap::new() };
        let mut segments: [Vec<Segment>; 2] = Default::default();
        for (p, (proto, _)) in PROTOS.iter().enumerate() {
            let ranges: Vec<(usize, u32, u32)> = config
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.proto == *proto)
                .filter_map(|(i, r)| {
                    let (first, last) = r.port.as_ref().map_or((1, 65_535), |p| (*p.0.start(), *p.0.end()));
                    // Port 0 is always allowed: nothing to cover.
                    (last >= 1).then_some((i, u32::from(first.max(1)), u32::from(last)))
                })
                .collect();
            // Where the set of covering rules can change.
            let mut bounds: BTreeSet<u32> = ranges.iter().flat_map(|&(_, first, last)| [first, last + 1]).collect();
            bounds.insert(65_536);
            let bounds: Vec<u32> = bounds.into_iter().collect();
            for pair in bounds.windows(2) {
                let (first, end) = (pair[0], pair[1]);
                let covering: Vec<usize> =
                    ranges.iter().filter(|&&(_, f, l)| f <= first && first <= l).map(|&(i, _, _)| i).collect();
                if covering.is_empty() {
                    continue;
                }
                let class = classes.of(covering, || {
                    if first == end - 1 {
                        format!("{} port {first} is", proto.name())
                    } else {
                        format!("{} ports {first}-{} are", proto.name(), end - 1)
                    }
                })?;
                segments[p].push(Segment { first: first as u16, last: (end - 1) as u16, class });
            }
        }

        let unix_rule = |r: &Rule| r.proto == RuleProto::Unix;
        let pathless: Vec<usize> =
            config.rules.iter().enumerate().filter(|(_, r)| unix_rule(r) && r.path.is_none()).map(|(i, _)| i).collect();
        let mut kinds = [None; 3];
        for (k, (proto, _)) in KINDS.iter().enumerate() {
            let covering: Vec<usize> = if *proto == RuleProto::Unix {
                pathless.clone()
            } else {
                config.rules.iter().enumerate().filter(|(_, r)| r.proto == *proto).map(|(i, _)| i).collect()
            };
            if !covering.is_empty() {
                let what = || match proto {
                    RuleProto::Unix => "every UNIX name no rule names is".to_owned(),
                    other => format!("{} sockets are", other.name()),
                };
                kinds[k] = Some(classes.of(covering, what)?);
            }
        }

        // The names as the kernel holds them (allowlist::unix_names: the
        // allowlist's own matching, run backwards).
        let mut named: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
        for (i, rule) in config.rules.iter().enumerate().filter(|(_, r)| unix_rule(r)) {
            let Some(path) = &rule.path else { continue };
            let names = allowlist::unix_names(path);
            if names.is_empty() {
                warn!(
                    "enforcement: [[allow]] rule {} ({}): path {path:?} has an escape watcher never prints; it names no socket",
                    i + 1,
                    rule.label()
                );
            }
            // A name longer than sun_path is no socket's.
            for name in names.into_iter().filter(|n| n.len() <= UNIX_PATH_BYTES) {
                named.entry(name).or_default().push(i);
            }
        }
        if named.len() > ENFORCE_UNIX_PATHS as usize {
            bail!(
                "enforcement: the rules name {} UNIX sockets; the kernel side holds at most {ENFORCE_UNIX_PATHS}",
                named.len()
            );
        }
        let mut unix = Vec::with_capacity(named.len());
        for (name, mut covering) in named {
            covering.extend(&pathless);
            covering.sort_unstable();
            covering.dedup();
            let class = classes.of(covering, || format!("unix {} is", unix_path(&name)))?;
            let mut key = UnixPathKey { len: name.len() as u32, path: [0; UNIX_PATH_BYTES] };
            key.path[..name.len()].copy_from_slice(&name);
            unix.push((key, class));
        }

        let classes = classes.list;
        if classes.len() > CLASSES_PER_GENERATION {
            bail!(
                "enforcement: the rules cut the ports, UNIX names and kinds of socket into {} groups covered by different rules; the kernel side holds at most {CLASSES_PER_GENERATION}",
                classes.len()
            );
        }
        Ok(Self { segments, kinds, unix, classes, rules })
    }

    /// The class slot of every (protocol, port) and kind of socket, as
    /// ENFORCE_PORTS holds it, with this plan's classes in `generation`.
    fn port_slots(&self, generation: u32) -> Vec<u32> {
        let mut slots = vec![ENFORCE_NO_RULE; ENFORCE_PORT_SLOTS as usize];
        for (p, (_, base)) in PROTOS.iter().enumerate() {
            for s in &self.segments[p] {
                let slot = class_slot(generation, s.class);
                for port in s.first..=s.last {
                    slots[(base + u32::from(port)) as usize] = slot;
                }
            }
        }
        for (class, (_, slot)) in self.kinds.iter().zip(KINDS) {
            if let Some(class) = class {
                slots[slot as usize] = class_slot(generation, *class);
            }
        }
        slots
    }

    /// What ENFORCE_UNIX holds, with this plan's classes in `generation`.
    fn unix_slots(&self, generation: u32) -> HashMap<UnixPathKey, u32> {
        self.unix.iter().map(|(key, class)| (*key, class_slot(generation, *class))).collect()
    }

    fn explain(&self, class: usize, what: &str, who: &str) -> Option<Denial> {
        let rules: Vec<&RuleSummary> =
            self.classes.get(class)?.rules.iter().filter_map(|&i| self.rules.get(i)).collect();
        let named = rules.iter().max_by_key(|r| r.severity)?;
        let given: Vec<String> = rules.iter().map(|r| format!("rule {:?} ({})", r.label, r.owner)).collect();
        Some(Denial {
            rule: Some(named.label.clone()),
            reason: format!("{what} is given to {}, not to {who}", given.join(", ")),
        })
    }
}

/// The same owner, whichever rule names it.
fn same_owner(a: &EnforceOwner, b: &EnforceOwner) -> bool {
    EnforceOwner { rule: 0, ..*a } == EnforceOwner { rule: 0, ..*b }
}

fn class_slot(generation: u32, class: usize) -> u32 {
    generation * ENFORCE_CLASSES_PER_GENERATION + 1 + class as u32
}

/// (generation, class) of a slot; None for `ENFORCE_NO_RULE`.
fn slot_class(slot: u32) -> Option<(u32, usize)> {
    let at = slot.checked_sub(1)?;
    Some((at / ENFORCE_CLASSES_PER_GENERATION, (at % ENFORCE_CLASSES_PER_GENERATION) as usize))
}

/// A rule's owner as the kernel checks it, and as a denial describes it.
fn owner_of(index: usize, rule: &Rule, resolve: &dyn Resolve) -> (EnforceOwner, String) {
    let mut owner = EnforceOwner { rule: index as u32, ..Default::default() };
    let mut parts = Vec::new();
    let which = || format!("[[allow]] rule {} ({})", index + 1, rule.label());
    if let Some(exe) = &rule.exe {
        owner.flags |= OWNER_EXE;
        match resolve.exe(exe) {
            Ok((dev, ino)) => {
                (owner.exe_dev, owner.exe_ino) = (dev, ino);
                parts.push(format!("exe={exe}"));
            }
            Err(e) => {
                warn!("enforcement: {}: exe {exe}: {e}; no process matches it", which());
                owner.flags |= OWNER_NEVER;
                parts.push(format!("exe={exe}, which was not found"));
            }
        }
    }
    if let Some(comm) = &rule.comm {
        owner.flags |= OWNER_COMM;
        if comm.len() < TASK_COMM_LEN {
            owner.comm[..comm.len()].copy_from_slice(comm.as_bytes());
            parts.push(format!("comm={comm}"));
        } else {
            warn!(
                "enforcement: {}: comm {comm:?} is longer than the kernel's 15 bytes; no process matches it",
                which()
            );
            owner.flags |= OWNER_NEVER;
            parts.push(format!("comm={comm}, longer than any comm"));
        }
    }
    if let Some(user) = &rule.user {
        owner.flags |= OWNER_UID;
        match resolve.uid(user) {
            Some(uid) => {
                owner.uid = uid;
                parts.push(format!("user={user}"));
            }
            None => {
                warn!("enforcement: {}: no user {user:?}; no process matches it", which());
                owner.flags |= OWNER_NEVER;
                parts.push(format!("user={user}, who does not exist"));
            }
        }
    }
    if rule.scope == Scope::Loopback {
        owner.flags |= OWNER_LOOPBACK;
        parts.push("scope=loopback".into());
    }
    if parts.is_empty() {
        parts.push("anyone".into());
    }
    (owner, parts.join(" "))
}

/// The offsets the kernel side follows from a task to its executable, and
/// (for the LSM hooks, which need them alone) from a socket to its
/// protocol and UNIX name: a kernel whose BTF lacks those still enforces binds.
fn kernel_settings() -> anyhow::Result<(EnforceSettings, anyhow::Result<()>)> {
    let btf = Btf::from_sys_fs()?;
    let mut settings = EnforceSettings {
        task_mm: btf.offset("task_struct", &["mm"])?,
        mm_exe_file: btf.offset("mm_struct", &["exe_file"])?,
        file_f_inode: btf.offset("file", &["f_inode"])?,
        inode_i_ino: btf.offset("inode", &["i_ino"])?,
        inode_i_sb: btf.offset("inode", &["i_sb"])?,
        super_block_s_dev: btf.offset("super_block", &["s_dev"])?,
        daemon_tgid: std::process::id(),
        ..EnforceSettings::default()
    };
    let sockets = (|| {
        settings.sock_sk_protocol = btf.offset("sock", &["sk_protocol"])?;
        settings.unix_sock_addr = btf.offset("unix_sock", &["addr"])?;
        settings.unix_address_len = btf.offset("unix_address", &["len"])?;
        settings.unix_address_name = btf.offset("unix_address", &["name"])?;
        let (bits, width) = btf.int_bits("sock", &["sk_userlocks"])?;
        // SOCK_BINDPORT_LOCK is bit 3, which must lie in the byte read.
        ensure!(width >= 4 && bits % 8 + 4 <= 8, "sock.sk_userlocks: {width} bits at bit {bits}");
        (settings.sock_sk_userlocks, settings.sk_userlocks_shift) = (bits / 8, bits % 8);
        anyhow::Ok(())
    })();
    Ok((settings, sockets))
}

/// `enforce_cgroup` as the LSM hooks find a task in it: its level below
/// the cgroup v2 root and its id (its directory's inode, what
/// `bpf_get_current_ancestor_cgroup_id` returns). Levels count from the
/// mount, which is the hierarchy's root outside a cgroup namespace.
fn cgroup_identity(cgroup: &Path) -> anyhow::Result<(u32, u64)> {
    let root = loader::cgroup2_mount()?;
    let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
    let path = cgroup.canonicalize().with_context(|| format!("resolving {}", cgroup.display()))?;
    let below = path.strip_prefix(&root).with_context(|| {
        format!("enforce_cgroup {} is not below the cgroup v2 mount {}", path.display(), root.display())
    })?;
    let id = std::fs::metadata(&path).with_context(|| format!("stat of {}", path.display()))?.ino();
    Ok((below.components().count() as u32, id))
}

/// The maps the daemon keeps filling after the start.
struct Maps {
    ports: Array<MapData, u32>,
    classes: Array<MapData, EnforceClass>,
    unix: aya::maps::HashMap<MapData, UnixPathKey, u32>,
    settings: Array<MapData, EnforceSettings>,
    /// What `settings` holds.
    written: EnforceSettings,
}

/// Enforcement while the daemon runs: the cgroup it covers, the plans in
/// the kernel's maps, and the maps.
pub struct Enforcement {
    cgroup: PathBuf,
    /// By generation: the plan whose classes that half of ENFORCE_CLASSES
    /// holds (the previous one explains denials still in the ring buffer).
    plans: [Option<Plan>; 2],
    /// The generation the ports point to.
    generation: u32,
    /// What ENFORCE_PORTS holds, so that a reload writes only what changes.
    ports: Vec<u32>,
    /// What ENFORCE_UNIX holds.
    unix: HashMap<UnixPathKey, u32>,
    maps: Option<Maps>,
    /// The plan to install at attach time.
    pending: Option<Plan>,
    /// `enforce`: the bind programs refuse what the rules do not allow.
    /// Without it the maps serve `kill_unexpected` alone.
    binds: bool,
    /// `kill_unexpected`: a TCP listen the rules do not allow is stopped
    /// in the kernel (ENFORCE_STOP_AT_LISTEN).
    stop_at_listen: bool,
    /// `enforce` on a kernel with BPF LSM: its hooks refuse listen() and
    /// raw and packet sockets the rules do not allow (ENFORCE_LSM).
    lsm: bool,
}

impl Enforcement {
    /// Compiles the rules and checks `enforce_cgroup`; an error is a bad
    /// configuration.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let plan = Plan::compile(config)?;
        let cgroup = match &config.enforce_cgroup {
            Some(path) => {
                check_cgroup2(path)?;
                path.clone()
            }
            None => loader::cgroup2_mount()?,
        };
        Ok(Self {
            cgroup,
            plans: [None, None],
            generation: 1,
            ports: vec![ENFORCE_NO_RULE; ENFORCE_PORT_SLOTS as usize],
            unix: HashMap::new(),
            maps: None,
            pending: Some(plan),
            binds: config.enforce,
            stop_at_listen: config.kill_unexpected && privileges::can_kill(),
            lsm: false,
        })
    }

    /// `enforce` (not `kill_unexpected` alone): binds are refused, and
    /// where the kernel allows, listens and raw and packet sockets.
    pub fn refuses_binds(&self) -> bool {
        self.binds
    }

    /// The flags the kernel side reads from ENFORCE_SETTINGS.
    fn flags(&self) -> u32 {
        let stop = if self.stop_at_listen { ENFORCE_STOP_AT_LISTEN } else { 0 };
        stop | if self.lsm { ENFORCE_LSM } else { 0 }
    }

    /// Fills the maps, then attaches the bind programs to the cgroup and
    /// lets the LSM hooks the loader attached judge: in this order, or
    /// every bind in it would be refused until the fill.
    pub fn attach(&mut self, attached: &mut Attached) -> anyhow::Result<()> {
        let (mut settings, sockets) = kernel_settings().context(
            "enforcement needs the kernel's BTF (/sys/kernel/btf/vmlinux) to tell kernel threads and executables apart",
        )?;
        if self.binds {
            self.lsm = self.lsm_hooks(attached, sockets, &mut settings);
        }
        let mut settings_map: Array<MapData, EnforceSettings> = Array::try_from(
            attached
                .ebpf
                .take_map(ENFORCE_SETTINGS_MAP)
                .context("map ENFORCE_SETTINGS missing from the eBPF object")?,
        )
        .context("opening ENFORCE_SETTINGS")?;
        let ports = Array::try_from(
            attached.ebpf.take_map(ENFORCE_PORTS_MAP).context("map ENFORCE_PORTS missing from the eBPF object")?,
        )
        .context("opening ENFORCE_PORTS")?;
        let classes = Array::try_from(
            attached.ebpf.take_map(ENFORCE_CLASSES_MAP).context("map ENFORCE_CLASSES missing from the eBPF object")?,
        )
        .context("opening ENFORCE_CLASSES")?;
        let unix = aya::maps::HashMap::try_from(
            attached.ebpf.take_map(ENFORCE_UNIX_MAP).context("map ENFORCE_UNIX missing from the eBPF object")?,
        )
        .context("opening ENFORCE_UNIX")?;
        anyhow::ensure!(
            ports.len() == ENFORCE_PORT_SLOTS && classes.len() == ENFORCE_CLASS_SLOTS,
            "the enforcement maps were not sized for enforcing (LoadOptions::enforce)"
        );
        // The rules first, then the settings that let the listen hooks use them.
        let written = EnforceSettings { flags: 0, ..settings };
        settings_map.set(0, written, 0).context("writing ENFORCE_SETTINGS")?;
        self.maps = Some(Maps { ports, classes, unix, settings: settings_map, written });
        let plan = self.pending.take().context("enforcement attached twice")?;
        self.install(plan)?;
        self.write_flags()?;
        if self.stop_at_listen {
            // The tracepoint is attached already (watcher's own); it is no new hook.
            info!("kill_unexpected: a TCP listen no rule allows is stopped in the kernel before listen() returns");
        }
        if !self.binds {
            return Ok(());
        }

        let cgroup =
            File::open(&self.cgroup).with_context(|| format!("opening the cgroup {}", self.cgroup.display()))?;
        for (name, hook) in PROGRAMS {
            let program: &mut CgroupSockAddr = loader::program_mut(&mut attached.ebpf, name)?;
            program.load().with_context(|| {
                format!("loading cgroup/{hook}: the kernel refused the enforcement program (needs CAP_BPF, CAP_NET_ADMIN and a kernel with cgroup sock_addr hooks)")
            })?;
            // A BPF link, always multi-attach: see the note in loader.rs.
            program
                .attach(&cgroup, CgroupAttachMode::Single)
                .with_context(|| format!("attaching cgroup/{hook} to {}", self.cgroup.display()))?;
            attached.hooks.push(format!("cgroup/{hook} on {} (enforcing)", self.cgroup.display()));
        }
        if self.lsm {
            info!(
                "enforcing the allowlist on binds, listens (TCP and UNIX) and raw and packet sockets in {}",
                self.cgroup.display()
            );
        } else {
            info!("enforcing the allowlist on binds in {}", self.cgroup.display());
        }
        Ok(())
    }

    /// Whether the LSM hooks will judge: both attached by the loader (the
    /// kernel has BPF LSM), the sockets' offsets found in the BTF, and
    /// the cgroup found as they see it (written into `settings`). When
    /// not, one warning says what is not enforced and why; binds still are.
    fn lsm_hooks(&self, attached: &Attached, sockets: anyhow::Result<()>, settings: &mut EnforceSettings) -> bool {
        let facts: Vec<&FactHooks> = attached.facts.iter().filter(|f| f.fact.opt_in == Some(OptIn::Enforce)).collect();
        let mut unenforced: Vec<String> = facts
            .iter()
            .filter(|f| f.hooks.is_empty())
            .flat_map(|f| f.refused.iter().filter(|m| m.tried))
            .map(|m| format!("{} ({}: {})", m.not_covered(), m.hook, m.reason))
            .collect();
        let hooks: Vec<&String> = facts.iter().flat_map(|f| &f.hooks).collect();
        let mut ready = !hooks.is_empty();
        if ready {
            let found = sockets.and_then(|()| {
                (settings.cgroup_level, settings.cgroup_id) = cgroup_identity(&self.cgroup)?;
                Ok(())
            });
            if let Err(e) = found {
                // Attached, but they could not judge right: ENFORCE_LSM stays
                // unset, and they refuse nothing.
                unenforced.extend(hooks.iter().map(|h| format!("{} ({h}: {e:#})", loader::not_covered(h))));
                ready = false;
            }
        }
        if !unenforced.is_empty() {
            warn!(
                "enforce: not enforced on this kernel: {}; binds are still refused (cgroup/bind4, cgroup/bind6)",
                unenforced.join("; ")
            );
        }
        ready
    }

    /// SIGHUP: the new rules replace the old in the kernel, or, when they
    /// cannot be compiled, nothing changes and the error says why.
    pub fn reload(&mut self, config: &Config) -> anyhow::Result<()> {
        if !self.binds && config.enforce {
            warn!("enforce = true in the reloaded configuration takes effect at the next start");
        }
        let plan = match Plan::compile(config) {
            Ok(plan) => plan,
            // Only kill_unexpected uses the maps: the rules still hold for
            // userspace's kills; the kernel no longer stops listens.
            Err(e) if !self.binds => {
                warn!("kill_unexpected: {e:#}; listens are no longer stopped in the kernel, only killed");
                self.stop_at_listen = false;
                return self.write_flags();
            }
            Err(e) => return Err(e),
        };
        self.stop_at_listen = config.kill_unexpected && privileges::can_kill();
        if config.enforce_cgroup.as_ref().is_some_and(|c| *c != self.cgroup) {
            warn!(
                "enforce_cgroup changed to {}; enforcement stays on {} until a restart",
                config.enforce_cgroup.as_deref().unwrap_or(Path::new("")).display(),
                self.cgroup.display()
            );
        }
        self.install(plan)?;
        self.write_flags()
    }

    /// Writes the settings' flags when they changed.
    fn write_flags(&mut self) -> anyhow::Result<()> {
        let flags = self.flags();
        let maps = self.maps.as_mut().context("enforcement maps not attached")?;
        if maps.written.flags != flags {
            let settings = EnforceSettings { flags, ..maps.written };
            maps.settings.set(0, settings, 0).context("writing ENFORCE_SETTINGS")?;
            maps.written = settings;
        }
        Ok(())
    }

    /// Whether the kernel stops TCP listens the rules do not allow.
    pub fn stops_at_listen(&self) -> bool {
        self.stop_at_listen && self.maps.is_some()
    }

    /// Writes `plan`'s classes into the generation not in use, then points
    /// the ports that change at them.
    fn install(&mut self, plan: Plan) -> anyhow::Result<()> {
        let maps = self.maps.as_mut().context("enforcement maps not attached")?;
        let generation = 1 - self.generation;
        for (i, class) in plan.classes.iter().enumerate() {
            let mut value = EnforceClass {
                count: class.owners.len() as u32,
                reserved: 0,
                owners: [EnforceOwner::default(); ENFORCE_OWNERS_PER_CLASS],
            };
            value.owners[..class.owners.len()].copy_from_slice(&class.owners);
            maps.classes
                .set(class_slot(generation, i), value, 0)
                .with_context(|| format!("writing class {i} into ENFORCE_CLASSES"))?;
        }
        let slots = plan.port_slots(generation);
        let mut changed = 0;
        for (i, (&new, old)) in slots.iter().zip(self.ports.iter_mut()).enumerate() {
            if new != *old {
                maps.ports.set(i as u32, new, 0).with_context(|| format!("writing slot {i} of ENFORCE_PORTS"))?;
                *old = new;
                changed += 1;
            }
        }
        // Names named now first, then those no longer: a listen on either
        // sees its old class or its new one, as a port does.
        let unix = plan.unix_slots(generation);
        for (key, &slot) in &unix {
            if self.unix.get(key) != Some(&slot) {
                maps.unix.insert(key, slot, 0).with_context(|| {
                    format!("writing unix {} into ENFORCE_UNIX", unix_path(&key.path[..key.len as usize]))
                })?;
                self.unix.insert(*key, slot);
            }
        }
        let gone: Vec<UnixPathKey> = self.unix.keys().filter(|k| !unix.contains_key(k)).copied().collect();
        for key in gone {
            maps.unix.remove(&key).with_context(|| {
                format!("removing unix {} from ENFORCE_UNIX", unix_path(&key.path[..key.len as usize]))
            })?;
            self.unix.remove(&key);
        }
        info!(
            "enforcement rules: {} groups of ports, UNIX names and kinds of socket, {changed} port slots written, {} UNIX names",
            plan.classes.len(),
            unix.len()
        );
        self.plans[generation as usize] = Some(plan);
        self.generation = generation;
        Ok(())
    }

    /// Why the kernel refused `event`, from the rules that filled its maps.
    pub fn explain(&self, event: &DeniedEvent, exe: Option<&[u8]>, user: Option<&str>) -> Denial {
        let t = &event.task;
        let proto = event.proto.name();
        let what = match (&event.target, event.call) {
            (Some(SockAddr::Inet { addr, port }), DeniedCall::Bind) => format!("{proto} port {port} on {addr}"),
            (Some(SockAddr::Inet { addr, port }), _) => format!("listen() on {proto} port {port} on {addr}"),
            (Some(SockAddr::Unix(path)), _) => format!("listen() on unix {}", unix_path(path)),
            (Some(SockAddr::Other(af)), _) => format!("{proto} on address family {af}"),
            (None, _) => format!("a {proto} socket"),
        };
        let user = user.map(str::to_owned).unwrap_or_else(|| t.uid.to_string());
        let exe = exe.map_or_else(|| "?".to_owned(), escape_bytes);
        let who = format!("exe={exe} comm={} user={user}", escape_bytes(&t.comm));
        let Some((generation, class)) = slot_class(event.class) else {
            return Denial { rule: None, reason: format!("no rule allows {what} ({who})") };
        };
        self.plans
            .get(generation as usize)
            .and_then(Option::as_ref)
            .and_then(|plan| plan.explain(class, &what, &who))
            .unwrap_or_else(|| Denial {
                rule: None,
                reason: format!("{what} is refused by rules in force before a reload ({who})"),
            })
    }
}

/// `enforce_cgroup` must be a directory of the cgroup v2 file system.
fn check_cgroup2(path: &Path) -> anyhow::Result<()> {
    let fs = nix::sys::statfs::statfs(path).with_context(|| format!("enforce_cgroup {}", path.display()))?;
    if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC || !path.is_dir() {
        bail!(
            "enforce_cgroup {}: not a directory of the cgroup v2 file system (mounted at {})",
            path.display(),
            loader::cgroup2_mount().map_or_else(|_| "nowhere".to_owned(), |m| m.display().to_string())
        );
    }
    Ok(())
}

/// Why the kernel refused a bind, for the daemon's `denied` line, with a
/// warning in the log.
pub fn explain_denied(enforcement: Option<&Enforcement>, report: &Report<'_>, event: &DeniedEvent) -> Option<Denial> {
    let why = enforcement.map(|e| e.explain(event, report.process.exe.as_deref(), report.user));
    if let Some(why) = &why {
        warn!("denied: {}; pid {}", why.reason, report.task.pid);
    }
    why
}

/// SIGHUP: the reloaded `config` refills the kernel's maps when enforcing;
/// an error refuses the whole configuration.
pub fn on_reload(enforcement: Option<&mut Enforcement>, config: &Config) -> anyhow::Result<()> {
    match enforcement {
        Some(enforcement) => enforcement.reload(config),
        None => {
            if config.enforce {
                warn!("enforce = true in the reloaded configuration takes effect at the next start");
            }
            if config.kill_unexpected {
                warn!("kill_unexpected: listens are stopped in the kernel from the next start; until then only killed");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{
        enrich::report::What,
        model::socket::{Family, Proto},
        output::format::Printer,
        record::decode::Task,
    };

    struct Fake;

    impl Resolve for Fake {
        fn uid(&self, user: &str) -> Option<u32> {
            match user {
                "root" => Some(0),
                "nobody" => Some(65_534),
                other => other.parse().ok(),
            }
        }

        fn exe(&self, path: &str) -> io::Result<(u32, u64)> {
            match path {
                "/usr/sbin/sshd" => Ok((8 << 20 | 1, 100)),
                "/usr/sbin/apache2" => Ok((8 << 20 | 1, 200)),
                _ => Err(io::ErrorKind::NotFound.into()),
            }
        }
    }

    fn plan(text: &str) -> Plan {
        Plan::compile_with(&Config::parse(text).unwrap(), &Fake).unwrap()
    }

    const RULES: &str = r#"
        [[allow]]
        name = "ssh"
        proto = "tcp"
        port = 22
        exe = "/usr/sbin/sshd"
        user = "root"
        severity = "critical"
        [[allow]]
        name = "web"
        proto = "tcp"
        port = "8000-8100"
        comm = "apache2"
        [[allow]]
        name = "web-admin"
        proto = "tcp"
        port = 8080
        user = "nobody"
        scope = "loopback"
        [[allow]]
        name = "dns"
        proto = "udp"
        port = 53
        [[allow]]
        proto = "unix"
        path = "/run/x.sock"
    "#;

    #[test]
    fn ranges_cut_into_classes() {
        let p = plan(RULES);
        assert_eq!(
            p.segments[0],
            vec![
                Segment { first: 22, last: 22, class: 0 },
                Segment { first: 8000, last: 8079, class: 1 },
                Segment { first: 8080, last: 8080, class: 2 },
                Segment { first: 8081, last: 8100, class: 1 },
            ]
        );
        assert_eq!(p.segments[1], vec![Segment { first: 53, last: 53, class: 3 }]);
        assert_eq!(p.classes[2].rules, vec![1, 2]);
        let ssh = p.classes[0].owners[0];
        assert_eq!(ssh.flags, OWNER_EXE | OWNER_UID);
        assert_eq!((ssh.exe_dev, ssh.exe_ino, ssh.uid, ssh.rule), (8 << 20 | 1, 100, 0, 0));
        let admin = p.classes[2].owners[1];
        assert_eq!(admin.flags, OWNER_UID | OWNER_LOOPBACK);
        assert_eq!(&p.classes[1].owners[0].comm[..8], b"apache2\0");
        assert_eq!(p.unix.len(), 1, "the unix rule's path");
        assert_eq!(p.kinds, [None; 3], "no raw, packet or pathless unix rule");
    }

    fn key(name: &[u8]) -> UnixPathKey {
        let mut key = UnixPathKey { len: name.len() as u32, path: [0; UNIX_PATH_BYTES] };
        key.path[..name.len()].copy_from_slice(name);
        key
    }

    const MORE_RULES: &str = r#"
        [[allow]]
        name = "ping"
        proto = "raw"
        comm = "ping"
        [[allow]]
        proto = "unix"
        path = "@bus"
        user = "nobody"
        [[allow]]
        proto = "unix"
        comm = "Xorg"
    "#;

    /// The LSM hooks' side of the maps: a slot per kind of socket, and the
    /// names the unix rules give, each covered by its rules and the
    /// pathless ones.
    #[test]
    fn unix_names_and_kinds_get_their_classes() {
        let p = plan(&format!("{RULES}{MORE_RULES}"));
        // tcp 0-2, udp 3; raw: rule 5; unix names no rule names: rule 7.
        assert_eq!(p.kinds, [Some(4), None, Some(5)]);
        assert_eq!(p.classes[4].rules, vec![5]);
        assert_eq!(&p.classes[4].owners[0].comm[..5], b"ping\0");
        let slots = p.port_slots(0);
        assert_eq!(slots[ENFORCE_RAW_SLOT as usize], class_slot(0, 4));
        assert_eq!(slots[ENFORCE_PACKET_SLOT as usize], ENFORCE_NO_RULE, "no packet rule: every packet socket refused");
        assert_eq!(slots[ENFORCE_UNIX_OTHER_SLOT as usize], class_slot(0, 5));
        // "@bus" names the abstract bus and a file called @bus, alike.
        let unix = p.unix_slots(0);
        assert_eq!(unix.len(), 3, "{unix:?}");
        let bus = unix[&key(b"\0bus")];
        assert_eq!(unix[&key(b"@bus")], bus);
        let (_, bus_class) = slot_class(bus).unwrap();
        assert_eq!(p.classes[bus_class].rules, vec![6, 7], "the path's rule, and the pathless one");
        let (_, x_class) = slot_class(unix[&key(b"/run/x.sock")]).unwrap();
        assert_eq!(p.classes[x_class].rules, vec![4, 7]);
    }

    #[test]
    fn too_many_unix_names_refuse_the_config() {
        let text: String =
            (0..=ENFORCE_UNIX_PATHS).map(|i| format!("[[allow]]\nproto = \"unix\"\npath = \"/run/{i}\"\n")).collect();
        let e = Plan::compile_with(&Config::parse(&text).unwrap(), &Fake).unwrap_err().to_string();
        assert!(e.contains("at most 1024"), "{e}");
    }

    #[test]
    fn port_slots_point_into_the_generation() {
        let p = plan(RULES);
        let slots = p.port_slots(1);
        assert_eq!(slots[22], class_slot(1, 0));
        assert_eq!(slots[8080], class_slot(1, 2));
        assert_eq!(slots[23], ENFORCE_NO_RULE);
        assert_eq!(slots[0], ENFORCE_NO_RULE, "port 0 is never covered: always allowed");
        assert_eq!(slots[(ENFORCE_UDP_BASE + 53) as usize], class_slot(1, 3));
        assert_eq!(slots[53], ENFORCE_NO_RULE, "tcp 53 is not udp 53");
        assert_eq!(slot_class(class_slot(1, 2)), Some((1, 2)));
        assert_eq!(slot_class(class_slot(0, 0)), Some((0, 0)));
        assert_eq!(slot_class(ENFORCE_NO_RULE), None);
    }

    #[test]
    fn portless_rules_cover_every_port_and_owners_are_shared() {
        let p = plan(
            "[[allow]]\nproto = \"tcp\"\nexe = \"/usr/sbin/apache2\"\n[[allow]]\nproto = \"tcp\"\nport = 443\nexe = \"/usr/sbin/apache2\"\n",
        );
        assert_eq!(p.segments[0].first().unwrap().first, 1);
        assert_eq!(p.segments[0].last().unwrap().last, 65_535);
        let on_443 = p.segments[0].iter().find(|s| s.first == 443).unwrap();
        assert_eq!(p.classes[on_443.class].owners.len(), 1, "one owner named by two rules");
        assert!(p.segments[1].is_empty());
    }

    #[test]
    fn unknown_users_and_exes_match_nobody() {
        let p = plan(
            "[[allow]]\nproto = \"tcp\"\nport = 1\nexe = \"/nonexistent\"\nuser = \"ghost\"\ncomm = \"a-very-long-name-x\"\n",
        );
        assert_ne!(p.classes[0].owners[0].flags & OWNER_NEVER, 0);
        let desc = &p.rules[0].owner;
        assert!(desc.contains("not found") && desc.contains("does not exist"), "{desc}");
    }

    #[test]
    fn too_many_owners_on_one_port_refuse_the_config() {
        let mut text = String::new();
        for uid in 0..=ENFORCE_OWNERS_PER_CLASS {
            text.push_str(&format!("[[allow]]\nproto = \"udp\"\nport = \"5000-5001\"\nuser = \"{uid}\"\n"));
        }
        let e = Plan::compile_with(&Config::parse(&text).unwrap(), &Fake).unwrap_err().to_string();
        assert!(e.contains("udp ports 5000-5001") && e.contains("at most 16"), "{e}");
    }

    #[test]
    fn too_many_classes_refuse_the_config() {
        let mut text = String::new();
        for port in 0..=CLASSES_PER_GENERATION {
            text.push_str(&format!("[[allow]]\nproto = \"tcp\"\nport = {}\nuser = \"{port}\"\n", port + 1000));
        }
        let e = Plan::compile_with(&Config::parse(&text).unwrap(), &Fake).unwrap_err().to_string();
        assert!(e.contains("at most 511"), "{e}");
    }

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(nix::sys::stat::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(nix::sys::stat::makedev(259, 300)), (259 << 20) | 300);
    }

    fn denied(class: u32, port: u16) -> DeniedEvent {
        DeniedEvent {
            task: Task {
                ktime_ns: 1,
                cgroup_id: 1,
                pid: 7,
                tid: 7,
                uid: 0,
                gid: 0,
                netns: 0,
                comm: crate::model::holder::Comm::from(b"nc\n"),
            },
            call: DeniedCall::Bind,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            target: Some(SockAddr::Inet { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port }),
            sock_type: 1,
            protocol: 6,
            class,
            exe_id: None,
        }
    }

    fn enforcing(plan: Plan) -> Enforcement {
        Enforcement {
            cgroup: PathBuf::from("/sys/fs/cgroup"),
            plans: [None, Some(plan)],
            generation: 1,
            ports: Vec::new(),
            unix: HashMap::new(),
            maps: None,
            pending: None,
            binds: true,
            stop_at_listen: false,
            lsm: true,
        }
    }

    /// What the LSM hooks refuse is named as a bind is.
    #[test]
    fn denied_listens_and_sockets_name_the_rules() {
        let e = enforcing(plan(&format!("{RULES}{MORE_RULES}")));
        let listen = DeniedEvent {
            call: DeniedCall::Listen,
            proto: Proto::Unix,
            family: Family::Unix,
            target: Some(SockAddr::Unix(b"\0bus".to_vec())),
            protocol: 0,
            ..denied(class_slot(1, 6), 0)
        };
        let why = e.explain(&listen, None, Some("root"));
        // Both rules cover it, of one severity: the last is named, as for a port.
        assert_eq!(why.rule.as_deref(), Some("unix"), "{why:?}");
        assert!(
            why.reason.starts_with("listen() on unix @bus is given to rule \"unix:@bus\" (user=nobody)"),
            "{why:?}"
        );
        let raw = DeniedEvent {
            call: DeniedCall::Socket,
            proto: Proto::Raw,
            target: None,
            sock_type: 3,
            protocol: 1,
            ..denied(class_slot(1, 4), 0)
        };
        let why = e.explain(&raw, None, Some("root"));
        assert!(why.reason.starts_with("a raw socket is given to rule \"ping\" (comm=ping), not to"), "{why:?}");
        let packet = DeniedEvent { proto: Proto::Packet, family: Family::Packet, ..raw };
        let why = e.explain(&DeniedEvent { class: ENFORCE_NO_RULE, ..packet }, None, Some("root"));
        assert!(why.reason.starts_with("no rule allows a packet socket ("), "{why:?}");
        let tcp = DeniedEvent { call: DeniedCall::Listen, ..denied(ENFORCE_NO_RULE, 4444) };
        let why = e.explain(&tcp, None, Some("root"));
        assert!(why.reason.starts_with("no rule allows listen() on tcp port 4444 on 0.0.0.0 ("), "{why:?}");
    }

    #[test]
    fn denials_name_the_rules() {
        let mut e = enforcing(plan(RULES));
        let none = e.explain(&denied(ENFORCE_NO_RULE, 4444), Some(b"/usr/bin/nc"), Some("root"));
        assert_eq!(none.rule, None);
        assert_eq!(none.reason, "no rule allows tcp port 4444 on 0.0.0.0 (exe=/usr/bin/nc comm=nc\\n user=root)");
        let ssh = e.explain(&denied(class_slot(1, 0), 22), None, None);
        assert_eq!(ssh.rule.as_deref(), Some("ssh"));
        assert_eq!(
            ssh.reason,
            "tcp port 22 on 0.0.0.0 is given to rule \"ssh\" (exe=/usr/sbin/sshd user=root), not to exe=? comm=nc\\n user=0"
        );
        let both = e.explain(&denied(class_slot(1, 2), 8080), None, None);
        assert!(
            both.reason.contains("rule \"web\" (comm=apache2), rule \"web-admin\" (user=nobody scope=loopback)"),
            "{both:?}"
        );
        // A record from before the last reload, whose plan is gone.
        e.plans[0] = None;
        let old = e.explain(&denied(class_slot(0, 0), 22), None, None);
        assert!(old.reason.contains("before a reload"), "{old:?}");
    }

    #[test]
    fn the_denied_line() {
        let e = enforcing(plan(RULES));
        let event = denied(class_slot(1, 0), 22);
        let process = crate::host::process::ProcessInfo {
            ppid: Some(1),
            exe: Some(b"/usr/bin/nc".to_vec().into()),
            cmdline: None,
        };
        let report = Report {
            task: &event.task,
            process: &process,
            user: Some("root"),
            time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            seen_ktime_ns: 2,
            cgroup: None,
            what: What::Denied { event: &event, why: None },
        };
        let mut out = Vec::new();
        {
            let why = explain_denied(Some(&e), &report, &event);
            let mut printer = Printer::new(crate::output::format::Format::Json, &mut out);
            printer.report(&Report { what: What::Denied { event: &event, why: why.as_ref() }, ..report }).unwrap();
        }
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["event"], "denied");
        assert_eq!((line["pid"].as_u64(), line["port"].as_u64()), (Some(7), Some(22)));
        assert_eq!((line["proto"].as_str(), line["family"].as_str()), (Some("tcp"), Some("ipv4")));
        assert_eq!((line["addr"].as_str(), line["errno"].as_str()), (Some("0.0.0.0"), Some("EPERM")));
        assert_eq!((line["exe"].as_str(), line["user"].as_str()), (Some("/usr/bin/nc"), Some("root")));
        assert_eq!(line["rule"], "ssh");
        assert!(line["reason"].as_str().unwrap().ends_with("not to exe=/usr/bin/nc comm=nc\\n user=root"), "{line}");
    }
}
