//! Escaping of what processes choose (comm, argv, paths) before it is
//! printed: a hostile process must not be able to forge or break a line of
//! watcher's output with newlines, terminal escapes or invalid UTF-8.
use std::{borrow::Cow, fmt::Write as _};

/// Printable text, with every control character, backslash and invalid
/// UTF-8 byte written as a `\xNN` escape (and a few common ones as `\n`,
/// `\t`, `\\`). Printable non-ASCII characters are kept.
pub fn escape_bytes(bytes: &[u8]) -> String {
    escape(bytes).into_owned()
}

/// [`escape_bytes`], borrowing what needs no escape: nearly every name and
/// argument is plain printable ASCII, and this runs for every field of
/// every event, so the common case neither decodes nor allocates.
pub fn escape(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.iter().all(|&b| matches!(b, b' '..=b'~') && b != b'\\') {
        return String::from_utf8_lossy(bytes);
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    for b in c.encode_utf8(&mut [0; 4]).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// The bytes [`escape_bytes`] writes as `text`, or None when it writes no
/// bytes that way (an escape it never makes, such as `\x41` for `A`): how
/// a name written in a configuration, as watcher prints names, is turned
/// back into what the kernel holds.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('\\') {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        let after = &rest[i + 1..];
        let (byte, used) = match after.as_bytes().first()? {
            b'\\' => (b'\\', 1),
            b'n' => (b'\n', 1),
            b't' => (b'\t', 1),
            b'r' => (b'\r', 1),
            b'x' => (u8::from_str_radix(after.get(1..3)?, 16).ok()?, 3),
            _ => return None,
        };
        out.push(byte);
        rest = &after[used..];
    }
    out.extend_from_slice(rest.as_bytes());
    (escape(&out) == text).then_some(out)
}

/// The kernel's fixed-size, NUL-padded comm as bytes, without the padding.
pub fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_invalid_utf8_are_escaped() {
        assert_eq!(escape_bytes(b"ok name"), "ok name");
        assert_eq!(escape_bytes(b" ~plain-ASCII_0123456789!"), " ~plain-ASCII_0123456789!");
        assert_eq!(escape_bytes(b"\x7f"), "\\x7f", "DEL is a control character");
        assert!(matches!(escape(b"/usr/sbin/sshd"), Cow::Borrowed("/usr/sbin/sshd")));
        assert!(matches!(escape(b"a\nb"), Cow::Owned(_)));
        assert_eq!(escape_bytes(b"a\nb"), "a\\nb");
        assert_eq!(escape_bytes(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape_bytes(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(escape_bytes(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape_bytes("caf\u{e9}".as_bytes()), "caf\u{e9}");
        // C1 controls (U+0080..U+009F) can act as terminal escapes too.
        assert_eq!(escape_bytes("\u{9b}31m".as_bytes()), "\\xc2\\x9b31m");
    }

    #[test]
    fn unescape_is_escape_backwards() {
        for bytes in [&b"/run/x.sock"[..], b"a\nb\x1b[31m", b"\xff\0x", b"back\\slash", "caf\u{e9}".as_bytes(), b""] {
            assert_eq!(unescape(&escape_bytes(bytes)).as_deref(), Some(bytes), "{bytes:?}");
        }
        // What escape_bytes never writes names nothing.
        for text in ["\\x41", "\\q", "trailing\\", "\\x4", "\\xzz"] {
            assert_eq!(unescape(text), None, "{text}");
        }
    }

    #[test]
    fn comm_padding_is_trimmed() {
        assert_eq!(trim_nul(b"nc\0\0\0"), b"nc");
        assert_eq!(trim_nul(b"sixteen-bytes-xx"), b"sixteen-bytes-xx");
    }
}
