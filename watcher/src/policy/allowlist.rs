//! The allowlist's verdict on a listener or passive socket: allowed by a
//! rule, or an alert that says why no rule allows it.
use std::net::IpAddr;

use crate::{
    config::{Config, RuleProto, Scope, Severity},
    model::{
        escape::{escape_bytes, unescape},
        text::unix_path,
    },
};

/// What is judged: a socket and the process that holds it.
#[derive(Clone, Debug)]
pub struct Subject<'a> {
    pub proto: RuleProto,
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    /// UNIX path as bytes (abstract: leading NUL).
    pub path: Option<&'a [u8]>,
    pub exe: Option<&'a [u8]>,
    pub comm: &'a [u8],
    pub user: Option<&'a str>,
    pub uid: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed { rule: String },
    Alert { rule: Option<String>, severity: Severity, reason: String },
}

impl Subject<'_> {
    fn what(&self) -> String {
        match (self.port, self.path) {
            (Some(port), _) => format!("{} port {port}", self.proto.name()),
            (_, Some(path)) => format!("unix {}", unix_path(path)),
            _ => format!("a {} socket", self.proto.name()),
        }
    }

    fn who(&self) -> String {
        let exe = self.exe.map_or_else(|| "?".to_owned(), escape_bytes);
        let user = self.user.map(str::to_owned).or(self.uid.map(|u| u.to_string())).unwrap_or_else(|| "?".to_owned());
        format!("exe={exe} comm={} user={user}", escape_bytes(self.comm))
    }
}

/// Whether a unix rule's `path` names the socket bound to `path` (bytes as
/// the kernel holds them, an abstract name with its leading NUL): the rule
/// is written as watcher prints names, `@name` for an abstract one.
pub fn path_matches(rule_path: &str, path: &[u8]) -> bool {
    unix_path(path) == rule_path
}

/// Every socket name a unix rule's `path` matches (see [`path_matches`]),
/// for the kernel's enforcement map, which looks names up by their bytes:
/// `@x` names both the abstract `x` and a file called `@x`; a path with an
/// escape watcher never prints names nothing.
pub fn unix_names(rule_path: &str) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    if let Some(name) = rule_path.strip_prefix('@').and_then(unescape) {
        names.push([&[0][..], &name].concat());
    }
    names.extend(unescape(rule_path));
    names.retain(|name| path_matches(rule_path, name));
    names
}

pub fn judge(config: &Config, s: &Subject<'_>) -> Verdict {
    // Rules for this socket (proto, port or path, scope), then for its holder.
    let for_socket: Vec<_> = config
        .rules
        .iter()
        .filter(|r| r.proto == s.proto)
        .filter(|r| r.port.as_ref().is_none_or(|p| s.port.is_some_and(|port| p.0.contains(&port))))
        .filter(|r| r.path.as_ref().is_none_or(|p| s.path.is_some_and(|path| path_matches(p, path))))
        .filter(|r| r.scope == Scope::Any || s.addr.is_some_and(|a| a.is_loopback()))
        .collect();
    let holder_matches = |r: &&&crate::config::Rule| {
        r.exe.as_ref().is_none_or(|e| s.exe.is_some_and(|x| x == e.as_bytes()))
            && r.comm.as_ref().is_none_or(|c| c.as_bytes() == s.comm)
            && r.user
                .as_ref()
                .is_none_or(|u| s.user == Some(u.as_str()) || s.uid.is_some_and(|id| id.to_string() == *u))
    };
    if let Some(rule) = for_socket.iter().find(holder_matches) {
        return Verdict::Allowed { rule: rule.label() };
    }
    match for_socket.iter().max_by_key(|r| r.severity) {
        Some(rule) => Verdict::Alert {
            rule: Some(rule.label()),
            severity: rule.severity,
            reason: format!(
                "{} is allowed (rule {:?}) to{}{}{}, not to {}",
                s.what(),
                rule.label(),
                rule.exe.as_ref().map_or(String::new(), |e| format!(" exe={e}")),
                rule.comm.as_ref().map_or(String::new(), |c| format!(" comm={c}")),
                rule.user.as_ref().map_or(String::new(), |u| format!(" user={u}")),
                s.who()
            ),
        },
        None => Verdict::Alert {
            rule: None,
            severity: config.default_severity,
            reason: format!(
                "no rule allows {}{} ({})",
                s.what(),
                s.addr.map_or(String::new(), |a| format!(" on {a}")),
                s.who()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn config() -> Config {
        Config::parse(
            r#"
            [[allow]]
            name = "ssh"
            proto = "tcp"
            port = 22
            exe = "/usr/sbin/sshd"
            user = "root"
            severity = "critical"
            [[allow]]
            proto = "udp"
            port = "5000-5010"
            scope = "loopback"
            [[allow]]
            proto = "unix"
            path = "@x11"
            comm = "Xorg"
            "#,
        )
        .unwrap()
    }

    fn tcp(port: u16, exe: &'static str, user: &'static str) -> Subject<'static> {
        Subject {
            proto: RuleProto::Tcp,
            addr: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port: Some(port),
            path: None,
            exe: Some(exe.as_bytes()),
            comm: b"x",
            user: Some(user),
            uid: Some(0),
        }
    }

    #[test]
    fn allowed_by_a_matching_rule() {
        assert_eq!(judge(&config(), &tcp(22, "/usr/sbin/sshd", "root")), Verdict::Allowed { rule: "ssh".into() });
    }

    #[test]
    fn the_wrong_program_on_a_known_port_gets_the_rules_severity() {
        let Verdict::Alert { rule, severity, reason } = judge(&config(), &tcp(22, "/usr/bin/nc", "nobody")) else {
            panic!()
        };
        assert_eq!((rule.as_deref(), severity), (Some("ssh"), Severity::Critical));
        assert!(reason.contains("exe=/usr/sbin/sshd") && reason.contains("not to exe=/usr/bin/nc"), "{reason}");
    }

    #[test]
    fn unknown_ports_scopes_and_paths() {
        let Verdict::Alert { rule: None, severity: Severity::Warning, reason } =
            judge(&config(), &tcp(4444, "/usr/bin/nc", "root"))
        else {
            panic!()
        };
        assert!(reason.starts_with("no rule allows tcp port 4444 on 0.0.0.0"), "{reason}");
        let mut udp = tcp(5005, "/bin/x", "root");
        udp.proto = RuleProto::Udp;
        assert!(matches!(judge(&config(), &udp), Verdict::Alert { .. }), "scope loopback, address any");
        udp.addr = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(matches!(judge(&config(), &udp), Verdict::Allowed { .. }));
        let unix = Subject {
            proto: RuleProto::Unix,
            addr: None,
            port: None,
            path: Some(b"\0x11"),
            exe: None,
            comm: b"Xorg",
            user: None,
            uid: None,
        };
        assert!(matches!(judge(&config(), &unix), Verdict::Allowed { .. }));
    }

    /// The names the kernel's map is given are exactly those `judge` matches.
    #[test]
    fn unix_names_are_what_judge_matches() {
        assert_eq!(unix_names("/run/x.sock"), vec![b"/run/x.sock".to_vec()]);
        assert_eq!(unix_names("@x11"), vec![b"\0x11".to_vec(), b"@x11".to_vec()]);
        assert_eq!(unix_names("@a\\x00b"), vec![b"\0a\0b".to_vec(), b"@a\0b".to_vec()]);
        assert_eq!(unix_names("/tmp/\\n"), vec![b"/tmp/\n".to_vec()]);
        assert!(unix_names("/tmp/\\x41").is_empty(), "watcher prints A, never \\x41");
        for path in ["/run/x.sock", "@x11", "@a\\x00b", "/tmp/\\n", "@"] {
            for name in unix_names(path) {
                assert!(path_matches(path, &name), "{path}: {name:?}");
            }
        }
    }

    #[test]
    fn hostile_names_are_escaped_in_reasons() {
        let mut s = tcp(9, "/tmp/\nx", "root");
        s.comm = b"\x1b[31m";
        let Verdict::Alert { reason, .. } = judge(&config(), &s) else { panic!() };
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }
}
