//! The benchmark harness itself works: `streamgate-bench --quick --json`
//! runs every scenario against its own redis-server and in-process gateway
//! and prints one well-formed report per scenario.
//!
//! This checks the tool, never the figures: timing targets are judged by
//! reading BENCHMARKS.md, not by a test on a shared machine.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

const SCENARIOS: [&str; 7] = ["S1", "S2", "S3", "S4", "S5", "S6", "S7"];

#[test]
fn quick_run_reports_every_scenario_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_streamgate-bench"))
        .args(["--quick", "--json"])
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
    assert_eq!(
        reports.keys().map(String::as_str).collect::<Vec<_>>(),
        SCENARIOS,
        "one report per scenario; stderr:\n{stderr}"
    );
    for (scenario, report) in &reports {
        check_report(scenario, report);
    }
}

fn check_report(scenario: &str, report: &Value) {
    for key in ["gateway", "direct", "ratio", "ratio_of", "targets"] {
        assert!(!report[key].is_null(), "{scenario}: missing {key}");
    }
    for side in ["gateway", "direct"] {
        let figures = &report[side];
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
    let expected = gateway / direct;
    assert!(
        (ratio - expected).abs() <= 1e-3 * expected.max(1.0),
        "{scenario}: ratio {ratio} is not {ratio_of} {gateway} / {direct}"
    );

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
