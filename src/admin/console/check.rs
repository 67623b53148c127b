//! Checking a pasted list (`/console/check`): the verdicts of `icpgate check`
//! (`compliance::Checker`, the running config's policy and `[dns]`), as a table,
//! or as the CLI's CSV for download (`POST /console/check.csv`).
//! `GET /console/check?domains=D` checks D at once (the traffic page links to it).

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use minijinja::{context, Value};
use serde::Deserialize;

use crate::admin::console::templates::{Frame, Page};
use crate::admin::console::{csrf_refused, read_form, Console};
use crate::compliance::output::{render, Format};
use crate::compliance::{parse_list, Checker, Report};
use futures_util::{stream, StreamExt};

/// Checks in flight at once (DNS lookups wait on the network).
const IN_FLIGHT: usize = 16;

/// Most domains checked at once.
pub const MAX_DOMAINS: usize = 1000;

/// The check form's fields (also `GET ?domains=`).
#[derive(Debug, Default, Deserialize)]
pub struct CheckForm {
    csrf: Option<String>,
    #[serde(default)]
    domains: String,
    dns: Option<String>,
}

impl CheckForm {
    fn with_dns(&self) -> bool {
        matches!(self.dns.as_deref(), Some("true" | "1" | "on"))
    }

    /// One domain per line (commas too: a list pasted from a spreadsheet row).
    fn inputs(&self) -> Vec<String> {
        parse_list(&self.domains.replace(',', "\n"))
    }
}

/// Why a list was not checked: a catalog key and a detail.
struct Refused(&'static str, String);

async fn reports(console: &Console, form: &CheckForm) -> Result<Vec<Report>, Refused> {
    let inputs = form.inputs();
    if inputs.len() > MAX_DOMAINS {
        return Err(Refused("check_too_many", String::new()));
    }
    let runtime = console.admin.gate.current();
    let checker = Checker::new(
        Arc::clone(&console.admin.registry),
        &runtime.config,
        form.with_dns(),
    )
    .map_err(|e| Refused("registry_unavailable", e.to_string()))?;
    // `Checker::check_all`'s borrowing stream is not `Send` for axum; the same
    // concurrency over owned inputs, in input order.
    let checker = Arc::new(checker);
    let checks = stream::iter(inputs).map(move |input| {
        let checker = Arc::clone(&checker);
        async move { checker.check(&input).await }
    });
    let done: Vec<_> = checks.buffered(IN_FLIGHT).collect().await;
    done.into_iter()
        .collect::<Result<Vec<Report>, _>>()
        .map_err(|e| Refused("registry_unavailable", e.to_string()))
}

/// `GET /console/check`: the form, and the verdicts when `?domains=` is given.
pub async fn form(
    State(console): State<Arc<Console>>,
    frame: Frame,
    Query(form): Query<CheckForm>,
) -> Response {
    show(&console, &frame, form).await
}

/// `POST /console/check`.
pub async fn run(State(console): State<Arc<Console>>, frame: Frame, request: Request) -> Response {
    let form: CheckForm = match read_form(request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    if !frame.staff.csrf_ok(form.csrf.as_deref()) {
        return csrf_refused(frame.lang, &frame.staff);
    }
    show(&console, &frame, form).await
}

async fn show(console: &Console, frame: &Frame, form: CheckForm) -> Response {
    let found = if form.inputs().is_empty() {
        Ok(Vec::new())
    } else {
        reports(console, &form).await
    };
    match found {
        Ok(reports) => {
            let content = context! {
                domains => form.inputs().join("\n"),
                dns => form.with_dns(),
                reports => Value::from_serialize(&reports),
            };
            frame.render(Page::Check, content)
        }
        Err(Refused(key, detail)) => frame.error(StatusCode::BAD_REQUEST, key, &detail),
    }
}

/// `POST /console/check.csv`: the verdicts as `icpgate check --format csv` writes them.
pub async fn csv(State(console): State<Arc<Console>>, frame: Frame, request: Request) -> Response {
    let form: CheckForm = match read_form(request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    if !frame.staff.csrf_ok(form.csrf.as_deref()) {
        return csrf_refused(frame.lang, &frame.staff);
    }
    match reports(&console, &form).await {
        Ok(reports) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"icpgate-check.csv\"",
                ),
            ],
            render(Format::Csv, &reports, form.with_dns()),
        )
            .into_response(),
        Err(Refused(key, detail)) => frame.error(StatusCode::BAD_REQUEST, key, &detail),
    }
}
