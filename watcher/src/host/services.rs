//! Well-known port names (22 ssh, 25 smtp, 111 sunrpc…) from the system's
//! services database, read once, so output says what a port usually is.
use std::sync::OnceLock;

use crate::model::fast_map::FastMap;

const SERVICES_FILE: &str = "/etc/services";

/// Port → name, per protocol, as /etc/services lists them. Looked up for
/// every TCP and UDP line: foldhash, not SipHash (220 instructions a
/// look-up, found with callgrind), on keys that are the administrator's.
#[derive(Default)]
pub struct Services {
    tcp: FastMap<u16, String>,
    udp: FastMap<u16, String>,
}

impl Services {
    /// Parses the services(5) format: `name port/proto [aliases…] [# comment]`.
    /// A malformed line is skipped; the first name given for a port wins,
    /// as getservbyport(3) does.
    pub fn parse(text: &str) -> Self {
        let mut services = Self::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            // The file is the administrator's, but its names end up in our
            // output lines: keep only plain ones.
            if !name.bytes().all(|b| b.is_ascii_graphic()) || name.len() > 32 {
                continue;
            }
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let table = match proto {
                "tcp" => &mut services.tcp,
                "udp" => &mut services.udp,
                _ => continue,
            };
            table.entry(port).or_insert_with(|| name.to_owned());
        }
        services
    }

    pub fn name(&self, proto: &str, port: u16) -> Option<&str> {
        match proto {
            "tcp" => self.tcp.get(&port),
            "udp" => self.udp.get(&port),
            _ => None,
        }
        .map(String::as_str)
    }
}

/// The system's services database, read at first use; empty when the file
/// is missing or unreadable (names are a convenience, never required).
pub fn system() -> &'static Services {
    static SYSTEM: OnceLock<Services> = OnceLock::new();
    SYSTEM.get_or_init(|| std::fs::read_to_string(SERVICES_FILE).map(|t| Services::parse(&t)).unwrap_or_default())
}

/// The well-known name of `port` for `proto` ("tcp", "udp"), if it has one.
pub fn name(proto: &str, port: u16) -> Option<&'static str> {
    if port == 0 {
        return None;
    }
    system().name(proto, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_aliases_comments_and_bad_lines() {
        let s = Services::parse(
            "# comment\nssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol\nsunrpc 111/tcp portmapper\nsunrpc 111/udp portmapper\n\
             broken\nbad 99999/tcp\nsctp-only 9/sctp\nevil\x1b[2J 7/tcp\nfirst 5/tcp\nsecond 5/tcp\n",
        );
        assert_eq!(s.name("tcp", 22), Some("ssh"));
        assert_eq!(s.name("udp", 22), None);
        assert_eq!(s.name("udp", 111), Some("sunrpc"));
        assert_eq!(s.name("tcp", 9), None);
        assert_eq!(s.name("tcp", 7), None, "a name with control characters is dropped");
        assert_eq!(s.name("tcp", 5), Some("first"));
        assert_eq!(s.name("unix", 22), None);
    }

    #[test]
    fn reads_the_system_file() {
        if std::path::Path::new(SERVICES_FILE).exists() {
            assert_eq!(name("tcp", 22), Some("ssh"));
            assert_eq!(name("tcp", 0), None);
        }
    }
}
