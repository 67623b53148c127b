//! How `icpgate check` prints its reports: an aligned table for people, JSON (an
//! array of [`Report`] objects) and CSV (RFC 4180, one header row) for scripts, and
//! a progress bar on a terminal's stderr for long lists.
//!
//! CSV cells that a spreadsheet would run as a formula (starting `=`, `+`, `-`, `@`)
//! get a leading `'`; only invalid inputs can start so.

use std::borrow::Cow;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to memory cannot fail; a failed row would only shorten the output.
    let _ = writer.write_record(header(with_dns));
    for report in reports {
        let row = cells(report, with_dns);
        let _ = writer.write_record(row.iter().map(|c| defuse(c).into_owned()));
    }
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A cell a spreadsheet would run as a formula gets a leading `'` (OWASP's CSV
/// injection advice); the csv writer then quotes what needs quoting.
fn defuse(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
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
/// long enough to wait for (indicatif hides it on a pipe or a file).
pub struct Progress {
    bar: ProgressBar,
}

/// Lists shorter than this finish before a bar would help.
const PROGRESS_MIN: usize = 50;

impl Progress {
    pub fn new(total: usize) -> Progress {
        let bar = if total >= PROGRESS_MIN {
            ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template("checking [{bar:30}] {pos}/{len}") {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    pub fn update(&mut self, done: usize, total: usize) {
        self.bar.set_position(done as u64);
        if done >= total {
            self.bar.finish();
        }
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
            // a defused formula that also needs quoting
            ("=1,2", "\"'=1,2\""),
            // Unicode passes through
            ("浙ICP备12345678号-1", "浙ICP备12345678号-1"),
        ];
        for (cell, want) in cases {
            let mut writer = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(Vec::new());
            writer
                .write_record([defuse(cell).as_bytes()])
                .expect("in memory");
            let out = String::from_utf8(writer.into_inner().expect("flush")).expect("utf-8");
            assert_eq!(out, format!("{want}\r\n"), "{cell:?}");
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
