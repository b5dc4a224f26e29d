//! One restore's way from `Pending` to `Checking`: choose the backup, node and VMID (recorded
//! before anything happens), read the backup's config, prove the isolation network isolated,
//! move every NIC onto it, check the room on the target storage, ask PVE to restore (never with
//! `force`), wait for the task, remove passthrough devices and start the copy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::plan::{self, Candidate, Verified};
use super::{Pass, reasons};
use crate::controllers::kit::time::elapsed;
use crate::controllers::pve::guest::{GuestView, pve_type, view_from};
use crate::controllers::pve::restore::{
    Backup, CHUNKSTORE_PREFIX, RestoreRequest, Staged, TAG_STAGED, backup_file_name, chunk_snapshot_name,
    reassemble, remove_staged, start_restore,
};
use crate::controllers::pve::selector::selects;
use crate::controllers::pve::task::{TaskView, handle, poll_task};
use crate::crd::common::{GuestTarget, GuestType};
use crate::crd::restore_test::{IsolationMode, RestorePhase, RestoreResult, RestoreResultDetail, RestoreRun};
use crate::crd::{BackupPolicy, Service};
use crate::proxmox::api::{ClusterResource, ConfigUpdate, ContentKind};
use crate::proxmox::{GuestRef, NodeName, PveClient, Vmid};
use crate::storage::SnapshotFilter;

/// Marks a restore failed with `reason` at `now` (its checks, if any, ended now).
pub(super) fn fail_detail(r: &mut RestoreResultDetail, reason: &str, message: String, now: Timestamp) {
    r.result = Some(RestoreResult::Failed);
    r.reason = reason.to_owned();
    r.message = message;
    r.finished_time.get_or_insert(now);
    plan::breakdown(r);
}

/// How long a restore request that got no answer is looked for before it is sent again.
const UNANSWERED_GRACE: Duration = Duration::from_secs(30);

/// Where a candidate backup comes from.
#[derive(Clone, Debug)]
struct Found {
    candidate: Candidate,
    /// For chunk-store backups: the staging storage and its path here.
    staging: Option<(String, PathBuf)>,
}

/// The source guest's VMID, or why it is not valid.
fn vmid_of(r: &RestoreResultDetail) -> Option<Vmid> {
    u32::try_from(r.source_vmid).ok().and_then(|v| Vmid::new(v).ok())
}

pub(super) fn guest_of(r: &RestoreResultDetail) -> Option<GuestRef> {
    let node = NodeName::new(r.node.as_str()).ok()?;
    let vmid = u32::try_from(r.restored_vmid)
        .ok()
        .and_then(|v| Vmid::new(v).ok())?;
    Some(GuestRef::new(node, pve_type(r.type_), vmid))
}

/// Whether a volid is a PBS snapshot (`storage:backup/vm/200/2026-…`) rather than a vzdump file.
fn is_pbs_volid(volid: &str) -> bool {
    volid
        .split_once(':')
        .and_then(|(_, p)| p.strip_prefix("backup/"))
        .is_some_and(|p| !p.starts_with("vzdump-"))
}

/// A legacy `.tar` VM archive: PVE cannot apply config options when restoring it.
fn is_legacy_vm_tar(volid: &str) -> bool {
    backup_file_name(volid).is_some_and(|f| f.starts_with("vzdump-qemu-") && f.contains(".tar"))
}

impl Pass<'_> {
    pub(super) async fn step(
        &mut self,
        run: &mut RestoreRun,
        i: usize,
        client: &PveClient,
        resources: &[ClusterResource],
    ) {
        let mut r = run.restores[i].clone();
        if matches!(
            r.phase,
            RestorePhase::Restoring | RestorePhase::Booting | RestorePhase::Checking
        ) && !r.node.is_empty()
        {
            // After a restart the claim is taken again from status.
            self.deps.claim_node(self.cluster_uid(), &r.node, self.input.uid);
        }
        match r.phase {
            RestorePhase::Pending if r.restored_vmid == 0 => {
                self.prepare(&mut r, &run.run_id, &run.restores, client, resources)
                    .await
            }
            RestorePhase::Pending => self.request(&mut r, &run.run_id, client).await,
            RestorePhase::Restoring => self.restoring(&mut r, &run.run_id, client).await,
            RestorePhase::Booting => self.booting(&mut r, client).await,
            RestorePhase::Checking => self.checking(&mut r, run.rto_target_seconds, client).await,
            RestorePhase::CleaningUp => self.cleaning_up(&mut r, client).await,
            RestorePhase::Done => {}
        }
        run.restores[i] = r;
    }

    pub(super) fn fail(&mut self, r: &mut RestoreResultDetail, reason: &str, message: String) {
        fail_detail(r, reason, message, self.now);
        if r.restored_vmid != 0 && r.phase != RestorePhase::Pending {
            r.phase = RestorePhase::CleaningUp;
        } else {
            // Nothing was created: the VMID goes back.
            r.phase = RestorePhase::Done;
            r.cleaned_up = r.restored_vmid != 0;
            if let Ok(vmid) = u32::try_from(r.restored_vmid) {
                self.deps.release_vmid(self.cluster_uid(), vmid, self.input.uid);
            }
        }
        if !r.node.is_empty() {
            self.deps
                .release_node(self.cluster_uid(), &r.node, self.input.uid);
        }
        self.soon(Duration::ZERO);
    }

    /// [`Self::fail`] for a restore that claimed `node` but has not recorded it yet: the claim
    /// goes too, or every other RestoreTest would wait for this node until a restart.
    fn fail_claimed(&mut self, node: &NodeName, r: &mut RestoreResultDetail, reason: &str, message: String) {
        self.deps
            .release_node(self.cluster_uid(), node.as_str(), self.input.uid);
        self.fail(r, reason, message);
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.input.services.iter().find(|s| s.name_any() == name)
    }

    /// The backups of a restore's source that `node` can restore, with their verification.
    async fn candidates(
        &self,
        r: &RestoreResultDetail,
        node: &NodeName,
        client: &PveClient,
    ) -> Result<Vec<Found>, (&'static str, String)> {
        let vmid = vmid_of(r).ok_or((reasons::NO_BACKUP, format!("VMID {} is not valid", r.source_vmid)))?;
        let mut storages: BTreeSet<String> = BTreeSet::new();
        let mut chunk_policies: Vec<&BackupPolicy> = Vec::new();
        let mut known: BTreeMap<String, bool> = BTreeMap::new();
        if let Some(storage) = &self.spec.source.storage {
            storages.insert(storage.clone());
        } else if let Some(service) = self.service(&r.service) {
            for policy in self.input.policies {
                if !selects(&policy.spec.services, &self.spec.cluster_ref.name, service) {
                    continue;
                }
                let dest = &policy.spec.destination;
                if let Some(pbs) = &dest.pbs {
                    storages.insert(pbs.storage.clone());
                } else if let Some(s) = &dest.storage {
                    storages.insert(s.storage.clone());
                } else if dest.chunk_store.is_some() {
                    chunk_policies.push(policy);
                }
                for s in policy.status.iter().flat_map(|st| &st.services) {
                    if let (Some(volid), Some(verified)) = (&s.volid, s.verified)
                        && s.name == r.service
                    {
                        known.insert(volid.clone(), verified);
                    }
                }
            }
            if storages.is_empty() && chunk_policies.is_empty() {
                return Err((
                    reasons::NO_BACKUP,
                    format!(
                        "no BackupPolicy in namespace {} covers Service {}, and source.storage is not set",
                        self.input.namespace, r.service
                    ),
                ));
            }
        }
        let mut found: Vec<Found> = Vec::new();
        for storage in &storages {
            let rows = client
                .storage_content(node, storage, Some(ContentKind::Backup), Some(vmid))
                .await
                .map_err(|e| {
                    (
                        reasons::NO_BACKUP,
                        format!("cannot list the backups on storage {storage} from node {node}: {e}"),
                    )
                })?;
            for row in rows.into_iter().filter(|row| row.vmid == Some(vmid)) {
                let pbs = is_pbs_volid(&row.volid);
                let verified = match (&row.verification, known.get(&row.volid)) {
                    (_, Some(true)) => Verified::Yes,
                    (_, Some(false)) => Verified::No,
                    (Some(v), None) if v.state == "ok" => Verified::Yes,
                    (Some(_), None) => Verified::No,
                    // A PBS snapshot without a verification has not been verified; a file
                    // archive is checked (size and readable config) before it is used.
                    (None, None) if pbs => Verified::No,
                    (None, None) => Verified::Unknown,
                };
                found.push(Found {
                    candidate: Candidate {
                        id: row.volid.clone(),
                        time: Timestamp::from_second(i64::try_from(row.ctime.unwrap_or(0)).unwrap_or(0))
                            .unwrap_or(Timestamp::UNIX_EPOCH),
                        size: row.size,
                        verified,
                        pbs,
                    },
                    staging: None,
                });
            }
        }
        if !chunk_policies.is_empty() {
            let target = GuestTarget::new(r.service.clone(), r.source_vmid, r.type_, None);
            let names: Vec<String> = chunk_policies
                .iter()
                .map(|p| chunk_snapshot_name(self.input.namespace, &p.name_any(), &target))
                .collect();
            let store = self.deps.store.clone();
            let filter = SnapshotFilter {
                names: names.clone(),
                tags: BTreeMap::new(),
            };
            let snaps = tokio::task::spawn_blocking(move || {
                store
                    .open_or_init()
                    .and_then(|s| s.list_matching(&filter, None))
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| (reasons::NO_BACKUP, format!("cannot list the chunk store: {e}")))?
            .map_err(|e| (reasons::NO_BACKUP, format!("cannot list the chunk store: {e}")))?;
            for snap in snaps
                .into_iter()
                .filter(|s| s.complete && s.tags.contains_key(TAG_STAGED))
            {
                let Some(policy) = chunk_policies
                    .iter()
                    .zip(&names)
                    .find(|(_, n)| **n == snap.name)
                    .map(|(p, _)| *p)
                else {
                    continue;
                };
                let Some(chunk) = &policy.spec.destination.chunk_store else {
                    continue;
                };
                let id = format!("{CHUNKSTORE_PREFIX}{}", snap.id);
                // Every chunk was read back when the snapshot was made.
                let verified = match known.get(&id) {
                    Some(false) => Verified::No,
                    _ => Verified::Yes,
                };
                found.push(Found {
                    candidate: Candidate {
                        id,
                        time: Timestamp::from_second(snap.time_unix).unwrap_or(Timestamp::UNIX_EPOCH),
                        size: snap.size,
                        verified,
                        pbs: false,
                    },
                    staging: Some((chunk.staging_storage.clone(), PathBuf::from(&chunk.staging_path))),
                });
            }
        }
        let mut seen = BTreeSet::new();
        found.retain(|f| seen.insert(f.candidate.id.clone()));
        Ok(found)
    }

    /// The node a restore goes to: `target.node`, else where the source guest runs.
    fn target_node(
        &self,
        r: &RestoreResultDetail,
        resources: &[ClusterResource],
    ) -> Result<NodeName, String> {
        if let Some(node) = &self.spec.target.node {
            return NodeName::new(node.as_str()).map_err(|e| format!("spec.target.node {node:?}: {e}"));
        }
        let Some(vmid) = vmid_of(r) else {
            return Err(format!("VMID {} is not valid", r.source_vmid));
        };
        match view_from(resources, vmid, r.type_) {
            GuestView::Found(facts) => Ok(facts.guest.node),
            _ => Err(format!(
                "the source guest {vmid} does not exist any more, so it has no node to restore on: set spec.target.node"
            )),
        }
    }

    /// A pending restore without a VMID: choose the backup, the node and the VMID, and record
    /// them (the restore is requested in a later pass, after this is written).
    async fn prepare(
        &mut self,
        r: &mut RestoreResultDetail,
        run_id: &str,
        siblings: &[RestoreResultDetail],
        client: &PveClient,
        resources: &[ClusterResource],
    ) {
        let node = match self.target_node(r, resources) {
            Ok(n) => n,
            Err(message) => return self.fail(r, reasons::NO_TARGET_NODE, message),
        };
        // One restore per node: across RestoreTests, and within this run.
        let cluster = self.cluster_uid().to_owned();
        let sibling_busy = siblings.iter().any(|s| {
            s.node == node.as_str()
                && s.restored_vmid != 0
                && matches!(
                    s.phase,
                    RestorePhase::Pending
                        | RestorePhase::Restoring
                        | RestorePhase::Booting
                        | RestorePhase::Checking
                )
        });
        if sibling_busy {
            r.message = format!("waiting: another restore of this run is on node {node}");
            return;
        }
        // A restore the claims do not know of (claims live in memory: an operator restarted
        // while another RestoreTest restored; or a restore started by hand) holds its guest's
        // config locked `create` until it ends.
        let restoring_here = resources.iter().any(|row| {
            row.node.as_ref() == Some(&node) && row.vmid.is_some() && row.lock.as_deref() == Some("create")
        });
        if restoring_here && !self.deps.holds_node(&cluster, node.as_str(), self.input.uid) {
            r.message = format!("waiting: a restore is running on node {node}");
            self.soon(Duration::from_secs(5));
            return;
        }
        if !self.deps.claim_node(&cluster, node.as_str(), self.input.uid) {
            r.message = format!("waiting: another RestoreTest is restoring on node {node}");
            self.soon(Duration::from_secs(5));
            return;
        }
        let found = match self.candidates(r, &node, client).await {
            Ok(f) => f,
            Err((reason, message)) => return self.fail_claimed(&node, r, reason, message),
        };
        let selection = self.spec.selection.clone().unwrap_or_default();
        let candidates: Vec<Candidate> = found.iter().map(|f| f.candidate.clone()).collect();
        let sel = plan::Selection {
            policy: selection.policy,
            volid: selection.volid.as_deref(),
            max_age_seconds: selection.max_age_seconds.map(i64::from),
            require_verified: selection.require_verified,
        };
        let ordered =
            match plan::choose_backups(&candidates, sel, &format!("{run_id}/{}", r.source_vmid), self.now) {
                Ok(o) => o,
                Err((reason, message)) => return self.fail_claimed(&node, r, reason, message),
            };
        let mut chosen: Option<Candidate> = None;
        let mut rejected: Vec<String> = Vec::new();
        for c in ordered {
            if c.verified == Verified::Unknown && sel.require_verified {
                // The archive check a BackupPolicy runs: a size, and a config PVE can read.
                let check = if c.size == 0 {
                    Err("the archive is empty".to_owned())
                } else {
                    client
                        .extract_backup_config(&node, &c.id)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = check {
                    rejected.push(format!("{}: {e}", c.id));
                    continue;
                }
            }
            chosen = Some(c.clone());
            break;
        }
        let Some(chosen) = chosen else {
            return self.fail_claimed(
                &node,
                r,
                reasons::NO_VERIFIED_BACKUP,
                format!("no backup passed the archive check: {}", rejected.join("; ")),
            );
        };
        // The lowest free VMID of the range: not in the cluster, not reserved by another
        // RestoreTest, and free by PVE's own check (`/cluster/nextid?vmid=`).
        let mut taken: BTreeSet<u32> = resources
            .iter()
            .filter_map(|row| row.vmid.map(Vmid::get))
            .collect();
        taken.extend(self.deps.reserved_by_others(&cluster, self.input.uid));
        let vmid = loop {
            let Some(candidate) = plan::lowest_free(&self.spec.target.vmid_range, &taken) else {
                return self.fail_claimed(
                    &node,
                    r,
                    reasons::NO_FREE_VMID,
                    format!(
                        "every VMID of spec.target.vmidRange {}-{} is taken",
                        self.spec.target.vmid_range.start, self.spec.target.vmid_range.end
                    ),
                );
            };
            let Ok(v) = Vmid::new(candidate) else {
                taken.insert(candidate);
                continue;
            };
            match client.is_vmid_free(v).await {
                Ok(true) if self.deps.reserve_vmid(&cluster, candidate, self.input.uid) => break candidate,
                Ok(_) => {
                    taken.insert(candidate);
                }
                Err(e) => {
                    self.deps.release_node(&cluster, node.as_str(), self.input.uid);
                    r.message = format!("cannot check VMID {candidate}: {e}");
                    self.soon(self.proxmox.tuning.reconnect_min);
                    return;
                }
            }
        };
        r.backup_volid = Some(chosen.id.clone());
        r.backup_time = Some(chosen.time);
        r.node = node.to_string();
        r.restored_vmid = i32::try_from(vmid).unwrap_or(0);
        r.message = format!("restoring {} as VMID {vmid} on node {node}", chosen.id);
        self.soon(Duration::ZERO);
    }

    /// A pending restore with its VMID recorded: request it (or, for a chunk-store backup, record
    /// the reassembly first).
    async fn request(&mut self, r: &mut RestoreResultDetail, run_id: &str, client: &PveClient) {
        let Some(guest) = guest_of(r) else {
            return self.fail(
                r,
                reasons::RESTORE_FAILED,
                format!("node {:?} or VMID {} is not valid", r.node, r.restored_vmid),
            );
        };
        if !self.deps.claim_node(self.cluster_uid(), &r.node, self.input.uid) {
            // Taken meanwhile (after a restart, by a RestoreTest that got there first).
            r.message = format!("waiting: another RestoreTest is restoring on node {}", r.node);
            self.soon(Duration::from_secs(5));
            return;
        }
        match client.is_vmid_free(guest.vmid).await {
            Ok(true) => {}
            // A restore requested before a restart whose task id was not recorded: it is found
            // by its result (our marker) once the task ends.
            Ok(false) => {
                r.phase = RestorePhase::Restoring;
                r.restore_start_time.get_or_insert(self.now);
                return;
            }
            Err(e) => {
                r.message = format!("cannot check VMID {}: {e}", guest.vmid);
                self.soon(self.proxmox.tuning.reconnect_min);
                return;
            }
        }
        let volid = r.backup_volid.clone().unwrap_or_default();
        if volid.starts_with(CHUNKSTORE_PREFIX) {
            if self.spec.live_restore {
                return self.fail(
                    r,
                    reasons::LIVE_RESTORE_NEEDS_PBS,
                    format!(
                        "liveRestore needs a Proxmox Backup Server backup; {volid} is in the chunk store"
                    ),
                );
            }
            // The reassembly is recorded before it starts, so a restart removes its partial file.
            match self.staged_for(r, &guest.node, client).await {
                Ok(staged) if staged.path.exists() => {
                    return self.fail(
                        r,
                        reasons::RESTORE_FAILED,
                        format!(
                            "{} already exists in the staging path (a staged archive kept by keepStagedArchive?): restore its PVE volid {} instead, or remove it",
                            staged.path.display(),
                            staged.volid
                        ),
                    );
                }
                Ok(staged) => r.staged_archive = Some(staged.path.to_string_lossy().into_owned()),
                Err(message) => return self.fail(r, reasons::RESTORE_FAILED, message),
            }
            r.phase = RestorePhase::Restoring;
            // The RTO clock starts with the reassembly, recorded before it starts.
            r.restore_start_time.get_or_insert(self.now);
            r.message = format!("reassembling {volid} from the chunk store");
            self.soon(Duration::ZERO);
            return;
        }
        self.post(r, run_id, client, &guest, &volid).await;
    }

    /// The staged archive a chunk-store restore writes (path and PVE volid).
    async fn staged_for(
        &self,
        r: &RestoreResultDetail,
        node: &NodeName,
        client: &PveClient,
    ) -> Result<Staged, String> {
        let id = r.backup_volid.clone().unwrap_or_default();
        let snapshot = id.strip_prefix(CHUNKSTORE_PREFIX).unwrap_or_default().to_owned();
        let found = self
            .candidates(r, node, client)
            .await
            .map_err(|(_, m)| m)?
            .into_iter()
            .find(|f| f.candidate.id == id)
            .ok_or_else(|| format!("chunk-store backup {id} is gone"))?;
        let (storage, path) = found
            .staging
            .ok_or_else(|| format!("{id} has no staging storage"))?;
        let store = self.deps.store.clone();
        let tag = tokio::task::spawn_blocking(move || {
            store
                .open_or_init()
                .and_then(|s| s.list_matching(&SnapshotFilter::default(), None))
                .map_err(|e| e.to_string())
                .map(|list| {
                    list.into_iter()
                        .find(|s| s.id == snapshot)
                        .and_then(|s| s.tags.get(TAG_STAGED).cloned())
                })
        })
        .await
        .map_err(|e| e.to_string())??
        .ok_or_else(|| format!("chunk-store backup {id} was not made from a vzdump archive"))?;
        let file =
            backup_file_name(&tag).ok_or_else(|| format!("{id}: {TAG_STAGED} {tag} is not a file name"))?;
        Ok(Staged {
            volid: format!("{storage}:backup/{file}"),
            path: path.join(file),
        })
    }

    /// Reads the backup's config, proves the isolation, moves every NIC, checks the room and
    /// asks PVE to restore `archive` (never `force`, never `unique` for containers).
    async fn post(
        &mut self,
        r: &mut RestoreResultDetail,
        run_id: &str,
        client: &PveClient,
        guest: &GuestRef,
        archive: &str,
    ) {
        let text = match client.extract_backup_config(&guest.node, archive).await {
            Ok(t) => t,
            Err(e) => {
                unstage(r);
                return self.fail(
                    r,
                    reasons::RESTORE_FAILED,
                    format!("cannot read the config of {archive}: {e}"),
                );
            }
        };
        let config = plan::parse_config(&text);
        let refused = |reason: &'static str, message: String| (reason, message);
        let checked: Result<BTreeMap<String, String>, (&str, String)> = async {
            if r.type_ == GuestType::Vm && is_legacy_vm_tar(archive) {
                return Err(refused(
                    reasons::NIC_NOT_OVERRIDABLE,
                    format!("{archive} is a legacy tar archive: PVE cannot change its NICs on restore"),
                ));
            }
            self.check_isolation(client, &guest.node).await.map_err(|m| refused(reasons::ISOLATION_UNVERIFIED, m))?;
            if let Some(m) = plan::shares_original_bridge(&config, &self.spec.network) {
                return Err(refused(reasons::ISOLATION_UNVERIFIED, m));
            }
            let nics = plan::isolate_nics(r.type_, &config, &self.spec.network)
                .map_err(|m| refused(reasons::NIC_NOT_OVERRIDABLE, m))?;
            if self.spec.live_restore {
                if r.type_ != GuestType::Vm || !is_pbs_volid(r.backup_volid.as_deref().unwrap_or_default()) {
                    return Err(refused(
                        reasons::LIVE_RESTORE_NEEDS_PBS,
                        format!("liveRestore needs a VM backup on a Proxmox Backup Server; {archive} is not one"),
                    ));
                }
                let devices = plan::passthrough_keys(r.type_, &config);
                if !devices.is_empty() {
                    return Err(refused(
                        reasons::PASSTHROUGH_NOT_REMOVABLE,
                        format!(
                            "the backup has passthrough devices ({}), and a live restore starts the VM before they could be removed",
                            devices.join(", ")
                        ),
                    ));
                }
            }
            self.check_space(client, &guest.node, r, &config, archive)
                .await
                .map_err(|m| refused(reasons::INSUFFICIENT_SPACE, m))?;
            Ok(nics)
        }
        .await;
        let nics = match checked {
            Ok(n) => n,
            Err((reason, message)) => {
                unstage(r);
                return self.fail(r, reason, message);
            }
        };
        let mut overrides = nics;
        overrides.insert("onboot".into(), "0".into());
        overrides.insert("protection".into(), "0".into());
        overrides.insert("tags".into(), plan::TAG.into());
        let who = if r.service.is_empty() {
            format!("guest {}", r.source_vmid)
        } else {
            format!("Service {}", r.service)
        };
        overrides.insert(
            "description".into(),
            format!(
                "{}\nRestore test copy of {who} ({}), run {run_id} of RestoreTest {}/{}. Removed by the operator.",
                plan::marker(self.input.uid),
                r.backup_volid.as_deref().unwrap_or_default(),
                self.input.namespace,
                self.name
            ),
        );
        if r.type_ == GuestType::Vm {
            overrides.insert("name".into(), format!("restoretest-{}", r.restored_vmid));
        }
        if let Some(o) = &self.spec.overrides {
            if let Some(m) = o.memory_mi_b {
                overrides.insert("memory".into(), m.to_string());
            }
            if let Some(c) = o.cores {
                overrides.insert("cores".into(), c.to_string());
            }
        }
        let request = RestoreRequest {
            backup: Backup::Volume(archive.to_owned()),
            guest_type: r.type_,
            node: guest.node.clone(),
            vmid: guest.vmid,
            storage: self.spec.target.storage.clone(),
            unique: false,
            start: false,
            live_restore: self.spec.live_restore,
            bwlimit: self
                .spec
                .bandwidth_limit_ki_bps
                .and_then(|b| u64::try_from(b).ok()),
            overrides,
        };
        r.request_time = Some(self.now);
        match start_restore(client, &request).await {
            Ok(started) => {
                self.proxmox.snapshots.invalidate(self.cluster_uid());
                r.upid = Some(handle(&started.task));
                r.restore_start_time.get_or_insert(self.now);
                r.message = format!(
                    "restoring {} as VMID {} on node {}",
                    r.backup_volid.as_deref().unwrap_or(archive),
                    guest.vmid,
                    guest.node
                );
                if self.spec.live_restore {
                    // The VM runs while it is restored: checks start now.
                    r.phase = RestorePhase::Checking;
                    r.booted_time = Some(self.now);
                } else {
                    r.phase = RestorePhase::Restoring;
                }
                self.events.push(crate::controllers::kit::PlannedEvent::normal(
                    reasons::RESTORING,
                    reasons::ACTION_RESTORE,
                    format!("{who}: {}", r.message),
                ));
                self.soon(self.proxmox.tuning.task_poll);
            }
            Err(e) if e.unanswered => {
                // PVE may have accepted it: the restore is looked for (by our marker once its
                // task ends) instead of being assumed refused, and the staged archive stays.
                self.proxmox.snapshots.invalidate(self.cluster_uid());
                r.restore_start_time.get_or_insert(self.now);
                r.phase = RestorePhase::Restoring;
                r.message = format!("{e}; looking for the restore at VMID {}", guest.vmid);
                self.soon(self.proxmox.tuning.task_poll);
            }
            Err(e) => {
                unstage(r);
                self.fail(r, reasons::RESTORE_FAILED, e.message);
            }
        }
    }

    /// With `requireNoUplink`: a bridge without ports, or a VNet of a `simple` zone. Also that
    /// the bridge or VNet exists at all.
    async fn check_isolation(&self, client: &PveClient, node: &NodeName) -> Result<(), String> {
        let net = &self.spec.network;
        let bridge = net.bridge.as_deref().unwrap_or_default();
        match net.mode {
            IsolationMode::None => Ok(()),
            IsolationMode::Bridge => {
                let ifaces = client
                    .node_network(node, None)
                    .await
                    .map_err(|e| format!("cannot read the network of node {node}: {e}"))?;
                plan::check_bridge(&ifaces, bridge, node.as_str(), net.require_no_uplink)
            }
            IsolationMode::SdnVnet => {
                let vnets = client
                    .sdn_vnets()
                    .await
                    .map_err(|e| format!("cannot read the SDN VNets: {e}"))?;
                let zones = client
                    .sdn_zones()
                    .await
                    .map_err(|e| format!("cannot read the SDN zones: {e}"))?;
                plan::check_vnet(&vnets, &zones, bridge, net.require_no_uplink)
            }
        }
    }

    /// The target storage (or the backed-up disks' storages) must have room: the full disk
    /// size on thick storages, the backup's size on thin ones (which grow as data is written).
    async fn check_space(
        &self,
        client: &PveClient,
        node: &NodeName,
        r: &RestoreResultDetail,
        config: &BTreeMap<String, String>,
        archive: &str,
    ) -> Result<(), String> {
        let storages: BTreeSet<String> = match &self.spec.target.storage {
            Some(s) => BTreeSet::from([s.clone()]),
            None => plan::disk_storages(r.type_, config),
        };
        if storages.is_empty() {
            return Ok(());
        }
        let status = client
            .node_storages(node, None)
            .await
            .map_err(|e| format!("cannot read the storages of node {node}: {e}"))?;
        let disks = plan::disk_bytes(r.type_, config);
        let backup_size = client
            .storage_content(
                node,
                archive.split(':').next().unwrap_or_default(),
                Some(ContentKind::Backup),
                None,
            )
            .await
            .ok()
            .and_then(|rows| {
                rows.into_iter()
                    .find(|row| row.volid == archive)
                    .map(|row| row.size)
            })
            .unwrap_or(disks);
        for storage in storages {
            let Some(s) = status.iter().find(|s| s.storage == storage) else {
                return Err(format!("storage {storage} is not available on node {node}"));
            };
            let thin = matches!(s.storage_type.as_str(), "lvmthin" | "zfspool" | "rbd" | "btrfs");
            let need = match (thin, disks) {
                (true, 0) => backup_size,
                (true, disks) => backup_size.min(disks),
                (false, disks) => disks,
            };
            let avail = s.avail.unwrap_or(u64::MAX);
            if avail < need {
                return Err(format!(
                    "storage {storage} on node {node} has {} free, the restore needs {}",
                    human(avail),
                    human(need)
                ));
            }
        }
        Ok(())
    }

    /// A restore in progress: its task (or, without one, the reassembly of a chunk-store
    /// backup, or a restore requested before a restart whose task id was lost).
    async fn restoring(&mut self, r: &mut RestoreResultDetail, run_id: &str, client: &PveClient) {
        let Some(guest) = guest_of(r) else {
            return self.fail(r, reasons::RESTORE_FAILED, "no VMID recorded".into());
        };
        let Some(upid) = r.upid.clone() else {
            match client.is_vmid_free(guest.vmid).await {
                Err(e) => {
                    r.message = format!("cannot check VMID {}: {e}", guest.vmid);
                    self.soon(self.proxmox.tuning.reconnect_min);
                }
                Ok(false) => self.adopt(r, &guest, client).await,
                // A request that got no answer: if PVE accepted it, the restore writes its
                // placeholder config at the VMID within moments; until then it looks free.
                Ok(true)
                    if r.request_time
                        .is_some_and(|t| elapsed(t, self.now) < UNANSWERED_GRACE) =>
                {
                    self.soon(self.proxmox.tuning.task_poll);
                }
                Ok(true)
                    if r.backup_volid
                        .as_deref()
                        .is_some_and(|v| v.starts_with(CHUNKSTORE_PREFIX)) =>
                {
                    self.reassemble_and_post(r, run_id, client, &guest).await;
                }
                Ok(true) => {
                    // Recorded as requested, but PVE has no such guest: request it again.
                    r.phase = RestorePhase::Pending;
                    self.soon(Duration::ZERO);
                }
            }
            return;
        };
        match poll_task(client, &upid).await {
            TaskView::Running(_) | TaskView::None => {
                self.soon(self.proxmox.tuning.task_poll);
            }
            TaskView::Done { error: None, .. } => {
                unstage(r);
                self.proxmox.snapshots.invalidate(self.cluster_uid());
                r.restored_time = Some(self.now);
                r.upid = None;
                r.phase = RestorePhase::Booting;
                r.message = format!("restored as VMID {} on node {}", guest.vmid, guest.node);
                self.soon(Duration::ZERO);
            }
            TaskView::Done { error: Some(e), .. } => {
                unstage(r);
                self.proxmox.snapshots.invalidate(self.cluster_uid());
                let lines = error_lines(client, &upid).await;
                let detail = if lines.is_empty() { e } else { lines.join("; ") };
                // The upid stays: it proves the empty config a failed restore leaves is ours.
                self.fail(
                    r,
                    reasons::RESTORE_FAILED,
                    format!("the restore task failed: {detail}"),
                );
            }
        }
    }

    /// A guest exists at our VMID but we hold no task: once its restore lock is gone, it is
    /// ours if it carries our marker; otherwise the VMID was taken meanwhile and another is
    /// chosen (the guest is left alone).
    async fn adopt(&mut self, r: &mut RestoreResultDetail, guest: &GuestRef, client: &PveClient) {
        match client.guest_config(guest).await {
            Ok(config) if config.lock().is_some() => {
                r.message = format!(
                    "VMID {} is locked ({}); waiting",
                    guest.vmid,
                    config.lock().unwrap_or_default()
                );
                self.soon(self.proxmox.tuning.task_poll);
            }
            Ok(config) if plan::is_ours(&config.tags(), config.description().as_deref(), self.input.uid) => {
                r.restored_time.get_or_insert(self.now);
                r.phase = RestorePhase::Booting;
                r.message = format!("restored as VMID {} on node {}", guest.vmid, guest.node);
                self.soon(Duration::ZERO);
            }
            Ok(_) => {
                self.deps
                    .release_vmid(self.cluster_uid(), guest.vmid.get(), self.input.uid);
                r.message = format!(
                    "VMID {} was taken by a guest that is not ours; choosing another",
                    guest.vmid
                );
                r.restored_vmid = 0;
                r.phase = RestorePhase::Pending;
                r.restore_start_time = None;
                self.soon(Duration::ZERO);
            }
            Err(e) => {
                r.message = format!("cannot read VMID {}: {e}", guest.vmid);
                self.soon(self.proxmox.tuning.reconnect_min);
            }
        }
    }

    async fn reassemble_and_post(
        &mut self,
        r: &mut RestoreResultDetail,
        run_id: &str,
        client: &PveClient,
        guest: &GuestRef,
    ) {
        let staged = match self.staged_for(r, &guest.node, client).await {
            Ok(s) => s,
            Err(message) => return self.fail(r, reasons::RESTORE_FAILED, message),
        };
        // A partial file of an attempt cut short by a restart (recorded as ours by the phase).
        let _ = remove_staged(&staged.path);
        r.staged_archive = Some(staged.path.to_string_lossy().into_owned());
        let id = r.backup_volid.clone().unwrap_or_default();
        let snapshot = id.strip_prefix(CHUNKSTORE_PREFIX).unwrap_or_default().to_owned();
        let storage = staged.volid.split(':').next().unwrap_or_default().to_owned();
        let dir = staged.path.parent().map(PathBuf::from).unwrap_or_default();
        let store = self.deps.store.clone();
        r.restore_start_time.get_or_insert(self.now);
        let result = tokio::task::spawn_blocking(move || reassemble(&store, &snapshot, &storage, &dir))
            .await
            .map_err(|e| format!("reassembly stopped: {e}"))
            .and_then(|r| r);
        match result {
            Ok(staged) => {
                self.post(r, run_id, client, guest, &staged.volid).await;
            }
            Err(message) => {
                unstage(r);
                self.fail(r, reasons::RESTORE_FAILED, message);
            }
        }
    }

    /// The copy runs: its checks are next.
    fn started(&mut self, r: &mut RestoreResultDetail) {
        r.phase = RestorePhase::Checking;
        r.message = format!(
            "started; waiting for the checks (at most {} s)",
            self.spec.boot_timeout_seconds
        );
        self.soon(Duration::ZERO);
    }

    /// A restored copy: make sure every NIC is isolated, remove passthrough devices, start it.
    async fn booting(&mut self, r: &mut RestoreResultDetail, client: &PveClient) {
        let Some(guest) = guest_of(r) else {
            return self.fail(r, reasons::START_FAILED, "no VMID recorded".into());
        };
        if let Some(upid) = r.upid.clone() {
            match poll_task(client, &upid).await {
                TaskView::Running(_) | TaskView::None => self.soon(self.proxmox.tuning.task_poll),
                TaskView::Done { error: None, .. } => {
                    self.proxmox.snapshots.invalidate(self.cluster_uid());
                    r.upid = None;
                    self.started(r);
                }
                TaskView::Done { error: Some(e), .. } => {
                    r.upid = None;
                    self.fail(r, reasons::START_FAILED, format!("the copy did not start: {e}"));
                }
            }
            return;
        }
        let config = match client.guest_config(&guest).await {
            Ok(c) => c,
            Err(e) if e.is_transient() => {
                r.message = format!("cannot read the copy's config: {e}");
                self.soon(self.proxmox.tuning.reconnect_min);
                return;
            }
            Err(e) => {
                return self.fail(
                    r,
                    reasons::START_FAILED,
                    format!("cannot read the copy's config: {e}"),
                );
            }
        };
        if !plan::is_ours(&config.tags(), config.description().as_deref(), self.input.uid) {
            return self.fail(
                r,
                reasons::ABORTED,
                format!(
                    "VMID {} does not carry this RestoreTest's marker; it is left alone",
                    guest.vmid
                ),
            );
        }
        // Started before a restart that lost the start task's id: it boots already.
        match client.guest_status(&guest).await {
            Ok(s) if s.status == "running" => {
                r.booted_time.get_or_insert(self.now);
                return self.started(r);
            }
            Ok(_) => {}
            Err(e) => {
                r.message = format!("cannot read the copy's state: {e}");
                self.soon(self.proxmox.tuning.reconnect_min);
                return;
            }
        }
        let values: BTreeMap<String, String> = config
            .values
            .keys()
            .filter_map(|k| config.get(k).map(|v| (k.clone(), v)))
            .collect();
        if let Some(why) = plan::args_network(r.type_, &values) {
            return self.fail(
                r,
                reasons::NIC_NOT_OVERRIDABLE,
                format!("{why}; the copy was never started"),
            );
        }
        // Belt and braces: PVE applied our NICs in the restore; any NIC that is not on the
        // isolation network now (e.g. added by a hook) is moved before the first start.
        let mut update = ConfigUpdate::default();
        for key in plan::nic_keys(&values) {
            let value = &values[key];
            if plan::nic_isolated(value, &self.spec.network) {
                continue;
            }
            match plan::isolate_nic(r.type_, key, value, &self.spec.network) {
                Ok(fixed) => {
                    update.set.insert(key.to_owned(), fixed);
                }
                Err(m) => {
                    return self.fail(
                        r,
                        reasons::NIC_NOT_OVERRIDABLE,
                        format!("{m}; the copy was never started"),
                    );
                }
            }
        }
        update.delete = plan::passthrough_keys(r.type_, &values);
        update.delete.extend(plan::hook_keys(&values));
        if (!update.set.is_empty() || !update.delete.is_empty())
            && let Err(e) = client.update_config(&guest, &update).await
        {
            let (reason, what) = if update.delete.is_empty() {
                (
                    reasons::NIC_NOT_OVERRIDABLE,
                    format!("cannot move {} onto the isolation network", keys(&update.set)),
                )
            } else {
                (
                    reasons::PASSTHROUGH_NOT_REMOVABLE,
                    format!(
                        "cannot remove the passthrough devices {}",
                        update.delete.join(", ")
                    ),
                )
            };
            return self.fail(r, reason, format!("{what}: {e}; the copy was never started"));
        }
        // Recorded before the request: the boot clock runs from the first start attempt.
        r.booted_time.get_or_insert(self.now);
        match client.start_guest(&guest).await {
            Ok(task) => {
                self.proxmox.snapshots.invalidate(self.cluster_uid());
                r.upid = Some(handle(&task));
                r.message = "starting the copy in isolation".into();
                let who = if r.service.is_empty() {
                    format!("guest {}", r.source_vmid)
                } else {
                    r.service.clone()
                };
                self.events.push(crate::controllers::kit::PlannedEvent::normal(
                    reasons::BOOTING,
                    reasons::ACTION_CHECK,
                    format!(
                        "{who}: starting the restored copy {} on {}",
                        guest.vmid, guest.node
                    ),
                ));
                self.soon(self.proxmox.tuning.task_poll);
            }
            Err(e) if e.is_transient() => {
                r.message = format!("cannot start the copy yet: {e}");
                self.soon(self.proxmox.tuning.reconnect_min);
            }
            // No answer: PVE may have started it, which the next pass sees before asking again.
            Err(e) if e.is_transient() => {
                self.proxmox.snapshots.invalidate(self.cluster_uid());
                r.message = format!("the start request got no answer ({e}); looking again");
                self.soon(self.proxmox.tuning.reconnect_min);
            }
            Err(e) => self.fail(r, reasons::START_FAILED, format!("the copy did not start: {e}")),
        }
    }
}

fn keys(map: &BTreeMap<String, String>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The `ERROR:`/`TASK ERROR:` lines of a task's log (at most 3).
pub(super) async fn error_lines(client: &PveClient, upid: &crate::crd::common::TaskHandle) -> Vec<String> {
    let Ok(task) = upid.parse::<crate::proxmox::TaskRef>() else {
        return Vec::new();
    };
    client
        .task_log_tail(&task, 50)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.contains("ERROR") || l.starts_with("error"))
        .map(|l| l.trim().to_owned())
        .take(3)
        .collect()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Removes the archive reassembled for `r` (recorded in `stagedArchive`) and clears the record.
/// A file that cannot be removed stays recorded, for the RestoreTest's deletion to try again.
pub(super) fn unstage(r: &mut RestoreResultDetail) {
    let Some(path) = r.staged_archive.take() else {
        return;
    };
    if let Err(e) = remove_staged(std::path::Path::new(&path)) {
        tracing::warn!(error = %e, "cannot remove a staged archive");
        r.staged_archive = Some(path);
    }
}
