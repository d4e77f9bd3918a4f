//! `watcher baseline`: an allowlist from what listens now — the
//! administrator's "look at what runs, then decide" step. Every listener,
//! bound socket, raw and packet socket with a holding process becomes one
//! `[[allow]]` rule naming its protocol, port or path, scope, exe and user.
use std::{
    collections::BTreeSet,
    io::{self, Write},
    path::Path,
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::BaselineArgs,
    host::{process::ProcessLookup, services},
    kernel::privileges,
    model::{
        socket::{Local, Proto},
        text::unix_path,
    },
    snapshot::{holders, sock_diag},
};

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    name: String,
    proto: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

/// A port as the configuration takes it: a number, or a `"LOW-HIGH"` range.
#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(untagged)]
enum Port {
    One(u16),
    Range(String),
}

#[derive(Serialize)]
struct File {
    allow: Vec<Rule>,
}

pub fn run(_args: &BaselineArgs) -> anyhow::Result<()> {
    privileges::check_list()?;
    let snapshot = sock_diag::take(Path::new("/proc"), &[])?;
    let mut lookup = ProcessLookup::default();
    let holders = holders::name_holders(&snapshot, &mut lookup);
    let ephemeral = ephemeral_ports();
    let mut rules = BTreeSet::new();
    let mut skipped = 0;
    for socket in &snapshot.sockets {
        let Some(infos) = holders.get(&socket.inode).filter(|h| !h.is_empty()) else {
            skipped += 1; // a kernel socket: no process to allow
            continue;
        };
        // One rule per socket, for its creator as the daemon judges it: a
        // daemon that bound as root and runs as another user is allowed as
        // root, which is what its next start will be.
        let holder = holders::creator(socket.owner_uid, infos, &mut lookup);
        let (port, path, scope) = match &socket.local {
            Local::Inet { addr, port } => (Some(*port), None, addr.is_loopback().then_some("loopback")),
            Local::Unix { path } => (None, Some(unix_path(path)), None),
            Local::Raw { addr, .. } => (None, None, addr.is_loopback().then_some("loopback")),
            Local::Packet { .. } => (None, None, None),
        };
        // A path that is not UTF-8 cannot be a TOML string: name by comm then.
        let exe = holder.exe.as_deref().and_then(|e| std::str::from_utf8(e).ok()).map(str::to_owned);
        let comm = if exe.is_none() && !holder.comm.is_empty() {
            Some(String::from_utf8_lossy(&holder.comm).into_owned())
        } else {
            None
        };
        let who =
            exe.as_deref().and_then(|e| e.rsplit('/').next()).map(str::to_owned).or(comm.clone()).unwrap_or_default();
        let proto_name = socket.proto.name();
        let random = port.and_then(|p| random_port_range(&proto_name, p, ephemeral));
        let place = match (port, random) {
            (Some(_), Some((low, high))) => format!("random port {low}-{high}"),
            (Some(p), None) => match services::name(&proto_name, p) {
                Some(service) => format!("{p} ({service})"),
                None => p.to_string(),
            },
            (None, _) => path.clone().unwrap_or_default(),
        };
        rules.insert(Rule {
            name: format!("{who} {proto_name} {place}").trim().to_owned(),
            proto: match socket.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
                Proto::Unix => "unix",
                Proto::Raw => "raw",
                Proto::Packet => "packet",
                Proto::Other(_) => continue,
            },
            port: match (port, random) {
                (Some(_), Some((low, high))) => Some(Port::Range(format!("{low}-{high}"))),
                (p, _) => p.map(Port::One),
            },
            path,
            scope,
            exe,
            comm,
            user: holder.user.clone().or(holder.uid.map(|u| u.to_string())),
        });
    }
    let file = File { allow: rules.into_iter().collect() };
    let body = toml::to_string(&file).context("writing the allowlist as TOML")?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "# watcher allowlist written by `watcher baseline` from what listened at {}.",
        crate::model::text::rfc3339(chrono::Utc::now())
    )?;
    writeln!(out, "# Review it: every rule below allows what runs now. See watcher.example.toml.")?;
    if skipped > 0 {
        writeln!(out, "# {skipped} socket(s) held by no process (kernel sockets) are not listed.")?;
    }
    writeln!(out, "enforce = false\nkill_unexpected = false\n")?;
    out.write_all(body.as_bytes())?;
    out.flush().context("writing to stdout")
}

/// Ports a daemon may be given at random at each start: the kernel's
/// ephemeral range (a bind to port 0) and the range glibc's bindresvport
/// draws privileged ports from (rpc.statd uses both). A port there that
/// /etc/services does not name is taken for a random one, and the rule
/// allows the program the whole range: otherwise its next start alerts.
fn random_port_range(proto: &str, port: u16, ephemeral: (u16, u16)) -> Option<(u16, u16)> {
    if services::name(proto, port).is_some() {
        return None;
    }
    [(512, 1023), ephemeral].into_iter().find(|(low, high)| (*low..=*high).contains(&port))
}

/// /proc/sys/net/ipv4/ip_local_port_range, or Linux's default.
fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_ports_in_the_random_ranges_become_ranges() {
        let eph = (32768, 60999);
        assert_eq!(random_port_range("udp", 704, eph), Some((512, 1023)), "statd's bindresvport port");
        assert_eq!(random_port_range("tcp", 32768, eph), Some((32768, 60999)), "an ephemeral port");
        assert_eq!(random_port_range("tcp", 22, eph), None, "ssh is fixed");
        assert_eq!(random_port_range("tcp", 8080, eph), None, "outside both ranges");
    }
}
