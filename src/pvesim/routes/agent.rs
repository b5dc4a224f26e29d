//! The QEMU guest agent (`/agent/*`, checks of `assert_agent_available`) and LXC `interfaces`.
//!
//! `exec` runs a simulated command: built-ins (`true`, `false`, `echo`, `sleep N`, `hostname`,
//! `uname`, `cat /etc/os-release`, `sh -c ...`) or the seed's `agentCommands`; other programs fail
//! to spawn like in qemu-ga. `exec-status` forgets a job after the first call that reports it
//! exited (qemu-ga's `QTAILQ_REMOVE`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{guest, ok};
use crate::pvesim::http::{ApiError, ApiResult, value_text};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::seed::guest_ip;
use crate::pvesim::state::{AgentState, ExecJob, Guest, GuestKind};

fn agent_enabled(g: &Guest) -> Option<bool> {
    let value = g.config.get("agent")?;
    let first = value.split(',').next().unwrap_or("");
    Some(first == "1" || value.split(',').any(|p| p == "enabled=1"))
}

/// `assert_agent_available`.
fn available<'c>(ctx: &'c Ctx<'_>) -> ApiResult<&'c Guest> {
    let g = guest(ctx, GuestKind::Qemu)?;
    let enabled = agent_enabled(g).ok_or_else(|| ApiError::internal("No QEMU guest agent configured"))?;
    if !g.power.is_up() {
        return Err(ApiError::internal(format!("VM {} is not running", g.vmid)));
    }
    if !enabled || g.agent != AgentState::Responding {
        return Err(ApiError::internal("QEMU guest agent is not running"));
    }
    Ok(g)
}

fn mac_of(g: &Guest) -> String {
    let net0 = g.config.get("net0").cloned().unwrap_or_default();
    net0.split(',')
        .find_map(|p| {
            p.split_once('=')
                .filter(|(k, v)| {
                    v.len() == 17
                        && (k.starts_with("virtio")
                            || *k == "hwaddr"
                            || k.starts_with('e')
                            || *k == "macaddr")
                })
                .map(|(_, v)| v.to_lowercase())
        })
        .unwrap_or_else(|| "bc:24:11:00:00:00".into())
}

fn link_local(mac: &str) -> String {
    let b: Vec<u8> = mac
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    if b.len() != 6 {
        return "fe80::1".into();
    }
    format!(
        "fe80::{:02x}{:02x}:{:02x}ff:fe{:02x}:{:02x}{:02x}",
        b[0] ^ 2,
        b[1],
        b[2],
        b[3],
        b[4],
        b[5]
    )
}

/// `POST .../agent/ping`.
pub(crate) fn ping(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    available(ctx)?;
    ok(json!({ "result": {} }))
}

/// `GET .../agent/network-get-interfaces` (raw QGA answer under `result`).
pub(crate) fn network(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let g = available(ctx)?;
    let mac = mac_of(g);
    let uptime = g.uptime(ctx.now()).max(1) as u64;
    ok(json!({ "result": [
        {
            "name": "lo", "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [
                { "ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8 },
                { "ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128 },
            ],
            "statistics": { "rx-bytes": 1200, "rx-packets": 20, "rx-errs": 0, "rx-dropped": 0, "tx-bytes": 1200, "tx-packets": 20, "tx-errs": 0, "tx-dropped": 0 },
        },
        {
            "name": "ens18", "hardware-address": mac,
            "ip-addresses": [
                { "ip-address": guest_ip(g), "ip-address-type": "ipv4", "prefix": 24 },
                { "ip-address": link_local(&mac), "ip-address-type": "ipv6", "prefix": 64 },
            ],
            "statistics": { "rx-bytes": uptime * 4000, "rx-packets": uptime * 30, "rx-errs": 0, "rx-dropped": 0, "tx-bytes": uptime * 2000, "tx-packets": uptime * 20, "tx-errs": 0, "tx-dropped": 0 },
        },
    ]}))
}

/// `GET .../agent/get-host-name`.
pub(crate) fn host_name(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let g = available(ctx)?;
    ok(json!({ "result": { "host-name": g.name() } }))
}

const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";

/// `GET .../agent/get-osinfo`.
pub(crate) fn osinfo(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    available(ctx)?;
    ok(json!({ "result": {
        "id": "debian", "name": "Debian GNU/Linux", "pretty-name": "Debian GNU/Linux 12 (bookworm)",
        "version": "12 (bookworm)", "version-id": "12", "kernel-release": "6.1.0-28-amd64",
        "kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1", "machine": "x86_64",
    }}))
}

/// `(exitcode, stdout, stderr, seconds)` of a command, or the spawn error.
fn simulate(
    ctx: &Ctx<'_>,
    g: &Guest,
    argv: &[String],
    input: Option<&str>,
) -> Result<(i32, String, String, f64), String> {
    let program = argv.first().map(String::as_str).unwrap_or("");
    let base = program.rsplit('/').next().unwrap_or(program);
    if let Some(rule) = ctx.shared.agent_commands.iter().find(|r| {
        (r.program == program || r.program == base)
            && (r.guests.is_empty() || r.guests.iter().any(|n| *n == g.name()))
    }) {
        return Ok((
            rule.exitcode,
            rule.stdout.clone(),
            rule.stderr.clone(),
            rule.seconds,
        ));
    }
    let args = &argv[1.min(argv.len())..];
    Ok(match base {
        "true" => (0, String::new(), String::new(), 0.1),
        "false" => (1, String::new(), String::new(), 0.1),
        "echo" => (0, format!("{}\n", args.join(" ")), String::new(), 0.1),
        "hostname" => (0, format!("{}\n", g.name()), String::new(), 0.1),
        "uname" if args.iter().any(|a| a == "-r") => (0, "6.1.0-28-amd64\n".into(), String::new(), 0.1),
        "uname" => (0, "Linux\n".into(), String::new(), 0.1),
        "sleep" => (
            0,
            String::new(),
            String::new(),
            args.first().and_then(|a| a.parse().ok()).unwrap_or(1.0),
        ),
        "cat" if args.iter().any(|a| a == "/etc/os-release") => (0, OS_RELEASE.into(), String::new(), 0.1),
        "cat" if args.is_empty() => (0, input.unwrap_or("").to_string(), String::new(), 0.1),
        "cat" => (
            1,
            String::new(),
            format!("cat: {}: No such file or directory\n", args.join(" ")),
            0.1,
        ),
        "sh" | "bash" if args.first().is_some_and(|a| a == "-c") => {
            let line: Vec<String> = args
                .get(1)
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default();
            return match simulate(ctx, g, &line, input) {
                Ok(r) => Ok(r),
                Err(_) => Ok((
                    127,
                    String::new(),
                    format!(
                        "sh: 1: {}: not found\n",
                        line.first().map(String::as_str).unwrap_or("")
                    ),
                    0.1,
                )),
            };
        }
        _ => {
            return Err(format!(
                "Agent error: Failed to execute child process \"{program}\" (No such file or directory)"
            ));
        }
    })
}

/// `POST .../agent/exec` -> `{pid}`.
pub(crate) fn exec(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let g = available(ctx)?;
    let vmid = g.vmid;
    let argv: Vec<String> = match ctx.params.get("command") {
        Some(Value::Array(items)) => items.iter().filter_map(value_text).collect(),
        Some(v) => value_text(v)
            .map(|s| s.split('\0').map(str::to_string).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let input = ctx.params.str("input-data");
    if argv.is_empty() && input.is_none() {
        return Err(ApiError::internal("command or input-data (or both) required"));
    }
    let (exitcode, stdout, stderr, seconds) =
        simulate(ctx, g, &argv, input.as_deref()).map_err(ApiError::internal)?;
    let real = ctx
        .shared
        .clock
        .real(Duration::from_secs_f64(seconds.clamp(0.0, 86_400.0)));
    let g = ctx
        .cluster
        .guests
        .get_mut(&vmid)
        .ok_or_else(|| ApiError::internal("guest vanished"))?;
    let pid = g.next_exec_pid;
    g.next_exec_pid += 1;
    g.exec.insert(
        pid,
        ExecJob {
            ends_at: Instant::now() + real,
            exitcode,
            stdout,
            stderr,
        },
    );
    ok(json!({ "pid": pid }))
}

/// `GET .../agent/exec-status?pid=N`.
pub(crate) fn exec_status(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let vmid = available(ctx)?.vmid;
    let pid = ctx.req_int("pid")?;
    let g = ctx
        .cluster
        .guests
        .get_mut(&vmid)
        .ok_or_else(|| ApiError::internal("guest vanished"))?;
    let key = u32::try_from(pid)
        .ok()
        .filter(|p| g.exec.contains_key(p))
        .ok_or_else(|| ApiError::internal("Agent error: Invalid parameter 'pid'"))?;
    let done = g.exec.get(&key).is_some_and(|j| Instant::now() >= j.ends_at);
    if !done {
        return ok(json!({ "exited": 0 }));
    }
    let Some(job) = g.exec.remove(&key) else {
        return Err(ApiError::internal("Agent error: Invalid parameter 'pid'"));
    };
    let mut v = json!({ "exited": 1, "exitcode": job.exitcode });
    if !job.stdout.is_empty() {
        v["out-data"] = json!(job.stdout);
    }
    if !job.stderr.is_empty() {
        v["err-data"] = json!(job.stderr);
    }
    ok(v)
}

/// `GET /nodes/{node}/lxc/{vmid}/interfaces`.
pub(crate) fn lxc_interfaces(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let g = guest(ctx, GuestKind::Lxc)?;
    if !g.power.is_up() {
        return Err(ApiError::internal(format!("CT {} not running", g.vmid)));
    }
    let mac = mac_of(g);
    let ip = guest_ip(g);
    let ll = link_local(&mac);
    ok(json!([
        {
            "name": "lo", "hwaddr": "00:00:00:00:00:00", "hardware-address": "00:00:00:00:00:00",
            "inet": "127.0.0.1/8", "inet6": "::1/128",
            "ip-addresses": [
                { "ip-address": "127.0.0.1", "ip-address-type": "inet", "prefix": 8 },
                { "ip-address": "::1", "ip-address-type": "inet6", "prefix": 128 },
            ],
        },
        {
            "name": "eth0", "hwaddr": mac, "hardware-address": mac,
            "inet": format!("{ip}/24"), "inet6": format!("{ll}/64"),
            "ip-addresses": [
                { "ip-address": ip, "ip-address-type": "inet", "prefix": 24 },
                { "ip-address": ll, "ip-address-type": "inet6", "prefix": 64 },
            ],
        },
    ]))
}
