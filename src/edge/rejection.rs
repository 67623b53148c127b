//! Every refusal becomes a status, headers and a block page — in one place.
//!
//! Responsibility: turn a block [`Reason`] (or a plain synthetic error such as a
//! 502 from a dead upstream) into the complete HTTP response the client sees.
//! Nothing here decides *whether* to block; `decision` does that.
//!
//! Contract (SPEC §3, "Block response"):
//! - Status: 400 for `missing_host`/`invalid_host`, 421 for `sni_mismatch`, 503 for
//!   `registry_unavailable` (with `Retry-After: 5`), otherwise `policy.block_status`
//!   (451 by default, RFC 7725; 403/404 by config). See [`status_for`].
//! - Headers on every block response: `X-Icpgate-Reason`, `Cache-Control: no-store`,
//!   `Content-Type`, `X-Request-Id` (when it is a valid header value), `Vary: Accept`,
//!   `X-Content-Type-Options: nosniff`; HTML pages also carry a restrictive
//!   `Content-Security-Policy`. A 451 carries `Link: <operator_url>; rel="blocked-by"`
//!   (RFC 7725 §3) when the operator URL is a usable URI reference.
//! - Body: a self-contained bilingual page (zh first, then en; inline CSS, no scripts,
//!   no external resources, `noindex`) telling the site owner what to do next, or
//!   JSON when the client's `Accept` prefers it ([`wants_json`]).
//! - Every interpolated value is HTML-escaped ([`escape_html`]); JSON goes through
//!   serde_json. The host comes straight from the client and is never trusted.
//! - Nothing here panics on client input: headers that cannot be encoded are left out.
//!
//! The wording per reason and the pages themselves live in `block_page`.

pub use super::block_page::escape_html;
use super::block_page::{block_html, block_json, error_html, error_messages};
use crate::config::Policy;
use crate::model::reason::Reason;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LINK,
    RETRY_AFTER, VARY, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

/// `X-Icpgate-Reason`: the reason code of a block, for operators and scripts.
pub const X_ICPGATE_REASON: HeaderName = HeaderName::from_static("x-icpgate-reason");
/// `X-Request-Id`: ties the page a user reports to the access log line.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Seconds a client should wait before retrying while the registry is unreachable.
pub const REGISTRY_RETRY_AFTER_SECS: u32 = 5;

const HTML_TYPE: &str = "text/html; charset=utf-8";
const JSON_TYPE: &str = "application/json";
/// The page loads nothing and runs nothing; only its own inline style applies.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Everything the block page may show; all of it is escaped before it reaches HTML.
#[derive(Debug, Clone)]
pub struct BlockContext<'a> {
    /// The host as the client sent it (untrusted: may contain markup), or the normalised one.
    pub host: Option<&'a str>,
    /// The registrable domain ("top-level domain" in the seed) the filing is looked up by.
    pub registrable_domain: Option<&'a str>,
    /// The request id, echoed in `X-Request-Id` and on the page.
    pub request_id: &'a str,
    /// `policy.block_status`: 451 (default) or 403/404 for policy blocks.
    pub block_status: StatusCode,
    /// Who blocks, e.g. "icpgate" or the access provider's name.
    pub operator: &'a str,
    /// For `Link: <operator_url>; rel="blocked-by"` on 451 responses.
    pub operator_url: &'a str,
    /// The ICP number when a filing exists (e.g. cancelled or disconnected).
    pub icp_number: Option<&'a str>,
}

/// The status for a refusal: 400 for `missing_host`/`invalid_host`, 421 for
/// `sni_mismatch`, 503 for `registry_unavailable`, otherwise `block_status`.
///
/// `Reason::Filed` is not a refusal and should never reach this module; if it does,
/// it gets `block_status` like any policy block (and a generic page).
pub fn status_for(reason: Reason, block_status: StatusCode) -> StatusCode {
    match reason {
        Reason::MissingHost | Reason::InvalidHost => StatusCode::BAD_REQUEST,
        Reason::SniMismatch => StatusCode::MISDIRECTED_REQUEST,
        Reason::RegistryUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Reason::Filed
        | Reason::NotFiled
        | Reason::PendingReview
        | Reason::Rejected
        | Reason::Abandoned
        | Reason::Cancelled
        | Reason::Disconnected
        | Reason::IpLiteral => block_status,
    }
}

/// `policy.block_status` as a status; validation allows only 451, 403 and 404, so
/// the 451 fallback is never taken for a loaded config.
pub fn block_status(policy: &Policy) -> StatusCode {
    StatusCode::from_u16(policy.block_status).unwrap_or(StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS)
}

/// Build the full block response. `wants_json` when the client's Accept prefers
/// application/json (see [`wants_json`]).
pub fn block_response(
    reason: Reason,
    ctx: &BlockContext<'_>,
    wants_json: bool,
) -> Response<Full<Bytes>> {
    let status = status_for(reason, ctx.block_status);
    let body = if wants_json {
        block_json(reason, ctx, status)
    } else {
        block_html(reason, ctx, status)
    };
    let mut resp = respond(status, body, wants_json, ctx.request_id);
    let headers = resp.headers_mut();
    headers.insert(X_ICPGATE_REASON, HeaderValue::from_static(reason.as_str()));
    if status == StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
        if let Some(link) = blocked_by_link(ctx.operator_url) {
            headers.insert(LINK, link);
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from(REGISTRY_RETRY_AFTER_SECS));
    }
    resp
}

/// A plain synthetic error (e.g. 502, 504, 413, 431) as a small bilingual page or
/// JSON carrying the status, a short code like `upstream_unavailable` and the
/// request id. Same caching and request-id headers as a block response.
pub fn error_response(
    status: StatusCode,
    code: &str,
    request_id: &str,
    wants_json: bool,
) -> Response<Full<Bytes>> {
    let (zh, en) = error_messages(status);
    let body = if wants_json {
        json!({
            "error": code,
            "status": status.as_u16(),
            "request_id": request_id,
            "message_zh": zh,
            "message_en": en,
        })
        .to_string()
    } else {
        error_html(status, code, request_id, zh, en)
    };
    respond(status, body, wants_json, request_id)
}

/// True when an `Accept` header value asks for JSON over HTML: `application/json`
/// or any `+json` type with q > 0, ranked strictly above `text/html`
/// (or `application/xhtml+xml`). Wildcards never count for either side, so `*/*`
/// alone, a missing header or an unreadable one all mean HTML.
pub fn wants_json(accept: Option<&HeaderValue>) -> bool {
    let Some(value) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut json_q = 0.0_f32;
    let mut html_q = 0.0_f32;
    for range in value.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let Some(q) = quality(parts) else { continue };
        if is_json_type(media) {
            json_q = json_q.max(q);
        } else if media.eq_ignore_ascii_case("text/html")
            || media.eq_ignore_ascii_case("application/xhtml+xml")
        {
            html_q = html_q.max(q);
        }
    }
    json_q > 0.0 && json_q > html_q
}

/// A response with the headers every refusal and synthetic error carries.
fn respond(
    status: StatusCode,
    body: String,
    json: bool,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    // Room for every header a refusal carries (these six, the reason, Link or
    // Retry-After), so the map is allocated once and never grows.
    *resp.headers_mut() = HeaderMap::with_capacity(12);
    let headers = resp.headers_mut();
    let content_type = if json { JSON_TYPE } else { HTML_TYPE };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VARY, HeaderValue::from_static("Accept"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !json {
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, id);
    }
    resp
}

/// [`link_value`] for `operator_url`, remembered per thread: the URL changes only
/// on a reload, so the header is rendered once, then shared (a `HeaderValue`
/// clone is a reference count).
fn blocked_by_link(operator_url: &str) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, Option<HeaderValue>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((url, value)) if url == operator_url => value.clone(),
            _ => {
                let value = link_value(operator_url);
                *last = Some((operator_url.to_string(), value.clone()));
                value
            }
        }
    })
}

/// `<operator_url>; rel="blocked-by"` (RFC 7725 §3), or None when the URL is empty
/// or holds characters that would break the header's syntax.
fn link_value(operator_url: &str) -> Option<HeaderValue> {
    let usable = !operator_url.is_empty()
        && operator_url
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"'));
    if !usable {
        return None;
    }
    HeaderValue::from_str(&format!("<{operator_url}>; rel=\"blocked-by\"")).ok()
}

/// `application/json` or any structured-syntax `+json` type (RFC 6839).
/// Case-insensitive (media types are), without lowering a copy.
fn is_json_type(media: &str) -> bool {
    media.eq_ignore_ascii_case("application/json")
        || media.split_once('/').is_some_and(|(kind, sub)| {
            kind != "*"
                && sub.len() >= 5
                && sub.is_char_boundary(sub.len() - 5)
                && sub[sub.len() - 5..].eq_ignore_ascii_case("+json")
        })
}

/// The q value of a media range's parameters: 1 when absent, None when malformed.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<f32> {
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            let q: f32 = value.trim().parse().ok()?;
            return (q.is_finite() && (0.0..=1.0).contains(&q)).then_some(q);
        }
    }
    Some(1.0)
}

#[cfg(test)]
mod tests {
    //! The contract these tests pin: every reason maps to its status and headers,
    //! every page is bilingual and never echoes request data unescaped, and JSON is
    //! chosen only when the client ranks it above HTML.

    use super::*;
    use futures_util::FutureExt;
    use http_body_util::BodyExt;

    const EVIL_HOST: &str = "<script>alert(1)</script>\"'&";
    const EVIL_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;";

    fn ctx(host: Option<&str>) -> BlockContext<'_> {
        BlockContext {
            host,
            registrable_domain: Some("example.com.cn"),
            request_id: "req-123",
            block_status: StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            operator: "icpgate",
            operator_url: "https://icp.example.net/blocked",
            icp_number: None,
        }
    }

    fn body_string(resp: Response<Full<Bytes>>) -> String {
        let collected = resp.into_body().collect().now_or_never();
        let bytes = collected
            .expect("Full is ready")
            .expect("infallible")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8 body")
    }

    fn header<'r>(resp: &'r Response<Full<Bytes>>, name: &str) -> Option<&'r str> {
        resp.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn has_cjk(s: &str) -> bool {
        s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
    }

    #[test]
    fn status_mapping_per_reason() {
        let legal = StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS;
        let table = [
            // Not a refusal, but handled: falls back to the policy status.
            (Reason::Filed, legal),
            // No filing at all: the policy status (451 by default).
            (Reason::NotFiled, legal),
            // Under 初审 / 管局审核: still a policy block.
            (Reason::PendingReview, legal),
            // Returned (退回): policy block.
            (Reason::Rejected, legal),
            // Abandoned (放弃当前备案): policy block.
            (Reason::Abandoned, legal),
            // Cancelled (注销): policy block.
            (Reason::Cancelled, legal),
            // Access withdrawn (取消接入): policy block.
            (Reason::Disconnected, legal),
            // Direct-IP access: policy block, not a client error.
            (Reason::IpLiteral, legal),
            // No Host at all: the client's fault.
            (Reason::MissingHost, StatusCode::BAD_REQUEST),
            // Unparsable Host: the client's fault.
            (Reason::InvalidHost, StatusCode::BAD_REQUEST),
            // Host served here but not on this TLS connection.
            (Reason::SniMismatch, StatusCode::MISDIRECTED_REQUEST),
            // Registry down and nothing cached: temporary.
            (Reason::RegistryUnavailable, StatusCode::SERVICE_UNAVAILABLE),
        ];
        assert_eq!(table.len(), Reason::ALL.len());
        for (reason, want) in table {
            assert_eq!(status_for(reason, legal), want, "{reason}");
        }
    }

    #[test]
    fn configured_block_status_is_used_for_policy_blocks() {
        assert_eq!(
            status_for(Reason::NotFiled, StatusCode::FORBIDDEN),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_for(Reason::InvalidHost, StatusCode::FORBIDDEN),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn headers_for_every_reason() {
        for json in [false, true] {
            for reason in Reason::ALL {
                let resp = block_response(reason, &ctx(Some("shop.example.com.cn")), json);
                let status = resp.status();
                assert_eq!(header(&resp, "x-icpgate-reason"), Some(reason.as_str()));
                assert_eq!(header(&resp, "cache-control"), Some("no-store"));
                assert_eq!(header(&resp, "x-request-id"), Some("req-123"));
                assert_eq!(header(&resp, "vary"), Some("Accept"));
                let ct = if json { JSON_TYPE } else { HTML_TYPE };
                assert_eq!(header(&resp, "content-type"), Some(ct));
                let link = header(&resp, "link");
                if status == StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
                    let want = "<https://icp.example.net/blocked>; rel=\"blocked-by\"";
                    assert_eq!(link, Some(want), "{reason}");
                } else {
                    assert_eq!(link, None, "{reason}");
                }
                let retry = header(&resp, "retry-after");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    assert_eq!(retry, Some("5"), "{reason}");
                } else {
                    assert_eq!(retry, None, "{reason}");
                }
            }
        }
    }

    #[test]
    fn no_link_header_when_policy_status_is_403() {
        let mut c = ctx(Some("a.example.com.cn"));
        c.block_status = StatusCode::FORBIDDEN;
        let resp = block_response(Reason::NotFiled, &c, false);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get(LINK).is_none());
    }

    #[test]
    fn unusable_request_id_and_operator_url_are_left_out() {
        let mut c = ctx(Some("a.example.com.cn"));
        c.request_id = "bad\nid";
        c.operator_url = "https://x/> ; rel=evil";
        let resp = block_response(Reason::NotFiled, &c, false);
        assert!(resp.headers().get(X_REQUEST_ID).is_none());
        assert!(resp.headers().get(LINK).is_none());
        assert!(body_string(resp).contains("bad\nid"));
    }

    #[test]
    fn html_is_bilingual_self_contained_and_names_icp() {
        for reason in Reason::ALL {
            let html = body_string(block_response(reason, &ctx(Some("a.example.cn")), false));
            assert!(has_cjk(&html), "{reason}: no CJK text");
            assert!(html.contains("ICP"), "{reason}: no ICP");
            assert!(html.contains(reason.as_str()), "{reason}: no reason code");
            assert!(
                html.contains("req-123") && html.contains("icpgate"),
                "{reason}"
            );
            assert!(html.contains("<meta name=\"robots\" content=\"noindex\">"));
            let zh = html.find("lang=\"zh-CN\"><h1>").expect("zh section");
            let en = html.find("lang=\"en\"><h1>").expect("en section");
            assert!(zh < en, "{reason}: zh must come first");
            for banned in ["<script", "<link", "src=", "@import", "url("] {
                assert!(!html.contains(banned), "{reason}: {banned}");
            }
        }
    }

    #[test]
    fn hostile_host_is_escaped_in_html_and_round_trips_in_json() {
        for reason in Reason::ALL {
            let mut c = ctx(Some(EVIL_HOST));
            c.registrable_domain = Some(EVIL_HOST);
            c.icp_number = Some(EVIL_HOST);
            let html = body_string(block_response(reason, &c, false));
            assert!(!html.contains(EVIL_HOST), "{reason}: raw host in HTML");
            assert!(!html.contains("<script"), "{reason}: script tag in HTML");
            assert!(
                html.contains(EVIL_ESCAPED),
                "{reason}: escaped host missing"
            );

            let body = body_string(block_response(reason, &c, true));
            let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
            assert_eq!(v["host"], EVIL_HOST);
            assert_eq!(v["registrable_domain"], EVIL_HOST);
        }
    }

    #[test]
    fn json_body_shape() {
        let body = body_string(block_response(
            Reason::NotFiled,
            &ctx(Some("a.example.com.cn")),
            true,
        ));
        let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(v["error"], "blocked");
        assert_eq!(v["reason"], "not_filed");
        assert_eq!(v["status"], 451);
        assert_eq!(v["host"], "a.example.com.cn");
        assert_eq!(v["registrable_domain"], "example.com.cn");
        assert_eq!(v["request_id"], "req-123");
        for key in ["message_zh", "message_en", "next_steps_zh", "next_steps_en"] {
            assert!(v[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
        }
        let missing = body_string(block_response(Reason::MissingHost, &ctx(None), true));
        let v: serde_json::Value = serde_json::from_str(&missing).expect("valid JSON");
        assert!(v["host"].is_null());
        assert_eq!(v["status"], 400);
    }

    #[test]
    fn escape_html_covers_all_five() {
        assert_eq!(escape_html(EVIL_HOST), EVIL_ESCAPED);
        assert_eq!(escape_html("例子.中国"), "例子.中国");
    }

    #[test]
    fn wants_json_table() {
        let table: [(Option<&str>, bool); 12] = [
            // Plain JSON request.
            (Some("application/json"), true),
            // HTML ranked above JSON.
            (Some("text/html,application/json;q=0.9"), false),
            // JSON explicitly refused.
            (Some("application/json;q=0"), false),
            // Wildcard alone: HTML.
            (Some("*/*"), false),
            // No Accept header: HTML.
            (None, false),
            // RFC 7807 problem type is JSON.
            (Some("application/problem+json"), true),
            // Axios/fetch style: JSON plus wildcard.
            (Some("application/json, text/plain, */*"), true),
            // Browser navigation.
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                false,
            ),
            // JSON ranked above HTML.
            (Some("text/html;q=0.5, application/json"), true),
            // Tie: HTML wins.
            (Some("application/json, text/html"), false),
            // Case and whitespace are ignored.
            (Some(" Application/JSON ; Q=0.7 "), true),
            // A malformed q drops the range.
            (Some("application/json;q=abc"), false),
        ];
        for (accept, want) in table {
            let value = accept.map(HeaderValue::from_static);
            assert_eq!(wants_json(value.as_ref()), want, "{accept:?}");
        }
    }

    #[test]
    fn error_responses_for_502_and_504() {
        for (status, code) in [
            (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        ] {
            let resp = error_response(status, code, "req-9", false);
            assert_eq!(resp.status(), status);
            assert_eq!(header(&resp, "cache-control"), Some("no-store"));
            assert_eq!(header(&resp, "x-request-id"), Some("req-9"));
            assert_eq!(header(&resp, "content-type"), Some(HTML_TYPE));
            assert!(resp.headers().get(X_ICPGATE_REASON).is_none());
            let html = body_string(resp);
            assert!(has_cjk(&html) && html.contains(code) && html.contains("req-9"));

            let resp = error_response(status, code, "req-9", true);
            assert_eq!(header(&resp, "content-type"), Some(JSON_TYPE));
            let v: serde_json::Value =
                serde_json::from_str(&body_string(resp)).expect("valid JSON");
            assert_eq!(v["error"], code);
            assert_eq!(v["status"], status.as_u16());
            assert_eq!(v["request_id"], "req-9");
        }
    }

    #[test]
    fn error_code_is_escaped() {
        let html = body_string(error_response(
            StatusCode::BAD_GATEWAY,
            EVIL_HOST,
            "r",
            false,
        ));
        assert!(!html.contains(EVIL_HOST) && html.contains(EVIL_ESCAPED));
    }
}
