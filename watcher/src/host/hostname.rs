//! The host's name, as the kernel has it (`uname -n`), for the SIEM
//! formats' `host.name` and `device.hostname`.
use std::fs;

/// The UTS namespace's host name; None when it cannot be read.
pub fn hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim_end_matches('\n');
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_kernel_hostname() {
        let name = super::hostname().expect("a host name");
        assert!(!name.contains('\n') && !name.is_empty());
    }
}
