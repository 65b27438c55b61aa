//! Collecting figures across runs and printing the markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::scenarios::Metric;
use crate::server::Kind;

/// Whether a bigger figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// A count or a check: no ratio.
    Neither,
}

/// How one metric is shown.
pub struct Row {
    pub metric: Metric,
    pub scenario: String,
    pub label: String,
    pub better: Better,
}

/// Every figure of every run, and what went wrong.
#[derive(Default)]
pub struct Results {
    values: BTreeMap<(Metric, Kind), Vec<Option<f64>>>,
    /// (scenario, server, run, message)
    pub errors: Vec<(String, Kind, usize, String)>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
    /// A data check failed somewhere: exit non-zero.
    pub check_failed: bool,
}

impl Results {
    pub fn record(&mut self, kind: Kind, run: usize, runs: usize, figures: &[(Metric, f64)]) {
        for (metric, value) in figures {
            let v = self
                .values
                .entry((*metric, kind))
                .or_insert_with(|| vec![None; runs]);
            v[run] = Some(*value);
        }
    }

    fn runs(&self, metric: Metric, kind: Kind) -> Option<&Vec<Option<f64>>> {
        self.values.get(&(metric, kind))
    }

    /// Median of the runs that produced a figure, and how many did.
    pub fn median(&self, metric: Metric, kind: Kind) -> Option<(f64, usize)> {
        let mut v: Vec<f64> = self.runs(metric, kind)?.iter().flatten().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let m = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some((m, n))
    }
}

/// A number with a sensible number of digits and thousands separators.
pub fn num(v: f64) -> String {
    let decimals = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    let s = format!("{v:.decimals$}");
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d.to_string()),
        None => ("", int),
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}{frac}")
}

fn cell(results: &Results, row: &Row, kind: Kind, runs: usize, storm_count: usize) -> String {
    match results.median(row.metric, kind) {
        None => "—".into(),
        Some((v, n)) => {
            let mut s = match row.metric {
                Metric::StormConnected => format!("{v:.0} / {storm_count}"),
                Metric::StormChildren => format!("{v:.0}"),
                Metric::BackpressureDelivered => format!("{:.1} % in order", v * 100.0),
                // Any miss, duplicate or reordering fails the run instead.
                Metric::FanOutChecked => "all, once, in order".into(),
                // Probed once: 1 = every byte came back.
                Metric::BinaryBigWindow if v >= 1.0 => "ok".into(),
                Metric::BinaryBigWindow => return "stalls (deadlock)".into(),
                _ => num(v),
            };
            if n < runs && row.metric != Metric::BinaryBigWindow {
                let _ = write!(s, " ({n}/{runs} runs)");
            }
            s
        }
    }
}

fn ratio(results: &Results, row: &Row, a: Kind, b: Kind) -> String {
    if row.better == Better::Neither {
        return "—".into();
    }
    match (results.median(row.metric, a), results.median(row.metric, b)) {
        (Some((x, _)), Some((y, _))) if y != 0.0 => format!("{:.2}×", x / y),
        _ => "—".into(),
    }
}

/// Which servers a table shows, and which ratios.
pub struct Layout {
    pub columns: [(Kind, &'static str); 3],
    pub ratios: [(Kind, Kind, &'static str); 2],
}

/// Scenarios 1-7: wspipe, websocketd, the reference.
pub const MAIN: Layout = Layout {
    columns: [
        (Kind::Wspipe, "wspipe"),
        (Kind::Websocketd, "websocketd"),
        (Kind::Reference, "reference¹"),
    ],
    ratios: [
        (Kind::Wspipe, Kind::Websocketd, "wspipe / websocketd"),
        (Kind::Wspipe, Kind::Reference, "wspipe / reference¹"),
    ],
};

/// Scenario 8: wspipe publishing over HTTP and through its control socket,
/// nchan over HTTP, and the ratios to nchan.
pub const CHANNELS: Layout = Layout {
    columns: [
        (Kind::Wspipe, "wspipe, HTTP publish"),
        (Kind::WspipeControl, "wspipe, control socket"),
        (Kind::Nchan, "nchan"),
    ],
    ratios: [
        (Kind::Wspipe, Kind::Nchan, "wspipe HTTP / nchan"),
        (Kind::WspipeControl, Kind::Nchan, "wspipe control / nchan"),
    ],
};

/// Scenario 9: one `cat` for every client, a channel, a `cat` per client;
/// the ratios of the shared process to the other two.
pub const SHARED: Layout = Layout {
    columns: [
        (Kind::Shared, "--shared cat"),
        (Kind::Pubsub, "--pubsub"),
        (Kind::PerConnection, "cat per connection"),
    ],
    ratios: [
        (Kind::Shared, Kind::Pubsub, "shared / pubsub"),
        (Kind::Shared, Kind::PerConnection, "shared / per connection"),
    ],
};

/// Scenario 10: one instance without Redis, one with, three on one Redis;
/// the ratios of the two with Redis to the one without (the cost of Redis).
pub const SCALEOUT: Layout = Layout {
    columns: [
        (Kind::ScaleLocal, "1 instance, no Redis"),
        (Kind::ScaleRedis1, "1 instance + Redis"),
        (Kind::ScaleRedis3, "3 instances + Redis"),
    ],
    ratios: [
        (Kind::ScaleRedis1, Kind::ScaleLocal, "1 + Redis / no Redis"),
        (Kind::ScaleRedis3, Kind::ScaleLocal, "3 + Redis / no Redis"),
    ],
};

/// A table of medians and ratios.
pub fn table(
    results: &Results,
    rows: &[Row],
    runs: usize,
    storm_count: usize,
    layout: &Layout,
) -> String {
    let mut out = String::from("| # | scenario | metric | better |");
    for (_, title) in &layout.columns {
        let _ = write!(out, " {title} |");
    }
    for (_, _, title) in &layout.ratios {
        let _ = write!(out, " {title} |");
    }
    out.push_str("\n|---|---|---|---|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let (num_part, name) = row.scenario.split_once(". ").unwrap_or(("", &row.scenario));
        let better = better_word(row.better);
        let _ = write!(out, "| {num_part} | {name} | {} | {better} |", row.label);
        for (kind, _) in &layout.columns {
            let _ = write!(out, " {} |", cell(results, row, *kind, runs, storm_count));
        }
        for (a, b, _) in &layout.ratios {
            let _ = write!(out, " {} |", ratio(results, row, *a, *b));
        }
        out.push('\n');
    }
    out
}

fn better_word(better: Better) -> &'static str {
    match better {
        Better::Higher => "higher",
        Better::Lower => "lower",
        Better::Neither => "",
    }
}

/// Every run's figure, to judge the noise behind the medians.
pub fn all_runs(results: &Results, rows: &[Row], runs: usize) -> String {
    let mut out = String::new();
    let _ = write!(out, "| metric | server |");
    for r in 1..=runs {
        let _ = write!(out, " run {r} |");
    }
    out.push('\n');
    out.push_str("|---|---|");
    out.push_str(&"---:|".repeat(runs));
    out.push('\n');
    for row in rows {
        for kind in [
            Kind::Wspipe,
            Kind::WspipeControl,
            Kind::Shared,
            Kind::Pubsub,
            Kind::PerConnection,
            Kind::ScaleLocal,
            Kind::ScaleRedis1,
            Kind::ScaleRedis3,
            Kind::Websocketd,
            Kind::Nchan,
            Kind::Reference,
        ] {
            let Some(values) = results.runs(row.metric, kind) else {
                continue;
            };
            let (num_part, _) = row.scenario.split_once(". ").unwrap_or(("", ""));
            // Channel rows repeat per size: name it.
            let label = match row.metric {
                Metric::Channel(_, n) => format!("{n} sub., {}", row.label),
                Metric::Shared(_, n) => format!("{n} clients, {}", row.label),
                _ => row.label.clone(),
            };
            let _ = write!(out, "| {num_part}. {label} | {} |", kind.name());
            for v in values {
                let shown = match (v, row.metric) {
                    (None, _) => "—".into(),
                    (Some(v), Metric::StormConnected | Metric::StormChildren) => {
                        format!("{v:.0}")
                    }
                    (Some(v), _) => num(*v),
                };
                let _ = write!(out, " {shown} |");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(999.6), "1,000");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(-4321.0), "-4,321");
    }

    #[test]
    fn median_of_what_ran() {
        let mut r = Results::default();
        r.record(Kind::Wspipe, 0, 3, &[(Metric::EchoRate, 3.0)]);
        r.record(Kind::Wspipe, 2, 3, &[(Metric::EchoRate, 1.0)]);
        assert_eq!(r.median(Metric::EchoRate, Kind::Wspipe), Some((2.0, 2)));
        r.record(Kind::Wspipe, 1, 3, &[(Metric::EchoRate, 10.0)]);
        assert_eq!(r.median(Metric::EchoRate, Kind::Wspipe), Some((3.0, 3)));
        assert_eq!(r.median(Metric::EchoRate, Kind::Reference), None);
    }
}
