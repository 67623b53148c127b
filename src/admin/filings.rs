//! The filing endpoints: list, read, submit and the workflow steps
//! (`/v1/filings/{id}/<step>`). Every write is enforced in this process at once,
//! wakes the webhook notifier, moves the gauges and is logged as an audit event.
//!
//! Personal data is shown as `privacy` says: none without a token, masked with one
//! (lists and write answers too), in clear only on `GET /v1/filings/{id}?reveal=true`
//! by a token granted `reveal`, audited.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Path, State};
use http::request::Parts;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::auth::Actor;
use crate::admin::error::AdminError;
use crate::admin::extract::{
    de_count, de_flag, de_positive_count, de_registrable_domain, de_status, Json, JsonBody,
    JsonOrEmpty, Query,
};
use crate::admin::privacy::{Reader, View};
use crate::admin::Admin;
use crate::model::filing::{
    Action, Entity, Filing, FilingPassword, IcpNumber, Product, Status, Submission, Website,
};
use crate::model::host::RegistrableDomain;
use crate::registry::{jsonl, ListFilter, RegistryError};

/// The `{id}` of a filing's path: a positive integer, else the filing is not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilingId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for FilingId {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<FilingId, AdminError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AdminError::NotFound)?;
        text.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(FilingId)
            .ok_or(AdminError::NotFound)
    }
}

/// `GET /v1/filings?domain=&status=&limit=&after=`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "de_registrable_domain")]
    domain: Option<RegistrableDomain>,
    #[serde(default, deserialize_with = "de_status")]
    status: Option<Status>,
    #[serde(default, deserialize_with = "de_positive_count")]
    limit: Option<usize>,
    /// The `next` of the previous page: the last id it held.
    #[serde(default, deserialize_with = "de_count")]
    after: Option<usize>,
}

/// Filings per page when the caller names no `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// The largest page a caller may ask for.
pub const MAX_PAGE: usize = 1000;

/// `GET /v1/filings`: one page of filings in id order, personal data masked (none
/// without a token), with `next`, the `after` of the following page (null on the
/// last one).
pub async fn list(
    State(admin): State<Arc<Admin>>,
    reader: Reader,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, AdminError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit > MAX_PAGE {
        return Err(AdminError::BadRequest(format!(
            "limit: at most {MAX_PAGE} filings a page, not {limit}; page on with after="
        )));
    }
    let after = query
        .after
        .map(|after| {
            i64::try_from(after)
                .map_err(|_| AdminError::BadRequest(format!("after: not a filing id: {after}")))
        })
        .transpose()?;
    // One more than the page tells whether another page follows.
    let filter = ListFilter {
        domain: query.domain,
        status: query.status,
        limit: Some(limit + 1),
        after,
    };
    let mut filings = admin.registry.list(&filter).await?;
    let next = if filings.len() > limit {
        filings.truncate(limit);
        filings.last().map(|f| f.id)
    } else {
        None
    };
    let view = reader.unrevealed();
    let shown: Vec<Filing> = filings.into_iter().map(|f| view.show(f)).collect();
    Ok(Json(json!({ "filings": shown, "next": next })))
}

/// `GET /v1/filings/{id}?reveal=`.
#[derive(Debug, Default, Deserialize)]
pub struct GetQuery {
    #[serde(default, deserialize_with = "de_flag")]
    reveal: bool,
}

/// `GET /v1/filings/{id}`: masked with a token, no personal data without one, in
/// clear with `?reveal=true` for a token granted `reveal` (audited) — with the
/// filing password of an access-existing filing while its initial review lasts
/// (the reviewer checks it against the authority's system).
pub async fn get(
    State(admin): State<Arc<Admin>>,
    FilingId(id): FilingId,
    reader: Reader,
    Query(query): Query<GetQuery>,
) -> Result<Json<Value>, AdminError> {
    let filing = admin.registry.get(id).await?.ok_or(AdminError::NotFound)?;
    let password = match query.reveal {
        true => admin.registry.filing_password(id).await?,
        false => None,
    };
    let what = match password {
        Some(_) => "personal data and the filing password",
        None => "personal data",
    };
    let view = reader.view(query.reveal, id, what)?;
    let mut body = serde_json::to_value(view.show(filing)).unwrap_or_default();
    if let (Some(password), Some(object)) = (password, body.as_object_mut()) {
        object.insert("filing_password".into(), password.expose().into());
    }
    Ok(Json(body))
}

/// `POST /v1/filings`: 201 with the filing in `initial_review` and its `filing_type`.
pub async fn submit(
    State(admin): State<Arc<Admin>>,
    Actor(actor): Actor,
    JsonBody(mut submission): JsonBody<Submission>,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    submission.domains = jsonl::registrable_domains(&submission.domains)
        .map_err(|e| AdminError::BadRequest(format!("domains: {e}")))?;
    let submitted = admin.registry.submit(submission, &actor).await?;
    admin
        .after_write(&submitted.filing, &actor, "submit", None)
        .await;
    let shown = View::Masked.show(submitted.filing);
    let mut body = serde_json::to_value(&shown).unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        object.insert("filing_type".into(), submitted.filing_type.as_str().into());
    }
    Ok((StatusCode::CREATED, Json(body)))
}

/// `POST /v1/filings/{id}/<step>`: one workflow step, named by the route's last
/// segment (`Action::name`).
pub async fn step(
    State(admin): State<Arc<Admin>>,
    route: MatchedPath,
    FilingId(id): FilingId,
    Actor(actor): Actor,
    JsonOrEmpty(body): JsonOrEmpty<StepBody>,
) -> Result<Json<Filing>, AdminError> {
    let step = Step::of_route(route.as_str()).ok_or(AdminError::NotFound)?;
    let name = route.as_str().rsplit('/').next().unwrap_or_default();
    body.check_fields(step, name)?;
    let action = body.into_action(step)?;
    admin
        .apply_step(id, action, &actor)
        .await
        .map(|filing| Json(View::Masked.show(filing)))
}

impl Admin {
    /// One workflow step through the registry, then enforced, announced and audited
    /// (`after_write`): the one write path of the API and the review console.
    pub(crate) async fn apply_step(
        &self,
        id: i64,
        action: Action,
        actor: &str,
    ) -> Result<Filing, AdminError> {
        Ok(self.apply_step_typed(id, action, actor).await?)
    }

    /// `apply_step` with the registry's own error, for the console to say which
    /// refusal it was in the reader's language.
    pub(crate) async fn apply_step_typed(
        &self,
        id: i64,
        action: Action,
        actor: &str,
    ) -> Result<Filing, RegistryError> {
        let name = action.name();
        let filing = self.registry.transition(id, action, actor).await?;
        let before = filing.history.last().and_then(|entry| entry.from);
        self.after_write(&filing, actor, name, before).await;
        Ok(filing)
    }

    /// Enforce a write at once in this process, move the gauges, write the audit event.
    async fn after_write(
        &self,
        filing: &Filing,
        actor: &str,
        action: &str,
        before: Option<Status>,
    ) {
        let read = self.registry.revision().await.ok();
        let revision = read.unwrap_or(i64::MAX);
        let change = crate::registry::Change {
            revision,
            filing_id: filing.id,
            domains: filing.domains.clone(),
            unreadable: None,
        };
        self.gate.state.note_writes(&[change]).await;
        if let Some(notifier) = &self.notifier {
            notifier.notify_one();
        }
        // By this write's own change: a recount would grow with the registry.
        crate::gate::gauges::note_write(&self.gate.state.metrics, filing, before, read);
        tracing::info!(
            target: "icpgate::audit",
            actor,
            action,
            filing_id = filing.id,
            domains = %filing.domains.join(","),
            before = before.map_or("-", Status::as_str),
            after = filing.status.as_str(),
            "filing changed"
        );
    }
}

/// The workflow steps of the admin API, one per `Action` (named as `Action::name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    InitialReview,
    AuthorityReview,
    Resubmit,
    Abandon,
    Cancel,
    Disconnect,
    Change,
}

impl Step {
    /// The step a route pattern ends with (`/v1/filings/{id}/abandon` → `Abandon`).
    pub fn of_route(pattern: &str) -> Option<Step> {
        Some(match pattern.rsplit('/').next()? {
            "initial-review" => Step::InitialReview,
            "authority-review" => Step::AuthorityReview,
            "resubmit" => Step::Resubmit,
            "abandon" => Step::Abandon,
            "cancel" => Step::Cancel,
            "disconnect" => Step::Disconnect,
            "change" => Step::Change,
            _ => return None,
        })
    }
}

/// The body of a workflow step; each step takes exactly its own fields
/// ([`Step::fields`]) and refuses any other with a 400 naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    approve: Option<bool>,
    icp_number: Option<String>,
    reason: Option<String>,
    entity: Option<Entity>,
    website: Option<Website>,
    product: Option<Product>,
    filing_password: Option<FilingPassword>,
}

impl Step {
    /// The fields this step's body may carry.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Step::InitialReview => &["approve", "reason"],
            Step::AuthorityReview => &["approve", "icp_number", "reason"],
            Step::Resubmit => &[
                "entity",
                "website",
                "product",
                "icp_number",
                "filing_password",
            ],
            Step::Abandon | Step::Cancel | Step::Disconnect => &["reason"],
            Step::Change => &["entity", "website"],
        }
    }
}

impl StepBody {
    /// The names of the fields this body carries.
    fn given(&self) -> Vec<&'static str> {
        let present = [
            ("approve", self.approve.is_some()),
            ("icp_number", self.icp_number.is_some()),
            ("reason", self.reason.is_some()),
            ("entity", self.entity.is_some()),
            ("website", self.website.is_some()),
            ("product", self.product.is_some()),
            ("filing_password", self.filing_password.is_some()),
        ];
        present
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect()
    }

    /// Refuse a field the step does not use (it would be silently dropped).
    fn check_fields(&self, step: Step, name: &str) -> Result<(), AdminError> {
        let fields = step.fields();
        match self.given().into_iter().find(|f| !fields.contains(f)) {
            Some(field) => Err(AdminError::BadRequest(format!(
                "{field}: {name} does not take this field; it takes {}",
                fields.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// The fields a review form posts (the console's): the same reading as a JSON body.
    pub(crate) fn of_form(
        approve: Option<bool>,
        reason: Option<String>,
        icp_number: Option<String>,
    ) -> StepBody {
        StepBody {
            approve,
            reason,
            icp_number,
            ..StepBody::default()
        }
    }

    pub(crate) fn into_action(self, step: Step) -> Result<Action, AdminError> {
        let approve = |name: &str| {
            self.approve.ok_or_else(|| {
                AdminError::BadRequest(format!("approve: {name} needs \"approve\": true or false"))
            })
        };
        Ok(match step {
            Step::InitialReview => Action::InitialReview {
                approve: approve("initial-review")?,
                reason: self.reason,
            },
            Step::AuthorityReview => Action::AuthorityReview {
                approve: approve("authority-review")?,
                icp_number: self.icp_number.as_deref().map(parse_icp).transpose()?,
                reason: self.reason,
            },
            Step::Resubmit => Action::Resubmit {
                icp_number: self.icp_number.as_deref().map(parse_icp).transpose()?,
                entity: self.entity,
                website: self.website,
                product: self.product,
                filing_password: self.filing_password,
            },
            Step::Abandon => Action::Abandon {
                reason: self.reason,
            },
            Step::Cancel => Action::Cancel {
                reason: self.reason,
            },
            Step::Disconnect => Action::Disconnect {
                reason: self.reason,
            },
            Step::Change => Action::ChangeDetails {
                entity: self.entity,
                website: self.website,
            },
        })
    }
}

fn parse_icp(text: &str) -> Result<IcpNumber, AdminError> {
    IcpNumber::parse(text).map_err(|e| AdminError::BadRequest(format!("icp_number: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step's route names its `Action`: the route table and the workflow agree.
    #[test]
    fn each_step_route_names_its_action() {
        let steps = crate::admin::routes()
            .into_iter()
            .filter_map(|route| Some((route.path, Step::of_route(route.path)?)));
        let mut seen = 0;
        for (path, step) in steps {
            let body = StepBody {
                approve: step.fields().contains(&"approve").then_some(true),
                ..StepBody::default()
            };
            body.check_fields(step, "step").expect("its own fields");
            let action = body.into_action(step).expect("action");
            assert!(path.ends_with(&format!("/{}", action.name())), "{path}");
            seen += 1;
        }
        assert_eq!(seen, 7, "one route per step");
        assert_eq!(Step::of_route("/v1/filings/{id}/teleport"), None);
    }

    /// A field a step does not use is refused by name, not silently dropped.
    #[test]
    fn a_step_refuses_fields_it_does_not_use() {
        let cases: Vec<(Step, StepBody, Option<&str>)> = vec![
            // initial review assigns no number
            (
                Step::InitialReview,
                StepBody {
                    approve: Some(true),
                    icp_number: Some("浙ICP备30000009号-1".into()),
                    ..StepBody::default()
                },
                Some("icp_number"),
            ),
            // cancel has no approval
            (
                Step::Cancel,
                StepBody {
                    approve: Some(true),
                    ..StepBody::default()
                },
                Some("approve"),
            ),
            // a change cannot move the filing to another product
            (
                Step::Change,
                StepBody {
                    product: Some(Product::Storefront),
                    ..StepBody::default()
                },
                Some("product"),
            ),
            // resubmit corrects an access-existing filing's number
            (
                Step::Resubmit,
                StepBody {
                    icp_number: Some("浙ICP备30000006号-2".into()),
                    ..StepBody::default()
                },
                None,
            ),
        ];
        for (step, body, refused) in cases {
            match (body.check_fields(step, "step"), refused) {
                (Ok(()), None) => {}
                (Err(AdminError::BadRequest(detail)), Some(field)) => {
                    assert!(detail.starts_with(field), "{detail}")
                }
                (got, want) => panic!("{step:?}: {got:?}, want {want:?}"),
            }
        }
    }
}
