//! A JSON object written straight into a byte buffer, field by field: the
//! fields every live event has and the socket events' own, which are most
//! of what watcher writes (three lines per listener). The bytes are those
//! serde_json writes for the same values (a test holds the two together);
//! what is saved is serde's per-field machinery, the keys' escaping, and
//! an allocation per string, number and address.
use std::{
    fmt::Write as _,
    io,
    net::{IpAddr, Ipv4Addr},
};

use chrono::{DateTime, Timelike as _, Utc};
use serde::Serialize;

use crate::model::{escape::escape, text::rfc3339};

/// An object being written; [`ObjectWriter::end`] closes it.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub fn start(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// `"key":`; keys are watcher's own field names, plain ASCII: written as they are.
    /// Inlined: each key is a constant at its call, so its copy is a few
    /// moves rather than a call to memcpy (15 keys a line: a tenth of a
    /// record's instructions before).
    #[inline(always)]
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    #[inline(always)]
    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        string(self.out, value);
    }

    #[inline(always)]
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// Bytes a process chose (comm, exe, an argument), made printable as
    /// [`escape`] does, as a JSON string.
    #[inline(always)]
    pub fn escaped(&mut self, key: &str, value: Option<&[u8]>) {
        self.key(key);
        match value {
            Some(v) => escaped_string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// A list of such byte strings (argv), or null.
    pub fn escaped_list<'b>(&mut self, key: &str, values: Option<impl Iterator<Item = &'b [u8]>>) {
        self.key(key);
        let Some(values) = values else {
            self.out.extend_from_slice(b"null");
            return;
        };
        self.out.push(b'[');
        for (i, v) in values.enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            escaped_string(self.out, v);
        }
        self.out.push(b']');
    }

    #[inline(always)]
    pub fn str_list(&mut self, key: &str, values: &[&str]) {
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            string(self.out, v);
        }
        self.out.push(b']');
    }

    #[inline(always)]
    pub fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        unsigned(self.out, value);
    }

    #[inline(always)]
    pub fn opt_u64(&mut self, key: &str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(v) => unsigned(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    #[inline(always)]
    pub fn opt_i64(&mut self, key: &str, value: Option<i64>) {
        self.key(key);
        match value {
            Some(v) if v < 0 => {
                self.out.push(b'-');
                unsigned(self.out, v.unsigned_abs());
            }
            Some(v) => unsigned(self.out, v as u64),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// An address as `Display` writes it, as a string.
    #[inline(always)]
    pub fn addr(&mut self, key: &str, addr: IpAddr) {
        self.key(key);
        self.out.push(b'"');
        match addr {
            IpAddr::V4(v4) => ipv4(self.out, v4),
            IpAddr::V6(v6) => {
                // `Display` never writes a character JSON escapes.
                let mut text = String::with_capacity(39);
                let _ = write!(text, "{v6}");
                self.out.extend_from_slice(text.as_bytes());
            }
        }
        self.out.push(b'"');
    }

    /// `"time":"…"`, the RFC 3339 form of [`rfc3339`].
    #[inline(always)]
    pub fn time(&mut self, key: &str, time: DateTime<Utc>, seconds: &mut SecondsCache) {
        self.key(key);
        self.out.push(b'"');
        seconds.write(self.out, time);
        self.out.push(b'"');
    }

    #[inline(always)]
    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// A float as serde_json writes one (zmij, shortest round trip; null when not finite).
    #[inline(always)]
    pub fn f64(&mut self, key: &str, value: f64) {
        self.key(key);
        if value.is_finite() {
            self.out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    /// `"key":[{…},…]`, each object's fields written by `fields`.
    pub fn objects<T>(&mut self, key: &str, items: &[T], mut fields: impl FnMut(&mut ObjectWriter<'_>, &T)) {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            let mut object = ObjectWriter::start(self.out);
            fields(&mut object, item);
            object.end();
        }
        self.out.push(b']');
    }

    pub fn end(self) {
        self.out.push(b'}');
    }

    /// The fields of `rest` (a struct or map) after those written, as
    /// `#[serde(flatten)]` would put them, and the object closed.
    pub fn then(self, rest: &impl Serialize) -> io::Result<()> {
        let at = self.out.len();
        serde_json::to_writer(&mut *self.out, rest)?;
        match &self.out[at..] {
            b"{}" => {
                self.out.truncate(at);
                self.out.push(b'}');
            }
            [b'{', ..] if !self.first => self.out[at] = b',',
            [b'{', ..] => {
                self.out.remove(at);
            }
            _ => return Err(io::Error::other("only an object's fields can follow others")),
        }
        Ok(())
    }
}

/// The part of an RFC 3339 time before its fraction, for the last second
/// written: events come many to a second.
#[derive(Default)]
pub struct SecondsCache {
    second: Option<i64>,
    text: String,
}

impl SecondsCache {
    /// `time` as [`rfc3339`] writes it: `2023-11-14T22:13:20.000000Z`.
    fn write(&mut self, out: &mut Vec<u8>, time: DateTime<Utc>) {
        let micros = time.nanosecond() / 1000;
        if micros >= 1_000_000 {
            // A leap second: chrono's own spelling, uncached.
            out.extend_from_slice(rfc3339(time).as_bytes());
            return;
        }
        let second = time.timestamp();
        if self.second != Some(second) {
            let full = rfc3339(time);
            let cut = full.rfind('.').unwrap_or(full.len());
            self.text.clear();
            self.text.push_str(&full[..cut]);
            self.second = Some(second);
        }
        out.extend_from_slice(self.text.as_bytes());
        out.push(b'.');
        let digits = [100_000, 10_000, 1_000, 100, 10, 1].map(|unit| b'0' + (micros / unit % 10) as u8);
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

fn unsigned(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn ipv4(out: &mut Vec<u8>, addr: Ipv4Addr) {
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        unsigned(out, u64::from(octet));
    }
}

/// [`escape`], then a JSON string: in the common case (printable ASCII,
/// no backslash, no quote) the bytes are copied as they are.
/// The bytes a JSON string holds as they are, and that watcher's escaping
/// leaves alone: printable ASCII but `"` and `\`. A table, so that the
/// check of a name or an argument is one load a byte.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        table[b as usize] = b != b'"' && b != b'\\';
        b += 1;
    }
    table
};

fn escaped_string(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.iter().all(|&b| PLAIN[usize::from(b)]) {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        string(out, &escape(bytes));
    }
}

/// A JSON string as serde_json writes one: `"` and `\` escaped, the
/// control characters below 0x20 as `\n`-style or `\u00XX` escapes,
/// everything else as it is.
fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.extend_from_slice(escape);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    /// Every string, number, address and time is written as serde_json
    /// writes it.
    #[test]
    fn the_bytes_are_serde_jsons() {
        let texts = ["", "plain", "quote\" back\\slash", "\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}", "caf\u{e9} \u{2028}"];
        for text in texts {
            let mut out = Vec::new();
            string(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        let raw: [&[u8]; 5] = [b"/usr/sbin/sshd", b"a\"b", b"evil\n12:00", b"\xff\xfe", b"back\\slash"];
        for bytes in raw {
            let mut out = Vec::new();
            escaped_string(&mut out, bytes);
            assert_eq!(out, serde_json::to_vec(&escape(bytes)).unwrap(), "{bytes:?}");
        }
        for n in [0, 7, 9, 10, 99, 100, 101, 12_345, 4_294_967_295, u64::MAX] {
            let mut out = Vec::new();
            unsigned(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        for addr in [IpAddr::V4(Ipv4Addr::new(0, 10, 200, 255)), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
            let mut out = Vec::new();
            let mut line = ObjectWriter::start(&mut out);
            line.addr("a", addr);
            line.opt_i64("fd", Some(-1));
            line.opt_u64("n", None);
            line.end();
            assert_eq!(String::from_utf8(out).unwrap(), format!("{{\"a\":\"{addr}\",\"fd\":-1,\"n\":null}}"));
        }
        let mut seconds = SecondsCache::default();
        for (secs, nanos) in [(1_700_000_000, 0), (1_700_000_000, 999_999_999), (1_700_000_001, 5_000), (0, 1)] {
            let time = DateTime::from_timestamp(secs, nanos).unwrap();
            let mut out = Vec::new();
            seconds.write(&mut out, time);
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339(time));
        }
    }
}
