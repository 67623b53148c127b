//! Turning a client request into the upstream request and the upstream response back:
//! hop-by-hop headers out (RFC 9110 §7.6.1, including every header the Connection
//! header names), `X-Forwarded-For/-Proto/-Host`, `Forwarded` (RFC 7239) and `Via` in,
//! exactly one `Host`. The one protocol switch forwarded is WebSocket: every other
//! `Upgrade` token (`h2c`, anything else) and `HTTP2-Settings` are dropped, because a
//! switched connection is a raw tunnel the gate can no longer read, and a later
//! request on it would reach the origin ungated.

use std::net::IpAddr;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};

use crate::edge::proxy_body::ProxyBody;
use crate::edge::rejection::X_REQUEST_ID;

/// Headers that describe one connection, never the message.
pub const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // Connection-specific to an h2c upgrade (RFC 7540 §3.2.1).
    "http2-settings",
];

/// The protocol token of the one switch the gate forwards (RFC 6455 §4.1).
const WEBSOCKET: &str = "websocket";

/// What the forwarded headers say about the client side.
pub struct ForwardContext<'a> {
    pub client_ip: IpAddr,
    /// The client address is a trusted proxy: keep its X-Forwarded-For chain.
    pub keep_forwarded_for: bool,
    pub proto: &'static str,
    /// The authority as the client sent it (validated already).
    pub host: &'a str,
    pub request_id: &'a str,
}

/// Whether a header's comma-separated values hold `token` (case-insensitive).
fn lists_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|listed| listed.trim().eq_ignore_ascii_case(token))
}

/// Whether a message switches (request) or agreed to switch (101 response) to
/// WebSocket, the only protocol switch the gate forwards: `Connection` lists
/// `upgrade` and `Upgrade` lists `websocket`. Other tokens beside it are ignored.
pub fn websocket_upgrade(headers: &HeaderMap) -> bool {
    lists_token(headers, header::CONNECTION, "upgrade")
        && lists_token(headers, header::UPGRADE, WEBSOCKET)
}

/// Remove hop-by-hop headers, and every header the Connection header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Writes the `for=` node of a `Forwarded` element (RFC 7239 §6: an IPv6 address
/// is bracketed and quoted).
fn write_forwarded_for(out: &mut BytesMut, ip: IpAddr) {
    use std::fmt::Write;
    // Writing into a BytesMut cannot fail.
    let _ = match ip {
        IpAddr::V4(v4) => write!(out, "{v4}"),
        IpAddr::V6(v6) => write!(out, "\"[{v6}]\""),
    };
}

// Names as constants: a `&str` name is copied into a new HeaderName on every insert.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// A header value from bytes already written; None if they are not a valid value.
fn value_of(bytes: BytesMut) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes.freeze()).ok()
}

/// Add the proxy's own headers to an upstream request. `X-Forwarded-For` and
/// `Forwarded` are written into one buffer and split off it as two values sharing
/// it (no intermediate `String`, no copy); `X-Forwarded-Host` shares `Host`'s bytes.
fn add_forwarding_headers(headers: &mut HeaderMap, version: Version, ctx: &ForwardContext<'_>) {
    use std::fmt::Write;
    let prior = headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|_| ctx.keep_forwarded_for);
    // Room for both values: the prior chain, two addresses and the Forwarded element.
    let capacity = prior.map_or(0, str::len) + ctx.host.len() + 128;
    let mut buf = BytesMut::with_capacity(capacity);
    if let Some(prior) = prior {
        buf.extend_from_slice(prior.as_bytes());
        buf.extend_from_slice(b", ");
    }
    // Writing into a BytesMut cannot fail.
    let _ = write!(buf, "{}", ctx.client_ip);
    if let Some(value) = value_of(buf.split()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.proto));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !ctx.keep_forwarded_for {
        headers.remove(FORWARDED);
    }
    buf.extend_from_slice(b"for=");
    write_forwarded_for(&mut buf, ctx.client_ip);
    buf.extend_from_slice(b";host=\"");
    for part in ctx.host.split('"') {
        buf.extend_from_slice(part.as_bytes());
    }
    buf.extend_from_slice(b"\";proto=");
    buf.extend_from_slice(ctx.proto.as_bytes());
    if let Some(value) = value_of(buf) {
        headers.append(FORWARDED, value);
    }
    headers.append(header::VIA, HeaderValue::from_static(via_value(version)));
    set(headers, X_REQUEST_ID, ctx.request_id);
}

/// Exactly one `Host`, the authority the gate decided on: the client's own header
/// is kept when it is that already (its bytes are not copied).
fn set_host(headers: &mut HeaderMap, host: &str) {
    let mut hosts = headers.get_all(header::HOST).iter();
    let already = matches!(
        (hosts.next(), hosts.next()),
        (Some(only), None) if only.as_bytes() == host.as_bytes()
    );
    if !already {
        headers.remove(header::HOST);
        set(headers, header::HOST, host);
    }
}

/// The `Via` value for a client's HTTP version (static: no per-request formatting).
fn via_value(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9 icpgate",
        Version::HTTP_10 => "1.0 icpgate",
        Version::HTTP_2 => "2 icpgate",
        Version::HTTP_3 => "3 icpgate",
        _ => "1.1 icpgate",
    }
}

/// A request target as sent to an origin: origin-form (`/path?query`, RFC 9112
/// §3.2.1). An absolute-form target (or HTTP/2's `:scheme` and `:authority`) loses
/// its scheme and authority, which travel in `Host`; the path is moved, not copied.
pub fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    let path_and_query = uri
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    Uri::from(path_and_query)
}

/// The upstream request for `parts`: origin `uri` of the pool, the client's method,
/// path, query and body, one Host, forwarding headers.
pub fn upstream_request(
    parts: http::request::Parts,
    body: ProxyBody,
    uri: Uri,
    ctx: &ForwardContext<'_>,
) -> Request<ProxyBody> {
    let websocket = websocket_upgrade(&parts.headers);
    let client_version = parts.version;
    let mut request = Request::from_parts(parts, body);
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    set_host(headers, ctx.host);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static(WEBSOCKET));
    }
    add_forwarding_headers(headers, client_version, ctx);
    request
}

/// The response to send downstream: hop-by-hop headers removed (kept on a 101, whose
/// Upgrade/Connection headers belong to the switch itself; the caller lets a 101
/// through only for a WebSocket switch it forwarded).
pub fn downstream_response<B>(
    response: Response<B>,
    request_id: &str,
    boxed: impl FnOnce(B) -> ProxyBody,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    if parts.status != http::StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(&mut parts.headers);
    }
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static("1.1 icpgate"));
    if !parts.headers.contains_key(X_REQUEST_ID) {
        set(&mut parts.headers, X_REQUEST_ID, request_id);
    }
    Response::from_parts(parts, boxed(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::proxy_body::full;

    fn ctx(keep: bool) -> ForwardContext<'static> {
        ForwardContext {
            client_ip: "203.0.113.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            keep_forwarded_for: keep,
            proto: "https",
            host: "shop.example.com",
            request_id: "rid-1",
        }
    }

    fn client_request(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = Request::builder().uri("/a?b=1").version(Version::HTTP_2);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder
            .body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| Request::new(()).into_parts().0)
    }

    #[test]
    fn targets_go_upstream_in_origin_form() {
        let cases = [
            ("/a?b=1", "/a?b=1"),
            ("http://shop.example.com/a?b=1", "/a?b=1"),
            ("https://shop.example.com:8443", "/"),
            ("*", "*"),
        ];
        for (target, sent) in cases {
            let uri: Uri = target.parse().expect("valid target");
            assert_eq!(origin_form(uri).to_string(), sent, "{target}");
        }
    }

    #[test]
    fn strips_hop_by_hop_and_named_headers() {
        let parts = client_request(&[
            ("connection", "x-secret, keep-alive"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("x-keep", "1"),
        ]);
        let out = upstream_request(
            parts,
            full(""),
            Uri::from_static("http://storefront.upstream/a?b=1"),
            &ctx(false),
        );
        let h = out.headers();
        assert!(
            h.get("x-secret").is_none() && h.get("te").is_none() && h.get("connection").is_none()
        );
        assert_eq!(h.get("x-keep").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(h.get_all("host").iter().count(), 1);
        assert_eq!(out.version(), Version::HTTP_11);
    }

    #[test]
    fn exactly_one_host_the_authority_decided_on() {
        // (client Host lines, the authority decided on)
        let table: [(&[&str], &str); 4] = [
            (&["shop.example.com"], "shop.example.com"), // kept as sent
            (&[], "shop.example.com"),                   // HTTP/2: from :authority
            (&["other.example"], "shop.example.com"),    // absolute-form target wins
            (&["shop.example.com:8080"], "shop.example.com:8080"),
        ];
        for (hosts, authority) in table {
            let headers: Vec<(&str, &str)> = hosts.iter().map(|h| ("host", *h)).collect();
            let context = ForwardContext {
                host: authority,
                ..ctx(false)
            };
            let out = upstream_request(
                client_request(&headers),
                full(""),
                Uri::from_static("/"),
                &context,
            );
            let sent: Vec<_> = out.headers().get_all("host").iter().collect();
            assert_eq!(sent, [authority], "{hosts:?}");
            assert_eq!(out.headers()["x-forwarded-host"], authority, "{hosts:?}");
            let forwarded = format!("for=203.0.113.7;host=\"{authority}\";proto=https");
            assert_eq!(out.headers()["forwarded"], forwarded.as_str(), "{hosts:?}");
        }
    }

    #[test]
    fn x_forwarded_for_is_replaced_unless_the_peer_is_trusted() {
        let spoofed = || client_request(&[("x-forwarded-for", "10.9.9.9")]);
        let uri = || Uri::from_static("http://storefront.upstream/");
        let replaced = upstream_request(spoofed(), full(""), uri(), &ctx(false));
        assert_eq!(replaced.headers()["x-forwarded-for"], "203.0.113.7");
        let kept = upstream_request(spoofed(), full(""), uri(), &ctx(true));
        assert_eq!(kept.headers()["x-forwarded-for"], "10.9.9.9, 203.0.113.7");
        assert_eq!(kept.headers()["x-forwarded-proto"], "https");
        assert_eq!(kept.headers()["x-forwarded-host"], "shop.example.com");
        assert_eq!(kept.headers()["via"], "2 icpgate");
    }

    #[test]
    fn websocket_upgrade_headers_survive() {
        let parts = client_request(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let out = upstream_request(
            parts,
            full(""),
            Uri::from_static("http://storefront.upstream/ws"),
            &ctx(false),
        );
        assert_eq!(out.headers()["upgrade"], "websocket");
        assert_eq!(out.headers()["connection"], "upgrade");
    }

    #[test]
    fn only_a_websocket_switch_is_forwarded() {
        // (client headers, the Upgrade the origin sees)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let table: [Case<'_>; 7] = [
            // h2c with its settings: dropped whole.
            (
                &[
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("upgrade", "h2c"),
                    ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
                ],
                None,
            ),
            // h2c whose Connection does not name HTTP2-Settings: still dropped.
            (
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "h2c"),
                    ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
                ],
                None,
            ),
            // An arbitrary token.
            (&[("connection", "upgrade"), ("upgrade", "foo/1")], None),
            // Upgrade without Connection: upgrade is no switch.
            (&[("upgrade", "websocket")], None),
            // WebSocket beside another token: only websocket goes on.
            (
                &[
                    ("connection", "keep-alive, Upgrade"),
                    ("upgrade", "h2c, WebSocket"),
                ],
                Some("websocket"),
            ),
            // WebSocket in a second Upgrade line.
            (
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "foo"),
                    ("upgrade", "websocket"),
                ],
                Some("websocket"),
            ),
            // Plain WebSocket.
            (
                &[("connection", "Upgrade"), ("upgrade", "websocket")],
                Some("websocket"),
            ),
        ];
        for (headers, want) in table {
            let out = upstream_request(
                client_request(headers),
                full(""),
                Uri::from_static("http://storefront.upstream/"),
                &ctx(false),
            );
            let h = out.headers();
            let upgrade: Vec<_> = h.get_all("upgrade").iter().collect();
            assert_eq!(
                upgrade.first().and_then(|v| v.to_str().ok()),
                want,
                "{headers:?}"
            );
            assert!(upgrade.len() <= 1, "{headers:?}");
            assert!(h.get("http2-settings").is_none(), "{headers:?}");
            assert_eq!(h.get("connection").is_some(), want.is_some(), "{headers:?}");
        }
    }
}
