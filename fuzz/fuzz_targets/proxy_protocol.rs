//! The PROXY protocol v1/v2 reader over arbitrary connection bytes: an address or an
//! error, never a panic or a read past what a header may hold.
#![no_main]

use std::time::Duration;

use icpgate::edge::proxy_protocol::read_proxy_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut stream = data;
    let _ = runtime.block_on(read_proxy_header(&mut stream, Duration::from_secs(1)));
});
