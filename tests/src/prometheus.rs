//! A strict reader of the Prometheus text exposition format (version 0.0.4): every line must
//! parse, every sample must belong to a family declared by `# TYPE` before it, families must
//! be contiguous, series unique, and histograms well formed (cumulative buckets ending in
//! `+Inf` equal to `_count`).

use std::collections::{BTreeMap, HashSet};

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of an exposition, after every check passed.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the series `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }
}

fn metric_name_ok(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn label_name_ok(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse::<f64>().map_err(|_| format!("{v:?} is not a value")),
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(types.get(base).map(String::as_str), Some("histogram" | "summary")) {
                return Some(base);
            }
        }
    }
    None
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name_end, rest) = match line.find(['{', ' ']) {
        Some(i) => (i, &line[i..]),
        None => return Err("a sample needs a value".into()),
    };
    let name = &line[..name_end];
    if !metric_name_ok(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // label name
            let start = match chars.peek() {
                Some((_, '}')) => {
                    end = chars.next().map(|(i, _)| i);
                    break;
                }
                Some((i, _)) => *i,
                None => break,
            };
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let eq = eq.ok_or("a label without '='")?;
            let lname = &body[start..eq];
            if !label_name_ok(lname) {
                return Err(format!("bad label name {lname:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("a label value must be quoted".into());
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?} in a label value")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\n' => return Err("a raw newline in a label value".into()),
                    c => value.push(c),
                }
            }
            if !closed {
                return Err("an unterminated label value".into());
            }
            if labels.insert(lname.to_owned(), value).is_some() {
                return Err(format!("label {lname} twice"));
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    end = Some(i);
                    break;
                }
                other => return Err(format!("expected ',' or '}}' after a label, got {other:?}")),
            }
        }
        let end = end.ok_or("unterminated label set")?;
        &body[end + 1..]
    } else {
        rest
    };
    let rest = rest.strip_prefix(' ').ok_or("expected a space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().ok_or("a sample needs a value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>().map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing text after the value".into());
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Parses `text` strictly; `Err` names the first offending line.
pub fn parse_strict(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words.next().ok_or_else(|| at("HELP without a name".into()))?;
                    if !metric_name_ok(name) || !helps.insert(name.to_owned()) {
                        return Err(at("bad or repeated HELP".into()));
                    }
                }
                Some("TYPE") => {
                    let name = words.next().ok_or_else(|| at("TYPE without a name".into()))?;
                    let ty = words.next().ok_or_else(|| at("TYPE without a type".into()))?;
                    if !matches!(ty, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                        return Err(at(format!("unknown type {ty}")));
                    }
                    if !metric_name_ok(name) || exp.types.insert(name.to_owned(), ty.to_owned()).is_some() {
                        return Err(at("bad or repeated TYPE".into()));
                    }
                    if let Some(prev) = current.replace(name.to_owned()) {
                        finished.insert(prev);
                    }
                }
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = family_of(&sample.name, &exp.types)
            .ok_or_else(|| at("a sample of a family with no TYPE before it".into()))?;
        if finished.contains(family) || current.as_deref() != Some(family) {
            return Err(at(format!("samples of {family} are not contiguous")));
        }
        if !series.insert((sample.name.clone(), sample.labels.clone())) {
            return Err(at("a duplicate series".into()));
        }
        if exp.types[family] == "counter" && sample.value < 0.0 {
            return Err(at("a negative counter".into()));
        }
        exp.samples.push(sample);
    }
    // Histograms: cumulative buckets ending in +Inf = count.
    for (name, ty) in &exp.types {
        if ty != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in exp.samples.iter().filter(|s| s.name == format!("{name}_bucket")) {
            let le = s.labels.get("le").ok_or(format!("{name}_bucket without le"))?;
            buckets.push((parse_value(le)?, s.value));
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{name}: buckets are not cumulative"));
        }
        let inf = buckets.last().filter(|b| b.0.is_infinite()).ok_or(format!("{name}: no +Inf bucket"))?.1;
        let count = exp.value(&format!("{name}_count"), &[]).ok_or(format!("{name}: no _count"))?;
        if inf != count {
            return Err(format!("{name}: +Inf bucket {inf} differs from _count {count}"));
        }
        exp.value(&format!("{name}_sum"), &[]).ok_or(format!("{name}: no _sum"))?;
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_and_refuses_bad_expositions() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{peer=\"IN\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n";
        let e = parse_strict(good).unwrap();
        assert_eq!(e.value("a_total", &[("peer", "IN")]), Some(3.0));
        for bad in [
            "a 1\n",                                        // no TYPE
            "# TYPE a counter\na{peer=IN} 1\n",             // unquoted
            "# TYPE a counter\na 1\na 2\n",                 // duplicate
            "# TYPE a counter\n# TYPE b gauge\nb 1\na 1\n", // not contiguous
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
            "# TYPE a counter\na 1", // no final newline
            "# TYPE a counter\na one\n",
        ] {
            assert!(parse_strict(bad).is_err(), "{bad:?}");
        }
    }
}
