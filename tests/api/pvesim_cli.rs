//! `homelab-autopilot pvesim` as a user runs it: one line on stdout, the info file, the API.

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn pvesim_cli_prints_one_line_writes_the_info_file_and_serves_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("info.json");
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pvesim/cluster.yaml");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab-autopilot"))
        .arg("pvesim")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--plain-http",
            "--time-scale",
            "0.01",
            "--seed",
            seed,
        ])
        .arg("--info-file")
        .arg(&info)
        .arg("--dump-dir")
        .arg(dir.path().join("dumps"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("prints its line in time")
        .expect("reads stdout")
        .expect("one line");
    let text = std::fs::read_to_string(&info).expect("info file written before the line");
    let json: serde_json::Value = serde_json::from_str(&text).expect("info JSON");
    let url = json["url"].as_str().expect("url");
    let token_id = json["tokenId"].as_str().expect("tokenId");
    let secret = json["tokenSecret"].as_str().expect("tokenSecret");
    assert!(line.contains(url) && line.contains(token_id), "{line}");
    assert!(!line.contains(secret), "the secret is never printed");
    assert_eq!(json["username"], "root@pam");
    assert!(json["password"].is_string() && json["fingerprint"].is_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&info).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .get(format!("{url}/api2/json/version"))
        .header("Authorization", format!("PVEAPIToken={token_id}={secret}"))
        .send()
        .await
        .expect("API answers");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["data"]["version"], "9.1.3");
    child.kill().await.expect("stops");
}

#[tokio::test]
async fn pvesim_cli_rejects_a_bad_fault_spec_naming_the_flag() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab-autopilot"))
        .args(["pvesim", "--fault", "explode"])
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--fault") && err.contains("unknown fault 'explode'"),
        "{err}"
    );
}

/// Starts `pvesim` with `args`, waits for its first line and returns the info file's JSON.
async fn start_cli(args: &[&str], info: &std::path::Path) -> (tokio::process::Child, serde_json::Value) {
    let _ = std::fs::remove_file(info);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab-autopilot"))
        .arg("pvesim")
        .args(["--listen", "127.0.0.1:0", "--time-scale", "0.01"])
        .args(args)
        .arg("--info-file")
        .arg(info)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("prints its line in time")
        .expect("reads stdout")
        .expect("one line");
    let text = std::fs::read_to_string(info).expect("info file written before the line");
    (child, serde_json::from_str(&text).expect("info JSON"))
}

#[tokio::test]
async fn pvesim_cli_with_state_dir_keeps_every_node_certificate_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("info.json");
    let state = dir.path().join("state");
    let state = state.to_str().expect("UTF-8 path");
    let args = ["--node-listeners", "--state-dir", state];
    let (mut first, before) = start_cli(&args, &info).await;
    first.kill().await.expect("stops");
    let (mut second, after) = start_cli(&args, &info).await;
    let fps = before["nodeFingerprints"]
        .as_object()
        .expect("per-node fingerprints");
    assert!(fps.len() >= 2, "{before}");
    let distinct: std::collections::BTreeSet<_> = fps.values().filter_map(|v| v.as_str()).collect();
    assert_eq!(distinct.len(), fps.len(), "each node has its own certificate");
    assert_eq!(before["nodeFingerprints"], after["nodeFingerprints"]);
    assert_eq!(before["caPem"], after["caPem"]);
    assert_ne!(before["url"], after["url"], "a new port, the same certificates");
    second.kill().await.expect("stops");
}

#[tokio::test]
async fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("info.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab-autopilot"))
        .args([
            "pvesim",
            "--listen",
            "127.0.0.1:0",
            "--plain-http",
            "--log-format",
            "text",
        ])
        .arg("--info-file")
        .arg(&info)
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("prints its line in time")
        .expect("reads stdout")
        .expect("one line");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info).expect("info")).expect("info JSON");
    let url = json["url"].as_str().expect("url");
    // One request, which pvesim logs at debug level.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
        .get(format!("{url}/api2/json/version"))
        .send()
        .await
        .expect("answers");
    child.start_kill().expect("stops");
    let out = child.wait_with_output().await.expect("exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("request"), "pvesim logged the request: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI escape codes in piped logs: {stderr:?}"
    );
}
