//! Names a cgroup v2 id (what the kernel puts in every record) by its path,
//! and finds the container id in that path when a container runtime made it.
//!
//! The id of a cgroup v2 is its kernfs node id, which is also a file handle
//! on the cgroup filesystem: `open_by_handle_at` opens the cgroup's folder
//! directly, and /proc/self/fd names it. No walk of the hierarchy, one
//! syscall pair per new id, cached.
use std::{
    fs::File,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::model::fast_map::FastMap;

/// FILEID_KERNFS: the handle type of kernfs (cgroupfs) file handles.
const FILEID_KERNFS: i32 = 0xfe;
/// Names cached at most (the host's cgroups; old ones go first when full).
const CACHE_MAX: usize = 16_384;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupName {
    /// The path below the cgroup v2 root, `/` for the root itself.
    pub path: String,
    pub container_id: Option<String>,
}

pub struct CgroupNames {
    mount: PathBuf,
    mount_fd: OwnedFd,
    cache: FastMap<u64, Option<CgroupName>>,
}

impl CgroupNames {
    pub fn open(mount: &Path) -> anyhow::Result<Self> {
        let dir = File::open(mount).with_context(|| format!("opening the cgroup v2 root {}", mount.display()))?;
        Ok(Self { mount: mount.to_path_buf(), mount_fd: dir.into(), cache: FastMap::default() })
    }

    /// The cgroup's name, or None when it is gone (or was never there).
    pub fn name(&mut self, id: u64) -> Option<&CgroupName> {
        if !self.cache.contains_key(&id) {
            if self.cache.len() >= CACHE_MAX {
                self.cache.clear();
            }
            let name = self.resolve(id);
            self.cache.insert(id, name);
        }
        self.cache.get(&id).and_then(Option::as_ref)
    }

    fn resolve(&self, id: u64) -> Option<CgroupName> {
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: u32,
            handle_type: i32,
            id: u64,
        }
        let mut handle = KernfsHandle { handle_bytes: 8, handle_type: FILEID_KERNFS, id };
        // SAFETY: `handle` has the layout of a `struct file_handle` with 8
        // bytes of f_handle; the kernel only reads it.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.mount_fd.as_raw_fd(),
                std::ptr::from_mut(&mut handle).cast::<libc::file_handle>(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let full = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let below = full.strip_prefix(&self.mount).ok()?;
        let path = format!("/{}", below.display());
        let container_id = container_id(&path);
        Some(CgroupName { path, container_id })
    }
}

/// The container id in a cgroup path, as the common runtimes write it:
/// `docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, `/kubepods/…/<id>`: the last
/// path component holding 64 hexadecimal digits.
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|component| {
        let bytes = component.as_bytes();
        (0..bytes.len().saturating_sub(63)).find_map(|start| {
            let run = &bytes[start..start + 64];
            let bounded = (start == 0 || !bytes[start - 1].is_ascii_hexdigit())
                && bytes.get(start + 64).is_none_or(|b| !b.is_ascii_hexdigit());
            (bounded && run.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .then(|| String::from_utf8_lossy(run).into_owned())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a9c3e1b7d8a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f";

    #[test]
    fn finds_container_ids_of_common_runtimes() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods/besteffort/pod12/{ID}"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(container_id("/system.slice/sshd.service"), None);
        assert_eq!(container_id("/"), None);
        // 65 hex digits is not an id.
        assert_eq!(container_id(&format!("/x/{ID}a")), None);
    }

    #[test]
    fn names_the_root_and_own_cgroup() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // open_by_handle_at needs CAP_DAC_READ_SEARCH
        }
        let Ok(mount) = crate::kernel::loader::cgroup2_mount() else {
            return;
        };
        let mut names = CgroupNames::open(&mount).unwrap();
        let root_id = std::fs::metadata(&mount).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
        assert_eq!(names.name(root_id).map(|n| n.path.as_str()), Some("/"));
        assert_eq!(names.name(u64::MAX - 7), None);
    }
}
