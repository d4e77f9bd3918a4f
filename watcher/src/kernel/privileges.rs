//! The check made before anything is loaded, so that a user without the
//! needed privileges gets one clear line instead of a verifier error.
use std::fs;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Capabilities watcher needs: loading BPF and reading kernel memory
/// (CAP_BPF, CAP_PERFMON), attaching to the cgroup root (CAP_NET_ADMIN),
/// mounting tracefs and reading /proc of every process (CAP_SYS_ADMIN).
pub const REQUIRED: [(u32, &str); 4] = [
    (CAP_BPF, "CAP_BPF"),
    (CAP_PERFMON, "CAP_PERFMON"),
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
];

/// The names of the required capabilities this process lacks.
pub fn missing_capabilities() -> Vec<&'static str> {
    let effective = fs::read_to_string("/proc/self/status").ok().and_then(|status| parse_cap_eff(&status)).unwrap_or(0);
    REQUIRED.iter().filter(|(bit, _)| effective & (1u64 << bit) == 0).map(|&(_, name)| name).collect()
}

const CAP_KILL: u32 = 5;

/// Whether this process may signal any process (CAP_KILL): without it
/// `kill_unexpected`'s kills fail, and the kernel must not stop a
/// listener that userspace could then neither kill nor let go on.
pub fn can_kill() -> bool {
    let effective = fs::read_to_string("/proc/self/status").ok().and_then(|status| parse_cap_eff(&status)).unwrap_or(0);
    effective & (1u64 << CAP_KILL) != 0
}

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;

/// Capabilities `watcher list` needs: listing other users' /proc/<pid>/fd
/// (CAP_DAC_READ_SEARCH) and reading their links (CAP_SYS_PTRACE). It loads
/// no BPF.
pub const LIST_REQUIRED: [(u32, &str); 2] =
    [(CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"), (CAP_SYS_PTRACE, "CAP_SYS_PTRACE")];

/// Fails with the message the user should see when `watcher list` lacks privileges.
pub fn check_list() -> anyhow::Result<()> {
    let effective = fs::read_to_string("/proc/self/status").ok().and_then(|status| parse_cap_eff(&status)).unwrap_or(0);
    let missing: Vec<&str> =
        LIST_REQUIRED.iter().filter(|(bit, _)| effective & (1u64 << bit) == 0).map(|&(_, name)| name).collect();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "insufficient privileges: run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to read every process's open sockets (missing: {})",
        missing.join(", ")
    )
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Fails with the message the user should see when privileges are missing.
pub fn check() -> anyhow::Result<()> {
    let missing = missing_capabilities();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "insufficient privileges: run as root, or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN (missing: {})",
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_set() {
        let status = "Name:\tx\nCapEff:\t000001ff00201000\n";
        let caps = parse_cap_eff(status).unwrap();
        for (bit, name) in REQUIRED {
            assert_ne!(caps & (1 << bit), 0, "{name}");
        }
        assert_eq!(parse_cap_eff("CapEff:\t0000000000000000"), Some(0));
        assert_eq!(parse_cap_eff("nothing"), None);
    }
}
