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
//! cheaper.

/// One program to attach, named as in the eBPF object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A tracepoint; its program is named after it.
    Tracepoint { category: &'static str, name: &'static str },
    /// fentry on a kernel function (needs BTF and BPF trampolines).
    FEntry { program: &'static str, function: &'static str },
    /// fexit on a kernel function: its arguments and return value.
    FExit { program: &'static str, function: &'static str },
    /// A cgroup sock program on the cgroup v2 root.
    CgroupSock { program: &'static str },
}

impl Hook {
    /// The program's name in the eBPF object.
    pub const fn program(&self) -> &'static str {
        match self {
            Self::Tracepoint { name, .. } => name,
            Self::FEntry { program, .. } | Self::FExit { program, .. } | Self::CgroupSock { program } => program,
        }
    }

    /// How the ready line and doctor name it: `tracepoint syscalls/sys_enter_bind`,
    /// `fentry __sys_bind`, `cgroup/post_bind4` (the loader adds the cgroup).
    pub fn describe(&self) -> String {
        match self {
            Self::Tracepoint { category, name } => format!("tracepoint {category}/{name}"),
            Self::FEntry { function, .. } => format!("fentry {function}"),
            Self::FExit { function, .. } => format!("fexit {function}"),
            Self::CgroupSock { program } => format!("cgroup/{program}"),
        }
    }

    /// A `syscalls/*` tracepoint: enabled, it slows every syscall on the host.
    pub fn is_syscall_tracepoint(&self) -> bool {
        matches!(self, Self::Tracepoint { category: "syscalls", .. })
    }
}

/// A fact and the ways to see it, cheapest first; each rung is attached
/// whole or not at all.
#[derive(Debug)]
pub struct Fact {
    pub name: &'static str,
    /// Attached only when asked for (`--accept`); its absence does not make
    /// the default set incomplete.
    pub optional: bool,
    pub rungs: &'static [&'static [Hook]],
}

impl Fact {
    /// Whether any rung costs every syscall on the host.
    pub fn has_syscall_rung(&self) -> bool {
        self.rungs.iter().any(|rung| rung.iter().any(Hook::is_syscall_tracepoint))
    }
}

const fn tp(category: &'static str, name: &'static str) -> Hook {
    Hook::Tracepoint { category, name }
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

/// In attach order: the hooks that only gather a call's arguments (an fd,
/// a backlog) for the hooks that report come first, so that the reporting
/// ones find them from their first event on.
pub const FACTS: &[Fact] = &[
    Fact {
        name: "bind/listen failures and errno; UNIX bind and listen; fd and backlog",
        optional: false,
        rungs: &[
            &[
                fentry("fentry_bind", "__sys_bind"),
                fexit("fexit_bind", "__sys_bind"),
                fentry("fentry_listen", "__sys_listen"),
                fexit("fexit_listen", "__sys_listen"),
            ],
            &[
                tp("syscalls", "sys_enter_bind"),
                tp("syscalls", "sys_enter_listen"),
                tp("syscalls", "sys_exit_bind"),
                tp("syscalls", "sys_exit_listen"),
            ],
        ],
    },
    Fact {
        name: "close of UNIX listeners",
        optional: false,
        // One map lookup per close() on the host either way.
        rungs: &[&[fentry("fentry_close_fd", "close_fd")], &[tp("syscalls", "sys_enter_close")]],
    },
    Fact {
        name: "raw and packet sockets created",
        optional: false,
        rungs: &[
            &[fexit("fexit_socket", "__sys_socket")],
            &[tp("syscalls", "sys_enter_socket"), tp("syscalls", "sys_exit_socket")],
        ],
    },
    Fact {
        name: "filters attached; listener socket options",
        optional: false,
        rungs: &[
            &[fexit("fexit_sockopt", "__sys_setsockopt")],
            &[tp("syscalls", "sys_enter_setsockopt"), tp("syscalls", "sys_exit_setsockopt")],
        ],
    },
    Fact {
        name: "exec: exe and argv",
        optional: false,
        // argv is read from the new program's memory at this tracepoint.
        rungs: &[&[tp("sched", "sched_process_exec")]],
    },
    Fact {
        name: "fork and exit (the process table)",
        optional: false,
        rungs: &[&[tp("sched", "sched_process_fork"), tp("sched", "sched_process_exit")]],
    },
    Fact { name: "TCP listen up / down", optional: false, rungs: &[&[tp("sock", "inet_sock_set_state")]] },
    Fact {
        name: "bind success (v4/v6, the port the kernel chose)",
        optional: false,
        rungs: &[&[cgroup("post_bind4"), cgroup("post_bind6")]],
    },
    Fact { name: "close of bound UDP sockets", optional: false, rungs: &[&[cgroup("sock_release")]] },
    Fact {
        name: "accepted connections (opt-in: --accept)",
        optional: true,
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
        _ => &[],
    }
}

/// Every tracepoint some rung may attach, optional facts included or not.
pub fn tracepoints(optional: bool) -> Vec<(&'static str, &'static str)> {
    FACTS
        .iter()
        .filter(|f| optional || !f.optional)
        .flat_map(|f| f.rungs.iter().flat_map(|r| r.iter()))
        .filter_map(|h| match *h {
            Hook::Tracepoint { category, name } => Some((category, name)),
            _ => None,
        })
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
            if !matches!(hook, Hook::Tracepoint { .. }) {
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
            if let Hook::FEntry { function, .. } | Hook::FExit { function, .. } = hook {
                assert!(!params(function).is_empty(), "{function}");
            }
        }
    }

    #[test]
    fn describes_hooks_as_the_ready_line_does() {
        assert_eq!(tp("sock", "inet_sock_set_state").describe(), "tracepoint sock/inet_sock_set_state");
        assert_eq!(fexit("fexit_bind", "__sys_bind").describe(), "fexit __sys_bind");
        assert_eq!(cgroup("post_bind4").describe(), "cgroup/post_bind4");
    }
}
