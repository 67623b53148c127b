//! A filing's page (`GET /console/filings/{id}`) and its forms.
//!
//! The page shows the filing with personal data masked (`Filing::masked`), what the
//! gate does for each of its domains right now, and its history as a timeline.
//! `POST …/reveal` shows it unmasked, once, and writes the reveal with the actor to
//! the audit log. The review and ending forms post one workflow step: read by the
//! API's own `StepBody` and written by `Admin::apply_step`, the API's write path
//! (same registry transition, audit line, gate update and webhook event); then 303
//! back to the page with a flash saying what happened, or the API's 409 message.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use crate::admin::auth::Actor;
use crate::admin::console::i18n::Lang;
use crate::admin::console::session::{Flash, Staff};
use crate::admin::console::templates::{Frame, Page};
use crate::admin::console::{csrf_refused, read_form, Console};
use crate::admin::error::AdminError;
use crate::admin::filings::{Step, StepBody};
use crate::admin::privacy::authorize_reveal;
use crate::gate::decision::disposition;
use crate::model::filing::{Filing, TransitionError};
use crate::registry::RegistryError;

/// The steps the console's forms post; the others (resubmit, change) carry
/// details only the API takes.
const CONSOLE_STEPS: [&str; 5] = [
    "initial-review",
    "authority-review",
    "abandon",
    "cancel",
    "disconnect",
];
/// Steps that end a filing's access: the form must tick its confirmation.
const NEEDS_CONFIRMATION: [&str; 3] = ["abandon", "cancel", "disconnect"];

fn filing_id(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().filter(|id| *id > 0)
}

/// `GET /console/filings/{id}`.
pub async fn show(
    State(console): State<Arc<Console>>,
    frame: Frame,
    Path(id): Path<String>,
) -> Response {
    render(&console, &frame, &id, false).await
}

/// `POST /console/filings/{id}/reveal`: the page with personal data, audited.
pub async fn reveal(
    State(console): State<Arc<Console>>,
    frame: Frame,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let form: StepForm = match read_form(request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    if !frame.staff.csrf_ok(form.csrf.as_deref()) {
        return csrf_refused(frame.lang, &frame.staff);
    }
    render(&console, &frame, &id, true).await
}

/// `GET` on a form's address (a reload after a post, the language link): 303 to
/// the filing's page; nothing is written or revealed by a GET.
pub async fn back_to_filing(Path(params): Path<Vec<(String, String)>>) -> Response {
    let id = params
        .iter()
        .find(|(name, _)| name == "id")
        .and_then(|(_, value)| filing_id(value));
    match id {
        Some(id) => Redirect::to(&format!("/console/filings/{id}")).into_response(),
        None => Redirect::to("/console/").into_response(),
    }
}

/// A domain of the filing and what the gate does for it now.
#[derive(Debug, Serialize)]
struct DomainNow {
    name: String,
    decision: &'static str,
    reason: &'static str,
}

async fn render(console: &Console, frame: &Frame, id: &str, revealed: bool) -> Response {
    let Some(id) = filing_id(id) else {
        return frame.error(StatusCode::NOT_FOUND, "not_found", "");
    };
    let filing = match console.admin.registry.get(id).await {
        Ok(Some(filing)) => filing,
        Ok(None) => return frame.error(StatusCode::NOT_FOUND, "not_found", ""),
        Err(e) => {
            return frame.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry_unavailable",
                &e.to_string(),
            )
        }
    };
    // The API's one permission check and audit write (a token granted `reveal`),
    // made once the filing is known to exist, as the API does: a reveal of a
    // filing that is not there is a 404 and leaves no audit line.
    if revealed {
        let actor = Actor(frame.staff.actor.clone());
        if authorize_reveal(Some(&actor), frame.staff.grants, id, "personal data").is_err() {
            return frame.error(StatusCode::FORBIDDEN, "reveal_forbidden", "");
        }
    }
    let domains = domains_now(console, &filing).await;
    let shown = if revealed {
        filing.clone()
    } else {
        filing.masked()
    };
    let content = context! {
        f => Value::from_serialize(&shown),
        revealed => revealed,
        // Without the grant the button is not offered: its POST would answer 403.
        may_reveal => frame.staff.grants.reveal,
        domains => domains,
        allowed => filing.allowed_actions(),
    };
    frame.render(Page::Filing, content)
}

async fn domains_now(console: &Console, filing: &Filing) -> Vec<DomainNow> {
    let runtime = console.admin.gate.current();
    let policy = &runtime.config.policy;
    let mut out = Vec::with_capacity(filing.domains.len());
    for domain in &filing.domains {
        let found = console
            .admin
            .gate
            .state
            .verdict_for_host(domain, runtime.rule_policy())
            .await;
        let reason = found.verdict.reason;
        out.push(DomainNow {
            name: domain.clone(),
            decision: disposition(reason, policy.mode, policy.on_registry_error).as_str(),
            reason: reason.as_str(),
        });
    }
    out
}

/// The fields of the review and ending forms.
#[derive(Debug, Default, Deserialize)]
pub struct StepForm {
    csrf: Option<String>,
    approve: Option<String>,
    reason: Option<String>,
    icp_number: Option<String>,
    confirm: Option<String>,
}

/// `POST /console/filings/{id}/{step}`: one step, 303 back with a flash.
pub async fn step(
    State(console): State<Arc<Console>>,
    staff: Staff,
    lang: Lang,
    Path((id, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let form: StepForm = match read_form(request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    if !staff.csrf_ok(form.csrf.as_deref()) {
        return csrf_refused(lang, &staff);
    }
    let (Some(id), true) = (filing_id(&id), CONSOLE_STEPS.contains(&name.as_str())) else {
        return Redirect::to("/console/not-found").into_response();
    };
    let flash = apply(&console, &staff, lang, id, &name, form).await;
    match flash {
        Some(flash) => {
            console.sessions.flash(&staff.id, flash);
            Redirect::to(&format!("/console/filings/{id}")).into_response()
        }
        None => Redirect::to("/console/not-found").into_response(),
    }
}

/// Apply one step; the flash saying how it went (None: no such filing).
async fn apply(
    console: &Console,
    staff: &Staff,
    lang: Lang,
    id: i64,
    name: &str,
    form: StepForm,
) -> Option<Flash> {
    let refused = |key: &'static str, detail: String| Flash {
        ok: false,
        key,
        detail,
    };
    if NEEDS_CONFIRMATION.contains(&name) && form.confirm.as_deref() != Some("yes") {
        return Some(refused("flash_need_confirm", String::new()));
    }
    let approve = match form.approve.as_deref() {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            let detail = format!("approve: must be true or false, not {other:?}");
            return Some(refused("flash_bad_input", detail));
        }
    };
    let text = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let body = StepBody::of_form(approve, text(form.reason), text(form.icp_number));
    let step = Step::of_route(name)?;
    let action = match body.into_action(step) {
        Ok(action) => action,
        Err(e) => return Some(refused("flash_bad_input", e.to_string())),
    };
    match console
        .admin
        .apply_step_typed(id, action, &staff.actor)
        .await
    {
        Ok(filing) => Some(Flash {
            ok: true,
            key: "flash_done",
            detail: lang
                .text(&format!("status_{}", filing.status.as_str()))
                .to_string(),
        }),
        Err(RegistryError::NotFound(_)) => None,
        // The API's message stays the detail; the key says it in the page's language.
        Err(e) => Some(refused(refusal_key(&e), AdminError::from(e).to_string())),
    }
}

/// The catalog line for a refused step: the known refusals have their own.
fn refusal_key(error: &RegistryError) -> &'static str {
    match error {
        RegistryError::Transition(TransitionError::Illegal { .. }) => "flash_illegal_step",
        RegistryError::Transition(TransitionError::ChangePending) => "flash_change_pending",
        RegistryError::Transition(TransitionError::EntityReplaced) => "flash_entity_replaced",
        RegistryError::Transition(_) => "flash_bad_input",
        RegistryError::NumberTaken { .. } => "flash_number_taken",
        RegistryError::DomainTaken { .. } => "flash_domain_taken",
        RegistryError::AtLine { source, .. } => refusal_key(source),
        RegistryError::Unavailable(_) | RegistryError::Corrupt { .. } => "registry_unavailable",
        RegistryError::NotFound(_) | RegistryError::IdTaken(_) => "flash_refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::console::i18n::CATALOG;
    use crate::model::filing::Status;

    /// Each known refusal has its own line in the catalog, in both languages.
    #[test]
    fn known_refusals_have_their_own_line() {
        let taken = |n: &str| RegistryError::NumberTaken {
            number: n.to_string(),
            filing_id: 2,
        };
        let cases = [
            // a review of a filing no longer in review
            (
                RegistryError::Transition(TransitionError::Illegal {
                    from: Status::Approved,
                    action: "initial-review",
                    allowed: "cancel, disconnect".into(),
                }),
                "flash_illegal_step",
            ),
            // another entity's ICP number
            (taken("浙ICP备1号"), "flash_number_taken"),
            // a domain of another live filing
            (
                RegistryError::DomainTaken {
                    domain: "a.cn".into(),
                    filing_id: 3,
                },
                "flash_domain_taken",
            ),
            // the same refusal at an import line
            (
                RegistryError::AtLine {
                    line: 4,
                    source: Box::new(taken("浙ICP备2号")),
                },
                "flash_number_taken",
            ),
        ];
        for (error, key) in cases {
            assert_eq!(refusal_key(&error), key, "{error}");
            assert!(CATALOG.iter().any(|(k, _, _)| *k == key), "{key}");
        }
    }
}
