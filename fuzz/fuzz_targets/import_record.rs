//! A JSON Lines import file: records or an error with its line number (within the
//! file), never a panic.
#![no_main]

use icpgate::registry::jsonl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = jsonl::parse(text) {
        assert!(error.line >= 1 && error.line <= text.lines().count().max(1));
    }
});
