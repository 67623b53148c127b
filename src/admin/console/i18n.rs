//! The console's two languages: every text a page, a flash message or an error
//! shows, in English and Chinese ([`CATALOG`]), and which one a request gets: the
//! `icpgate_lang` cookie the language link sets, else the first of `en`/`zh` in
//! `Accept-Language` by quality, else English.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::{FromRequestParts, Query};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;

/// The cookie remembering the language chosen with the switch link.
pub const LANG_COOKIE: &str = "icpgate_lang";

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The `lang` attribute of the page.
    pub fn html_lang(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        match code.trim() {
            "en" => Some(Lang::En),
            "zh" => Some(Lang::Zh),
            _ => None,
        }
    }

    /// The other language, which the switch link offers.
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }

    /// The text of `key` in this language; "?" when the catalog lacks it (tests
    /// hold every key the console uses in the catalog).
    pub fn text(self, key: &str) -> &'static str {
        CATALOG
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or("?", |(_, en, zh)| match self {
                Lang::En => en,
                Lang::Zh => zh,
            })
    }

    /// Every text in this language, by key: the `t` of the templates.
    pub fn table(self) -> BTreeMap<&'static str, &'static str> {
        CATALOG
            .iter()
            .map(|(key, en, zh)| (*key, if self == Lang::En { *en } else { *zh }))
            .collect()
    }

    /// The language of a request: its cookie, else `Accept-Language`, else English.
    pub fn of_headers(headers: &HeaderMap) -> Lang {
        cookie(headers, LANG_COOKIE)
            .and_then(|v| Lang::parse(&v))
            .or_else(|| {
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(from_accept_language)
            })
            .unwrap_or(Lang::En)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Lang, Infallible> {
        Ok(Lang::of_headers(&parts.headers))
    }
}

/// A cookie's value by name.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// The preferred of English and Chinese in an `Accept-Language` value (RFC 9110
/// §12.5.4): the highest quality wins, the earlier on a tie; `q=0` refuses.
fn from_accept_language(value: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let Some(lang) = Lang::parse(primary) else {
            continue;
        };
        if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, lang));
        }
    }
    best.map(|(_, lang)| lang)
}

/// `GET /console/lang?to=zh&back=/console/...`.
#[derive(Debug, Deserialize)]
pub struct SwitchQuery {
    to: Option<String>,
    back: Option<String>,
}

/// `GET /console/lang`: remember the language for a year, then back to the page
/// (only a console path: the link is no open redirect).
pub async fn switch(Query(query): Query<SwitchQuery>) -> Response {
    let back = query
        .back
        .filter(|b| b.starts_with("/console") && !b.contains("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/console/".to_string());
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, back)]).into_response();
    if let Some(lang) = query.to.as_deref().and_then(Lang::parse) {
        let cookie = format!(
            "{LANG_COOKIE}={}; Path=/console; Max-Age=31536000; SameSite=Strict; HttpOnly",
            lang.code()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

/// Every text of the console: (key, English, Chinese).
pub const CATALOG: &[(&str, &str, &str)] = &[
    ("app_title", "icpgate review console", "icpgate 备案审核控制台"),
    ("nav_queue", "Queue", "审核队列"),
    ("nav_check", "Check", "域名检查"),
    ("nav_traffic", "Traffic", "拦截流量"),
    ("search_placeholder", "Domain or ICP number", "域名或备案号"),
    ("search_button", "Search", "搜索"),
    ("logout", "Sign out", "退出登录"),
    ("signed_in_as", "Signed in as", "当前用户"),
    ("lang_name", "English", "中文"),
    ("login_title", "Sign in", "登录"),
    ("login_token", "Admin token", "管理令牌"),
    ("login_button", "Sign in", "登录"),
    ("login_hint", "Use the shared admin token or your own named token; your token's name is recorded as the actor of your reviews.", "请使用共享管理令牌或个人命名令牌；命名令牌的名称将作为审核操作人记录。"),
    ("login_wrong", "This token is not valid.", "令牌无效。"),
    ("login_throttled", "Too many failed sign-ins from this address. Try again in this many seconds:", "此地址登录失败次数过多。请在以下秒数后重试："),
    ("login_no_token", "No admin token is configured; the operator must set admin.token_file or admin.tokens_file first.", "尚未配置管理令牌；请运维人员先设置 admin.token_file 或 admin.tokens_file。"),
    ("logged_out", "You are signed out.", "您已退出登录。"),
    ("queue_title", "Review queue", "审核队列"),
    ("queue_initial", "Waiting for initial review (初审)", "等待初审"),
    ("queue_authority", "Waiting for the authority (管局审核)", "等待管局审核"),
    ("queue_promise", "Initial review is promised within one working day (Monday to Friday, China time).", "初审承诺在1个工作日内完成（中国时间周一至周五）。"),
    ("queue_empty", "Nothing is waiting.", "暂无待审备案。"),
    ("col_id", "No.", "编号"),
    ("col_domains", "Domains", "域名"),
    ("col_entity", "Entity", "主体"),
    ("col_waited", "Waited (working time)", "已等待（工作时间）"),
    ("col_since", "Since", "开始时间"),
    ("col_status", "Status", "状态"),
    ("overdue", "overdue", "已超期"),
    ("page_prev", "Previous", "上一页"),
    ("page_next", "Next", "下一页"),
    ("unit_h", "h", "小时"),
    ("unit_min", "min", "分钟"),
    ("filing_title", "Filing", "备案"),
    ("f_entity", "Entity (主体)", "主体"),
    ("f_entity_type", "Entity type", "主体类型"),
    ("f_certificate", "Certificate number", "证件号码"),
    ("f_province", "Province", "省份"),
    ("f_website", "Website", "网站"),
    ("f_owner", "Website owner", "网站负责人"),
    ("f_phone", "Phone", "电话"),
    ("f_email", "E-mail", "电子邮箱"),
    ("f_kind", "Kind", "类型"),
    ("f_product", "Product", "产品"),
    ("f_icp", "ICP number", "备案号"),
    ("f_created", "Submitted", "提交时间"),
    ("f_updated", "Last change", "最近变更"),
    ("f_none", "none", "无"),
    ("f_domains_gate", "Domains, and what the gate does for each now", "域名及网关当前的处理"),
    ("gate_allow", "served", "放行"),
    ("gate_block", "blocked", "拦截"),
    ("gate_would_block", "would be blocked (report-only mode)", "将被拦截（仅报告模式）"),
    ("history_title", "History", "历史记录"),
    ("h_at", "When", "时间"),
    ("h_actor", "Who", "操作人"),
    ("h_change", "Change", "变更"),
    ("h_reason", "Reason", "原因"),
    ("masked_note", "Personal data is masked.", "个人信息已隐藏。"),
    ("reveal_not_granted", "Your token is not granted `reveal` (admin.tokens_file), so it cannot show it.", "您的令牌未被授予 reveal（admin.tokens_file），因此无法显示。"),
    ("reveal_button", "Show personal data", "显示个人信息"),
    ("revealed_note", "Personal data is shown; this was written to the audit log with your name.", "个人信息已显示；此操作已连同您的名称记入审计日志。"),
    ("initial_review_title", "Initial review (初审)", "初审"),
    ("authority_review_title", "Authority result (管局审核)", "管局审核结果"),
    ("approve_label", "Approve", "通过"),
    ("reject_label", "Reject", "驳回"),
    ("reason_label", "Reason", "原因"),
    ("icp_label", "ICP number (with an approval)", "备案号（审核通过时填写）"),
    ("submit_review", "Record", "提交"),
    ("other_actions", "Other actions", "其他操作"),
    ("confirm_label", "I confirm this step", "我确认此操作"),
    ("abandon_button", "Abandon", "放弃备案"),
    ("cancel_button", "Cancel the filing", "注销备案"),
    ("disconnect_button", "Disconnect", "取消接入"),
    ("no_actions", "No step is possible in this status.", "此状态下无可执行的操作。"),
    ("flash_done", "Recorded:", "已记录："),
    ("flash_refused", "Refused:", "操作被拒绝："),
    ("flash_need_confirm", "Tick the confirmation box first.", "请先勾选确认框。"),
    ("flash_bad_input", "Invalid input:", "输入无效："),
    ("flash_illegal_step", "Refused: this step is not allowed in the filing's present status.", "操作被拒绝：备案当前状态不允许此步骤。"),
    ("flash_change_pending", "Refused: a change of this filing is pending.", "操作被拒绝：该备案有待处理的变更。"),
    ("flash_entity_replaced", "Refused: the filing's entity was replaced.", "操作被拒绝：该备案的主体已被更换。"),
    ("flash_number_taken", "Refused: this ICP number belongs to another entity.", "操作被拒绝：该备案号属于其他主体。"),
    ("flash_domain_taken", "Refused: a domain already belongs to another live filing.", "操作被拒绝：域名已属于另一个有效备案。"),
    ("render_failed", "This console page failed to render; the error is in the gate's log.", "控制台页面渲染失败；错误已记入网关日志。"),
    ("session_failed", "No session could be opened (the system's random generator failed); try again.", "无法创建会话（系统随机数生成器故障）；请重试。"),
    ("check_title", "Check domains", "检查域名"),
    ("check_hint", "One domain per line; # starts a comment. At most 1000.", "每行一个域名，# 开始注释。最多1000个。"),
    ("check_dns", "Also look up DNS", "同时查询DNS"),
    ("check_button", "Check", "检查"),
    ("check_csv", "Download CSV", "下载CSV"),
    ("check_too_many", "Too many domains: at most 1000 at once.", "域名过多：每次最多1000个。"),
    ("col_input", "Input", "输入"),
    ("col_domain", "Registrable domain", "可注册域名"),
    ("col_decision", "Decision", "处理"),
    ("col_reason", "Reason", "原因"),
    ("col_filing", "Filing", "备案"),
    ("col_verdict", "DNS verdict", "DNS结论"),
    ("traffic_title", "Traffic", "拦截流量"),
    ("top_blocked", "Most blocked domains", "拦截最多的域名"),
    ("col_count", "Blocks (estimated)", "拦截次数（估计）"),
    ("col_last_seen", "Last seen", "最近一次"),
    ("open_filing", "filing", "备案"),
    ("open_check", "check", "检查"),
    ("block_rate", "Blocks per minute by reason, last hour", "最近一小时每分钟拦截数（按原因）"),
    ("grafana_link", "Grafana dashboard", "Grafana 仪表盘"),
    ("no_grafana", "No Grafana dashboard is configured (admin.grafana_url).", "未配置 Grafana 仪表盘（admin.grafana_url）。"),
    ("nothing_blocked", "Nothing blocked yet.", "暂无拦截。"),
    ("minutes_ago", "minutes ago", "分钟前"),
    ("now", "now", "现在"),
    ("search_title", "Search", "搜索"),
    ("search_none", "No filing found.", "未找到备案。"),
    ("search_empty", "Enter a domain or an ICP number.", "请输入域名或备案号。"),
    ("error_title", "Error", "错误"),
    ("not_found", "There is no such page or filing.", "页面或备案不存在。"),
    ("reveal_forbidden", "Your token may not reveal personal data: ask for `reveal` to be granted to its name in admin.tokens_file.", "您的令牌无权显示个人信息：请在 admin.tokens_file 中为其名称授予 reveal。"),
    ("csrf_refused", "This form has expired or was not sent from this console (CSRF check failed). Reload the page and try again.", "表单已过期或并非由本控制台提交（CSRF校验失败）。请刷新页面后重试。"),
    ("registry_unavailable", "The registry is unavailable:", "备案库暂不可用："),
    ("back_to_queue", "Back to the queue", "返回审核队列"),
    ("status_initial_review", "initial review", "初审中"),
    ("status_authority_review", "authority review", "管局审核中"),
    ("status_approved", "approved", "已通过"),
    ("status_rejected", "rejected", "已驳回"),
    ("status_abandoned", "abandoned", "已放弃"),
    ("status_cancelled", "cancelled", "已注销"),
    ("status_disconnected", "disconnected", "已取消接入"),
    ("reason_filed", "filed", "已备案"),
    ("reason_not_filed", "not filed", "未备案"),
    ("reason_pending_review", "review pending", "审核中"),
    ("reason_rejected", "rejected", "已驳回"),
    ("reason_abandoned", "abandoned", "已放弃"),
    ("reason_cancelled", "cancelled", "已注销"),
    ("reason_disconnected", "disconnected", "已取消接入"),
    ("reason_ip_literal", "IP address", "IP地址访问"),
    ("reason_missing_host", "no Host", "缺少主机名"),
    ("reason_invalid_host", "invalid host", "主机名无效"),
    ("reason_sni_mismatch", "SNI mismatch", "SNI不匹配"),
    ("reason_registry_unavailable", "registry unavailable", "备案库不可用"),
    ("verdict_compliant", "compliant: filed and pointed here", "合规：已备案且已解析到本接入"),
    ("verdict_violation", "violation: pointed here, not filed", "违规：已解析到本接入但未备案"),
    ("verdict_not_pointed", "filed, not pointed here", "已备案，未解析到本接入"),
    ("verdict_not_connected", "not filed, not pointed here", "未备案，未解析到本接入"),
    ("verdict_dns_error", "DNS lookup failed", "DNS查询失败"),
    ("verdict_invalid", "not a domain", "不是有效域名"),
    ("kind_new", "new filing", "新增备案"),
    ("kind_access_existing", "access to an existing filing", "接入已有备案"),
    ("product_storefront", "storefront", "店铺"),
    ("product_corporate_site", "corporate site", "企业官网"),
    ("entity_enterprise", "enterprise", "企业"),
    ("entity_individual", "individual", "个人"),
    ("entity_government", "government", "政府机关"),
    ("entity_institution", "institution", "事业单位"),
    ("entity_other", "other", "其他"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::Verdict;
    use crate::model::filing::{Kind, Product, Status};
    use crate::model::reason::Reason;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header"));
        }
        map
    }

    #[test]
    fn the_language_comes_from_the_cookie_then_accept_language() {
        let cases: &[(&[(&'static str, &str)], Lang)] = &[
            // nothing said: English
            (&[], Lang::En),
            // a Chinese browser
            (&[("accept-language", "zh-CN,zh;q=0.9,en;q=0.8")], Lang::Zh),
            // English preferred by quality although listed second
            (&[("accept-language", "zh;q=0.5, en-GB;q=0.9")], Lang::En),
            // neither language offered: English
            (&[("accept-language", "fr-FR, de;q=0.8")], Lang::En),
            // q=0 refuses a language
            (&[("accept-language", "zh;q=0, en;q=0.1")], Lang::En),
            // the cookie wins over the browser
            (
                &[
                    ("accept-language", "en"),
                    ("cookie", "a=b; icpgate_lang=zh"),
                ],
                Lang::Zh,
            ),
            // an unknown cookie value falls back to the browser
            (
                &[("accept-language", "zh-TW"), ("cookie", "icpgate_lang=xx")],
                Lang::Zh,
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(Lang::of_headers(&headers(pairs)), *want, "{pairs:?}");
        }
    }

    #[test]
    fn every_text_is_in_both_languages_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (key, en, zh) in CATALOG {
            assert!(seen.insert(*key), "{key} twice");
            assert!(!en.trim().is_empty() && !zh.trim().is_empty(), "{key}");
        }
    }

    /// The names the pages look up by value (`t["status_" ~ status]`) are all there.
    #[test]
    fn every_status_reason_verdict_kind_and_product_has_a_text() {
        let mut keys: Vec<String> = Vec::new();
        keys.extend(Status::ALL.iter().map(|s| format!("status_{}", s.as_str())));
        keys.extend(Reason::ALL.iter().map(|r| format!("reason_{}", r.as_str())));
        let verdicts = [
            Verdict::Compliant,
            Verdict::Violation,
            Verdict::NotPointed,
            Verdict::NotConnected,
            Verdict::DnsError,
            Verdict::Invalid,
        ];
        keys.extend(verdicts.map(|v| format!("verdict_{}", v.as_str())));
        keys.extend([Kind::New, Kind::AccessExisting].map(|k| format!("kind_{}", k.as_str())));
        keys.extend(
            [Product::Storefront, Product::CorporateSite]
                .map(|p| format!("product_{}", p.as_str())),
        );
        for key in keys {
            assert!(CATALOG.iter().any(|(k, _, _)| *k == key), "{key} missing");
        }
    }
}
