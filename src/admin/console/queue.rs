//! The review queue (`GET /console/?page=N`): filings in `initial_review`, the
//! longest waiting first, each with the working time it has waited against the
//! one-working-day promise (`model::working_days`), overdue ones marked; then those
//! waiting for the authority. Both lists are paged together, [`PAGE`] rows each.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::response::Response;
use http::StatusCode;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::admin::console::i18n::Lang;
use crate::admin::console::templates::{Frame, Page};
use crate::admin::console::Console;
use crate::model::filing::{Filing, Status};
use crate::model::working_days::{
    entered_initial_review, more_than_one_working_day, parse_rfc3339, unix_seconds, working_seconds,
};
use crate::registry::ListFilter;

/// Rows per page of each list.
pub const PAGE: usize = 50;

/// `?page=N`, counted from 0; a bad value is the first page.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    page: Option<String>,
}

/// One row of a list.
#[derive(Debug, Serialize)]
struct Row {
    id: i64,
    domains: Vec<String>,
    entity: String,
    since: String,
    waited: String,
    overdue: bool,
}

/// `GET /console/`.
pub async fn queue(
    State(console): State<Arc<Console>>,
    frame: Frame,
    Query(query): Query<PageQuery>,
) -> Response {
    let page = query
        .page
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0);
    let registry = &console.admin.registry;
    let list = |status| ListFilter {
        status: Some(status),
        ..ListFilter::default()
    };
    let initial = registry.list(&list(Status::InitialReview)).await;
    let authority = registry.list(&list(Status::AuthorityReview)).await;
    let (initial, authority) = match (initial, authority) {
        (Ok(i), Ok(a)) => (i, a),
        (Err(e), _) | (_, Err(e)) => {
            return frame.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry_unavailable",
                &e.to_string(),
            )
        }
    };
    let now = unix_seconds(SystemTime::now());
    let initial_rows = waiting_rows(
        initial.clone(),
        now,
        frame.lang,
        Some(Status::InitialReview),
    );
    let authority_rows = waiting_rows(authority.clone(), now, frame.lang, None);
    let more = initial_rows.len().max(authority_rows.len()) > (page + 1) * PAGE;
    let window = |rows: Vec<Row>| {
        rows.into_iter()
            .skip(page * PAGE)
            .take(PAGE)
            .collect::<Vec<_>>()
    };
    let content = context! {
        initial_total => initial.len(),
        authority_total => authority.len(),
        initial => window(initial_rows),
        authority => window(authority_rows),
        prev_page => page.checked_sub(1),
        next_page => more.then_some(page + 1),
    };
    frame.render(Page::Queue, content)
}

/// Rows of `filings`, the longest waiting first. With `promise` (initial review) the
/// wait is measured from entering that status and marked overdue past one working
/// day; otherwise from the last change.
fn waiting_rows(
    mut filings: Vec<Filing>,
    now: i64,
    lang: Lang,
    promise: Option<Status>,
) -> Vec<Row> {
    let since = |f: &Filing| match promise {
        Some(_) => entered_initial_review(f),
        None => parse_rfc3339(&f.updated_at),
    };
    filings.sort_by_key(|f| (since(f).unwrap_or(i64::MIN), f.id));
    filings
        .iter()
        .map(|f| {
            let entered = since(f);
            let waited = entered.map_or(0, |s| working_seconds(s, now));
            Row {
                id: f.id,
                domains: f.domains.clone(),
                entity: f.entity.name.clone(),
                since: f
                    .history
                    .iter()
                    .rev()
                    .find(|h| Some(h.to) == promise)
                    .map_or_else(|| f.updated_at.clone(), |h| h.at.clone()),
                waited: duration_text(waited, lang),
                overdue: promise.is_some()
                    && entered.is_some_and(|s| more_than_one_working_day(s, now)),
            }
        })
        .collect()
}

/// Working seconds as "25 h 03 min" / "25 小时 03 分钟".
fn duration_text(seconds: i64, lang: Lang) -> String {
    let minutes = seconds.max(0) / 60;
    format!(
        "{} {} {:02} {}",
        minutes / 60,
        lang.text("unit_h"),
        minutes % 60,
        lang.text("unit_min")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filing(id: i64, entered: &str) -> Filing {
        serde_json::from_value(serde_json::json!({
            "id": id, "product": "storefront", "status": "initial_review",
            "domains": [format!("d{id}.cn")], "entity": {"name": "e"}, "website": {"name": "w"},
            "history": [{"at": entered, "actor": "t", "from": null, "to": "initial_review", "reason": null}],
            "created_at": entered, "updated_at": entered
        }))
        .expect("a filing")
    }

    #[test]
    fn the_longest_waiting_come_first_and_overdue_is_marked() {
        // Wednesday 2026-12-02 12:00 China time = 04:00 UTC.
        let now = parse_rfc3339("2026-12-02T04:00:00Z").expect("time");
        let rows = waiting_rows(
            vec![
                // entered an hour ago: 1 h, in time
                filing(1, "2026-12-02T03:00:00Z"),
                // entered Monday noon China time: two working days, overdue
                filing(2, "2026-11-30T04:00:00Z"),
                // entered Friday 23:00 China time: the weekend does not count
                filing(3, "2026-11-27T15:00:00Z"),
            ],
            now,
            Lang::En,
            Some(Status::InitialReview),
        );
        let order: Vec<i64> = rows.iter().map(|r| r.id).collect();
        assert_eq!(order, vec![3, 2, 1]);
        assert_eq!(rows[2].waited, "1 h 00 min");
        assert!(!rows[2].overdue);
        assert!(rows[1].overdue);
        // Friday 23:00 → Wednesday 12:00 China time: 1 h + Mon + Tue + 12 h = 61 h
        assert_eq!(rows[0].waited, "61 h 00 min");
        assert_eq!(duration_text(3_660, Lang::Zh), "1 小时 01 分钟");
    }
}
