//! One scenario's result: both sides, their ratio, the targets, and how to
//! print it as a table row or a JSON line.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

use crate::stats::Side;

/// The result of one scenario.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `S1`..`S7`, `C1`, `C3`, `C5`, `C30`, `S8`, `S9`.
    pub scenario: &'static str,
    /// Short name, e.g. `produce-batch`.
    pub name: &'static str,
    /// What `count` and `throughput` count, per second.
    pub unit: &'static str,
    /// What the latency percentiles time.
    pub latency_of: &'static str,
    /// Which figure of the sides `ratio` divides: `throughput` (higher is
    /// better) or `p99_ms` (lower is better).
    pub ratio_of: &'static str,
    /// `gateway[ratio_of] / direct[ratio_of]`.
    pub ratio: f64,
    /// Through the gateway (with several wake-up mechanisms: the first).
    pub gateway: Side,
    /// The wake-up mechanism `gateway` ran (`tracking` or `xread`), when
    /// known.
    pub wakeup: Option<&'static str>,
    /// Every gateway row, when the scenario ran its gateway side once per
    /// wake-up mechanism (the first is `gateway` again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayEntry>,
    /// Directly against Redis with redis-rs: the physical limit. S9 has
    /// no direct side: this is its unordered side, through the gateway
    /// too (see `direct_label`).
    pub direct: Side,
    /// The targets and whether this run met them.
    pub targets: Vec<Target>,
    /// Whose memory `rss_mb` is.
    pub rss_scope: Option<String>,
    /// The scenario's parameters.
    pub params: Value,
    /// C30 only: the same work on one master.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_master: Option<Baseline>,
    /// S8 only: the same work on one plain stream; its `*_scaling`
    /// quotients are partitioned / plain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_stream: Option<Baseline>,
    /// The label of `gateway`'s row in the table.
    #[serde(skip)]
    pub gateway_label: Option<String>,
    /// The label of `direct`'s row in the table, when it is not `direct`
    /// (S9: `gateway, unordered`).
    #[serde(skip)]
    pub direct_label: Option<String>,
    /// What the ratio divides, in the table, when it is not
    /// `gateway/direct` (S9: `ordered/unordered`).
    #[serde(skip)]
    pub ratio_label: Option<String>,
}

/// Which gateway a row measured: its label in the table and its wake-up
/// mechanism.
#[derive(Clone, Debug)]
pub struct GatewayRow {
    /// `gateway (tracking)`, or `gateway` when the mechanism is unknown.
    pub label: String,
    /// `tracking` or `xread`, when known.
    pub wakeup: Option<&'static str>,
}

/// One gateway row of a scenario run once per wake-up mechanism.
#[derive(Debug, Serialize)]
pub struct GatewayEntry {
    /// `tracking` or `xread`.
    pub wakeup: Option<&'static str>,
    /// `side[ratio_of] / direct[ratio_of]`.
    pub ratio: f64,
    /// The row's figures.
    #[serde(flatten)]
    pub side: Side,
    #[serde(skip)]
    label: String,
}

/// C30's baseline: both sides again on a one-master cluster, and how much
/// three masters gained over it. S8's: both sides on one plain stream, and
/// how much the partitioned stream gained over it.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// What the baseline ran on.
    pub redis: String,
    /// Through the baseline's gateway.
    pub gateway: Side,
    /// Directly against the one master.
    pub direct: Side,
    /// Gateway throughput on three masters / on one.
    pub gateway_scaling: f64,
    /// Direct throughput on three masters / on one: what the machine
    /// allows.
    pub direct_scaling: f64,
    /// `gateway_scaling / direct_scaling`: the share of that speed-up the
    /// gateway keeps.
    pub relative_scaling: f64,
}

/// One target and its verdict.
#[derive(Debug, Serialize)]
pub struct Target {
    /// The target, e.g. `ratio >= 0.6`.
    pub want: String,
    /// The measured figure it is judged on.
    pub got: f64,
    /// Whether it was met.
    pub pass: bool,
}

impl Target {
    /// `got >= min`.
    pub fn at_least(what: &str, got: f64, min: f64) -> Target {
        Target {
            want: format!("{what} >= {min}"),
            got,
            pass: got >= min,
        }
    }

    /// `got <= max`.
    pub fn at_most(what: &str, got: f64, max: f64) -> Target {
        Target {
            want: format!("{what} <= {max}"),
            got,
            pass: got <= max,
        }
    }
}

impl Report {
    /// A report whose ratio is `gateway[ratio_of] / direct[ratio_of]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &'static str,
        name: &'static str,
        unit: &'static str,
        latency_of: &'static str,
        ratio_of: &'static str,
        gateway: Side,
        direct: Side,
        params: Value,
    ) -> Report {
        let ratio = quotient(gateway.figure(ratio_of), direct.figure(ratio_of));
        Report {
            scenario,
            name,
            unit,
            latency_of,
            ratio_of,
            ratio,
            gateway,
            wakeup: None,
            gateways: Vec::new(),
            direct,
            targets: Vec::new(),
            rss_scope: None,
            params,
            one_master: None,
            plain_stream: None,
            gateway_label: None,
            direct_label: None,
            ratio_label: None,
        }
    }

    /// A report with one gateway row per wake-up mechanism (`rows`, the
    /// first becoming `gateway`), each with its ratio to `direct`.
    #[allow(clippy::too_many_arguments)]
    pub fn per_wakeup(
        scenario: &'static str,
        name: &'static str,
        unit: &'static str,
        latency_of: &'static str,
        ratio_of: &'static str,
        rows: Vec<(GatewayRow, Side)>,
        direct: Side,
        params: Value,
    ) -> Report {
        let (first_row, first) = rows.first().cloned().expect("at least one gateway row");
        let mut report = Report::new(
            scenario, name, unit, latency_of, ratio_of, first, direct, params,
        );
        report.wakeup = first_row.wakeup;
        report.gateway_label = Some(first_row.label);
        if rows.len() > 1 {
            report.gateways = rows
                .into_iter()
                .map(|(row, side)| GatewayEntry {
                    wakeup: row.wakeup,
                    ratio: quotient(side.figure(ratio_of), report.direct.figure(ratio_of)),
                    side,
                    label: row.label,
                })
                .collect();
        }
        report
    }

    /// The gateway rows: label and figures.
    fn gateway_rows(&self) -> Vec<(&str, &Side)> {
        if self.gateways.is_empty() {
            let label = self.gateway_label.as_deref().unwrap_or("gateway");
            vec![(label, &self.gateway)]
        } else {
            self.gateways
                .iter()
                .map(|row| (row.label.as_str(), &row.side))
                .collect()
        }
    }

    /// Adds C30's one-master baseline.
    pub fn one_master(mut self, redis: &str, gateway: Side, direct: Side) -> Report {
        self.one_master = Some(self.baseline(redis, gateway, direct));
        self
    }

    /// Adds S8's plain-stream baseline.
    pub fn plain_stream(mut self, redis: &str, gateway: Side, direct: Side) -> Report {
        self.plain_stream = Some(self.baseline(redis, gateway, direct));
        self
    }

    /// A baseline, and this report's throughputs over it.
    fn baseline(&self, redis: &str, gateway: Side, direct: Side) -> Baseline {
        let gateway_scaling = quotient(self.gateway.throughput, gateway.throughput);
        let direct_scaling = quotient(self.direct.throughput, direct.throughput);
        Baseline {
            redis: redis.to_owned(),
            gateway,
            direct,
            gateway_scaling,
            direct_scaling,
            relative_scaling: quotient(gateway_scaling, direct_scaling),
        }
    }

    /// Adds a target.
    pub fn target(mut self, target: Target) -> Report {
        self.targets.push(target);
        self
    }

    /// Writes the report as one JSON line.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        writeln!(out)?;
        out.flush()
    }

    /// Writes the report's rows of the table.
    pub fn write_rows(&self, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
        let title = format!("{} {}", self.scenario, self.name);
        let mut rows: Vec<(&str, &str, &Side)> = Vec::new();
        for (i, (label, side)) in self.gateway_rows().into_iter().enumerate() {
            rows.push((if i == 0 { title.as_str() } else { "" }, label, side));
        }
        let direct_label = self.direct_label.as_deref().unwrap_or("direct");
        rows.push(("", direct_label, &self.direct));
        if let Some(baseline) = &self.one_master {
            rows.push(("  on 1 master", "gateway", &baseline.gateway));
            rows.push(("", "direct", &baseline.direct));
        }
        if let Some(baseline) = &self.plain_stream {
            rows.push(("  1 plain stream", "gateway", &baseline.gateway));
            rows.push(("", "direct", &baseline.direct));
        }
        for (first, label, side) in rows {
            writeln!(
                out,
                "{first:<17} {label:<18} {:>12} {:<9} {:>8.3} {:>8.3} {:>8.3} {:>6} {:>7}",
                thousands(side.throughput),
                self.unit,
                side.p50_ms,
                side.p99_ms,
                side.p999_ms,
                side.redis_connections
                    .map_or("-".to_owned(), |c| c.to_string()),
                side.rss_mb.map_or("-".to_owned(), |m| format!("{m:.1}")),
            )?;
        }
        let ratios = if self.gateways.is_empty() {
            format!("{:.3}", self.ratio)
        } else {
            self.gateways
                .iter()
                .map(|row| format!("{} {:.3}", row.wakeup.unwrap_or("?"), row.ratio))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            out,
            "{:<17} ratio of {} ({}): {ratios}",
            "",
            self.ratio_of,
            self.ratio_label.as_deref().unwrap_or("gateway/direct")
        )?;
        for t in &self.targets {
            writeln!(
                out,
                "{:<17} target {} (got {}): {}",
                "",
                t.want,
                t.got,
                if t.pass { "PASS" } else { "MISS" }
            )?;
        }
        if self.gateway.extra.contains_key("xadds_per_master") {
            writeln!(
                out,
                "{:<17} XADDs per master: gateway side {}; direct side {}",
                "",
                shares(&self.gateway, "xadds_per_master"),
                shares(&self.direct, "xadds_per_master")
            )?;
        }
        if self.gateway.extra.contains_key("partitions_per_master") {
            writeln!(
                out,
                "{:<17} partitions per master: gateway side {}; direct side {} (XADD calls: gateway side {}; direct side {})",
                "",
                counts(&self.gateway, "partitions_per_master"),
                counts(&self.direct, "partitions_per_master"),
                counts(&self.gateway, "xadds_per_master"),
                counts(&self.direct, "xadds_per_master"),
            )?;
        }
        if let Some(baseline) = &self.plain_stream {
            writeln!(
                out,
                "{:<17} partitioned vs plain: gateway {:.3}x, direct {:.3}x (gateway keeps {:.3} of direct's gain)",
                "", baseline.gateway_scaling, baseline.direct_scaling, baseline.relative_scaling
            )?;
        }
        if let Some(baseline) = &self.one_master {
            writeln!(
                out,
                "{:<17} 3 masters vs 1: gateway {:.3}x, direct {:.3}x (gateway keeps {:.3} of direct's scaling)",
                "", baseline.gateway_scaling, baseline.direct_scaling, baseline.relative_scaling
            )?;
        }
        if self.gateway.extra.contains_key("owners_before") {
            writeln!(
                out,
                "{:<17} owners (ListPartitions): {} when timing began ({} ms after opening), {} at the end; partitions read per consumer: ordered {}, unordered {}; read by two consumers: {}; out of ID order: {} / {}",
                "",
                owner_counts(&self.gateway, "owners_before"),
                self.gateway.extra["ready_ms"],
                owner_counts(&self.gateway, "owners_after"),
                counts(&self.gateway, "partitions_per_consumer"),
                counts(&self.direct, "partitions_per_consumer"),
                self.gateway.extra["shared_partitions"],
                self.gateway.extra["out_of_order"],
                self.direct.extra["out_of_order"],
            )?;
            writeln!(
                out,
                "{:<17} partitions drained at ms (last entry): ordered {}; unordered {}",
                "",
                counts(&self.gateway, "drained_ms"),
                counts(&self.direct, "drained_ms"),
            )?;
            writeln!(
                out,
                "{:<17} Redis per 100 events, calls (µs in the command, scripts including theirs): ordered {}; unordered {}",
                "",
                redis_text(&self.gateway),
                redis_text(&self.direct),
            )?;
        }
        writeln!(out, "{:<17} latency: {}", "", self.latency_of)?;
        if self.gateway.extra.contains_key("idle_commands_per_sec") {
            let mut parts: Vec<String> = self
                .gateway_rows()
                .into_iter()
                .map(|(label, side)| format!("{label} {}", idle_text(side)))
                .collect();
            parts.push(format!("direct {}", idle_text(&self.direct)));
            writeln!(
                out,
                "{:<17} idle, Redis commands/s: {}",
                "",
                parts.join("; ")
            )?;
            let names: Vec<String> = self
                .gateway_rows()
                .into_iter()
                .map(|(label, side)| format!("{label} {}", names_text(side)))
                .collect();
            writeln!(
                out,
                "{:<17} gateway Redis connections by client name: {}",
                "",
                names.join("; ")
            )?;
        }
        let mut cpu: Vec<String> = self
            .gateway_rows()
            .into_iter()
            .map(|(label, side)| format!("{label} side {}", cpu_text(side)))
            .collect();
        cpu.push(format!("{direct_label} side {}", cpu_text(&self.direct)));
        writeln!(out, "{:<17} CPU µs per event: {}", "", cpu.join("; "))?;
        if let Some(baseline) = &self.one_master {
            writeln!(
                out,
                "{:<17} CPU µs per event on 1 master: gateway side {}; direct side {}",
                "",
                cpu_text(&baseline.gateway),
                cpu_text(&baseline.direct)
            )?;
        }
        if let Some(baseline) = &self.plain_stream {
            writeln!(
                out,
                "{:<17} CPU µs per event on 1 plain stream: gateway side {}; direct side {}",
                "",
                cpu_text(&baseline.gateway),
                cpu_text(&baseline.direct)
            )?;
        }
        Ok(())
    }
}

/// `12.3 (xreadgroup 10.1, xread 2.2)`: a side's idle command rate, and
/// the rate of each command.
fn idle_text(side: &Side) -> String {
    let Some(total) = side
        .extra
        .get("idle_commands_per_sec")
        .and_then(|v| v.as_f64())
    else {
        return "-".to_owned();
    };
    let by_command: Vec<String> = side
        .extra
        .get("idle_commands")
        .and_then(|v| v.as_object())
        .map(|calls| {
            calls
                .iter()
                .filter_map(|(name, rate)| Some(format!("{name} {}", rate.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    if by_command.is_empty() {
        format!("{total}")
    } else {
        format!("{total} ({})", by_command.join(", "))
    }
}

/// `streamgate-watch 1, unnamed 1`: a gateway side's Redis connections by
/// client name.
fn names_text(side: &Side) -> String {
    let names: Vec<String> = side
        .extra
        .get("redis_connections_by_name")
        .and_then(|v| v.as_object())
        .map(|names| {
            names
                .iter()
                .map(|(name, n)| {
                    let name = if name.is_empty() { "unnamed" } else { name };
                    format!("{name} {n}")
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(", ")
    }
}

/// `6/3/3`: a side's per-master figure `key` as it is.
fn counts(side: &Side, key: &str) -> String {
    side.extra
        .get(key)
        .and_then(|v| v.as_array())
        .map_or("-".to_owned(), |a| {
            a.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join("/")
        })
}

/// `4/4/4`: how many partitions each owner of a side's `key` (owner ->
/// count, S9) holds, `unowned 2` appended for partitions nobody owns.
fn owner_counts(side: &Side, key: &str) -> String {
    let Some(owners) = side.extra.get(key).and_then(|v| v.as_object()) else {
        return "-".to_owned();
    };
    let mut text: Vec<String> = owners
        .iter()
        .filter(|(owner, _)| !owner.is_empty())
        .map(|(_, n)| n.to_string())
        .collect();
    if text.is_empty() {
        text.push("0".to_owned());
    }
    let mut text = text.join("/");
    if let Some(n) = owners.get("") {
        text.push_str(&format!(" (unowned {n})"));
    }
    text
}

/// `evalsha 3.03 (645.4), xreadgroup 2.01 (146.1)`: S9's Redis calls
/// per 100 events and the µs spent in them, for the commands called at
/// least once per 1,000 events, the costliest first.
fn redis_text(side: &Side) -> String {
    let (Some(calls), Some(usec)) = (
        side.extra
            .get("redis_calls_per_100")
            .and_then(|v| v.as_object()),
        side.extra
            .get("redis_usec_per_100")
            .and_then(|v| v.as_object()),
    ) else {
        return "-".to_owned();
    };
    let mut rows: Vec<(&String, f64, f64)> = calls
        .iter()
        .filter_map(|(name, n)| {
            let n = n.as_f64()?;
            let us = usec.get(name).and_then(|v| v.as_f64()).unwrap_or(0.0);
            (n >= 0.1).then_some((name, n, us))
        })
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows.iter()
        .map(|(name, n, us)| format!("{name} {n} ({us})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `34/33/33 %`: each master's share of a side's per-master figure `key`
/// (`xadds_per_master`).
fn shares(side: &Side, key: &str) -> String {
    let counts: Vec<f64> = side
        .extra
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|n| n.as_f64()).collect())
        .unwrap_or_default();
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return "-".to_owned();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|n| format!("{:.0}", n / total * 100.0))
        .collect();
    format!("{} %", parts.join("/"))
}

/// `a / b` to four decimals; 0 when `b` is not positive.
fn quotient(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

/// `gateway 1.2, client 3.4, redis 5.6` from a side's `cpu_us_per_op`.
fn cpu_text(side: &Side) -> String {
    let Some(cpu) = side.extra.get("cpu_us_per_op") else {
        return "-".to_owned();
    };
    ["gateway", "client", "redis"]
        .iter()
        .filter_map(|party| Some(format!("{party} {:.1}", cpu[*party].as_f64()?)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table's header.
pub fn write_header(out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    writeln!(
        out,
        "{:<17} {:<18} {:>12} {:<9} {:>8} {:>8} {:>8} {:>6} {:>7}",
        "scenario", "side", "throughput", "unit", "p50 ms", "p99 ms", "p999 ms", "conns", "RSS MB"
    )
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
