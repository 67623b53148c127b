//! Host/authority normalisation: never panics; what parses is stable under a second
//! parse (idempotent), and a name's registrable domain is its suffix on a label boundary.
#![no_main]

use icpgate::gate::decision::{HostReading, Reason};
use icpgate::model::host::{Authority, HostName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let reading = HostReading::of(raw);
    match &reading.authority {
        Ok(Authority::Name(name)) => {
            let again = HostName::parse(name.as_str()).expect("a normalised name parses");
            assert_eq!(again.as_str(), name.as_str(), "normalisation is idempotent");
            if let Some(domain) = &reading.domain {
                let host = name.as_str();
                assert!(host.ends_with(domain.as_str()));
                let cut = host.len() - domain.as_str().len();
                assert!(
                    cut == 0 || host.as_bytes()[cut - 1] == b'.',
                    "{host} / {domain}"
                );
                assert_eq!(reading.refusal(), None);
            } else {
                assert_eq!(reading.refusal(), Some(Reason::NotFiled));
            }
        }
        Ok(Authority::Ip(_)) => assert_eq!(reading.refusal(), Some(Reason::IpLiteral)),
        Err(_) => assert_eq!(reading.refusal(), Some(Reason::InvalidHost)),
    }
});
