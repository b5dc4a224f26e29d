//! `homelab-autopilot pvesim` as a user runs it: one line on stdout, the info file, the API.

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn pvesim_cli_prints_one_line_writes_the_info_file_and_serves_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("info.json");
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pvesim/cluster.yaml");
    let dumps = dir.path().join("dumps");
    let dumps = dumps.to_str().expect("UTF-8 path");
    let (mut child, json, line) = start_cli_with(
        &["--plain-http", "--seed", seed, "--dump-dir", dumps],
        &info,
        |_| {},
    )
    .await;
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
    let (child, json, _line) = start_cli_with(args, info, |_| {}).await;
    (child, json)
}

/// [`start_cli`], with `configure` adjusting the command (environment, stderr) first; also
/// returns the first line pvesim printed.
async fn start_cli_with(
    args: &[&str],
    info: &std::path::Path,
    configure: impl FnOnce(&mut tokio::process::Command),
) -> (tokio::process::Child, serde_json::Value, String) {
    let _ = std::fs::remove_file(info);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab-autopilot"));
    configure(&mut command);
    let mut child = command
        .arg("pvesim")
        .args(if args.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        })
        .args(["--time-scale", "0.01"])
        .args(args)
        .arg("--info-file")
        .arg(info)
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
    // Keep reading: the per-node lines follow, and a closed pipe would fail pvesim's prints.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let text = std::fs::read_to_string(info).expect("info file written before the line");
    (child, serde_json::from_str(&text).expect("info JSON"), line)
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
    let (child, json, _line) = start_cli_with(&["--plain-http", "--log-format", "text"], &info, |c| {
        c.env("RUST_LOG", "debug")
            .env_remove("NO_COLOR")
            .stderr(std::process::Stdio::piped());
    })
    .await;
    let mut child = child;
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

#[tokio::test]
async fn pvesim_cli_without_seed_serves_the_cluster_the_examples_describe_on_consecutive_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("info.json");
    // A free fixed port with two free ones after it (retry a few bases if taken).
    let base = (0..20)
        .map(|i| 20_000 + (std::process::id() % 20_000) as u16 + i * 7)
        .find(|p| (0..3).all(|o| std::net::TcpListener::bind(("127.0.0.1", p + o)).is_ok()))
        .expect("three free ports");
    let listen = format!("127.0.0.1:{base}");
    let (mut child, json) =
        start_cli(&["--listen", &listen, "--plain-http", "--node-listeners"], &info).await;
    let examples = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/00-proxmoxcluster.yaml"
    ))
    .expect("example");
    let token_id = json["tokenId"].as_str().expect("tokenId");
    assert_eq!(token_id, "autopilot@pve!operator");
    assert!(
        examples.contains(&format!("tokenId='{token_id}'")),
        "the example's token id"
    );
    let urls = &json["nodeUrls"];
    for (node, offset) in [("pve1", 0), ("pve2", 1), ("pve3", 2)] {
        assert_eq!(
            urls[node],
            format!("http://127.0.0.1:{}", base + offset),
            "{json}"
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resources: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api2/json/cluster/resources?type=vm",
            urls["pve3"].as_str().unwrap()
        ))
        .header(
            "Authorization",
            format!("PVEAPIToken={token_id}={}", json["tokenSecret"].as_str().unwrap()),
        )
        .send()
        .await
        .expect("pve3 answers")
        .json()
        .await
        .expect("json");
    let guests: Vec<(i64, String)> = resources["data"]
        .as_array()
        .expect("guests")
        .iter()
        .map(|g| {
            (
                g["vmid"].as_i64().unwrap(),
                g["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    // The examples' Services: nextcloud (VM 200) and gitea (CT 201).
    for (vmid, name) in [(200, "nextcloud"), (201, "gitea")] {
        assert!(guests.contains(&(vmid, name.to_owned())), "{guests:?}");
        assert!(
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
                .unwrap()
                .flatten()
                .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t
                    .contains(&format!("name: {name}"))
                    && t.contains(&format!("vmid: {vmid}")))),
            "an example describes {name} as {vmid}"
        );
    }
    child.kill().await.expect("stops");
}
