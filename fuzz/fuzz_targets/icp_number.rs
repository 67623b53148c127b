//! ICP number parsing: never panics, and what parses displays back to a string that
//! parses to the same number.
#![no_main]

use icpgate::model::filing::IcpNumber;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(number) = IcpNumber::parse(raw) {
        let again = IcpNumber::parse(number.as_str()).expect("a parsed number re-parses");
        assert_eq!(again.as_str(), number.as_str());
        assert_eq!(again.entity_key(), number.entity_key());
        assert!(number.as_str().contains(number.province()));
    }
});
