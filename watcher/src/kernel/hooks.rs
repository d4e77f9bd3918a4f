//! The hook table: for each fact watcher reports, the hooks that can carry
//! it, cheapest first. The loader attaches the first rung the kernel
//! allows, all of its programs or none, and says why each earlier rung was
//! refused (`watcher doctor` shows it all).
//!
//! The order is the cost to the rest of the host: an fentry/fexit
//! trampoline runs only when its kernel function is called (a bind costs a
//! little more, nothing else does), where an enabled syscall tracepoint
//! puts every task on the syscall slow path for every syscall (+50 to
//! +90 ns a getppid() on this project's test host, see BENCHMARKS.md).
//! Facts already carried by a static tracepoint off the syscall path
//! (`sock/inet_sock_set_state`, `sched/*`) or a cgroup hook have that one
//! rung: it fires only on the event itself, so a trampoline would not be
//! cheaper. The TCP state changes come first from the raw tracepoint,
//! which skips the record a perf tracepoint builds before its program runs
//! (about 0.4 µs a call on this project's test host, more than the program).
//!
//! Enforcement's BPF LSM hooks are facts of this table too (opt-in, with
//! `enforce`): attached like the others, so that `doctor` and the ready
//! line say what was chosen or refused; they refuse nothing until the
//! daemon has filled their maps (`ENFORCE_LSM`). Enforcement's bind hooks
//! are not here: they go on `enforce_cgroup`, attached by
//! `policy::enforce`.

/// One program to attach, named as in the eBPF object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A tracepoint; its program is named after it.
    Tracepoint { category: &'static str, name: &'static str },
    /// A syscall's entry tracepoint whose program only keeps the call's
    /// arguments for its exit and for the hooks that run inside it: not
    /// attached where the loader found the task's saved user registers
    /// (`SyscallRegisters`), which hold those arguments until the call
    /// returns. Its rung is then attached without it.
    SyscallEntry { name: &'static str },
    /// A raw tracepoint: the tracepoint's arguments, without the record a
    /// perf tracepoint has the kernel build first. Its program reads the
    /// kernel's structs, so it needs their layout from BTF.
    RawTracepoint { program: &'static str, name: &'static str },
    /// fentry on a kernel function (needs BTF and BPF trampolines).
    FEntry { program: &'static str, function: &'static str },
    /// fexit on a kernel function: its arguments and return value.
    FExit { program: &'static str, function: &'static str },
    /// A cgroup sock program on the cgroup v2 root.
    CgroupSock { program: &'static str },
    /// A BPF LSM program on a security hook (`bpf_lsm_<hook>` in the
    /// kernel's BTF); needs BTF, and `bpf` among the active LSMs.
    Lsm { program: &'static str, hook: &'static str },
}

impl Hook {
    /// The program's name in the eBPF object.
    pub const fn program(&self) -> &'static str {
        match self {
            Self::Tracepoint { name, .. } | Self::SyscallEntry { name } => name,
            Self::RawTracepoint { program, .. }
            | Self::FEntry { program, .. }
            | Self::FExit { program, .. }
            | Self::CgroupSock { program }
            | Self::Lsm { program, .. } => program,
        }
    }

    /// How the ready line and doctor name it: `tracepoint syscalls/sys_enter_bind`,
    /// `fentry __sys_bind`, `cgroup/post_bind4` (the loader adds the cgroup),
    /// `lsm socket_listen`.
    pub fn describe(&self) -> String {
        match self {
            Self::Tracepoint { category, name } => format!("tracepoint {category}/{name}"),
            Self::SyscallEntry { name } => format!("tracepoint syscalls/{name}"),
            Self::RawTracepoint { name, .. } => format!("raw_tracepoint {name}"),
            Self::FEntry { function, .. } => format!("fentry {function}"),
            Self::FExit { function, .. } => format!("fexit {function}"),
            Self::CgroupSock { program } => format!("cgroup/{program}"),
            Self::Lsm { hook, .. } => format!("lsm {hook}"),
        }
    }

    /// A `syscalls/*` tracepoint: enabled, it slows every syscall on the host.
    pub fn is_syscall_tracepoint(&self) -> bool {
        matches!(self, Self::Tracepoint { category: "syscalls", .. } | Self::SyscallEntry { .. })
    }

    /// The tracepoint it is, as (category, name), if it is one.
    pub const fn tracepoint(&self) -> Option<(&'static str, &'static str)> {
        match *self {
            Self::Tracepoint { category, name } => Some((category, name)),
            Self::SyscallEntry { name } => Some(("syscalls", name)),
            _ => None,
        }
    }
}

/// What asks for a fact left out by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptIn {
    /// `--accept`.
    Accept,
    /// The daemon's `enforce` (and `watcher doctor`, to say whether it can).
    Enforce,
}

impl OptIn {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Enforce => "enforce",
        }
    }
}

/// A fact and the ways to see it, cheapest first; each rung is attached
/// whole or not at all.
#[derive(Debug)]
pub struct Fact {
    pub name: &'static str,
    /// Attached only when asked for; its absence does not make the
    /// default set incomplete.
    pub opt_in: Option<OptIn>,
    pub rungs: &'static [&'static [Hook]],
}

impl Fact {
    /// Left out unless asked for.
    pub fn optional(&self) -> bool {
        self.opt_in.is_some()
    }

    /// Whether a load with these opt-ins attaches it.
    pub fn wanted(&self, accept: bool, enforce: bool) -> bool {
        match self.opt_in {
            None => true,
            Some(OptIn::Accept) => accept,
            Some(OptIn::Enforce) => enforce,
        }
    }

    /// Whether any rung costs every syscall on the host.
    pub fn has_syscall_rung(&self) -> bool {
        self.rungs.iter().any(|rung| rung.iter().any(Hook::is_syscall_tracepoint))
    }
}

const fn tp(category: &'static str, name: &'static str) -> Hook {
    Hook::Tracepoint { category, name }
}

const fn entry(name: &'static str) -> Hook {
    Hook::SyscallEntry { name }
}

const fn raw_tp(program: &'static str, name: &'static str) -> Hook {
    Hook::RawTracepoint { program, name }
}

const fn fentry(program: &'static str, function: &'static str) -> Hook {
    Hook::FEntry { program, function }
}

const fn fexit(program: &'static str, function: &'static str) -> Hook {
    Hook::FExit { program, function }
}

const fn cgroup(program: &'static str) -> Hook {
    Hook::CgroupSock { program }
}

const fn lsm(program: &'static str, hook: &'static str) -> Hook {
    Hook::Lsm { program, hook }
}

/// In attach order: the hooks that only gather a call's arguments (an fd,
/// a backlog) for the hooks that report come first, so that the reporting
/// ones find them from their first event on. On the tracepoint rungs the
/// first syscall tracepoint attached is an entry one (close()'s), as it
/// was when bind()'s entry led: the kernel then turns on its syscall
/// entry and exit tracing in the order every run of the guest scenario
/// has passed with (Debian's 6.1 under TCG once locked up, both vCPUs in
/// `syscall_trace_enter`, when an exit tracepoint came first).
pub const FACTS: &[Fact] = &[
    Fact {
        name: "close of UNIX listeners",
        opt_in: None,
        // One map lookup per close() on the host either way.
        rungs: &[&[fentry("fentry_close_fd", "close_fd")], &[tp("syscalls", "sys_enter_close")]],
    },
    Fact {
        name: "bind/listen failures and errno; UNIX bind and listen; fd and backlog",
        opt_in: None,
        rungs: &[
            &[
                fentry("fentry_bind", "__sys_bind"),
                fexit("fexit_bind", "__sys_bind"),
                fentry("fentry_listen", "__sys_listen"),
                fexit("fexit_listen", "__sys_listen"),
            ],
            &[
                entry("sys_enter_bind"),
                entry("sys_enter_listen"),
                tp("syscalls", "sys_exit_bind"),
                tp("syscalls", "sys_exit_listen"),
            ],
        ],
    },
    Fact {
        name: "raw and packet sockets created",
        opt_in: None,
        rungs: &[
            &[fexit("fexit_socket", "__sys_socket")],
            &[entry("sys_enter_socket"), tp("syscalls", "sys_exit_socket")],
        ],
    },
    Fact {
        name: "filters attached; listener socket options",
        opt_in: None,
        rungs: &[
            &[fexit("fexit_sockopt", "__sys_setsockopt")],
            &[tp("syscalls", "sys_enter_setsockopt"), tp("syscalls", "sys_exit_setsockopt")],
        ],
    },
    Fact {
        name: "exec: exe and argv",
        opt_in: None,
        // argv is read from the new program's memory at this tracepoint.
        rungs: &[&[tp("sched", "sched_process_exec")]],
    },
    Fact {
        name: "fork and exit (the process table)",
        opt_in: None,
        rungs: &[&[tp("sched", "sched_process_fork"), tp("sched", "sched_process_exit")]],
    },
    Fact {
        name: "TCP listen up / down",
        opt_in: None,
        rungs: &[&[raw_tp("raw_tcp_state", "inet_sock_set_state")], &[tp("sock", "inet_sock_set_state")]],
    },
    Fact {
        name: "bind success (v4/v6, the port the kernel chose)",
        opt_in: None,
        rungs: &[&[cgroup("post_bind4"), cgroup("post_bind6")]],
    },
    Fact { name: "close of bound UDP sockets", opt_in: None, rungs: &[&[cgroup("sock_release")]] },
    Fact {
        name: "accepted connections (opt-in: --accept)",
        opt_in: Some(OptIn::Accept),
        rungs: &[
            &[fexit("fexit_accept", "__sys_accept4")],
            &[
                tp("syscalls", "sys_enter_accept"),
                tp("syscalls", "sys_exit_accept"),
                tp("syscalls", "sys_enter_accept4"),
                tp("syscalls", "sys_exit_accept4"),
            ],
        ],
    },
    // Enforcement beyond bind has one rung: where the kernel has no BPF
    // LSM nothing else can refuse these calls (a syscall tracepoint only
    // watches), and the daemon says what is then not enforced.
    Fact {
        name: "enforce: refuse listen() on TCP ports and UNIX names (opt-in: enforce)",
        opt_in: Some(OptIn::Enforce),
        rungs: &[&[lsm("lsm_sock_listen", "socket_listen")]],
    },
    Fact {
        name: "enforce: refuse the creation of raw and packet sockets (opt-in: enforce)",
        opt_in: Some(OptIn::Enforce),
        rungs: &[&[lsm("lsm_sock_create", "socket_create")]],
    },
];

/// The parameters an fentry/fexit program on `function` reads, by
/// position, as the kernel declares them; checked against the kernel's
/// BTF before loading, so that a kernel whose function takes other
/// arguments gets the next rung rather than misread ones (the verifier
/// only checks that a program reads no slot past the last).
pub fn params(function: &str) -> &'static [&'static str] {
    match function {
        "__sys_bind" => &["fd", "umyaddr", "addrlen"],
        "__sys_listen" => &["fd", "backlog"],
        "close_fd" => &["fd"],
        "__sys_socket" => &["family", "type", "protocol"],
        "__sys_setsockopt" => &["fd", "level", "optname", "user_optval", "optlen"],
        "__sys_accept4" => &["fd", "upeer_sockaddr", "upeer_addrlen", "flags"],
        // BPF LSM programs run on `bpf_lsm_<hook>`, declared with the hook's parameters.
        "bpf_lsm_socket_listen" => &["sock", "backlog"],
        "bpf_lsm_socket_create" => &["family", "type", "protocol", "kern"],
        _ => &[],
    }
}

/// Every tracepoint some rung may attach, the optional facts `--accept`
/// asks for included or not.
pub fn tracepoints(accept: bool) -> Vec<(&'static str, &'static str)> {
    FACTS
        .iter()
        .filter(|f| f.wanted(accept, true))
        .flat_map(|f| f.rungs.iter().flat_map(|r| r.iter()))
        .filter_map(Hook::tracepoint)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_program_is_in_one_rung_only() {
        let mut seen = HashSet::new();
        for fact in FACTS {
            assert!(!fact.rungs.is_empty(), "{} has no hook", fact.name);
            for hook in fact.rungs.iter().flat_map(|r| r.iter()) {
                assert!(seen.insert(hook.program()), "{} is in two rungs", hook.program());
            }
        }
    }

    /// The kernel keeps 15 bytes of a program's name; bpftool and the
    /// guest scenario find programs by it.
    #[test]
    fn program_names_fit_the_kernel() {
        for hook in FACTS.iter().flat_map(|f| f.rungs.iter().flat_map(|r| r.iter())) {
            if hook.tracepoint().is_none() {
                assert!(hook.program().len() <= 15, "{} is longer than 15 bytes", hook.program());
            }
        }
    }

    /// A syscall tracepoint is never preferred to another rung.
    #[test]
    fn syscall_tracepoints_are_the_last_rung() {
        for fact in FACTS {
            for rung in &fact.rungs[..fact.rungs.len() - 1] {
                assert!(
                    !rung.iter().any(Hook::is_syscall_tracepoint),
                    "{}: a syscall tracepoint before the last rung",
                    fact.name
                );
            }
        }
    }

    #[test]
    fn every_tracing_hook_says_what_it_reads() {
        for hook in FACTS.iter().flat_map(|f| f.rungs.iter().flat_map(|r| r.iter())) {
            match hook {
                Hook::FEntry { function, .. } | Hook::FExit { function, .. } => {
                    assert!(!params(function).is_empty(), "{function}");
                }
                Hook::Lsm { hook, .. } => assert!(!params(&format!("bpf_lsm_{hook}")).is_empty(), "{hook}"),
                _ => {}
            }
        }
    }

    #[test]
    fn describes_hooks_as_the_ready_line_does() {
        assert_eq!(tp("sock", "inet_sock_set_state").describe(), "tracepoint sock/inet_sock_set_state");
        assert_eq!(fexit("fexit_bind", "__sys_bind").describe(), "fexit __sys_bind");
        assert_eq!(cgroup("post_bind4").describe(), "cgroup/post_bind4");
        assert_eq!(lsm("lsm_sock_listen", "socket_listen").describe(), "lsm socket_listen");
    }

    /// Only the daemon's `enforce` (and doctor) attaches the LSM hooks.
    #[test]
    fn lsm_hooks_are_enforcements_alone() {
        for fact in FACTS {
            let lsm = fact.rungs.iter().flat_map(|r| r.iter()).any(|h| matches!(h, Hook::Lsm { .. }));
            assert_eq!(lsm, fact.opt_in == Some(OptIn::Enforce), "{}", fact.name);
            assert!(!fact.wanted(true, false) || !lsm, "{}", fact.name);
        }
    }
}
