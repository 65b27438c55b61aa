//! The report: the rows of every scenario that ran, and the markdown
//! around their tables (machine, versions, footnotes, notes, errors, all
//! runs).

use std::time::Duration;

use crate::params::Params;
use crate::report::{self, Better, Results, Row};
use crate::scenarios::{self, Metric};
use crate::server::Programs;
use crate::{channel_suite, scaleout_suite, shared_suite, sys};

pub fn rows(p: &Params) -> Vec<Row> {
    let l1 = format!(
        "1. echo latency (1 conn, {} sequential round trips, µs)",
        p.latency_count
    );
    let l2 = format!(
        "2. echo throughput (1 conn, {} in flight, 64-byte messages, {} s)",
        p.window, p.throughput_secs
    );
    let l3 = format!(
        "3. connection churn ({} × connect + echo + close, {} at a time)",
        p.churn_count, p.churn_parallel
    );
    let l4 = format!(
        "4. storm ({} concurrent conns, each with a `cat`; {} handshakes in flight)",
        p.storm_count, p.storm_parallel
    );
    let l5 = format!(
        "5. binary throughput ({} KiB messages, `--binary cat`, {} KiB in flight, {} s)",
        p.binary_size / 1024,
        p.binary_window / 1024,
        p.binary_secs
    );
    let l6 = format!(
        "6. backpressure (`seq`: {} lines of {} bytes; slow reader for {} s)",
        p.backpressure_lines,
        scenarios::SEQ_WIDTH + 1,
        p.backpressure_secs
    );
    let l7 = format!(
        "7. fan-out ({} clients × {} numbered 64-byte messages; wspipe: control-socket \
         broadcast; websocketd + tail -f shared file²)",
        p.fanout_clients, p.fanout_messages
    );
    let cli = format!(
        "`wspipe ctl broadcast` as a process, one exec per message, {} messages (broadcasts/s)",
        p.fanout_cli_messages
    );
    let row = |metric, scenario: &str, label: &str, better| Row {
        metric,
        scenario: scenario.to_string(),
        label: label.to_string(),
        better,
    };
    let probe = format!(
        "{} KiB in flight for 1 s (deadlock probe, run 1 only)",
        p.binary_probe_window / 1024
    );
    let all = vec![
        row(Metric::LatencyP50, &l1, "p50", Better::Lower),
        row(Metric::LatencyP99, &l1, "p99", Better::Lower),
        row(Metric::LatencyMax, &l1, "max", Better::Lower),
        row(
            Metric::LatencyCpu,
            &l1,
            "server CPU per round trip (µs)",
            Better::Lower,
        ),
        row(Metric::EchoRate, &l2, "messages/s", Better::Higher),
        row(
            Metric::EchoCpu,
            &l2,
            "server CPU per message (µs)",
            Better::Lower,
        ),
        row(Metric::ChurnRate, &l3, "sessions/s", Better::Higher),
        row(
            Metric::ChurnCpu,
            &l3,
            "server CPU per session (µs)",
            Better::Lower,
        ),
        row(
            Metric::SpawnRateSequential,
            &l3,
            "/bin/true spawn+wait, 1 thread (spawns/s)",
            Better::Neither,
        ),
        row(Metric::StormConnected, &l4, "connected", Better::Neither),
        row(Metric::StormChildren, &l4, "children seen", Better::Neither),
        row(
            Metric::StormSeconds,
            &l4,
            "time to connect all (s)",
            Better::Lower,
        ),
        row(
            Metric::StormRssPerConn,
            &l4,
            "server RSS per connection (KiB)",
            Better::Lower,
        ),
        row(Metric::BinaryRate, &l5, "MB/s", Better::Higher),
        row(Metric::BinaryBigWindow, &l5, &probe, Better::Neither),
        row(
            Metric::BackpressureGrowth,
            &l6,
            "max server RSS growth (KiB)",
            Better::Lower,
        ),
        row(
            Metric::BackpressureDelivered,
            &l6,
            "delivered",
            Better::Neither,
        ),
        row(
            Metric::FanOutDeliveries,
            &l7,
            "deliveries/s (clients × messages / time until every client had every message; \
             wspipe: one broadcast request at a time)",
            Better::Higher,
        ),
        row(
            Metric::FanOutLag,
            &l7,
            "last delivery after the last send (ms)",
            Better::Lower,
        ),
        row(
            Metric::FanOutPipelined,
            &l7,
            "deliveries/s, all broadcast requests written at once (pipelined)",
            Better::Neither,
        ),
        row(
            Metric::FanOutProducerRate,
            &l7,
            "producer: messages/s taken (wspipe: broadcasts answered; websocketd: lines appended)",
            Better::Neither,
        ),
        row(Metric::FanOutCliRate, &l7, &cli, Better::Neither),
        row(
            Metric::FanOutChecked,
            &l7,
            "every client got every message",
            Better::Neither,
        ),
    ];
    all.into_iter()
        .chain(channel_suite::rows(&p.suite()))
        .chain(shared_suite::rows(&p.shared_suite()))
        .chain(scaleout_suite::rows(&p.scaleout_suite()))
        .filter(|r| {
            // "10. scale-out ...": the number is everything before ". ".
            let n: u8 = r
                .scenario
                .split_once(". ")
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or(0);
            p.only.contains(&n)
                && (r.metric != Metric::BinaryBigWindow || p.binary_probe_window > 0)
                && (r.metric != Metric::FanOutCliRate || p.fanout_cli_messages > 0)
        })
        .collect()
}

pub fn version_of(program: &std::path::Path) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

pub fn debian_version(package: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()?;
    (out.status.success() && !out.stdout.is_empty())
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn render(
    p: &Params,
    programs: &Programs,
    results: &Results,
    nofile: (u64, u64),
    elapsed: Duration,
    load: (&str, &str),
) -> String {
    use std::fmt::Write as _;
    let m = sys::Machine::describe();
    let rows = rows(p);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## wspipe benchmark{}\n",
        if p.smoke {
            " (smoke: tiny counts, figures meaningless)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "- machine: {} × {}, kernel {}, {} RAM",
        m.nproc, m.cpu, m.kernel, m.mem_total
    );
    let _ = writeln!(
        out,
        "- load average (1/5/15 min) before: {}, after: {}",
        load.0, load.1
    );
    let rev = std::env::var("WSPIPE_BENCH_REV")
        .map(|r| format!(", git {r}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "- wspipe: {}{rev} ({})",
        version_of(&programs.wspipe),
        programs.wspipe.display()
    );
    let websocketd_pkg = debian_version("websocketd")
        .map(|v| format!(", Debian package {v}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "- websocketd: {}{} ({})",
        version_of(&programs.websocketd),
        websocketd_pkg,
        programs.websocketd.display()
    );
    if p.only.contains(&8) {
        let pkg = |name| debian_version(name).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "- nchan: Debian package libnginx-mod-nchan {} in nginx {}",
            pkg("libnginx-mod-nchan"),
            pkg("nginx")
        );
    }
    if let (true, Some(redis)) = (p.only.contains(&10), &programs.redis) {
        let pkg = debian_version("redis-server")
            .map(|v| format!(", Debian package {v}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- redis-server: {}{pkg} ({})",
            version_of(redis),
            redis.display()
        );
    }
    let _ = writeln!(
        out,
        "- {} run(s) per figure, median shown; open files limit {}/{}; took {:.0} s",
        p.runs,
        nofile.0,
        nofile.1,
        elapsed.as_secs_f64()
    );
    out.push('\n');
    let (scaleout_rows, rows): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|r| matches!(r.metric, Metric::ScaleOut(..)));
    let (shared_rows, rows): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|r| matches!(r.metric, Metric::Shared(..)));
    let (channel_rows, rows): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|r| matches!(r.metric, Metric::Channel(..)));
    if !rows.is_empty() {
        out.push_str(&report::table(
            results,
            &rows,
            p.runs,
            p.storm_count,
            &report::MAIN,
        ));
        out.push_str(
            "\n¹ reference: for 1, 2 and 5, an in-process tokio-tungstenite echo server with no \
         child process (the upper limit for a bridge); for 3, the raw fork/exec rate of \
         `/bin/true` (spawn + wait in a loop) from as many threads as churn runs sessions \
         at a time, the ceiling for sessions/s. \
         Ratios are plain quotients: read them with the \"better\" column.\n",
        );
    }
    if p.only.contains(&7) {
        out.push_str(
            "\n² For 7, websocketd has no broadcast: its column is websocketd + tail -f shared \
             file, the usual way to fan out with it (every session runs `tail -n +1 -F FILE` \
             on one file, the producer appends one line per message), against wspipe's \
             `broadcast` request on its control socket.\n",
        );
    }
    if !channel_rows.is_empty() {
        out.push_str("\n### Channels: wspipe --pubsub and nginx's nchan³\n\n");
        out.push_str(&report::table(
            results,
            &channel_rows,
            p.runs,
            0,
            &report::CHANNELS,
        ));
        out.push_str(channel_suite::FOOTNOTE);
    }
    if !shared_rows.is_empty() {
        out.push_str("\n### Shared process: --shared cat, --pubsub, cat per connection⁴\n\n");
        let table = report::table(results, &shared_rows, p.runs, 0, &report::SHARED);
        out.push_str(&table);
        out.push_str(shared_suite::FOOTNOTE);
    }
    if !scaleout_rows.is_empty() {
        out.push_str("\n### Scale-out: 1 and 3 instances through one Redis⁵\n\n");
        let table = report::table(results, &scaleout_rows, p.runs, 0, &report::SCALEOUT);
        out.push_str(&table);
        out.push_str(scaleout_suite::FOOTNOTE);
    }
    if !results.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in &results.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    if !results.errors.is_empty() {
        out.push_str("\nErrors:\n");
        for (sc, kind, run, msg) in &results.errors {
            let _ = writeln!(out, "- {sc}, {} run {run}: {msg}", kind.name());
        }
    }
    if p.runs > 1 {
        out.push_str("\n<details><summary>All runs</summary>\n\n");
        // One table per report table, only for those shown.
        let tables = [&rows, &channel_rows, &shared_rows, &scaleout_rows];
        let shown: Vec<String> = tables
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| report::all_runs(results, t, p.runs))
            .collect();
        out.push_str(&shown.join("\n"));
        out.push_str("\n</details>\n");
    }
    out
}
