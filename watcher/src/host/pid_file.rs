//! `watcher daemon --pid-file`: where scripts outside systemd (logrotate's
//! `postrotate`) find the daemon to send it SIGHUP.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// The daemon's pid in a file, from start to a clean exit.
pub struct PidFile {
    path: PathBuf,
    text: String,
}

impl PidFile {
    /// Writes this process's pid (through a temporary file and a rename:
    /// a reader sees the old content or the new, never half a number).
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let text = format!("{}\n", std::process::id());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        fs::write(&tmp, &text).with_context(|| format!("writing the pid file {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("writing the pid file {}", path.display()))?;
        Ok(Self { path: path.to_owned(), text })
    }
}

impl Drop for PidFile {
    /// Removes the file, unless another daemon has written its own since.
    fn drop(&mut self) {
        if fs::read_to_string(&self.path).is_ok_and(|t| t == self.text) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_our_pid_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watcher.pid");
        let pid_file = PidFile::create(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));
        drop(pid_file);
        assert!(!path.exists());

        let e = PidFile::create(&dir.path().join("no/such/dir/watcher.pid")).err().unwrap();
        assert!(format!("{e:#}").contains("no/such/dir/watcher.pid.tmp"), "{e:#}");
    }
}
