//! The benchmark harness itself works: `streamgate-bench --quick --json`
//! runs every scenario against its own redis-server and in-process gateway
//! and prints one well-formed report per scenario; with the cluster
//! scenarios selected, the same on its own Redis Clusters (which
//! needs `redis-cli`, as the cluster integration tests do).
//!
//! This checks the tool, never the figures: timing targets are judged by
//! reading BENCHMARKS.md, not by a test on a shared machine.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

const SCENARIOS: [&str; 8] = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S9"];
const CLUSTER_SCENARIOS: [&str; 4] = ["C1", "C3", "C30", "S8"];

#[test]
fn quick_run_reports_every_scenario_once() {
    let reports = quick_run(&[], &SCENARIOS);
    for (scenario, report) in &reports {
        check_report(scenario, report);
        assert!(
            report["one_master"].is_null(),
            "{scenario}: only C30 has a one-master baseline"
        );
    }
    check_every_event_acked(&reports["S9"]);
}

/// S9's sides (ordered and unordered) each acked every event loaded.
fn check_every_event_acked(report: &Value) {
    let events = report["params"]["events"]
        .as_u64()
        .expect("S9 params.events");
    for side in ["gateway", "direct"] {
        assert_eq!(
            report[side]["acked"].as_u64(),
            Some(events),
            "S9.{side}: not every event acked: {}",
            report[side]
        );
        assert_eq!(report[side]["complete"], Value::Bool(true), "S9.{side}");
    }
}

#[test]
fn quick_cluster_run_reports_every_cluster_scenario_once() {
    let reports = quick_run(&["--scenario", "C1,C3,C30,S8"], &CLUSTER_SCENARIOS);
    for (scenario, report) in &reports {
        check_report(scenario, report);
        assert!(
            report["params"]["redis"]
                .as_str()
                .is_some_and(|redis| redis.contains("Redis Cluster, 3 masters")),
            "{scenario}: not labelled as a 3-master cluster run: {}",
            report["params"]
        );
    }
    check_baseline(&reports["C30"]);
}

/// Runs `streamgate-bench --quick --json ARGS`; returns the reports by
/// scenario, checking that exactly `expected` were reported, once each.
fn quick_run(args: &[&str], expected: &[&str]) -> BTreeMap<String, Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_streamgate-bench"))
        .args(["--quick", "--json"])
        .args(args)
        .output()
        .expect("streamgate-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "streamgate-bench failed:\n{stderr}"
    );

    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let mut reports = BTreeMap::new();
    for line in stdout.lines() {
        let report: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object: {e}: {line}"));
        let scenario = report["scenario"]
            .as_str()
            .unwrap_or_else(|| panic!("no scenario in {line}"))
            .to_owned();
        assert!(
            reports.insert(scenario.clone(), report).is_none(),
            "{scenario} reported twice"
        );
    }
    let mut names: Vec<&str> = reports.keys().map(String::as_str).collect();
    let mut wanted = expected.to_vec();
    names.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(names, wanted, "one report per scenario; stderr:\n{stderr}");
    reports
}

fn check_report(scenario: &str, report: &Value) {
    for key in ["gateway", "direct", "ratio", "ratio_of", "targets"] {
        assert!(!report[key].is_null(), "{scenario}: missing {key}");
    }
    for side in ["gateway", "direct"] {
        check_side(scenario, side, &report[side]);
    }
    assert!(
        report["gateway"]["rss_mb"]
            .as_f64()
            .is_some_and(|mb| mb > 0.0),
        "{scenario}: the in-process gateway's RSS is known"
    );

    let ratio_of = report["ratio_of"].as_str().expect("ratio_of is a string");
    let gateway = report["gateway"][ratio_of]
        .as_f64()
        .expect("gateway figure");
    let direct = report["direct"][ratio_of].as_f64().expect("direct figure");
    let ratio = report["ratio"].as_f64().expect("ratio is a number");
    check_quotient(scenario, "ratio", ratio, gateway, direct);

    let targets = report["targets"].as_array().expect("targets is a list");
    assert!(!targets.is_empty(), "{scenario}: no targets");
    for target in targets {
        assert!(
            target["pass"].is_boolean(),
            "{scenario}: target without verdict: {target}"
        );
        assert!(
            target["want"].is_string(),
            "{scenario}: target without text: {target}"
        );
    }
}

/// C30's one-master baseline: both sides measured, and the scaling
/// figures are the quotients of the throughputs they claim to be.
fn check_baseline(report: &Value) {
    let baseline = &report["one_master"];
    assert!(
        baseline["redis"]
            .as_str()
            .is_some_and(|redis| redis.contains("1 master")),
        "C30: the baseline is not labelled as one master: {baseline}"
    );
    for side in ["gateway", "direct"] {
        check_side("C30 one_master", side, &baseline[side]);
    }
    let throughput = |v: &Value| v["throughput"].as_f64().expect("a throughput");
    let figure = |key: &str| {
        baseline[key]
            .as_f64()
            .unwrap_or_else(|| panic!("C30: {key} is not a number: {baseline}"))
    };
    let (gateway_scaling, direct_scaling) = (figure("gateway_scaling"), figure("direct_scaling"));
    check_quotient(
        "C30",
        "gateway_scaling",
        gateway_scaling,
        throughput(&report["gateway"]),
        throughput(&baseline["gateway"]),
    );
    check_quotient(
        "C30",
        "direct_scaling",
        direct_scaling,
        throughput(&report["direct"]),
        throughput(&baseline["direct"]),
    );
    check_quotient(
        "C30",
        "relative_scaling",
        figure("relative_scaling"),
        gateway_scaling,
        direct_scaling,
    );
}

/// `got` is `numerator / denominator`, to the report's rounding.
fn check_quotient(scenario: &str, what: &str, got: f64, numerator: f64, denominator: f64) {
    let expected = numerator / denominator;
    assert!(
        (got - expected).abs() <= 1e-3 * expected.max(1.0),
        "{scenario}: {what} {got} is not {numerator} / {denominator}"
    );
}

/// One side's figures are all there and consistent.
fn check_side(scenario: &str, side: &str, figures: &Value) {
    let number = |key: &str| {
        figures[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{scenario}.{side}.{key} is not a number: {figures}"))
    };
    assert!(
        number("throughput") > 0.0,
        "{scenario}.{side}: no throughput"
    );
    assert!(number("count") > 0.0, "{scenario}.{side}: nothing counted");
    let (p50, p99, p999) = (number("p50_ms"), number("p99_ms"), number("p999_ms"));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999,
        "{scenario}.{side}: percentiles out of order: {p50} {p99} {p999}"
    );
    assert!(
        figures["redis_connections"].as_u64().is_some(),
        "{scenario}.{side}: no connection count"
    );
}
