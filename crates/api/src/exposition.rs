//! The two text formats `/metrics` speaks, and which one a scraper gets.
//!
//! prometheus-client encodes OpenMetrics text only (counters as `name` with
//! samples `name_total`, `# UNIT`, `info`, `# EOF`). A scraper that asks for
//! it (`Accept: application/openmetrics-text`, as Prometheus does) gets that
//! unchanged; anyone else gets the Prometheus text format 0.0.4, derived from
//! it by [`to_text_004`]: a counter's family is named as its samples (`_total`),
//! an info family becomes a gauge named `name_info`, `unknown` becomes
//! `untyped`, and what 0.0.4 lacks (`# UNIT`, `_created` samples, exemplars,
//! `# EOF`) is left out.

use std::collections::HashSet;

use prometheus_client::registry::Registry;

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Text004,
}

impl Format {
    /// The format for a request's `Accept` header (absent: 0.0.4).
    /// OpenMetrics when the header accepts it with a weight no lower than that of
    /// any other type it accepts (`text/plain`, `*/*`, …), 0.0.4 otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text004;
        };
        let (mut openmetrics, mut other) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let Ok(m) = range.trim().parse::<mime::Mime>() else {
                continue;
            };
            let q = m
                .get_param("q")
                .and_then(|q| q.as_str().parse::<f32>().ok())
                .filter(|q| q.is_finite())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            if m.type_() == mime::APPLICATION && m.subtype() == "openmetrics-text" {
                openmetrics = openmetrics.max(q);
            } else {
                other = other.max(q);
            }
        }
        if openmetrics > 0.0 && openmetrics >= other {
            Format::OpenMetrics
        } else {
            Format::Text004
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// `registry` encoded in this format.
    pub fn encode(self, registry: &Registry) -> String {
        let mut out = String::new();
        // Writing into a String fails only if a metric's own encoder does.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
            tracing::error!("encoding metrics failed: {e}");
        }
        match self {
            Format::OpenMetrics => out,
            Format::Text004 => to_text_004(&out),
        }
    }
}

/// OpenMetrics text (as prometheus-client writes it) as Prometheus text 0.0.4.
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The family being read: its OpenMetrics name and type.
    let mut family = String::new();
    let mut kind = "";
    // HELP lines wait for their TYPE line, which decides the 0.0.4 name.
    let mut help: Option<(String, String)> = None;
    let mut done: HashSet<String> = HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            flush_help(&mut out, &mut help);
            help = Some((name.to_string(), help_004(text)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, om_kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = name.to_string();
            let (name_004, kind_004) = match om_kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "counter" => (name.to_string(), "counter"),
                "gauge" => (name.to_string(), "gauge"),
                "histogram" => (name.to_string(), "histogram"),
                "summary" => (name.to_string(), "summary"),
                "info" => (format!("{name}_info"), "gauge"),
                _ => (name.to_string(), "untyped"),
            };
            kind = match om_kind {
                "counter" => "counter",
                "histogram" => "histogram",
                "summary" => "summary",
                _ => "",
            };
            match help.take() {
                Some((h, text)) if h == name => {
                    out.push_str(&format!("# HELP {name_004} {text}\n"));
                }
                other => {
                    help = other;
                    flush_help(&mut out, &mut help);
                }
            }
            // 0.0.4 allows one TYPE line per family.
            if done.insert(name_004.clone()) {
                out.push_str(&format!("# TYPE {name_004} {kind_004}\n"));
            }
            continue;
        }
        flush_help(&mut out, &mut help);
        if line.starts_with('#') || line.trim().is_empty() {
            // `# UNIT`, `# EOF`, comments: nothing 0.0.4 needs.
            continue;
        }
        let Some((series, value)) = split_sample(line) else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if matches!(kind, "counter" | "histogram" | "summary")
            && name.strip_prefix(family.as_str()) == Some("_created")
        {
            continue;
        }
        out.push_str(series);
        out.push(' ');
        out.push_str(&value);
        out.push('\n');
    }
    flush_help(&mut out, &mut help);
    out
}

/// A HELP line that found no TYPE line: as it was.
fn flush_help(out: &mut String, help: &mut Option<(String, String)>) {
    if let Some((name, text)) = help.take() {
        out.push_str(&format!("# HELP {name} {text}\n"));
    }
}

/// OpenMetrics escapes `\`, newline and `"` in HELP; 0.0.4 only `\` and newline.
fn help_004(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('"') => out.push('"'),
                Some('n') => out.push_str("\\n"),
                Some('\\') | None => out.push_str("\\\\"),
                Some(other) => {
                    out.push_str("\\\\");
                    out.push(other);
                }
            },
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample line as (`name{labels}`, value[ timestamp in ms]): the label set
/// read with its quoting, the exemplar (` # …`) dropped, an OpenMetrics
/// timestamp (seconds) turned into 0.0.4's milliseconds.
fn split_sample(line: &str) -> Option<(&str, String)> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'{' && bytes[i] != b' ' {
        i += 1;
    }
    if bytes.get(i) == Some(&b'{') {
        let mut quoted = false;
        let mut escaped = false;
        loop {
            i += 1;
            let b = *bytes.get(i)?;
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'}' if !quoted => {
                    i += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    let (series, rest) = line.split_at(i);
    let rest = rest.split(" # ").next().unwrap_or("");
    let mut fields = rest.split_whitespace();
    let value = fields.next()?;
    let mut out = value.to_string();
    if let Some(ts) = fields.next().and_then(|t| t.parse::<f64>().ok()) {
        out.push_str(&format!(" {}", (ts * 1000.0).round() as i64));
    }
    Some((series, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;
    use prometheus_client::registry::Unit;

    #[test]
    fn negotiation_follows_the_accept_header() {
        use Format::*;
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (None, Text004),
            (Some(""), Text004),
            (Some("*/*"), Text004),
            (Some("text/plain"), Text004),
            (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), Text004),
            (Some(prom), OpenMetrics),
            (Some("application/openmetrics-text"), OpenMetrics),
            (Some("application/openmetrics-text; q=0"), Text004),
            (
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
                Text004,
            ),
            (
                Some("text/plain;q=0.5, application/openmetrics-text"),
                OpenMetrics,
            ),
            (Some("garbage,,;;q=x"), Text004),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn text_004_names_counters_by_their_samples_and_drops_what_it_lacks() {
        let mut r = Registry::with_prefix("x");
        let c: Family<Vec<(String, String)>, Counter> = Family::default();
        c.get_or_create(&vec![("path".into(), "a \"b\" # {c}\\".into())])
            .inc_by(3);
        r.register("requests", "Requests \"served\"", c);
        let g: Gauge = Gauge::default();
        g.set(-2);
        r.register_with_unit("size", "Size", Unit::Bytes, g);
        let h = Histogram::new([1.0]);
        h.observe(0.5);
        r.register("latency_seconds", "Latency", h);
        r.register("build", "Build", Info::new(vec![("version", "1.2")]));
        let om = Format::OpenMetrics.encode(&r);
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = Format::Text004.encode(&r);
        let want = [
            "# HELP x_requests_total Requests \"served\".",
            "# TYPE x_requests_total counter",
            r#"x_requests_total{path="a \"b\" # {c}\\"} 3"#,
            "# HELP x_size_bytes Size.",
            "# TYPE x_size_bytes gauge",
            "x_size_bytes -2",
            "# HELP x_latency_seconds Latency.",
            "# TYPE x_latency_seconds histogram",
            "x_latency_seconds_sum 0.5",
            "x_latency_seconds_count 1",
            r#"x_latency_seconds_bucket{le="1.0"} 1"#,
            r#"x_latency_seconds_bucket{le="+Inf"} 1"#,
            "# HELP x_build_info Build.",
            "# TYPE x_build_info gauge",
            r#"x_build_info{version="1.2"} 1"#,
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), want, "{text}");
    }

    #[test]
    fn samples_lose_exemplars_and_created_and_keep_quoted_hashes() {
        let om = "# HELP a A.\n# TYPE a counter\na_total{k=\"x # y\"} 1 # {t=\"1\"} 1.0 12.5\na_created 17\n# TYPE b unknown\nb 2 1.5\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"x # y\"} 1\n# TYPE b untyped\nb 2 1500\n"
        );
    }
}
