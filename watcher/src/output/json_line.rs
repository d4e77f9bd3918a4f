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
    sync::Arc,
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

    /// One of watcher's own names (an event, a protocol, a family:
    /// letters, digits, `-` and `_`), which has nothing to escape.
    #[inline(always)]
    pub fn name(&mut self, key: &str, value: &str) {
        debug_assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{value:?}");
        self.key(key);
        quoted(self.out, value.as_bytes());
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

    /// Fields written from `of`, or copied from `cache` when it holds
    /// them for a value equal to `of` (`same` says whether it is).
    /// Everything `fields` reads must be part of `K`, and be compared by
    /// `same`.
    pub fn cached<K>(
        &mut self,
        cache: &mut Fragment<K>,
        same: impl FnOnce(&K) -> bool,
        of: impl FnOnce() -> K,
        fields: impl FnOnce(&mut Self),
    ) {
        if self.first {
            // Kept fields start with their comma: these come first.
            fields(self);
            return;
        }
        if cache.of.as_ref().is_some_and(same) {
            self.out.extend_from_slice(&cache.bytes);
            return;
        }
        let at = self.out.len();
        fields(self);
        cache.bytes.clear();
        cache.bytes.extend_from_slice(&self.out[at..]);
        cache.of = Some(of());
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

/// Fields as [`ObjectWriter::cached`] last wrote them, and the value
/// they were written from. Lines come in runs from one process (a bind, a
/// listen, a close), and what names the process is most of a line's bytes
/// and most of the work of writing it (escaping comm, exe and argv).
pub struct Fragment<K> {
    of: Option<K>,
    bytes: Vec<u8>,
}

impl<K> Default for Fragment<K> {
    fn default() -> Self {
        Self { of: None, bytes: Vec::new() }
    }
}

/// Equal `Arc`s, for a [`Fragment`]'s key: the same one (the process
/// table's exe and argv are shared by every event of a process, and by
/// the holders made from them) before any byte is compared, which `Arc`'s
/// `==` does only for a sized value, not for these slices.
pub fn same<T: PartialEq + ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (a, b) => a.is_none() && b.is_none(),
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
        // `.123456Z`, the last digit first.
        let mut fraction = *b".000000Z";
        let mut rest = micros;
        for digit in fraction[1..7].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&fraction);
    }
}

fn unsigned(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// The dotted quad, `Display`'s: an octet's digits without a call to
/// itoa each (four a line were a twentieth of a `watch` line's work).
fn ipv4(out: &mut Vec<u8>, addr: Ipv4Addr) {
    let mut text = [0; 15];
    let mut len = 0;
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.extend_from_slice(&text[..len]);
}

/// Whether every byte is one a JSON string holds as it is and that
/// watcher's escaping leaves alone: printable ASCII but `"` and `\`.
/// Sixteen bytes at a time and without a branch a byte, so that the
/// compiler checks them side by side (SSE2).
fn plain(bytes: &[u8]) -> bool {
    fn bad(b: u8) -> bool {
        !(b' '..=b'~').contains(&b) || b == b'"' || b == b'\\'
    }
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | bad(b)) {
            return false;
        }
    }
    !chunks.remainder().iter().fold(false, |any, &b| any | bad(b))
}

/// [`escape`], then a JSON string: in the common case (printable ASCII,
/// no backslash, no quote) the bytes are copied as they are.
fn escaped_string(out: &mut Vec<u8>, bytes: &[u8]) {
    if plain(bytes) {
        quoted(out, bytes);
    } else {
        string(out, &escape(bytes));
    }
}

/// `"bytes"`, for bytes nothing in needs escaping.
fn quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// A JSON string as serde_json writes one: `"` and `\` escaped, the
/// control characters below 0x20 as `\n`-style or `\u00XX` escapes,
/// everything else as it is.
fn string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if plain(bytes) {
        // Most strings (names, paths, users): nothing to look at twice.
        quoted(out, bytes);
        return;
    }
    out.push(b'"');
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
        // Each byte serde escapes, and one it does not, at each place of
        // a string longer than two of `plain`'s chunks.
        let long: Vec<String> = ["\"", "\\", "\n", "\u{1}", "\u{7f}", "\u{e9}"]
            .iter()
            .flat_map(|odd| (0..40).map(move |at| format!("{}{odd}{}", "a".repeat(at), "b".repeat(39 - at))))
            .collect();
        for text in texts.into_iter().chain(long.iter().map(String::as_str)) {
            let mut out = Vec::new();
            string(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        let raw: [&[u8]; 5] = [b"/usr/sbin/sshd", b"a\"b", b"evil\n12:00", b"\xff\xfe", b"back\\slash"];
        for bytes in raw.into_iter().chain(long.iter().map(|t| t.as_bytes())) {
            let mut out = Vec::new();
            escaped_string(&mut out, bytes);
            assert_eq!(out, serde_json::to_vec(&escape(bytes)).unwrap(), "{bytes:?}");
        }
        for n in [0, 7, 9, 10, 99, 100, 101, 12_345, 4_294_967_295, u64::MAX] {
            let mut out = Vec::new();
            unsigned(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        let octets = [0, 1, 9, 10, 11, 99, 100, 101, 109, 110, 199, 200, 255];
        let v4 = octets.iter().map(|&o| Ipv4Addr::new(o, 10, 200, 255 - o)).chain([Ipv4Addr::UNSPECIFIED]);
        for addr in v4.map(IpAddr::V4).chain([IpAddr::V6(Ipv6Addr::LOCALHOST)]) {
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
