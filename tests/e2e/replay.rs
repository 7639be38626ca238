//! `edgewise replay` at its edges: bad input lines, plugin output, failures in the log.

use edgewise_tests::{plugin_dir, replay};
use serde_json::json;

fn line(payload: &str) -> String {
    json!({ "topic": "hostile/in/cli", "payload": payload }).to_string()
}

#[test]
fn a_malformed_line_is_reported_with_its_number_and_the_rest_still_run() {
    let input = [
        line("count"),
        "{ not json".into(),
        json!({"topic": "a/#"}).to_string(),
        line("count"),
    ]
    .join("\n");
    let run = replay(&plugin_dir("hostile"), &input, &[]);
    assert!(!run.success, "malformed input is an error exit");
    assert!(
        run.log.contains("<stdin>:2: not a message object"),
        "{}",
        run.log
    );
    assert!(
        run.log.contains("<stdin>:3:") && run.log.contains("wildcard"),
        "{}",
        run.log
    );
    let counts: Vec<&[u8]> = run.published.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(counts, vec![&b"1"[..], &b"2"[..]]);
}

#[test]
fn plugin_stdout_becomes_log_lines_tagged_with_its_name() {
    let run = replay(&plugin_dir("hostile"), &line("print"), &[]);
    assert!(run.success, "{}", run.log);
    let logged = run
        .log
        .lines()
        .find(|l| l.contains("hello from stdout, message 1"))
        .expect("stdout line in log");
    assert!(
        logged.contains("plugin=\"hostile\"") && logged.contains("source=\"stdout\""),
        "{logged}"
    );
}

#[test]
fn a_trap_is_logged_with_the_plugin_and_topic_and_the_replay_goes_on_to_a_failed_exit() {
    let input = [line("panic"), line("count")].join("\n");
    let run = replay(&plugin_dir("hostile"), &input, &[]);
    assert!(!run.success, "a failed message fails the run: {}", run.log);
    assert!(run.log.contains("1 of 2 messages failed"), "{}", run.log);
    let logged = run
        .log
        .lines()
        .find(|l| l.contains("instance trapped"))
        .expect("trap in log");
    assert!(
        logged.contains("plugin=\"hostile\"") && logged.contains("topic=\"hostile/in/cli\""),
        "{logged}"
    );
    assert_eq!(run.published.len(), 1);
}

#[test]
fn a_plugin_that_cannot_start_is_an_error_exit_that_says_why() {
    let run = replay(
        &plugin_dir("hostile"),
        &line("count"),
        &["--set", "init=error"],
    );
    assert!(!run.success);
    assert!(
        run.log
            .contains("error: plugin `hostile`: plugin could not start: init returned an error"),
        "{}",
        run.log
    );
}

#[test]
fn a_directory_without_a_plugin_is_an_error_exit_that_names_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = replay(dir.path(), "", &[]);
    assert!(!run.success);
    assert!(run.log.contains("plugin.toml"), "{}", run.log);
}

/// `edgewise replay` of one `count` message with `env` set (and `NO_COLOR` unset): its exit
/// status and what it wrote to stderr.
fn logged_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::io::Write;
    let mut command = std::process::Command::new(edgewise_tests::edgewise());
    command
        .args(["replay", &plugin_dir("hostile").to_string_lossy(), "-"])
        .env_remove("NO_COLOR")
        .env_remove("EDGEWISE_LOG")
        .env_remove("EDGEWISE_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("edgewise starts");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{}", line("count"));
    }
    let out = child.wait_with_output().expect("edgewise ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logs_into_a_pipe_have_no_colour_codes_and_can_be_json() {
    // Regression: ANSI colour codes went into log files and pipes.
    let (code, text) = logged_with(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("replay finished"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a pipe: {text:?}");

    let (code, json) = logged_with(&[("EDGEWISE_LOG_FORMAT", "json")]);
    assert_eq!(code, Some(0), "{json}");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"] == "replay finished"),
        "{json}"
    );
}

#[test]
fn an_invalid_log_filter_or_format_in_the_environment_is_an_error_not_ignored() {
    let (code, text) = logged_with(&[("EDGEWISE_LOG", "info,=x=")]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("EDGEWISE_LOG=`info,=x=` is not a log filter"),
        "{text}"
    );
    let (code, text) = logged_with(&[("EDGEWISE_LOG_FORMAT", "xml")]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("expected `text` or `json`"), "{text}");
}
