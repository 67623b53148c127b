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
//! The wording per reason lives in `wording`, a single exhaustive match over
//! [`Reason`] (no wildcard arm), so a new reason cannot ship without its page.

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LINK,
    RETRY_AFTER, VARY, X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use std::borrow::Cow;

use crate::model::reason::Reason;

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
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let Some(q) = quality(parts) else { continue };
        if is_json_type(&media) {
            json_q = json_q.max(q);
        } else if media == "text/html" || media == "application/xhtml+xml" {
            html_q = html_q.max(q);
        }
    }
    json_q > 0.0 && json_q > html_q
}

/// HTML-escape `& < > " '` (used for every interpolated value, text or attribute).
/// Text with nothing to escape — nearly all of it — is borrowed, not copied.
pub fn escape_html(s: &str) -> Cow<'_, str> {
    let needs = |b: &u8| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'');
    let Some(first) = s.bytes().position(|b| needs(&b)) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 16);
    let mut start = 0;
    for (i, b) in s.bytes().enumerate().skip(first) {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        // The five are ASCII, so `i` is always a character boundary.
        out.push_str(&s[start..i]);
        out.push_str(entity);
        start = i + 1;
    }
    out.push_str(&s[start..]);
    Cow::Owned(out)
}

/// What the page says for one reason, in both languages.
struct Wording {
    title_zh: &'static str,
    title_en: &'static str,
    next_zh: &'static str,
    next_en: &'static str,
}

/// The wording for every reason: one exhaustive match, no wildcard arm.
fn wording(reason: Reason) -> Wording {
    let (title_zh, title_en, next_zh, next_en) = match reason {
        // Never a refusal; rendered generically in case a caller passes it anyway.
        Reason::Filed => (
            "请求未被转发",
            "The request was not forwarded",
            "该网站的 ICP 备案有效，但本次请求未被转发。请稍后重试；如问题持续，请联系接入商并提供下方的请求 ID。",
            "The site's ICP filing is in order, but this request was not forwarded. Try again later; if it persists, contact the access provider with the request ID below.",
        ),
        Reason::NotFiled => (
            "该网站尚未完成 ICP 备案",
            "This site has no ICP filing",
            "请先在本接入商为该顶级域名完成 ICP 备案，备案通过后再绑定域名（先备案、后接入）。如果该域名已在其他接入商备案成功，请通过“接入已有备案”提交 ICP 备案号和备案密码，初审及管局审核通过后即可访问。",
            "Complete an ICP filing for the registrable domain with this access provider before binding it (file first, then connect — 先备案、后接入). If the domain is already filed with another access provider, use \"access an existing filing\" (接入已有备案) with its ICP number and filing password; the site is served once initial review and authority review pass.",
        ),
        Reason::PendingReview => (
            "该网站的 ICP 备案正在审核中",
            "This site's ICP filing is under review",
            "备案正在初审（通过后 1 个工作日内提交管局）或管局审核中。审核通过后将自动开通访问，无需其他操作。审核结果将以短信及邮件通知，也可登录备案系统查看进展；请保持备案信息中的联系电话畅通。",
            "The filing is in initial review by the access provider (初审; passed to the authority within 1 working day) or in review by the provincial communications administration (管局审核). Access opens automatically once it is approved; nothing else is needed. Results are sent by SMS and e-mail, and progress is shown in the filing system; keep the filing's contact phone reachable.",
        ),
        Reason::Rejected => (
            "该网站的 ICP 备案已被退回",
            "This site's ICP filing was returned",
            "备案审核未通过，已被退回。请根据短信或邮件中的退回原因修改备案信息，修改后重新提交备案；重新提交后将再次经过初审和管局审核。",
            "The filing was returned (退回) by a review. Correct it according to the reason given in the SMS or e-mail and resubmit; it then goes through initial review and authority review again.",
        ),
        Reason::Abandoned => (
            "该网站的 ICP 备案已被放弃",
            "This site's ICP filing was abandoned",
            "网站所有者已放弃当前备案，网站随时会被关停，且面临管局注销备案号的风险。请尽快修改信息并重新提交备案，审核通过后方可访问。",
            "The owner abandoned the current filing (放弃当前备案), so the site is not served and its ICP number may be cancelled by the authority. Update the details and file again as soon as possible; the site is served once the filing is approved.",
        ),
        Reason::Cancelled => (
            "该网站的 ICP 备案已注销",
            "This site's ICP filing was cancelled",
            "该备案已注销，无法恢复。如需继续提供网站服务，请为该顶级域名重新办理 ICP 备案，审核通过后方可访问。",
            "The filing was cancelled (注销) and cannot be restored. To serve the site again, make a new ICP filing for the registrable domain; the site is served once it is approved.",
        ),
        Reason::Disconnected => (
            "该网站已取消在本接入商的接入",
            "This site is no longer connected through this provider",
            "备案号仍然有效，但已取消通过本接入商的接入（取消接入）。如需继续在此访问，请通过“接入已有备案”使用该 ICP 备案号和备案密码重新申请接入，初审及管局审核通过后即可恢复访问。",
            "The ICP number is still valid, but access through this provider was withdrawn (取消接入). To be served here again, apply via \"access an existing filing\" (接入已有备案) with the ICP number and filing password; access resumes once initial review and authority review pass.",
        ),
        Reason::IpLiteral => (
            "不允许通过 IP 地址直接访问",
            "Access by IP address is not allowed",
            "通过 IP 地址直接访问会绕过 ICP 备案检查，因此不予服务。请使用已备案的域名访问该网站。",
            "Requests addressed to an IP address bypass the ICP filing check and are not served. Use the site's filed domain name instead.",
        ),
        Reason::MissingHost => (
            "请求缺少主机名",
            "The request has no Host",
            "请求未携带可用的主机名（Host），无法确定要访问的网站及其 ICP 备案。请检查客户端或链接，使用完整的域名访问。",
            "The request carried no usable Host, so the site and its ICP filing cannot be determined. Check the client or the link and use the full domain name.",
        ),
        Reason::InvalidHost => (
            "请求的主机名无效",
            "The request's Host is invalid",
            "请求中的主机名（Host）不是有效的域名，无法确定要访问的网站及其 ICP 备案。请检查客户端或链接中的地址是否正确。",
            "The request's Host is not a valid domain name, so the site and its ICP filing cannot be determined. Check the address in the client or the link.",
        ),
        Reason::SniMismatch => (
            "该主机名不能在此连接上访问",
            "This host cannot be served on this connection",
            "所请求的主机由本服务提供，但不属于当前 TLS 连接所对应的域名。请为该主机名建立新的连接后重试（浏览器通常会自动重试）。",
            "The requested host is served here, but not on this TLS connection, which was opened for another domain. Open a new connection to that host and retry; browsers usually do this automatically.",
        ),
        Reason::RegistryUnavailable => (
            "备案信息暂时无法查询",
            "The filing registry is temporarily unavailable",
            "暂时无法查询 ICP 备案信息，因此无法确认该网站的备案状态。这是临时故障，请稍后重试。",
            "The ICP filing registry cannot be reached right now, so the site's filing status cannot be confirmed. This is temporary; try again shortly.",
        ),
    };
    Wording {
        title_zh,
        title_en,
        next_zh,
        next_en,
    }
}

/// The JSON body of a block; serde_json does the escaping.
fn block_json(reason: Reason, ctx: &BlockContext<'_>, status: StatusCode) -> String {
    let w = wording(reason);
    json!({
        "error": "blocked",
        "reason": reason.as_str(),
        "status": status.as_u16(),
        "host": ctx.host,
        "registrable_domain": ctx.registrable_domain,
        "icp_number": ctx.icp_number,
        "request_id": ctx.request_id,
        "operator": ctx.operator,
        "message_zh": w.title_zh,
        "message_en": w.title_en,
        "next_steps_zh": w.next_zh,
        "next_steps_en": w.next_en,
    })
    .to_string()
}

/// The HTML block page: zh section, en section, then the details table.
fn block_html(reason: Reason, ctx: &BlockContext<'_>, status: StatusCode) -> String {
    let frame = block_frame(reason);
    let mut out =
        String::with_capacity(frame.before_details.len() + 1024 + frame.after_details.len());
    out.push_str(&frame.before_details);
    detail_row(&mut out, "主机 / Host", ctx.host);
    detail_row(
        &mut out,
        "顶级域名 / Registrable domain",
        ctx.registrable_domain,
    );
    if ctx.icp_number.is_some() {
        detail_row(&mut out, "ICP 备案号 / ICP number", ctx.icp_number);
    }
    detail_row(&mut out, "原因 / Reason", Some(reason.as_str()));
    detail_row(&mut out, "请求 ID / Request ID", Some(ctx.request_id));
    detail_row(&mut out, "拦截方 / Blocked by", Some(ctx.operator));
    detail_row(&mut out, "状态 / Status", Some(&status_line(status)));
    out.push_str(frame.after_details);
    out
}

/// What a reason's block page is around its details table: rendered and escaped
/// once per process, since only the details differ between requests.
#[derive(Clone)]
struct BlockFrame {
    before_details: String,
    after_details: &'static str,
}

const BLOCK_PAGE_END: &str = "</dl>\n\
<footer><p lang=\"zh-CN\">根据“先备案、后接入”的规定，网站须完成 ICP 备案并通过接入商接入后方可访问。</p>\
<p lang=\"en\">Under China's ICP filing rule, \u{201c}file first, then connect\u{201d}, a site is served only once its ICP filing is approved and connected through its access provider.</p></footer>\n\
</main>\n</body>\n</html>\n";

fn block_frame(reason: Reason) -> Cow<'static, BlockFrame> {
    static FRAMES: std::sync::OnceLock<Vec<(Reason, BlockFrame)>> = std::sync::OnceLock::new();
    let frames = FRAMES.get_or_init(|| {
        Reason::ALL
            .iter()
            .map(|&reason| (reason, render_block_frame(reason)))
            .collect()
    });
    match frames.iter().find(|(r, _)| *r == reason) {
        Some((_, frame)) => Cow::Borrowed(frame),
        // A reason missing from Reason::ALL still gets its own page, just not cached.
        None => Cow::Owned(render_block_frame(reason)),
    }
}

fn render_block_frame(reason: Reason) -> BlockFrame {
    let w = wording(reason);
    let sections = format!(
        "<section lang=\"zh-CN\"><h1>{tz}</h1><h2>下一步</h2><p>{nz}</p></section>\n\
         <section lang=\"en\"><h1>{te}</h1><h2>What to do next</h2><p>{ne}</p></section>\n\
         <dl>\n",
        tz = escape_html(w.title_zh),
        nz = escape_html(w.next_zh),
        te = escape_html(w.title_en),
        ne = escape_html(w.next_en),
    );
    BlockFrame {
        before_details: format!(
            "{}\n{sections}",
            page_head(&format!("{} / {}", w.title_zh, w.title_en))
        ),
        after_details: BLOCK_PAGE_END,
    }
}

/// The HTML page for a plain synthetic error.
fn error_html(status: StatusCode, code: &str, request_id: &str, zh: &str, en: &str) -> String {
    let mut details = String::new();
    detail_row(&mut details, "状态 / Status", Some(&status_line(status)));
    detail_row(&mut details, "错误 / Error", Some(code));
    detail_row(&mut details, "请求 ID / Request ID", Some(request_id));
    let main = format!(
        "<section lang=\"zh-CN\"><h1>{}</h1></section>\n\
         <section lang=\"en\"><h1>{}</h1></section>\n<dl>\n{details}</dl>",
        escape_html(zh),
        escape_html(en),
    );
    page(&format!("{} {zh} / {en}", status.as_u16()), &main)
}

/// Inline style for every page; no external fonts or images.
const STYLE: &str = "body{margin:0;background:#f4f5f7;color:#1f2328;\
font:16px/1.65 system-ui,-apple-system,\"PingFang SC\",\"Microsoft YaHei\",sans-serif}\
main{max-width:44rem;margin:3rem auto;padding:2rem 2.25rem;background:#fff;\
border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12)}\
h1{font-size:1.3rem;margin:0 0 .5rem}h2{font-size:1rem;margin:1rem 0 .25rem;color:#57606a}\
section+section{margin-top:1.75rem;padding-top:1.25rem;border-top:1px solid #eaeef2}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;font-size:.875rem;\
margin:1.75rem 0 0;padding:1rem;background:#f6f8fa;border-radius:6px}\
dt{color:#57606a}dd{margin:0;word-break:break-all;font-family:ui-monospace,monospace}\
footer{margin-top:1.5rem;font-size:.8rem;color:#57606a}footer p{margin:.25rem 0}";

/// The HTML5 shell shared by block and error pages. `title` is escaped here;
/// `main` must already be escaped markup.
fn page(title: &str, main: &str) -> String {
    format!("{}\n{main}\n</main>\n</body>\n</html>\n", page_head(title))
}

/// Everything of a page up to and including `<main>`; `title` is escaped here.
fn page_head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<main>",
        escape_html(title),
    )
}

/// One `<dt>/<dd>` pair; a missing value shows as a dash.
fn detail_row(out: &mut String, label: &str, value: Option<&str>) {
    out.push_str("<dt>");
    out.push_str(&escape_html(label));
    out.push_str("</dt><dd>");
    match value.filter(|v| !v.is_empty()) {
        Some(value) => out.push_str(&escape_html(value)),
        None => out.push('—'),
    }
    out.push_str("</dd>\n");
}

/// "451 Unavailable For Legal Reasons".
fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(text) => format!("{} {text}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The short bilingual message for a synthetic error status.
fn error_messages(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("请求无效", "Bad request"),
        408 => ("请求超时", "Request timed out"),
        413 => ("请求体过大", "Request body too large"),
        431 => ("请求头过大", "Request headers too large"),
        502 => ("上游服务暂时不可用", "The upstream service is unavailable"),
        503 => (
            "服务暂时不可用，请稍后重试",
            "Service temporarily unavailable; try again shortly",
        ),
        504 => ("上游服务响应超时", "The upstream service timed out"),
        _ if status.is_client_error() => ("请求未能完成", "The request could not be completed"),
        _ => ("服务器内部错误", "Internal server error"),
    }
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

/// `<operator_url>; rel="blocked-by"` (RFC 7725 §3), or None when the URL is empty
/// or holds characters that would break the header's syntax.
fn blocked_by_link(operator_url: &str) -> Option<HeaderValue> {
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
fn is_json_type(media: &str) -> bool {
    media == "application/json"
        || media
            .split_once('/')
            .is_some_and(|(kind, sub)| kind != "*" && sub.ends_with("+json"))
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
    fn every_reason_has_its_own_next_steps() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let w = wording(reason);
            assert!(has_cjk(w.title_zh) && has_cjk(w.next_zh), "{reason}");
            assert!(!w.title_en.is_empty() && !w.next_en.is_empty(), "{reason}");
            assert!(seen.insert(w.next_en), "{reason}: duplicated next steps");
        }
        assert!(wording(Reason::NotFiled).next_zh.contains("接入已有备案"));
        assert!(wording(Reason::Rejected).next_zh.contains("退回"));
        assert!(wording(Reason::Disconnected).next_zh.contains("取消接入"));
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
