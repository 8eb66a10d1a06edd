//! The web console's pure logic (PKCE and state, the shell connection's state machine with
//! reattach and byte offsets, asciicast parsing and gzip members, formatting, the API
//! client) is tested with `node --test` over `web/test/`. This runs those tests (after
//! `web/build.sh`, which installs the npm packages when needed) and fails with node's output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn text(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The number after `# <label> ` in node's TAP summary.
fn tap_count(tap: &str, label: &str) -> Option<u64> {
    let prefix = format!("# {label} ");
    tap.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
}

#[test]
fn console_logic_node_tests_pass() {
    let build = Command::new(web().join("build.sh"))
        .output()
        .expect("run web/build.sh (needs bash, Node.js 20+ and npm)");
    assert!(
        build.status.success(),
        "web/build.sh failed:\n{}",
        text(&build)
    );
    let tests = Command::new("node")
        .args(["--test", "--test-reporter=tap", "test/"])
        .current_dir(web())
        .output()
        .expect("run node --test (needs Node.js 20+)");
    let tap = String::from_utf8_lossy(&tests.stdout);
    assert!(
        tests.status.success(),
        "node --test failed:\n{}",
        text(&tests)
    );
    let passed = tap_count(&tap, "pass").unwrap_or(0);
    assert_eq!(tap_count(&tap, "fail"), Some(0), "{}", text(&tests));
    // Guards against a runner that silently finds no test files.
    assert!(
        passed >= 30,
        "only {passed} console tests ran:\n{}",
        text(&tests)
    );
}

#[test]
fn tap_counts_are_read_from_the_summary() {
    let tap = "ok 1 - a\n# tests 3\n# pass 2\n# fail 1\n";
    assert_eq!(tap_count(tap, "pass"), Some(2));
    assert_eq!(tap_count(tap, "fail"), Some(1));
    assert_eq!(tap_count(tap, "todo"), None);
}
