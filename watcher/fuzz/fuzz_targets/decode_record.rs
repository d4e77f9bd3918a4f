//! Any bytes the ring buffer could hand over: decoding never panics, a
//! record either decodes or is refused with a reason, and the text watcher
//! would print of it holds no control character that could forge a line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use watcher::{
    model::escape::escape_bytes,
    record::decode::{Record, SockAddr},
};

fuzz_target!(|data: &[u8]| {
    match Record::decode(data) {
        Ok(record) => {
            let _ = format!("{record:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // The sockaddr a process passed to bind(), with any claimed length.
    if let Some((&len, rest)) = data.split_first() {
        let _ = SockAddr::parse(rest, usize::from(len));
    }
    let escaped = escape_bytes(data);
    assert!(!escaped.chars().any(char::is_control), "escape_bytes let a control character through: {escaped:?}");
});
