//! The request-to-upstream rewrite over arbitrary header lists: exactly one Host (the
//! validated authority), no hop-by-hop header nor any header `Connection` named,
//! `X-Forwarded-For` a list of addresses ending with the client's, one well-formed
//! `Forwarded` element of our own.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use icpgate::edge::forward::{upstream_request, ForwardContext, HOP_BY_HOP};
use icpgate::edge::proxy_body::full;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut builder = Request::builder().uri("/");
    let mut named = Vec::new();
    for line in rest.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        if name == http::header::CONNECTION {
            if let Ok(text) = value.to_str() {
                named.extend(
                    text.split(',')
                        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
                );
            }
        }
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let client_ip = if flags & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))
    };
    let ctx = ForwardContext {
        client_ip,
        keep_forwarded_for: flags & 2 != 0,
        proto: if flags & 4 == 0 { "http" } else { "https" },
        host: "www.example.cn",
        request_id: "fuzz",
    };
    let upstream = upstream_request(parts, full(""), Uri::from_static("http://origin/"), &ctx);
    let headers = upstream.headers();
    let hosts: Vec<_> = headers.get_all("host").iter().collect();
    assert_eq!(hosts, [HeaderValue::from_static("www.example.cn")]);
    let websocket_kept = headers.get("upgrade").is_some();
    for name in HOP_BY_HOP {
        if websocket_kept && (name == "connection" || name == "upgrade") {
            continue;
        }
        assert!(!headers.contains_key(name), "{name} forwarded");
    }
    if websocket_kept {
        assert_eq!(headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(headers.get("connection").unwrap(), "upgrade");
    }
    for name in &named {
        let ours = [
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
            "via",
            "x-request-id",
            "connection",
            "upgrade",
        ];
        if !ours.contains(&name.as_str()) {
            assert!(
                !headers.contains_key(name),
                "{name} named by Connection was forwarded"
            );
        }
    }
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1, "one X-Forwarded-For");
    let chain = xff[0].to_str().expect("ascii X-Forwarded-For");
    assert!(chain.ends_with(&client_ip.to_string()), "{chain}");
    if !ctx.keep_forwarded_for {
        assert_eq!(chain, client_ip.to_string());
        assert_eq!(headers.get_all("forwarded").iter().count(), 1);
    }
    let ours = headers
        .get_all("forwarded")
        .iter()
        .last()
        .expect("our Forwarded");
    let ours = ours.to_str().expect("ascii Forwarded");
    assert!(
        ours.starts_with("for=") && ours.ends_with(&format!("proto={}", ctx.proto)),
        "{ours}"
    );
});
