//! `homelab-autopilot demo`: the product on embedded defaults, with no cluster and no Proxmox.
//!
//! Starts the PVE simulator in-process on `127.0.0.1:0` (tasks 1000x faster), loads the
//! embedded `examples/` as if applied to namespace `homelab` ([`world`]), points the
//! ProxmoxCluster at the simulator and the health checks' HTTP/TCP targets at local
//! [`standin`] servers, then plays [`scenes`]: each drives the same reconcile cores the
//! controllers run and prints `kubectl get` tables ([`table`], columns from the CRDs) and the
//! new Events. Time is a demo clock that scenes advance (the simulator's clock moves with it),
//! so the output is the same on every run.
//!
//! Adding a scene for a new kind: write `async fn` over [`Demo`] in [`scenes`] and list it in
//! [`scenes::SCENES`]; [`Demo::kubectl_get`] prints any kind that has printer columns.

pub mod scenes;
pub mod standin;
pub mod table;
pub mod world;

use std::{fmt::Write as _, io::Write as _, path::Path, process::ExitCode, time::Duration};

use anyhow::Context as _;
use jiff::Timestamp;

use self::standin::StandIn;
use self::world::{NAMESPACE, World};
use crate::controllers::backup_policy::controller::BackupPolicyKind;
use crate::controllers::proxmox_cluster::controller::ClusterKind;
use crate::controllers::pve::ProxmoxDeps;
use crate::controllers::restore_test::controller::RestoreTestKind;
use crate::controllers::service::controller::ServiceKind;
use crate::crd::health::HealthCheck;
use crate::crd::proxmox_cluster::{Endpoint, TlsConfig};
use crate::crd::{ProxmoxCluster, Service};
use crate::proxmox::{ClientConfig, Credentials, PveClient, Secret, TaskRef, TlsVerify};
use crate::pvesim::{SeedSpec, SimConfig, SimHandle, Simulator};

/// The simulated cluster the examples describe (also used by the controller tests and by
/// `tests/kind/run-in-kind.sh` through `pvesim --seed src/demo/pvesim-seed.yaml`).
pub const SEED_YAML: &str = include_str!("pvesim-seed.yaml");

/// How the simulator's ephemeral address is shown, so that the output is the same on every run.
pub const SHOWN_SIM_URL: &str = "https://pvesim:8006";

/// Simulated seconds per real second of PVE tasks in the demo (a 30 s migration takes 30 ms).
const TIME_SCALE: f64 = 0.001;

/// [`SEED_YAML`] parsed.
pub fn sim_seed() -> anyhow::Result<SeedSpec> {
    SeedSpec::from_yaml(SEED_YAML, Path::new("src/demo/pvesim-seed.yaml")).context("the embedded pvesim seed")
}

/// Arguments of `homelab-autopilot demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {}

/// The stage the scenes play on: the simulator, the in-memory objects, the demo clock, the
/// stand-in web servers and the output so far.
pub struct Demo {
    /// The simulated Proxmox VE cluster.
    pub sim: SimHandle,
    /// The objects and the reconcile dependencies.
    pub world: World,
    /// When the examples were "applied".
    pub start: Timestamp,
    /// The demo clock.
    pub now: Timestamp,
    /// A client for what a human does in the Proxmox UI (migrate, stop).
    pub admin: PveClient,
    /// Stands in for nextcloud's web server.
    pub nextcloud_web: StandIn,
    /// Stands in for gitea's web and SSH servers.
    pub gitea_web: StandIn,
    out: String,
    shown_events: usize,
    /// Backup volids as the simulator named them, and as the demo shows them (see
    /// [`Demo::retime_backups`]).
    retimed: Vec<(String, String)>,
}

/// Points the HTTP and TCP checks of `checks` at `standin` (same URL path).
fn point_checks_at(checks: &mut [HealthCheck], standin: &StandIn) {
    for check in checks {
        if let Some(http) = &mut check.http {
            let path = url::Url::parse(&http.url)
                .map(|u| {
                    format!(
                        "{}{}",
                        u.path(),
                        u.query().map(|q| format!("?{q}")).unwrap_or_default()
                    )
                })
                .unwrap_or_else(|_| "/".into());
            http.url = format!("{}{path}", standin.url());
            http.insecure_skip_verify = false;
        }
        if let Some(tcp) = &mut check.tcp {
            tcp.host = "127.0.0.1".into();
            tcp.port = i32::from(standin.addr().port());
        }
    }
}

/// The simulated wall clock at the start of the demo (2026-06-01T10:00:00Z): times the demo
/// prints (run ids, next runs) are the same on every run.
pub const DEMO_CLOCK_START: i64 = 1_780_308_000;

impl Demo {
    /// Starts the simulator and the stand-ins and loads the examples, rewired to them.
    pub async fn start() -> anyhow::Result<Self> {
        let sim = Simulator::start(SimConfig {
            seed: sim_seed()?,
            time_scale: TIME_SCALE,
            clock_start: Some(DEMO_CLOCK_START),
            ..SimConfig::default()
        })
        .await
        .context("cannot start the PVE simulator")?;
        let nextcloud_web = StandIn::start()
            .await
            .context("cannot start a stand-in web server")?;
        let gitea_web = StandIn::start()
            .await
            .context("cannot start a stand-in web server")?;
        let start = Timestamp::from_second(sim.now()).context("simulator clock")?;
        let mut world = World::load(start, ProxmoxDeps::new(None))?;

        let mut secrets: Vec<String> = Vec::new();
        world.edit(|cluster: &mut ProxmoxCluster| {
            cluster.spec.endpoints = vec![Endpoint {
                url: sim.url().to_owned(),
                priority: None,
                fingerprint: None,
            }];
            cluster.spec.tls = Some(TlsConfig {
                fingerprint: Some(sim.fingerprint().to_owned()),
                ..TlsConfig::default()
            });
            secrets.push(cluster.spec.credentials_secret_ref.name.clone());
        })?;
        for secret in secrets {
            world.update_secret(
                &secret,
                &[("tokenId", sim.token_id()), ("tokenSecret", sim.token_secret())],
            )?;
        }
        world.edit(|svc: &mut Service| {
            let standin = if svc.spec.vmid == 200 {
                &nextcloud_web
            } else {
                &gitea_web
            };
            point_checks_at(&mut svc.spec.health_checks, standin);
        })?;

        let admin = PveClient::new(ClientConfig::new(
            vec![crate::proxmox::Endpoint::new(sim.url(), 0)],
            Credentials::ApiToken {
                token_id: sim.token_id().to_owned(),
                secret: Secret::new(sim.token_secret()),
            },
            TlsVerify::Fingerprint(sim.fingerprint().to_owned()),
        ))?;
        Ok(Self {
            sim,
            world,
            start,
            now: start,
            admin,
            nextcloud_web,
            gitea_web,
            out: String::new(),
            shown_events: 0,
            retimed: Vec::new(),
        })
    }

    /// Moves the demo clock (and the simulator's) forward.
    pub fn advance(&mut self, by: Duration) {
        self.now = crate::controllers::kit::time::add(self.now, by);
        self.sim.advance_clock(by);
    }

    /// Replaces the simulator's ephemeral address with [`SHOWN_SIM_URL`], and the snapshot
    /// times in backup volids with the demo clock's.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.replace(self.sim.url(), SHOWN_SIM_URL);
        for (actual, shown) in &self.retimed {
            text = text.replace(actual, shown);
        }
        text
    }

    /// Remembers how to show the PBS volids of the backups in progress: the simulator's wall
    /// clock is the demo clock plus the real time the demo has run so far (a second or a few),
    /// so a snapshot named after it (`pbs-homelab:backup/vm/200/2026-06-01T10:24:51Z`) would
    /// differ between runs; it is shown with the demo-clock time the vzdump was requested at.
    fn retime_backups(&mut self) -> anyhow::Result<()> {
        for policy in self.world.list::<crate::crd::BackupPolicy>()? {
            let items = policy
                .status
                .and_then(|s| s.current_run)
                .map(|r| r.items)
                .unwrap_or_default();
            for item in items {
                let (Some(volid), Some(started)) = (item.volid, item.start_time) else {
                    continue;
                };
                let Some((prefix, time)) = volid.rsplit_once('/') else {
                    continue;
                };
                if time.parse::<Timestamp>().is_err() || self.retimed.iter().any(|(a, _)| *a == volid) {
                    continue;
                }
                let shown = format!("{prefix}/{}", started.strftime("%Y-%m-%dT%H:%M:%SZ"));
                self.retimed.push((volid, shown));
            }
        }
        Ok(())
    }

    /// Starts a scene: a heading with the demo time.
    pub fn heading(&mut self, title: &str) {
        let secs = self.now.as_second() - self.start.as_second();
        let at = match (secs / 60, secs % 60) {
            (0, s) => format!("{s}s"),
            (m, 0) => format!("{m}m"),
            (m, s) => format!("{m}m{s}s"),
        };
        let _ = write!(self.out, "\n== {title}  [t+{at}] ==\n");
    }

    /// A line of narration.
    pub fn say(&mut self, text: &str) {
        let text = self.scrub(text);
        let _ = writeln!(self.out, "{text}");
    }

    /// What `kubectl get <plural> -n homelab` prints now.
    pub fn kubectl_get(&mut self, plural: &str) {
        let shown = if plural == "services" {
            "services.autopilot.homelab.dev"
        } else {
            plural
        };
        let text = table::render(plural, &self.world.objects(plural), self.now);
        let text = self.scrub(&text);
        let _ = write!(self.out, "\n$ kubectl get {shown} -n {NAMESPACE}\n{text}");
    }

    /// One pass over every Service at the demo clock.
    pub async fn services_pass(&mut self) -> anyhow::Result<()> {
        let now = self.now;
        self.world.reconcile::<ServiceKind>(now).await
    }

    /// One pass over every ProxmoxCluster at the demo clock.
    pub async fn clusters_pass(&mut self) -> anyhow::Result<()> {
        let now = self.now;
        self.world.reconcile::<ClusterKind>(now).await
    }

    /// BackupPolicy passes (5 s of demo time apart, waiting for the simulator's tasks) until no
    /// run is in progress.
    pub async fn backups_until_idle(&mut self) -> anyhow::Result<()> {
        for _ in 0..200 {
            let now = self.now;
            self.world.reconcile::<BackupPolicyKind>(now).await?;
            self.retime_backups()?;
            let running = self
                .world
                .list::<crate::crd::BackupPolicy>()?
                .iter()
                .any(|p| p.status.as_ref().is_some_and(|s| s.current_run.is_some()));
            if !running {
                return Ok(());
            }
            for task in self.sim.tasks().into_iter().filter(|t| t.running()) {
                self.sim.wait_task(&task.upid, Duration::from_secs(30)).await;
            }
            self.advance(Duration::from_secs(5));
        }
        anyhow::bail!("the backup run did not finish")
    }

    /// RestoreTest passes (5 s of demo time apart, waiting for the simulator's tasks) until no
    /// run is in progress, that is until every copy is checked and removed. While every restore
    /// left only waits out `cleanup.afterSeconds`, the clock jumps to the end of that wait
    /// instead of passing every 5 s through it.
    pub async fn restore_tests_until_idle(&mut self) -> anyhow::Result<()> {
        use crate::crd::restore_test::RestorePhase;
        for _ in 0..400 {
            let now = self.now;
            self.world.reconcile::<RestoreTestKind>(now).await?;
            let tests = self.world.list::<crate::crd::RestoreTest>()?;
            let runs: Vec<_> = tests
                .iter()
                .filter_map(|t| t.status.as_ref()?.current_run.as_ref().map(|r| (t, r)))
                .collect();
            if runs.is_empty() {
                return Ok(());
            }
            for task in self.sim.tasks().into_iter().filter(|t| t.running()) {
                self.sim.wait_task(&task.upid, Duration::from_secs(30)).await;
            }
            // The latest end of a cleanup wait, if waiting is all that is left to do.
            let mut wait_until: Option<Timestamp> = None;
            let only_waiting = runs.iter().all(|(test, run)| {
                let after = test.spec.cleanup.as_ref().map_or(0, |c| c.after_seconds);
                run.restores.iter().all(|r| match r.phase {
                    RestorePhase::Done => true,
                    RestorePhase::CleaningUp if r.upid.is_none() => r.finished_time.is_some_and(|f| {
                        let end = crate::controllers::kit::time::add(
                            f,
                            Duration::from_secs(u64::try_from(after).unwrap_or(0)),
                        );
                        wait_until = wait_until.max(Some(end));
                        true
                    }),
                    _ => false,
                })
            });
            match wait_until.filter(|end| only_waiting && *end > self.now) {
                Some(end) => {
                    let by = u64::try_from(end.as_second() - self.now.as_second()).unwrap_or(0);
                    self.advance(Duration::from_secs(by));
                }
                None => self.advance(Duration::from_secs(5)),
            }
        }
        anyhow::bail!("the restore test did not finish")
    }

    /// One pass over every Service, then the Services table and the new Events.
    pub async fn services_pass_and_show(&mut self) -> anyhow::Result<()> {
        self.services_pass().await?;
        self.kubectl_get("services");
        self.new_events();
        Ok(())
    }

    /// The Events recorded since the last call, like `kubectl get events` lists them.
    pub fn new_events(&mut self) {
        let fresh = &self.world.events[self.shown_events..];
        if fresh.is_empty() {
            return;
        }
        let mut rows = vec![vec![
            "TYPE".to_owned(),
            "REASON".into(),
            "OBJECT".into(),
            "MESSAGE".into(),
        ]];
        rows.extend(fresh.iter().map(|e| {
            vec![
                e.event.type_str().to_owned(),
                e.event.reason.clone(),
                e.object.clone(),
                e.event.note.clone(),
            ]
        }));
        self.shown_events = self.world.events.len();
        let text = self.scrub(&table::tabulate(&rows));
        let _ = write!(self.out, "\n$ kubectl get events -n {NAMESPACE}   (new)\n{text}");
    }

    /// Waits (real time, bounded) until the PVE task `upid` has ended; fails if it failed.
    pub async fn wait_task(&self, upid: &str) -> anyhow::Result<()> {
        let task = self
            .sim
            .wait_task(upid, Duration::from_secs(30))
            .await
            .with_context(|| format!("task {upid} did not end"))?;
        anyhow::ensure!(task.succeeded(), "task {upid} failed");
        Ok(())
    }

    /// Waits for a task an admin started.
    pub async fn wait(&self, task: &TaskRef) -> anyhow::Result<()> {
        self.wait_task(task.upid.as_str()).await
    }

    /// Waits for every power task the Services recorded.
    pub async fn wait_pending(&self) -> anyhow::Result<()> {
        for upid in self.world.pending_tasks() {
            self.wait_task(&upid).await?;
        }
        Ok(())
    }

    /// The output since the last call.
    pub fn take_output(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

/// Runs every scene, printing as it goes.
pub async fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut demo = Demo::start().await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", scenes::INTRO)?;
    for scene in scenes::SCENES {
        scene(&mut demo).await?;
        stdout.write_all(demo.take_output().as_bytes())?;
        stdout.flush()?;
    }
    writeln!(stdout, "{}", scenes::OUTRO)?;
    demo.sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
