//! What a refusal says: the wording for every block reason (one exhaustive match,
//! so a new reason cannot ship without its page), the bilingual HTML page and its
//! JSON twin, and the small pages of synthetic errors. Every interpolated value is
//! escaped here; the status and headers are `rejection`'s.

use std::borrow::Cow;

use http::StatusCode;
use serde_json::json;

use super::rejection::BlockContext;
use crate::model::reason::Reason;

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
pub(super) fn block_json(reason: Reason, ctx: &BlockContext<'_>, status: StatusCode) -> String {
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
pub(super) fn block_html(reason: Reason, ctx: &BlockContext<'_>, status: StatusCode) -> String {
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
    status_row(&mut out, status);
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
pub(super) fn error_html(
    status: StatusCode,
    code: &str,
    request_id: &str,
    zh: &str,
    en: &str,
) -> String {
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

/// The details row `detail_row(out, "状态 / Status", Some(&status_line(status)))`
/// writes, without formatting the line into a String of its own first.
fn status_row(out: &mut String, status: StatusCode) {
    out.push_str("<dt>");
    out.push_str(&escape_html("状态 / Status"));
    out.push_str("</dt><dd>");
    out.push_str(status.as_str());
    if let Some(text) = status.canonical_reason() {
        out.push(' ');
        out.push_str(&escape_html(text));
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
pub(super) fn error_messages(status: StatusCode) -> (&'static str, &'static str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn has_cjk(s: &str) -> bool {
        s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
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
}
