//! Mirror policies from the cluster (`kubernetes.watch_cluster_policies`): the
//! ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet objects and `Image/cluster`,
//! kept in one generated policy file (a `List`) in a directory the mirror engine reads with the file
//! policies. One watch per kind; any event re-lists all four and rewrites the file only when its
//! content changed, so the daemon's file watch and reconcile do the rest — same validation, same
//! errors (naming the object), same hold/apply rules as file policies.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchParams};
use serde_json::{json, Value};

use super::kube::{api_err, Cluster, KubeError};

/// The kinds fed to the mirror engine: (group, version, kind, plural).
pub const KINDS: [(&str, &str, &str, &str); 4] = [
    (
        "operator.openshift.io",
        "v1alpha1",
        "ImageContentSourcePolicy",
        "imagecontentsourcepolicies",
    ),
    (
        "config.openshift.io",
        "v1",
        "ImageDigestMirrorSet",
        "imagedigestmirrorsets",
    ),
    (
        "config.openshift.io",
        "v1",
        "ImageTagMirrorSet",
        "imagetagmirrorsets",
    ),
    ("config.openshift.io", "v1", "Image", "images"),
];

/// The generated file, under the state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cluster-policies")
}

/// The file name in [`dir`].
pub const FILE: &str = "cluster.json";

fn api_for(c: &Cluster, i: usize) -> Api<DynamicObject> {
    let (g, v, k, plural) = KINDS[i];
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural);
    Api::all_with(c.client(), &ar)
}

/// Every object of the four kinds (a kind the cluster does not serve contributes none), as a
/// `List` document with the fields the mirror engine reads.
pub async fn list_all(c: &Cluster) -> Result<Value, KubeError> {
    let mut items = Vec::new();
    for (i, (g, v, kind, _)) in KINDS.iter().enumerate() {
        let list = match api_for(c, i).list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(api_err(format!("list {kind}"))(e)),
        };
        let mut objs: Vec<DynamicObject> = list.items;
        objs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for o in objs {
            // Only `cluster` is the cluster's Image configuration.
            if *kind == "Image" && o.metadata.name.as_deref() != Some("cluster") {
                continue;
            }
            items.push(json!({
                "apiVersion": format!("{g}/{v}"), "kind": kind,
                "metadata": {"name": o.metadata.name},
                "spec": o.data.get("spec").cloned().unwrap_or(json!({})),
            }));
        }
    }
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

/// Write the file when its content changed (atomically). Returns true when it was written.
pub fn store(state_dir: &Path, list: &Value) -> Result<bool, String> {
    let d = dir(state_dir);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let path = d.join(FILE);
    let mut text = serde_json::to_vec_pretty(list).map_err(|e| e.to_string())?;
    text.push(b'\n');
    if std::fs::read(&path).ok().as_deref() == Some(&text[..]) {
        return Ok(false);
    }
    super::fs::atomic_replace(&path, &text, &super::fs::ReplaceOptions::default())
        .map(|_| true)
        .map_err(|e| e.to_string())
}

/// One watch per kind, merged: the stream yields whenever any object changed (or a watch ended,
/// which means "look again" too). `resource_versions` come from a fresh list.
pub async fn changes(
    c: &Cluster,
) -> Result<futures_util::stream::BoxStream<'static, ()>, KubeError> {
    let mut streams = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let api = api_for(c, i);
        let rv = match api.list(&ListParams::default().limit(1)).await {
            Ok(l) => l.metadata.resource_version.unwrap_or_default(),
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(api_err(format!("list {}", kind.2))(e)),
        };
        let s = api
            .watch(&WatchParams::default().timeout(290), &rv)
            .await
            .map_err(api_err(format!("watch {}", kind.2)))?;
        streams.push(
            s.map(|_| ())
                .chain(futures_util::stream::once(async {}))
                .boxed(),
        );
    }
    Ok(futures_util::stream::select_all(streams).boxed())
}
