//! Config TOML to a validated `Config`: any text is a config or an error naming the
//! problem, never a panic.
#![no_main]

use std::path::Path;

use icpgate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::from_toml_str(text, Path::new("fuzz.toml")) {
        assert!(!error.to_string().is_empty());
    }
});
