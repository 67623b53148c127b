//! Search (`GET /console/search?q=`), from the box on every page: a host name finds
//! the filings of its registrable domain; anything else is taken as (part of) an
//! ICP number, matched without regard to case. One hit goes straight to its filing.
//! Results are masked, like the API's lists.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use minijinja::{context, Value};
use serde::Deserialize;

use crate::admin::console::templates::{Frame, Page};
use crate::admin::console::Console;
use crate::model::filing::Filing;
use crate::model::host::HostName;
use crate::registry::{ListFilter, RegistryError};

/// Most results shown.
const LIMIT: usize = 100;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// `GET /console/search?q=`.
pub async fn search(
    State(console): State<Arc<Console>>,
    frame: Frame,
    Query(query): Query<SearchQuery>,
) -> Response {
    let q = query.q.unwrap_or_default().trim().to_string();
    let found = if q.is_empty() {
        Ok(Vec::new())
    } else {
        find(&console, &q).await
    };
    match found {
        Ok(filings) if filings.len() == 1 => {
            Redirect::to(&format!("/console/filings/{}", filings[0].id)).into_response()
        }
        Ok(filings) => {
            let masked: Vec<Filing> = filings.iter().map(Filing::masked).collect();
            let content = context! { q => q, results => Value::from_serialize(&masked) };
            frame.render(Page::Search, content)
        }
        Err(e) => frame.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_unavailable",
            &e.to_string(),
        ),
    }
}

/// The filings `q` names: by domain when it reads as a host with a registrable
/// domain, else by ICP number.
async fn find(console: &Console, q: &str) -> Result<Vec<Filing>, RegistryError> {
    let registry = &console.admin.registry;
    let domain = HostName::parse(q)
        .ok()
        .and_then(|h| h.registrable_domain())
        .filter(|_| !q.to_ascii_uppercase().contains("ICP"));
    if let Some(domain) = domain {
        let filter = ListFilter {
            domain: Some(domain),
            limit: Some(LIMIT),
            ..ListFilter::default()
        };
        return registry.list(&filter).await;
    }
    // The registry has no index by ICP number: the console reads the list once.
    let needle = q.to_lowercase();
    let all = registry.list(&ListFilter::default()).await?;
    Ok(all
        .into_iter()
        .filter(|f| {
            f.icp_number
                .as_ref()
                .is_some_and(|n| n.as_str().to_lowercase().contains(&needle))
        })
        .take(LIMIT)
        .collect())
}
