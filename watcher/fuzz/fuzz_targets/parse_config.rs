//! Any configuration file: parsing never panics, and a refusal is one line
//! (the daemon prints it as its only line before exiting 2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use watcher::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text) {
        Ok(config) => {
            for rule in &config.rules {
                let _ = rule.label();
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            assert!(!message.contains('\n'), "a multi-line refusal: {message:?}");
        }
    }
});
