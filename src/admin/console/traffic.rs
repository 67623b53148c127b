//! What the gate refuses (`GET /console/traffic`): the top blocked registrable
//! domains of live traffic (`observe::blocked_hosts`), each linked to its filing or
//! to a check; the blocks per minute by reason over the last hour
//! (`observe::block_rate`) as a stacked bar chart drawn here as SVG; and the link
//! to the Grafana dashboard (`admin.grafana_url`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::response::Response;
use minijinja::{context, Value};
use serde::Serialize;

use crate::admin::console::templates::{Frame, Page};
use crate::admin::console::Console;
use crate::model::host::HostName;
use crate::model::reason::Reason;
use crate::observe::block_rate::MinuteCounts;

/// Domains listed.
const TOP: usize = 20;
/// The chart's drawing area, in SVG units.
const WIDTH: u64 = 600;
const HEIGHT: u64 = 160;

#[derive(Debug, Serialize)]
struct TopRow {
    domain: String,
    count: u64,
    error: u64,
    last_seen: String,
    filing_id: Option<i64>,
}

#[derive(Debug, Serialize)]
struct LegendItem {
    reason: &'static str,
    total: u64,
}

/// `GET /console/traffic`.
pub async fn traffic(State(console): State<Arc<Console>>, frame: Frame) -> Response {
    let state = &console.admin.gate.state;
    let mut top = Vec::new();
    for host in state.blocked_hosts.top(TOP) {
        top.push(TopRow {
            filing_id: filing_of(&console, &host.domain).await,
            domain: host.domain,
            count: host.count,
            error: host.error,
            last_seen: host.last_seen,
        });
    }
    let hour = state.block_rate.last_hour(SystemTime::now());
    let legend: Vec<LegendItem> = Reason::ALL
        .iter()
        .enumerate()
        .map(|(i, reason)| LegendItem {
            reason: reason.as_str(),
            total: hour.iter().map(|m| m.counts[i]).sum(),
        })
        .filter(|item| item.total > 0)
        .collect();
    let content = context! {
        top => top,
        legend => legend,
        chart => Value::from_safe_string(chart(&hour)),
        grafana_url => console.admin.gate.current().config.admin.grafana_url.clone(),
    };
    frame.render(Page::Traffic, content)
}

/// The filing that holds `domain`, if any (a registry error shows as none: the
/// link then offers a check, which will say what is wrong).
async fn filing_of(console: &Console, domain: &str) -> Option<i64> {
    let domain = HostName::parse(domain).ok()?.registrable_domain()?;
    let found = console.admin.registry.lookup(&domain).await.ok()?;
    found.filing.map(|f| f.id)
}

/// One bar per minute, stacked by reason (class `r-<reason>`, coloured by the
/// stylesheet), scaled to the busiest minute; a baseline and the peak as a label.
/// Only numbers go in: nothing here needs escaping.
pub fn chart(hour: &[MinuteCounts]) -> String {
    let peak = hour
        .iter()
        .map(|m| m.counts.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slots = hour.len().max(1) as u64;
    let bar = WIDTH / slots;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {}\" role=\"img\" aria-label=\"blocks per minute\">",
        HEIGHT + 14
    );
    for (slot, minute) in hour.iter().enumerate() {
        let x = slot as u64 * bar;
        let mut top = HEIGHT;
        for (i, count) in minute.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let height = (count * HEIGHT).div_ceil(peak).max(1);
            top = top.saturating_sub(height);
            let reason = Reason::ALL[i].as_str();
            let _ = write!(
                svg,
                "<rect class=\"r-{reason}\" x=\"{x}\" y=\"{top}\" width=\"{}\" height=\"{height}\"><title>{count} {reason}</title></rect>",
                bar.saturating_sub(1).max(1)
            );
        }
    }
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\"/>\
         <text x=\"0\" y=\"10\">{peak}/min</text><text x=\"0\" y=\"{}\">−60 min</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text></svg>",
        HEIGHT + 12,
        WIDTH,
        HEIGHT + 12
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(minute: u64, pairs: &[(Reason, u64)]) -> MinuteCounts {
        let mut counts = [0; Reason::ALL.len()];
        for (reason, count) in pairs {
            let i = Reason::ALL
                .iter()
                .position(|r| r == reason)
                .expect("reason");
            counts[i] = *count;
        }
        MinuteCounts { minute, counts }
    }

    #[test]
    fn the_busiest_minute_fills_the_chart_and_reasons_stack() {
        let hour: Vec<MinuteCounts> = (0..60)
            .map(|m| match m {
                10 => minute(m, &[(Reason::NotFiled, 30), (Reason::Rejected, 10)]),
                20 => minute(m, &[(Reason::NotFiled, 4)]),
                _ => minute(m, &[]),
            })
            .collect();
        let svg = chart(&hour);
        // minute 10: 40 blocks = the full height, not_filed 120 units then rejected 40
        assert!(
            svg.contains("class=\"r-not_filed\" x=\"100\" y=\"40\" width=\"9\" height=\"120\""),
            "{svg}"
        );
        assert!(
            svg.contains("class=\"r-rejected\" x=\"100\" y=\"0\" width=\"9\" height=\"40\""),
            "{svg}"
        );
        // minute 20: 4 of 40
        assert!(
            svg.contains("class=\"r-not_filed\" x=\"200\" y=\"144\" width=\"9\" height=\"16\""),
            "{svg}"
        );
        assert!(svg.contains(">40/min<"));
        assert_eq!(svg.matches("<rect").count(), 3);
    }

    #[test]
    fn an_empty_hour_draws_no_bars() {
        let hour: Vec<MinuteCounts> = (0..60).map(|m| minute(m, &[])).collect();
        let svg = chart(&hour);
        assert_eq!(svg.matches("<rect").count(), 0);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
