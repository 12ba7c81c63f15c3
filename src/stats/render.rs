//! Renders a [`Store`] as Envoy's `/stats` text and `/stats/prometheus` exposition.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::store::{Metric, Store};

/// The query of `/stats`: `usedonly` and `filter=<regex>`.
#[derive(Debug, Default)]
pub struct TextQuery {
    /// Only stats that were written at least once.
    pub used_only: bool,
    /// Only stats whose full name the regex finds a match in (RE2 search semantics).
    pub filter: Option<regex::Regex>,
}

impl TextQuery {
    fn keep(&self, name: &str, metric: &Metric) -> bool {
        if let Some(f) = &self.filter
            && !f.is_match(name)
        {
            return false;
        }
        !self.used_only || used(metric)
    }
}

fn used(metric: &Metric) -> bool {
    match metric {
        Metric::Counter(c) => c.used(),
        Metric::Gauge(g) => g.used(),
        Metric::Histogram(h) => h.count() > 0,
    }
}

/// `name: value` lines sorted by name, counters and gauges first, then histograms, as Envoy's
/// text format prints them.
pub fn render_text(store: &Store, q: &TextQuery) -> String {
    let mut out = String::new();
    let snap = store.snapshot();
    for (name, e) in &snap {
        if !q.keep(name, &e.metric) {
            continue;
        }
        match &e.metric {
            Metric::Counter(c) => {
                let _ = writeln!(out, "{name}: {}", c.value());
            }
            Metric::Gauge(g) => {
                let _ = writeln!(out, "{name}: {}", g.rendered());
            }
            Metric::Histogram(_) => {}
        }
    }
    for (name, e) in &snap {
        if let Metric::Histogram(h) = &e.metric {
            if !q.keep(name, &e.metric) {
                continue;
            }
            if h.count() == 0 {
                let _ = writeln!(out, "{name}: No recorded values");
                continue;
            }
            let _ = write!(out, "{name}:");
            for (label, q) in [
                ("P0", 0.0),
                ("P25", 0.25),
                ("P50", 0.5),
                ("P75", 0.75),
                ("P90", 0.9),
                ("P95", 0.95),
                ("P99", 0.99),
                ("P99.5", 0.995),
                ("P99.9", 0.999),
                ("P100", 1.0),
            ] {
                let v = h.quantile(q).unwrap_or(f64::NAN);
                let _ = write!(out, " {label}(nan,{v:.6})");
            }
            out.push('\n');
        }
    }
    out
}

/// Prometheus text exposition 0.0.4 with Envoy's naming: `envoy_` + the tag-extracted name with
/// every character outside `[a-zA-Z0-9_]` replaced by `_`, tags as labels.
pub fn render_prometheus(store: &Store, used_only: bool, filter: Option<&regex::Regex>) -> String {
    #[derive(Default)]
    struct Family {
        kind: &'static str,
        series: Vec<String>,
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (name, e) in store.snapshot() {
        if used_only && !used(&e.metric) {
            continue;
        }
        if filter.is_some_and(|f| !f.is_match(&name)) {
            continue;
        }
        let family = format!("envoy_{}", sanitize(&e.extracted.name));
        let labels: Vec<String> = e
            .extracted
            .tags
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape(v)))
            .collect();
        let fam = families.entry(family.clone()).or_default();
        match &e.metric {
            Metric::Counter(c) => {
                fam.kind = "counter";
                fam.series
                    .push(series(&family, &labels, None, c.value() as f64));
            }
            Metric::Gauge(g) => {
                fam.kind = "gauge";
                fam.series
                    .push(series(&family, &labels, None, g.rendered() as f64));
            }
            Metric::Histogram(h) => {
                fam.kind = "histogram";
                let bucket = format!("{family}_bucket");
                for (le, n) in h.cumulative() {
                    let le = format!("le=\"{}\"", fmt_num(le));
                    fam.series
                        .push(series(&bucket, &labels, Some(&le), n as f64));
                }
                let inf = "le=\"+Inf\"".to_string();
                fam.series
                    .push(series(&bucket, &labels, Some(&inf), h.count() as f64));
                fam.series
                    .push(series(&format!("{family}_sum"), &labels, None, h.sum()));
                fam.series.push(series(
                    &format!("{family}_count"),
                    &labels,
                    None,
                    h.count() as f64,
                ));
            }
        }
    }
    let mut out = String::new();
    for (name, fam) in families {
        let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
        for s in fam.series {
            out.push_str(&s);
        }
    }
    out
}

fn series(name: &str, labels: &[String], extra: Option<&str>, value: f64) -> String {
    let mut all: Vec<&str> = labels.iter().map(String::as_str).collect();
    all.extend(extra);
    if all.is_empty() {
        format!("{name} {}\n", fmt_num(value))
    } else {
        format!("{name}{{{}}} {}\n", all.join(","), fmt_num(value))
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_and_labels() {
        let s = Store::default();
        s.counter("cluster.backend.upstream_rq_total").add(3);
        s.gauge("server.state").set(0);
        let out = render_prometheus(&s, false, None);
        assert!(out.contains("# TYPE envoy_cluster_upstream_rq_total counter\n"));
        assert!(
            out.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 3\n")
        );
        assert!(out.contains("envoy_server_state 0\n"));
    }

    #[test]
    fn text_usedonly_and_filter() {
        let s = Store::default();
        s.counter("a.used").inc();
        s.counter("a.unused");
        let q = TextQuery {
            used_only: true,
            filter: Some(regex::Regex::new("^a\\.").unwrap()),
        };
        assert_eq!(render_text(&s, &q), "a.used: 1\n");
    }
}
