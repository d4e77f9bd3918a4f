//! The daemon's configuration: the allowlist of expected listeners, what to
//! do about the rest, and where to send events. TOML; see
//! `watcher.example.toml` and the README.
//!
//! A bad file is refused whole, with the line and the reason: at start the
//! daemon exits 2; on reload it keeps the rules it had.
use std::{fmt, net::SocketAddr, ops::RangeInclusive, path::PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Refuse, in the kernel, a bind the allowlist does not allow (EPERM).
    #[serde(default)]
    pub enforce: bool,
    /// The cgroup v2 directory whose processes (and its descendants') are
    /// enforced on; default: the cgroup v2 root, the whole host.
    pub enforce_cgroup: Option<PathBuf>,
    /// SIGKILL the process behind an unexpected listener.
    #[serde(default)]
    pub kill_unexpected: bool,
    /// Severity of an alert no rule speaks for.
    #[serde(default = "Severity::warning")]
    pub default_severity: Severity,
    #[serde(default)]
    pub output: OutputConfig,
    pub syslog: Option<SyslogConfig>,
    pub metrics: Option<MetricsConfig>,
    /// The expected listeners.
    #[serde(default, rename = "allow")]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// JSON lines to this file (appended) instead of stdout.
    pub json_file: Option<PathBuf>,
    /// The file's permissions, set whenever it is opened: 0600 unless a
    /// group should read it.
    #[serde(default)]
    pub json_file_mode: FileMode,
    /// The schema of each line: watcher's own JSON, ECS or OCSF.
    #[serde(default)]
    pub format: LineFormat,
}

/// The schema the daemon writes its lines in (stdout or `json_file`, and
/// syslog, which carries the same line): `json` (watcher's own fields),
/// `ecs` (Elastic Common Schema 8.x) or `ocsf` (OCSF 1.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LineFormat {
    #[default]
    Json,
    Ecs,
    Ocsf,
}

impl LineFormat {
    pub const ALL: [Self; 3] = [Self::Json, Self::Ecs, Self::Ocsf];

    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ecs => "ecs",
            Self::Ocsf => "ocsf",
        }
    }
}

impl<'de> Deserialize<'de> for LineFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::ALL.into_iter().find(|f| f.name() == text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "[output] format {text:?}: expected \"json\" (watcher's own fields), \"ecs\" (Elastic Common \
                 Schema) or \"ocsf\" (OCSF)"
            ))
        })
    }
}

/// A file's permission bits, written in octal as a string (`"0640"`). None
/// for other users: the events carry every process's command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Default for FileMode {
    fn default() -> Self {
        Self(0o600)
    }
}

impl FileMode {
    pub fn parse(text: &str) -> Result<Self, String> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let mode = (!digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .then(|| u32::from_str_radix(digits, 8).ok())
            .flatten()
            .ok_or_else(|| format!("json_file_mode {text:?} is not a mode in octal digits, like \"0640\""))?;
        if mode > 0o777 {
            return Err(format!("json_file_mode {text:?}: setuid, setgid and sticky bits have no place on a log"));
        }
        if mode & 0o007 != 0 {
            return Err(format!(
                "json_file_mode {text:?} lets every user on the host read or write the events (they hold every \
                 process's command line): use \"0600\", or \"0640\" with a group"
            ));
        }
        Ok(Self(mode))
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
            // TOML reads 0640 as decimal 640 and 0o640 as 416: both lose
            // what was meant, so only the quoted form is taken.
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "json_file_mode {n}: write the mode as a quoted octal string, like \"0640\""
            ))),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `local` (/dev/log), `unix:PATH`, `udp://HOST:PORT` or `tcp://HOST:PORT`.
    pub target: String,
    /// Send every event, not only alerts and lifecycle changes.
    #[serde(default)]
    pub all_events: bool,
    /// The syslog facility of every message.
    #[serde(default)]
    pub facility: SyslogFacility,
}

/// The facilities an administrator routes a security tool's messages by.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFacility {
    User,
    #[default]
    Daemon,
    Auth,
    Authpriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the Prometheus endpoint listens; loopback unless told otherwise.
    #[serde(default = "MetricsConfig::default_listen")]
    pub listen: SocketAddr,
}

impl MetricsConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9187))
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    fn warning() -> Self {
        Self::Warning
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleProto {
    Tcp,
    Udp,
    Unix,
    Raw,
    Packet,
}

impl RuleProto {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Unix => "unix",
            Self::Raw => "raw",
            Self::Packet => "packet",
        }
    }
}

/// Which local addresses a rule covers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Any address, wildcard included.
    #[default]
    Any,
    /// 127.0.0.0/8 and ::1 only.
    Loopback,
}

/// A port or an inclusive range: `22` or `"8000-8100"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports(pub RangeInclusive<u16>);

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u16),
            Range(String),
        }
        match Raw::deserialize(d)? {
            Raw::One(p) => Ok(Self(p..=p)),
            Raw::Range(text) => {
                let parse = |s: &str| {
                    s.trim().parse::<u16>().map_err(|_| serde::de::Error::custom(format!("bad port {s:?} in {text:?}")))
                };
                let (lo, hi) = match text.split_once('-') {
                    Some((lo, hi)) => (parse(lo)?, parse(hi)?),
                    None => {
                        let p = parse(&text)?;
                        (p, p)
                    }
                };
                if lo > hi {
                    return Err(serde::de::Error::custom(format!("port range {text:?} runs backwards")));
                }
                Ok(Self(lo..=hi))
            }
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.start() == self.0.end() {
            write!(f, "{}", self.0.start())
        } else {
            write!(f, "{}-{}", self.0.start(), self.0.end())
        }
    }
}

/// One expected listener. Unset fields match anything.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Names the rule in alerts and metrics (default: its proto/port/path).
    pub name: Option<String>,
    pub proto: RuleProto,
    /// TCP, UDP: the port or range.
    pub port: Option<Ports>,
    /// UNIX: the path (`@name` for an abstract name).
    pub path: Option<String>,
    #[serde(default)]
    pub scope: Scope,
    /// The executable's full path.
    pub exe: Option<String>,
    /// The kernel's comm (first 15 bytes of the program name).
    pub comm: Option<String>,
    /// The user name (or uid, as a string).
    pub user: Option<String>,
    /// Severity of an alert for a listener this rule's port or path is
    /// taken by someone else.
    #[serde(default)]
    pub severity: Severity,
}

impl Rule {
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match (&self.port, &self.path) {
            (Some(p), _) => format!("{}/{p}", self.proto.name()),
            (_, Some(path)) => format!("unix:{path}"),
            _ => self.proto.name().to_owned(),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| {
            // One line: where, and why (toml's own Display adds a snippet).
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            anyhow::anyhow!("{}{}", at.unwrap_or_default(), e.message().trim_end().replace('\n', " "))
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (i, rule) in self.rules.iter().enumerate() {
            let which = || format!("[[allow]] rule {} ({})", i + 1, rule.label());
            match rule.proto {
                RuleProto::Tcp | RuleProto::Udp => {
                    if rule.path.is_some() {
                        bail!("{}: `path` is for unix rules; tcp and udp take `port`", which());
                    }
                }
                RuleProto::Unix => {
                    if rule.port.is_some() {
                        bail!("{}: unix rules take `path`, not `port`", which());
                    }
                }
                RuleProto::Raw | RuleProto::Packet => {
                    if rule.port.is_some() || rule.path.is_some() {
                        bail!("{}: raw and packet sockets have no port or path", which());
                    }
                }
            }
            if rule.scope == Scope::Loopback && matches!(rule.proto, RuleProto::Unix | RuleProto::Packet) {
                bail!("{}: `scope` applies to IP sockets only", which());
            }
        }
        if let Some(syslog) = &self.syslog {
            // One message, not a context chain: a reload prints it on one line.
            if let Err(e) = SyslogTarget::parse(&syslog.target) {
                bail!("[syslog] target {:?}: {e}", syslog.target);
            }
        }
        Ok(())
    }
}

/// The local syslog socket (`target = "local"`).
const LOCAL_SOCKET: &str = "/dev/log";

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A UNIX datagram socket (`local` is /dev/log).
    Unix(PathBuf),
    /// `HOST:PORT`, resolved at each connection.
    Udp(String),
    Tcp(String),
}

impl SyslogTarget {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let host_port = |hp: &str| -> anyhow::Result<String> {
            match hp.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
                    Ok(hp.to_owned())
                }
                _ => bail!("expected HOST:PORT after the scheme, not {hp:?}"),
            }
        };
        if text == "local" {
            return Ok(Self::Unix(PathBuf::from(LOCAL_SOCKET)));
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                bail!("expected an absolute path after \"unix:\", not {path:?}");
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(hp) = text.strip_prefix("udp://") {
            return Ok(Self::Udp(host_port(hp)?));
        }
        if let Some(hp) = text.strip_prefix("tcp://") {
            return Ok(Self::Tcp(host_port(hp)?));
        }
        bail!("expected \"local\", \"unix:/PATH\", \"udp://HOST:PORT\" or \"tcp://HOST:PORT\"")
    }
}

impl fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Udp(hp) => write!(f, "udp://{hp}"),
            Self::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_example_file() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../watcher.example.toml")).unwrap();
        let config = Config::parse(&text).unwrap();
        assert!(!config.enforce);
        assert!(config.rules.iter().any(|r| r.proto == RuleProto::Tcp && r.port == Some(Ports(22..=22))));
    }

    #[test]
    fn ports_and_ranges() {
        let c =
            Config::parse("[[allow]]\nproto = \"tcp\"\nport = \"8000-8100\"\n[[allow]]\nproto = \"udp\"\nport = 53\n")
                .unwrap();
        assert_eq!(c.rules[0].port, Some(Ports(8000..=8100)));
        assert_eq!(c.rules[1].port, Some(Ports(53..=53)));
        assert_eq!(c.rules[0].label(), "tcp/8000-8100");
    }

    #[test]
    fn json_file_mode_is_private_by_default() {
        let c = Config::parse("[output]\njson_file = \"/var/log/watcher/events.jsonl\"\n").unwrap();
        assert_eq!(c.output.json_file_mode, FileMode(0o600));
        for (text, mode) in [("0640", 0o640), ("640", 0o640), ("0o600", 0o600), ("0400", 0o400), ("0", 0)] {
            let c = Config::parse(&format!("[output]\njson_file_mode = \"{text}\"\n")).unwrap();
            assert_eq!(c.output.json_file_mode, FileMode(mode), "{text}");
        }
        assert_eq!(FileMode(0o640).to_string(), "0640");
    }

    #[test]
    fn output_format_defaults_to_json() {
        assert_eq!(Config::parse("").unwrap().output.format, LineFormat::Json);
        for format in LineFormat::ALL {
            let c = Config::parse(&format!("[output]\nformat = \"{}\"\n", format.name())).unwrap();
            assert_eq!(c.output.format, format);
        }
    }

    #[test]
    fn bad_files_name_the_line_and_reason() {
        for (text, expect) in [
            ("[[allow]]\nproto = \"tcp\"\nport = \"90-80\"\n", "backwards"),
            ("[[allow]]\nproto = \"tcpx\"\n", "line 2"),
            ("[[allow]]\nproto = \"tcp\"\nprot = 22\n", "unknown field"),
            ("enforce = maybe\n", "line 1"),
            ("[[allow]]\nproto = \"unix\"\nport = 22\n", "unix rules take `path`"),
            ("[syslog]\ntarget = \"udp://nohost\"\n", "expected"),
            ("[syslog]\ntarget = \"unix:log\"\n", "absolute path"),
            ("[syslog]\ntarget = \"local\"\nfacility = \"kern\"\n", "unknown variant"),
            ("[metrics]\nlisten = \"localhost\"\n", "line 2"),
            ("[output]\njson_file_mode = \"0644\"\n", "lets every user"),
            ("[output]\njson_file_mode = \"0602\"\n", "line 2, column 18: json_file_mode \"0602\" lets every user"),
            ("[output]\njson_file_mode = \"rw-r-----\"\n", "not a mode in octal digits"),
            ("[output]\njson_file_mode = \"0680\"\n", "not a mode in octal digits"),
            ("[output]\njson_file_mode = \"\"\n", "not a mode in octal digits"),
            ("[output]\njson_file_mode = \"4600\"\n", "setuid"),
            ("[output]\njson_file_mode = 640\n", "quoted octal string"),
            ("[output]\njson_file_mode = 0o640\n", "quoted octal string"),
            ("[output]\nformat = \"cef\"\n", "line 2, column 10: [output] format \"cef\": expected \"json\""),
            ("[output]\nformat = \"ECS\"\n", "expected \"json\""),
            ("[output]\nformat = 1\n", "line 2"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text:?}: {e}");
        }
    }
}
