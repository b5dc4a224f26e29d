//! Which Services a policy selects (`spec.services`: `names` and/or `matchLabels`), pure: the
//! BackupPolicy, UpdatePolicy and RestoreTest kinds resolve their Services here, and map a changed
//! Service to the policies that select it (their watch) with [`selects`].

use kube::ResourceExt;

use crate::crd::Service;
use crate::crd::common::ServiceSelector;

/// The Services a selector picks from one namespace's Services.
#[derive(Debug, PartialEq)]
pub struct Selection<'a> {
    /// Selected Services of the policy's cluster, by name.
    pub selected: Vec<&'a Service>,
    /// Names listed in `names` that no Service has (to report, never to guess).
    pub missing: Vec<String>,
    /// Selected by the selector but bound to another ProxmoxCluster than the policy's: left out.
    pub other_cluster: Vec<&'a Service>,
}

/// Whether `selector` (of a policy on cluster `cluster`) selects `service`.
pub fn selects(selector: &ServiceSelector, cluster: &str, service: &Service) -> bool {
    service.spec.cluster_ref.name == cluster && selector.matches(&service.name_any(), service.labels())
}

/// Applies `selector` of a policy on cluster `cluster` to `services` (one namespace's).
pub fn select<'a>(services: &'a [Service], selector: &ServiceSelector, cluster: &str) -> Selection<'a> {
    let mut picked: Vec<&Service> = services
        .iter()
        .filter(|s| selector.matches(&s.name_any(), s.labels()))
        .collect();
    picked.sort_by_key(|s| s.name_any());
    let (selected, other_cluster) = picked
        .into_iter()
        .partition(|s| s.spec.cluster_ref.name == cluster);
    let mut missing: Vec<String> = selector
        .names
        .iter()
        .filter(|n| !services.iter().any(|s| s.name_any() == **n))
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    Selection {
        selected,
        missing,
        other_cluster,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::crd::service::ServiceSpec;

    fn svc(name: &str, cluster: &str, labels: &[(&str, &str)]) -> Service {
        let spec: ServiceSpec =
            serde_yaml::from_str(&format!("clusterRef: {{name: {cluster}}}\nvmid: 200\ntype: VM\n")).unwrap();
        let mut s = Service::new(name, spec);
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        s
    }

    fn selector(names: &[&str], labels: &[(&str, &str)]) -> ServiceSelector {
        ServiceSelector {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            match_labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn names(list: &[&Service]) -> Vec<String> {
        list.iter().map(|s| s.name_any()).collect()
    }

    #[test]
    fn names_and_labels_select_the_union_of_the_policys_cluster_sorted() {
        let all = vec![
            svc("nextcloud", "homelab", &[("backup", "nightly")]),
            svc("gitea", "homelab", &[]),
            svc("jellyfin", "homelab", &[("backup", "weekly")]),
            svc("vaultwarden", "homelab", &[("backup", "nightly"), ("tier", "1")]),
            svc("lab-vm", "lab", &[("backup", "nightly")]),
        ];
        let s = select(
            &all,
            &selector(&["gitea", "ghost"], &[("backup", "nightly")]),
            "homelab",
        );
        assert_eq!(names(&s.selected), ["gitea", "nextcloud", "vaultwarden"]);
        assert_eq!(s.missing, ["ghost"]);
        assert_eq!(names(&s.other_cluster), ["lab-vm"]);
    }

    #[test]
    fn every_label_must_match_and_an_empty_selector_selects_nothing() {
        let all = vec![
            svc("a", "homelab", &[("backup", "nightly")]),
            svc("b", "homelab", &[("backup", "nightly"), ("tier", "1")]),
        ];
        let s = select(
            &all,
            &selector(&[], &[("backup", "nightly"), ("tier", "1")]),
            "homelab",
        );
        assert_eq!(names(&s.selected), ["b"]);
        assert!(select(&all, &selector(&[], &[]), "homelab").selected.is_empty());
    }

    #[test]
    fn selects_maps_a_service_change_to_the_policies_that_cover_it() {
        let web = svc("web", "homelab", &[("backup", "nightly")]);
        assert!(selects(&selector(&[], &[("backup", "nightly")]), "homelab", &web));
        assert!(selects(&selector(&["web"], &[]), "homelab", &web));
        assert!(
            !selects(&selector(&["web"], &[]), "lab", &web),
            "another cluster's policy"
        );
        assert!(!selects(&selector(&[], &[("backup", "weekly")]), "homelab", &web));
    }
}
