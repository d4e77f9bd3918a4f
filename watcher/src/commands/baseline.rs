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
    port: Option<u16>,
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

#[derive(Serialize)]
struct File {
    allow: Vec<Rule>,
}

pub fn run(_args: &BaselineArgs) -> anyhow::Result<()> {
    privileges::check_list()?;
    let snapshot = sock_diag::take(Path::new("/proc"), &[])?;
    let mut lookup = ProcessLookup::default();
    let holders = holders::name_holders(&snapshot, &mut lookup);
    let mut rules = BTreeSet::new();
    let mut skipped = 0;
    for socket in &snapshot.sockets {
        let Some(infos) = holders.get(&socket.inode).filter(|h| !h.is_empty()) else {
            skipped += 1; // a kernel socket: no process to allow
            continue;
        };
        for holder in infos {
            let (port, path, scope) = match &socket.local {
                Local::Inet { addr, port } => (Some(*port), None, addr.is_loopback().then_some("loopback")),
                Local::Unix { path } => (None, Some(unix_path(path)), None),
                Local::Raw { addr, .. } => (None, None, addr.is_loopback().then_some("loopback")),
                Local::Packet { .. } => (None, None, None),
            };
            // A path that is not UTF-8 cannot be a TOML string: name by comm then.
            let exe = holder.process.exe.as_deref().and_then(|e| std::str::from_utf8(e).ok()).map(str::to_owned);
            let comm = if exe.is_none() {
                holder.comm.as_deref().map(|c| String::from_utf8_lossy(c).into_owned())
            } else {
                None
            };
            let who = exe
                .as_deref()
                .and_then(|e| e.rsplit('/').next())
                .map(str::to_owned)
                .or(comm.clone())
                .unwrap_or_default();
            let place = port
                .map(|p| match services::name(&socket.proto.name(), p) {
                    Some(service) => format!("{p} ({service})"),
                    None => p.to_string(),
                })
                .or(path.clone())
                .unwrap_or_default();
            rules.insert(Rule {
                name: format!("{who} {} {place}", socket.proto.name()).trim().to_owned(),
                proto: match socket.proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                    Proto::Unix => "unix",
                    Proto::Raw => "raw",
                    Proto::Packet => "packet",
                    Proto::Other(_) => continue,
                },
                port,
                path,
                scope,
                exe,
                comm,
                user: holder.user.clone().or(holder.uid.map(|u| u.to_string())),
            });
        }
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
