//! The filing endpoints: list, read, submit and the workflow steps
//! (`/v1/filings/{id}/<step>`). Every write is enforced in this process at once,
//! wakes the webhook notifier, refreshes the gauges and is logged as an audit event.
//!
//! Personal data (certificate numbers, phones, e-mails) is masked in lists, even
//! for a caller with a token, and in a single read without one (`Filing::masked`).

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Path, State};
use http::request::Parts;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::auth::Actor;
use crate::admin::error::AdminError;
use crate::admin::extract::{
    de_count, de_registrable_domain, de_status, Json, JsonBody, JsonOrEmpty, Query,
};
use crate::admin::Admin;
use crate::model::filing::{
    Action, Entity, Filing, IcpNumber, Product, Status, Submission, Website,
};
use crate::model::host::RegistrableDomain;
use crate::registry::{jsonl, ListFilter};

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

/// `GET /v1/filings?domain=&status=&limit=`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "de_registrable_domain")]
    domain: Option<RegistrableDomain>,
    #[serde(default, deserialize_with = "de_status")]
    status: Option<Status>,
    #[serde(default, deserialize_with = "de_count")]
    limit: Option<usize>,
}

/// `GET /v1/filings`: filings in id order, personal data masked.
pub async fn list(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, AdminError> {
    let filter = ListFilter {
        domain: query.domain,
        status: query.status,
        limit: query.limit,
    };
    let filings = admin.registry.list(&filter).await?;
    let masked: Vec<Filing> = filings.iter().map(Filing::masked).collect();
    Ok(Json(json!({ "filings": masked })))
}

/// `GET /v1/filings/{id}`: personal data only for a caller with a token.
pub async fn get(
    State(admin): State<Arc<Admin>>,
    FilingId(id): FilingId,
    caller: Option<Actor>,
) -> Result<Json<Filing>, AdminError> {
    let filing = admin.registry.get(id).await?.ok_or(AdminError::NotFound)?;
    Ok(Json(match caller {
        Some(_) => filing,
        None => filing.masked(),
    }))
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
    let mut body = serde_json::to_value(&submitted.filing).unwrap_or_default();
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
    let action = body.into_action(step)?;
    admin.apply_step(id, action, &actor).await.map(Json)
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
        let name = action.name();
        let filing = self.registry.transition(id, action, actor).await?;
        let before = filing.history.last().and_then(|entry| entry.from);
        self.after_write(&filing, actor, name, before).await;
        Ok(filing)
    }

    /// Enforce a write at once in this process, refresh the gauges, write the audit event.
    async fn after_write(
        &self,
        filing: &Filing,
        actor: &str,
        action: &str,
        before: Option<Status>,
    ) {
        let revision = self.registry.revision().await.unwrap_or(i64::MAX);
        let change = crate::registry::Change {
            revision,
            domains: filing.domains.clone(),
        };
        self.gate.state.note_writes(&[change]).await;
        if let Some(notifier) = &self.notifier {
            notifier.notify_one();
        }
        crate::gate::gauges::refresh_filing_gauges(
            self.registry.as_ref(),
            &self.gate.state.metrics,
        )
        .await;
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

/// The body of a workflow step; which fields apply depends on the step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    approve: Option<bool>,
    icp_number: Option<String>,
    reason: Option<String>,
    entity: Option<Entity>,
    website: Option<Website>,
    product: Option<Product>,
}

impl StepBody {
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
                entity: self.entity,
                website: self.website,
                product: self.product,
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
                approve: Some(true),
                ..StepBody::default()
            };
            let action = body.into_action(step).expect("action");
            assert!(path.ends_with(&format!("/{}", action.name())), "{path}");
            seen += 1;
        }
        assert_eq!(seen, 7, "one route per step");
        assert_eq!(Step::of_route("/v1/filings/{id}/teleport"), None);
    }
}
