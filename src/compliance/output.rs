//! How `icpgate check` prints its reports: an aligned table for people, JSON (an
//! array of [`Report`] objects) and CSV (RFC 4180, one header row) for scripts, and
//! a progress bar on a terminal's stderr for long lists.
//!
//! CSV cells that a spreadsheet would run as a formula (starting `=`, `+`, `-`, `@`)
//! get a leading `'`; only invalid inputs can start so.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::Report;

/// Output format of `icpgate check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

/// Render `reports`; `with_dns` adds the DNS columns to the table and CSV.
pub fn render(format: Format, reports: &[Report], with_dns: bool) -> String {
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(reports).unwrap_or_default();
            text.push('\n');
            text
        }
        Format::Csv => csv(reports, with_dns),
        Format::Table => table(reports, with_dns),
    }
}

const COLUMNS: [&str; 8] = [
    "input",
    "host",
    "registrable_domain",
    "filing_status",
    "icp_number",
    "decision",
    "reason",
    "compliant",
];
const DNS_COLUMNS: [&str; 5] = [
    "addresses",
    "cname_chain",
    "points_here",
    "dns_error",
    "verdict",
];

/// One report as cells, in `COLUMNS` (+ `DNS_COLUMNS`) order; empty for null.
fn cells(report: &Report, with_dns: bool) -> Vec<String> {
    let mut row = vec![
        report.input.clone(),
        report.host.clone().unwrap_or_default(),
        report.registrable_domain.clone().unwrap_or_default(),
        report
            .filing_status
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        report.icp_number.clone().unwrap_or_default(),
        report.decision.to_string(),
        report.reason.as_str().to_string(),
        report.compliant.to_string(),
    ];
    if with_dns {
        let dns = report.dns.clone().unwrap_or_default();
        let addresses: Vec<String> = dns.addresses.iter().map(|a| a.to_string()).collect();
        row.push(addresses.join(" "));
        row.push(dns.cname_chain.join(" "));
        row.push(dns.points_here.to_string());
        row.push(dns.error.unwrap_or_default());
        row.push(report.verdict.map(|v| v.as_str()).unwrap_or("").to_string());
    }
    row
}

fn header(with_dns: bool) -> Vec<&'static str> {
    let mut names = COLUMNS.to_vec();
    if with_dns {
        names.extend(DNS_COLUMNS);
    }
    names
}

fn csv(reports: &[Report], with_dns: bool) -> String {
    let mut out = header(with_dns).join(",");
    out.push_str("\r\n");
    for report in reports {
        let row: Vec<String> = cells(report, with_dns)
            .iter()
            .map(|c| csv_cell(c))
            .collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Quote a cell when it holds a comma, quote, CR or LF (quotes doubled); defuse
/// spreadsheet formulas.
pub fn csv_cell(cell: &str) -> String {
    let cell = if cell.starts_with(['=', '+', '-', '@']) {
        format!("'{cell}")
    } else {
        cell.to_string()
    };
    if cell.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

fn table(reports: &[Report], with_dns: bool) -> String {
    let names = header(with_dns);
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            cells(r, with_dns)
                .into_iter()
                .map(|c| {
                    if c.is_empty() {
                        "-".to_string()
                    } else {
                        printable(&c)
                    }
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = names.iter().map(|n| width(n)).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(width(c)))))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    let upper: Vec<String> = names.iter().map(|n| n.to_uppercase()).collect();
    line(&upper, &mut out);
    for row in &rows {
        line(row, &mut out);
    }
    out
}

/// Control characters of an input shown escaped, so a hostile list cannot move the
/// cursor or break the table.
fn printable(cell: &str) -> String {
    cell.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Terminal columns a string takes: East Asian wide characters (CJK, Hangul,
/// full-width forms) count two.
fn width(text: &str) -> usize {
    text.chars()
        .map(|c| {
            let wide = matches!(u32::from(c),
                0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
                | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
                | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6);
            if wide {
                2
            } else {
                1
            }
        })
        .sum()
}

/// A progress bar on stderr, drawn only when stderr is a terminal and the list is
/// long enough to wait for; redrawn at most every 100 ms.
pub struct Progress {
    enabled: bool,
    last: Option<Instant>,
}

/// Lists shorter than this finish before a bar would help.
const PROGRESS_MIN: usize = 50;

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            enabled: total >= PROGRESS_MIN && std::io::stderr().is_terminal(),
            last: None,
        }
    }

    pub fn update(&mut self, done: usize, total: usize) {
        if !self.enabled {
            return;
        }
        let due = self
            .last
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(100));
        if !due && done < total {
            return;
        }
        self.last = Some(Instant::now());
        const BAR: usize = 30;
        let filled = done * BAR / total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rchecking [{}{}] {done}/{total}",
            "=".repeat(filled),
            " ".repeat(BAR - filled)
        );
        if done >= total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells() {
        let cases = [
            // plain cell untouched
            ("example.com", "example.com"),
            // a comma is quoted
            ("a,b", "\"a,b\""),
            // quotes are doubled inside quotes
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            // a newline is quoted
            ("a\nb", "\"a\nb\""),
            // a formula is defused
            ("=cmd()", "'=cmd()"),
            // Unicode passes through
            ("浙ICP备12345678号-1", "浙ICP备12345678号-1"),
        ];
        for (cell, want) in cases {
            assert_eq!(csv_cell(cell), want, "{cell:?}");
        }
    }

    #[test]
    fn display_widths() {
        let cases = [
            // ASCII: one column each
            ("abc", 3),
            // CJK: two columns each
            ("例子", 4),
            // mixed ICP number
            ("浙ICP备1号", 10),
        ];
        for (text, want) in cases {
            assert_eq!(width(text), want, "{text:?}");
        }
    }
}
