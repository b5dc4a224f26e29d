//! Status reporting: server-side apply of the whole status on the
//! `/status` subresource with the controller's field manager. Conditions are built with
//! `kit::conditions`.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{context::Context, error::Error};

/// Applies `status` as the complete status of `obj`: a server-side apply patch on `/status` whose
/// body carries apiVersion and kind, with the controller's field manager and `force` (this
/// controller is the only writer of the status, so it takes over fields another manager holds).
/// Fields we set before and omit now are removed. Returns the updated object.
pub async fn patch_status<K, S, D>(ctx: &Context<D>, obj: &K, status: &S) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    S: Serialize + Debug,
{
    let (namespace, name) = keys(obj)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = status_patch_body::<K, S>(status);
    let params = PatchParams::apply(ctx.field_manager()).force();
    api.patch_status(&name, &params, &Patch::Apply(body))
        .await
        .map_err(|source| Error::PatchStatus {
            kind: K::kind(&()).into_owned(),
            namespace,
            name,
            source,
        })
}

/// The namespace and name of a stored object.
// The controllers' Error keeps kube::Error inline (the runtime's choice); this is not a hot path.
#[allow(clippy::result_large_err)]
pub fn keys<K: Resource<DynamicType = ()>>(obj: &K) -> Result<(String, String), Error> {
    let missing = |field| Error::MissingObjectKey {
        kind: K::kind(&()).into_owned(),
        field,
    };
    let namespace = obj
        .meta()
        .namespace
        .clone()
        .ok_or_else(|| missing("metadata.namespace"))?;
    let name = obj.meta().name.clone().ok_or_else(|| missing("metadata.name"))?;
    Ok((namespace, name))
}

/// The apply body of a status patch: `{apiVersion, kind, status}`.
pub fn status_patch_body<K: Resource<DynamicType = ()>, S: Serialize>(status: &S) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patch_body_carries_api_version_and_kind() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let body = status_patch_body::<ConfigMap, _>(&serde_json::json!({"observedGeneration": 4}));
        let expected = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "status": {"observedGeneration": 4},
        });
        assert_eq!(body, expected);
    }
}
