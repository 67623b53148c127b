//! Reading `/metrics` (Prometheus text): one metric's samples by labels.

/// The sum of a metric's samples whose labels include `labels`; None when no
/// series of `name` carries them. Use [`sample_required`] unless absence is the
/// point of the assertion.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.trim().rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            continue;
        }
        let have = parse_labels(label_text.trim_end_matches('}'));
        if labels
            .iter()
            .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        {
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("{name}: unparsable sample value in {line:?}"));
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// [`sample`] for a series that must be exported: panics naming the metric and its
/// labels when it is not, so a renamed metric or label fails instead of reading 0.
pub fn sample_required(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels)
        .unwrap_or_else(|| panic!("no series {name} with labels {labels:?} in /metrics"))
}

/// `k="v",k2="v2"` as pairs (values here never hold quotes or commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}
