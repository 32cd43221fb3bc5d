//! The agent against a real kube-apiserver v1.20.2 + etcd on loopback (built and cached by
//! tests/kube/get-kube.sh; scripts/test runs these in its `kube` stage with RNA_KUBE_BIN set). The
//! agent authenticates as the ServiceAccount of deploy/rbac.yaml and gets exactly that RBAC: anything
//! else is a 403 (checked for several calls outside it). Covers: the node condition and
//! annotations appear, and survive another writer's patches; an idle node is written only at the
//! heartbeat (counted over a window: one write a minute with the default 60 s); the condition
//! becomes Unknown on a graceful stop; PhaseStarted/PhaseSucceeded/PhaseFailed and MirrorsDrift
//! Events; a refused token (401) is picked up again when the kubeconfig is rewritten, without a
//! restart; cordon/uncordon ownership (the agent lifts only its own cordon; someone else's uncordon
//! clears the agent's record) and the built-in cordon → drain → uncordon of the phases; drain with
//! budgets, refusal and escalation; a missing Node and an API server that goes away are reported,
//! not fatal; offline mode; Lease serialization across three agents, expiry of a dead holder,
//! renewal, resume after a restart and release of a slot above the local `max_unavailable`;
//! MachineHealthCheck pauses; mirror policies from the cluster; the MCO annotation on the Node
//! makes `auto` settings (mirrors.mode, firewalld.state) treat the node as OpenShift, and its
//! removal undoes that.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

mod common;
use common::{bin, Daemon};

const ADMIN_TOKEN: &str = "admin-token-for-tests";
const AGENT_TOKEN: &str = "agent-token-for-tests";
const AGENT_USER: &str = "system:serviceaccount:rhel-node-agent:rhel-node-agent";
const PREFIX: &str = "rhel-node-agent.io";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd + kube-apiserver on loopback, stopped on drop.
struct ApiServer {
    procs: Vec<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// How to start kube-apiserver again (program and arguments).
    api_cmd: Vec<std::ffi::OsString>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
            let start = log
                .find("panic:")
                .or_else(|| log.find("fatal error"))
                .unwrap_or(log.len().saturating_sub(3000));
            let tail: Vec<&str> = log[start..].lines().take(25).collect();
            eprintln!("--- apiserver.log (last lines) ---");
            for l in tail.iter() {
                eprintln!("{l}");
            }
        }
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl ApiServer {
    fn start() -> ApiServer {
        let bin = PathBuf::from(
            std::env::var("RNA_KUBE_BIN")
                .expect("RNA_KUBE_BIN: the directory of tests/kube/get-kube.sh's binaries"),
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pki = d.join("pki");
        fs::create_dir_all(&pki).unwrap();
        fs::write(
            pki.join("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},admin,1,\"system:masters\"\n{AGENT_TOKEN},{AGENT_USER},2,\"system:serviceaccounts,system:serviceaccounts:rhel-node-agent,system:authenticated\"\n"
            ),
        )
        .unwrap();
        let ok = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(pki.join("sa.key"))
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
            && Command::new("openssl")
                .args(["rsa", "-in"])
                .arg(pki.join("sa.key"))
                .args(["-pubout", "-out"])
                .arg(pki.join("sa.pub"))
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
        assert!(ok, "openssl");
        let (etcd_port, peer_port, port) = (free_port(), free_port(), free_port());
        let log = |name: &str| fs::File::create(d.join(name)).unwrap();
        let etcd = Command::new(bin.join("etcd"))
            .args(["--name", "t", "--data-dir"])
            .arg(d.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer_port}"))
            .args(["--unsafe-no-fsync=true", "--log-level=warn"])
            .stdout(Stdio::null())
            .stderr(log("etcd.log"))
            .spawn()
            .unwrap();
        let mut api_cmd: Vec<std::ffi::OsString> = vec![bin.join("kube-apiserver").into()];
        for a in [
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", d.join("certs").display()),
            format!("--token-auth-file={}", pki.join("tokens.csv").display()),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!(
                "--service-account-key-file={}",
                pki.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.join("sa.key").display()
            ),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--endpoint-reconciler-type=none".into(),
            "--v=0".into(),
        ] {
            api_cmd.push(a.into());
        }
        let api = spawn_api(&api_cmd, d);
        let s = ApiServer {
            procs: vec![etcd, api],
            dir,
            port,
            api_cmd,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let (s, port) = (self, self.port);
        let started = Instant::now();
        loop {
            let ready = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
                .arg(format!("Authorization: Bearer {ADMIN_TOKEN}"))
                .arg(format!("https://127.0.0.1:{port}/readyz"))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout) == "200")
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready: {}",
                fs::read_to_string(s.dir.path().join("apiserver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stop kube-apiserver (etcd keeps the cluster's state).
    fn stop_api(&mut self) {
        let _ = self.procs[1].kill();
        let _ = self.procs[1].wait();
    }

    /// Start kube-apiserver again on the same port and data.
    fn restart_api(&mut self) {
        self.procs[1] = spawn_api(&self.api_cmd, self.dir.path());
        self.wait_ready();
    }

    /// kube-controller-manager with only the disruption controller (it computes the
    /// PodDisruptionBudgets' status, which evictions check).
    fn start_kcm(&mut self) {
        let bin = PathBuf::from(std::env::var("RNA_KUBE_BIN").unwrap());
        let kc = self.kubeconfig("kcm", ADMIN_TOKEN);
        let kcm = Command::new(bin.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", kc.display()))
            .arg(format!("--authentication-kubeconfig={}", kc.display()))
            .arg(format!("--authorization-kubeconfig={}", kc.display()))
            .args([
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--controllers=disruption",
                "--v=0",
            ])
            .arg(format!("--secure-port={}", free_port()))
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.dir.path().join("kcm.log")).unwrap())
            .spawn()
            .unwrap();
        self.procs.push(kcm);
    }

    /// A kubeconfig for `token`, trusting the server's self-signed certificate.
    fn kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.kubeconfig"));
        let ca = self.dir.path().join("certs/apiserver.crt");
        fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: t, user: u}}\ncurrent-context: c\n",
                self.port,
                ca.display()
            ),
        )
        .unwrap();
        p
    }

    async fn admin(&self) -> kube::Client {
        let kc =
            kube::config::Kubeconfig::read_from(self.kubeconfig("admin", ADMIN_TOKEN)).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }
}

fn spawn_api(cmd: &[std::ffi::OsString], dir: &Path) -> Child {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("apiserver.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap()
}

/// Apply deploy/rbac.yaml as the admin (the agent gets exactly this).
async fn apply_rbac(client: &kube::Client) {
    apply_manifest(client, "deploy/rbac.yaml").await
}

/// Apply one of the repository's RBAC manifests as the admin.
async fn apply_manifest(client: &kube::Client, file: &str) {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    for doc in text.split("\n---\n") {
        let v: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("");
        let rbac = "/apis/rbac.authorization.k8s.io/v1";
        let path = match v["kind"].as_str().unwrap() {
            "Namespace" => "/api/v1/namespaces".to_string(),
            "ServiceAccount" => format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            "ClusterRole" => format!("{rbac}/clusterroles"),
            "ClusterRoleBinding" => format!("{rbac}/clusterrolebindings"),
            "Role" => format!("{rbac}/namespaces/{ns}/roles"),
            "RoleBinding" => format!("{rbac}/namespaces/{ns}/rolebindings"),
            k => panic!("unexpected kind {k} in {file}"),
        };
        create_raw(client, &path, v).await;
    }
}

async fn create_node(client: &kube::Client, name: &str) {
    let n: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
}

async fn node(client: &kube::Client, name: &str) -> Node {
    Api::<Node>::all(client.clone()).get(name).await.unwrap()
}

fn ann(n: &Node, suffix: &str) -> Option<String> {
    n.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{PREFIX}/{suffix}")))
        .cloned()
}

fn condition(n: &Node) -> Option<k8s_openapi::api::core::v1::NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "RHELNodeAgentReady")
        .cloned()
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out ({secs} s): {what}");
}

/// The daemon for `node`, with the agent's kubeconfig at /etc/rhel-node-agent/kubeconfig in its
/// root (configuration paths are taken under --root). `extra` follows the kubeconfig key in the
/// `[kubernetes]` table (and may open further tables); `prepare` writes more files into the root.
fn kube_agent(kubeconfig: &Path, node: &str, extra: &str, prepare: impl FnOnce(&Path)) -> Daemon {
    kube_agent_env(kubeconfig, node, extra, &[], prepare)
}

/// [`kube_agent`] with environment variables for the daemon (`RNA_TEST_LEASE_RENEW`).
fn kube_agent_env(
    kubeconfig: &Path,
    node: &str,
    extra: &str,
    env: &[(&str, &str)],
    prepare: impl FnOnce(&Path),
) -> Daemon {
    let config = format!(
        "[node]\nname = \"{node}\"\n[kubernetes]\nkubeconfig = \"/etc/rhel-node-agent/kubeconfig\"\n{extra}"
    );
    Daemon::start_prepared(&config, None, env, |root| {
        fs::copy(kubeconfig, root.join("etc/rhel-node-agent/kubeconfig")).unwrap();
        prepare(root);
    })
}

/// The daemon for `node` with a 2 s heartbeat.
fn agent(kubeconfig: &Path, node: &str) -> Daemon {
    kube_agent(kubeconfig, node, "heartbeat = \"2s\"\n", |_| {})
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn node_condition_annotations_and_cordon_ownership_against_a_real_api_server() {
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    create_node(&admin, "node-a").await;
    let agent_kc = server.kubeconfig("agent", AGENT_TOKEN);
    let d = agent(&agent_kc, "node-a");

    // The condition and the annotations appear.
    eventually("the agent's condition on node-a", 30, || async {
        condition(&node(&admin, "node-a").await).is_some()
    })
    .await;
    let n = node(&admin, "node-a").await;
    let c = condition(&n).unwrap();
    assert_eq!(c.status, "True");
    assert_eq!(c.reason.as_deref(), Some("AgentReady"));
    assert_eq!(ann(&n, "state").as_deref(), Some("Done"));
    assert_eq!(ann(&n, "phase").as_deref(), Some("idle"));
    assert!(ann(&n, "firewalld").is_some());
    assert!(d.status()["cluster"]
        .as_str()
        .unwrap()
        .starts_with("connected"));

    // Another writer's annotation and condition survive the agent's writes.
    Api::<Node>::all(admin.clone())
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"example.com/owner": "team-a"}}})),
        )
        .await
        .unwrap();
    Api::<Node>::all(admin.clone())
        .patch_status(
            "node-a",
            &PatchParams::default(),
            &Patch::Strategic(&json!({"status": {"conditions": [{"type": "OtherWriter", "status": "True", "reason": "X", "message": "kept"}]}})),
        )
        .await
        .unwrap();
    // A phase changes the agent's annotations: its write must not clobber the other writer's.
    let o = d.cli(&["phase", "run", "pre-cordon", "--upgrade-id", "u-kube"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eventually("the phase in the annotations", 30, || async {
        ann(&node(&admin, "node-a").await, "upgrade-id").as_deref() == Some("u-kube")
    })
    .await;
    eventually(
        "PhaseStarted and PhaseSucceeded events on node-a",
        30,
        || async {
            use k8s_openapi::api::core::v1::Event;
            let evs = Api::<Event>::namespaced(admin.clone(), "default")
                .list(&Default::default())
                .await
                .unwrap();
            let reasons: Vec<String> = evs
                .items
                .iter()
                .filter(|e| e.involved_object.name.as_deref() == Some("node-a"))
                .filter_map(|e| e.reason.clone())
                .collect();
            reasons.contains(&"PhaseStarted".to_string())
                && reasons.contains(&"PhaseSucceeded".to_string())
        },
    )
    .await;
    let n = node(&admin, "node-a").await;
    assert_eq!(ann(&n, "state").as_deref(), Some("Working"));
    assert_eq!(
        n.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("example.com/owner")
            .map(String::as_str),
        Some("team-a")
    );
    let conds = n.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert!(conds.iter().any(|c| c.type_ == "OtherWriter"), "{conds:?}");
    assert_eq!(
        condition(&n).unwrap().reason.as_deref(),
        Some("UpgradeInProgress")
    );

    // Heartbeats: with a 2 s heartbeat the condition's heartbeat time moves; its transition does not.
    let t0 = condition(&n).unwrap();
    eventually("a heartbeat", 15, || async {
        condition(&node(&admin, "node-a").await)
            .unwrap()
            .last_heartbeat_time
            != t0.last_heartbeat_time
    })
    .await;
    let t1 = condition(&node(&admin, "node-a").await).unwrap();
    assert_eq!(t0.last_transition_time, t1.last_transition_time);

    // Cordon ownership.
    let cli = |args: &[&str]| d.cli(args);
    let o = cli(&["node", "cordon"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let n = node(&admin, "node-a").await;
    assert_eq!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    assert_eq!(ann(&n, "cordoned-by").as_deref(), Some("u-kube"));
    let o = cli(&["node", "uncordon"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let n = node(&admin, "node-a").await;
    assert_ne!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    assert_eq!(ann(&n, "cordoned-by"), None);
    // An administrator's cordon is respected (exit 3), unless overridden.
    Api::<Node>::all(admin.clone())
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let o = cli(&["node", "uncordon"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("cordoned by someone else"));
    let o = cli(&["node", "cordon"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("someone else"));
    assert_eq!(
        ann(&node(&admin, "node-a").await, "cordoned-by"),
        None,
        "not taken over"
    );
    let o = cli(&["node", "uncordon", "--override-admin-cordon"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(
        node(&admin, "node-a").await.spec.unwrap().unschedulable,
        Some(true)
    );
    // Someone else uncordons a node the agent cordoned (oc adm uncordon): the record is cleared.
    let o = cli(&["node", "cordon"]);
    assert!(o.status.success());
    Api::<Node>::all(admin.clone())
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": null}})),
        )
        .await
        .unwrap();
    eventually("the agent to clear its cordon record", 45, || async {
        ann(&node(&admin, "node-a").await, "cordoned-by").is_none()
    })
    .await;

    // RBAC is exactly deploy/rbac.yaml: the agent's identity cannot, say, delete the Node.
    let agent = {
        let kc = kube::config::Kubeconfig::read_from(&agent_kc).unwrap();
        kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap(),
        )
        .unwrap()
    };
    let denied = Api::<Node>::all(agent)
        .delete("node-a", &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(denied, kube::Error::Api(s) if s.code == 403));
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn a_missing_node_and_an_api_server_that_goes_away_are_reported_not_fatal() {
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    let agent_kc = server.kubeconfig("agent", AGENT_TOKEN);
    let d = agent(&agent_kc, "node-b");
    let status = || d.status()["cluster"].as_str().unwrap_or("").to_string();
    eventually("a missing node to be reported", 30, || async {
        status().contains("node node-b not found")
    })
    .await;
    // The local duties go on.
    assert_eq!(d.status()["mirrors"]["state"], "ok");
    create_node(&admin, "node-b").await;
    eventually("the node to be written once it exists", 90, || async {
        condition(&node(&admin, "node-b").await).is_some()
    })
    .await;
    // The API server goes away mid-phase: reported; the phase waits for its upgrade slot instead
    // of going on unserialized, and finishes once the server is back, without a restart.
    let mut server = server;
    server.stop_api();
    eventually("the outage to be reported", 60, || async {
        status().starts_with("unreachable")
    })
    .await;
    assert_eq!(d.status()["mirrors"]["state"], "ok", "local duties go on");
    let client = Command::new(bin())
        .arg("--root")
        .arg(&d.root)
        .args(["phase", "run", "pre-cordon", "--upgrade-id", "outage"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart_api();
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("waiting for the API server to take an upgrade slot"),
        "{text}"
    );
    eventually(
        "the agent to reconnect and report the phase",
        60,
        || async {
            status().starts_with("connected")
                && ann(&node(&admin, "node-b").await, "upgrade-id").as_deref() == Some("outage")
        },
    )
    .await;
}

#[test]
fn offline_mode_says_the_cluster_is_not_configured() {
    let d = Daemon::start("");
    let t = Instant::now();
    while !d.status()["cluster"]
        .as_str()
        .unwrap_or("")
        .starts_with("not configured")
    {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = d.cli(&["node", "cordon"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("skipped: no cluster configured"));
}

/// Create a Running, Ready pod on `node` (there is no kubelet).
async fn running_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    node: &str,
    extra: serde_json::Value,
) {
    use k8s_openapi::api::core::v1::Pod;
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "automountServiceAccountToken": false,
                 "containers": [{"name": "c", "image": "example.invalid/pause:1"}]},
    });
    if let Some(m) = extra.get("metadata") {
        for (k, val) in m.as_object().unwrap() {
            v["metadata"][k] = val.clone();
        }
    }
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(v).unwrap();
    // The service-account admission plugin sees a new namespace's account after a moment.
    for attempt in 0.. {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 403 && attempt < 30 => {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
            Err(e) => panic!("create pod {ns}/{name}: {e}"),
        }
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
}

/// The one fake-kubelet loop: pods being deleted are removed for good (what a kubelet does
/// once their containers stopped). On its own thread: the test thread blocks on the agent's CLI.
struct FakeKubelet(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

fn fake_kubelet(kubeconfig: PathBuf) -> FakeKubelet {
    use k8s_openapi::api::core::v1::Pod;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            let client = kube::Client::try_from(cfg).unwrap();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(list) = Api::<Pod>::all(client.clone())
                    .list(&Default::default())
                    .await
                {
                    for p in list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_some())
                    {
                        let ns = p.metadata.namespace.clone().unwrap_or_default();
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let _ = Api::<Pod>::namespaced(client.clone(), &ns)
                            .delete(
                                &name,
                                &kube::api::DeleteParams {
                                    grace_period_seconds: Some(0),
                                    ..Default::default()
                                },
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
    });
    FakeKubelet(stop, Some(t))
}

async fn create_raw(client: &kube::Client, path: &str, body: serde_json::Value) {
    // A pooled connection the server closed while the test thread was blocked is retried.
    for attempt in 0.. {
        let req = http::Request::post(path)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        match client.request_text(req).await {
            Ok(_) => return,
            Err(kube::Error::Service(e)) if attempt < 3 => {
                eprintln!("retrying POST {path}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("POST {path}: {e}"),
        }
    }
}

fn drain_agent(kubeconfig: &Path, node: &str, timeout: &str) -> Daemon {
    let extra = format!("[kubernetes.drain]\ntimeout = \"{timeout}\"\n");
    kube_agent(kubeconfig, node, &extra, |_| {})
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn drain_respects_budgets_names_the_blocker_and_refuses_unmanaged_pods() {
    use k8s_openapi::api::core::v1::Pod;
    let mut server = ApiServer::start();
    server.start_kcm();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    create_node(&admin, "node-d").await;
    create_node(&admin, "node-e").await;
    create_raw(
        &admin,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "work"}}),
    )
    .await;
    // No service-account controller runs: the admission plugin wants the default account.
    create_raw(
        &admin,
        "/api/v1/namespaces/work/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    )
    .await;
    create_raw(
        &admin,
        "/apis/policy/v1beta1/namespaces/work/poddisruptionbudgets",
        json!({
        "apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web-pdb", "namespace": "work"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}),
    )
    .await;
    let rs_owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]}});
    let ds_owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "00000000-0000-0000-0000-000000000002", "controller": true}], "labels": {"app": "ds"}}});
    running_pod(&admin, "work", "web-1", "node-d", rs_owner.clone()).await;
    running_pod(&admin, "work", "web-2", "node-d", rs_owner.clone()).await;
    running_pod(&admin, "work", "web-3", "node-e", rs_owner.clone()).await;
    running_pod(&admin, "work", "ds-1", "node-d", ds_owner).await;
    running_pod(
        &admin,
        "work",
        "bare",
        "node-d",
        json!({"metadata": {"labels": {"app": "bare"}}}),
    )
    .await;
    let kubelet = fake_kubelet(server.kubeconfig("kubelet", ADMIN_TOKEN));
    let agent_kc = server.kubeconfig("agent", AGENT_TOKEN);
    let d = drain_agent(&agent_kc, "node-d", "6s");

    // An unmanaged pod: refused, naming it, and nothing is evicted.
    let o = d.cli(&["node", "drain"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("work/bare") && err.contains("not managed by a controller"),
        "{err}"
    );
    let pods = Api::<Pod>::namespaced(admin.clone(), "work");
    assert!(pods.get_opt("web-1").await.unwrap().is_some());
    pods.delete("bare", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The budget (minAvailable 2 of 3 healthy) allows one eviction: the drain times out on the
    // second and names it and the budget.
    let dry = d.cli(&["node", "drain", "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        out.contains("would evict work/web-1")
            && out.contains("left work/ds-1 (managed by a DaemonSet)"),
        "{out}"
    );
    // The disruption controller has computed the budget: one disruption allowed.
    let kcm_log = server.dir.path().join("kcm.log");
    let mut allowed = -1;
    for _ in 0..150 {
        let req =
            http::Request::get("/apis/policy/v1beta1/namespaces/work/poddisruptionbudgets/web-pdb")
                .body(Vec::new())
                .unwrap();
        let v: serde_json::Value = admin.request(req).await.unwrap();
        allowed = v["status"]["disruptionsAllowed"].as_i64().unwrap_or(-1);
        if allowed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        allowed,
        1,
        "PDB status not computed; kcm log:\n{}",
        fs::read_to_string(&kcm_log).unwrap_or_default()
    );
    let t = Instant::now();
    let o = d.cli(&["node", "drain"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("timed out after 6 s"), "{err}");
    assert!(
        err.contains("blocked by PodDisruptionBudget work/web-pdb"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the client did not sit on a 429: {:?}",
        t.elapsed()
    );
    let left: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-d"))
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "one web pod and the DaemonSet pod stay: {left:?}; drain said: {err}"
    );
    assert!(left.contains(&"ds-1".to_string()));

    // A replacement becomes ready elsewhere: the budget allows it, and the drain finishes.
    running_pod(&admin, "work", "web-4", "node-e", rs_owner.clone()).await;
    let o = d.cli(&["node", "drain"]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("node node-d drained"));
    let left: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-d"))
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(left, ["ds-1"]);

    // Escalation (off by default): a budget that allows nothing, and escalate_after_timeout = true:
    // after the timeout the blocked pods are deleted (grace period honoured).
    running_pod(&admin, "work", "web-5", "node-d", rs_owner.clone()).await;
    let req =
        http::Request::patch("/apis/policy/v1beta1/namespaces/work/poddisruptionbudgets/web-pdb")
            .header("Content-Type", "application/merge-patch+json")
            .body(serde_json::to_vec(&json!({"spec": {"minAvailable": 100}})).unwrap())
            .unwrap();
    admin.request_text(req).await.unwrap();
    let cfg = d.root.join("etc/rhel-node-agent/config.d/50-test.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, format!("{text}escalate_after_timeout = true\n")).unwrap();
    let o = d.cli(&["node", "drain"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("deleted work/web-5 (after the timeout)"),
        "{out}"
    );
    let t = Instant::now();
    while pods.get_opt("web-5").await.unwrap().is_some() {
        assert!(t.elapsed() < Duration::from_secs(20), "web-5 not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(kubelet);
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn an_api_server_that_is_down_at_start_is_reported_and_picked_up_later() {
    let mut server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    create_node(&admin, "late").await;
    server.stop_api();
    let kc = server.kubeconfig("agent", AGENT_TOKEN);
    let d = agent(&kc, "late");
    let status = || d.status()["cluster"].as_str().unwrap_or("").to_string();
    eventually("the outage to be reported", 30, || async {
        status().starts_with("unreachable")
    })
    .await;
    assert_eq!(d.status()["mirrors"]["state"], "ok", "local duties go on");
    server.restart_api();
    eventually(
        "the node written once the server is up (no restart)",
        90,
        || async { condition(&node(&admin, "late").await).is_some() },
    )
    .await;
    // The node write and the status refresh are separate steps of the cluster
    // task: the status may lag the condition by one iteration.
    eventually("the status to say connected", 30, || async {
        status().starts_with("connected")
    })
    .await;
}

/// The test-only renewal interval for agents with a short `lease_duration` (docs/development.md):
/// the configuration refuses a Lease shorter than three renewals.
const FAST_RENEW: (&str, &str) = ("RNA_TEST_LEASE_RENEW", "1s");

/// The CLI with the test-only renewal interval (it validates the configuration too).
fn cli_fast(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .env(FAST_RENEW.0, FAST_RENEW.1)
        .arg("--root")
        .arg(&d.root)
        .args(args)
        .output()
        .unwrap()
}

/// An agent for `node` with hooks that record when its upgrade window starts and ends; a
/// `lease` shorter than 90 s comes with the 1 s test renewal interval.
fn slot_agent(kubeconfig: &Path, node: &str, marks: &Path, lease: &str) -> Daemon {
    let extra = format!("lease_duration = \"{lease}\"\n");
    let env: &[(&str, &str)] = if lease.ends_with('m') {
        &[]
    } else {
        &[FAST_RENEW]
    };
    kube_agent_env(kubeconfig, node, &extra, env, |root| {
        use std::os::unix::fs::PermissionsExt;
        for (phase, body) in [
            (
                "pre-cordon",
                format!(
                    "echo \"start $RNA_NODE $(date +%s%N)\" >> {}",
                    marks.display()
                ),
            ),
            ("pre-upgrade", "sleep 1".to_string()),
            (
                "post-upgrade",
                format!(
                    "echo \"end $RNA_NODE $(date +%s%N)\" >> {}",
                    marks.display()
                ),
            ),
        ] {
            let dir = root.join(format!("etc/rhel-node-agent/hooks.d/{phase}.d"));
            fs::create_dir_all(&dir).unwrap();
            let f = dir.join("10-mark");
            fs::write(&f, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
        }
    })
}

fn run_upgrade(d: &Daemon, id: &str) -> Vec<i32> {
    ["pre-cordon", "pre-upgrade", "pre-uncordon", "post-upgrade"]
        .iter()
        .map(|p| {
            d.cli(&["phase", "run", p, "--upgrade-id", id, "--wait-daemon", "5"])
                .status
                .code()
                .unwrap_or(-1)
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn leases_serialize_upgrades_across_nodes_and_an_expired_holder_is_replaced() {
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    for n in ["n1", "n2", "n3"] {
        create_node(&admin, n).await;
    }
    let kc = server.kubeconfig("agent", AGENT_TOKEN);
    let marks = server.dir.path().join("marks");
    let agents: Vec<Daemon> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| slot_agent(&kc, n, &marks, "30m"))
        .collect();
    // Three nodes upgrade at once; max_unavailable = 1.
    let results: Vec<Vec<i32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(i, d)| scope.spawn(move || run_upgrade(d, &format!("u{i}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r, &[0, 0, 0, 0], "every phase of every node succeeded");
    }
    let text = fs::read_to_string(&marks).unwrap();
    let mut windows: Vec<(u128, u128)> = Vec::new();
    for n in ["n1", "n2", "n3"] {
        let at = |kind: &str| -> u128 {
            text.lines()
                .find(|l| l.starts_with(&format!("{kind} {n} ")))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap()
                .parse()
                .unwrap()
        };
        windows.push((at("start"), at("end")));
    }
    windows.sort();
    for w in windows.windows(2) {
        assert!(
            w[0].1 < w[1].0,
            "two nodes in the upgrade window at once: {windows:?}\n{text}"
        );
    }
    drop(agents);

    // A holder that dies keeps its slot until the lease expires; then another node proceeds.
    let short = ["n1", "n2"].map(|n| slot_agent(&kc, n, &marks, "6s"));
    let o = cli_fast(
        &short[0],
        &["phase", "run", "pre-cordon", "--upgrade-id", "dies"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let [mut dying, other] = short;
    let _ = dying.child.kill();
    let _ = dying.child.wait();
    let t = Instant::now();
    let o = cli_fast(
        &other,
        &["phase", "run", "pre-cordon", "--upgrade-id", "next"],
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("waiting for an upgrade slot") && out.contains("n1/dies"),
        "{out}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "it waited for the expiry: {:?}",
        t.elapsed()
    );
    drop(dying);
}

/// Register a CRD with an open schema and wait until `probe` (a list path) is served.
async fn register_crd(
    admin: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    probe: &str,
) {
    create_raw(
        admin,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "scope": if namespaced { "Namespaced" } else { "Cluster" },
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                "versions": [{"name": version, "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}),
    )
    .await;
    for _ in 0..100 {
        let req = http::Request::get(probe).body(Vec::new()).unwrap();
        if admin.request_text(req).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{kind} is not served");
}

/// Register the MachineHealthCheck CRD (machine.openshift.io/v1beta1) and wait until it is served.
async fn register_mhc_crd(admin: &kube::Client) {
    create_raw(
        admin,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "machinehealthchecks.machine.openshift.io"},
            "spec": {"group": "machine.openshift.io", "scope": "Namespaced",
                "names": {"plural": "machinehealthchecks", "singular": "machinehealthcheck", "kind": "MachineHealthCheck"},
                "versions": [{"name": "v1beta1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}),
    )
    .await;
    create_raw(
        admin,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "openshift-machine-api"}}),
    )
    .await;
    let path =
        "/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinehealthchecks";
    for _ in 0..100 {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        if admin.request_text(req).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the MachineHealthCheck CRD is not served");
}

async fn mhc_annotations(
    admin: &kube::Client,
    name: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let req = http::Request::get(format!(
        "/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinehealthchecks/{name}"
    ))
    .body(Vec::new())
    .unwrap();
    let v: serde_json::Value = admin.request(req).await.unwrap();
    v["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn machine_health_checks_are_paused_while_any_node_holds_a_slot() {
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    register_mhc_crd(&admin).await;
    apply_manifest(&admin, "deploy/rbac-mhc.yaml").await;
    let mhcs =
        "/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinehealthchecks";
    create_raw(
        &admin,
        mhcs,
        json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineHealthCheck",
        "metadata": {"name": "workers"}, "spec": {"maxUnhealthy": "40%"}}),
    )
    .await;
    create_raw(&admin, mhcs, json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineHealthCheck",
        "metadata": {"name": "admin-paused", "annotations": {"cluster.x-k8s.io/paused": ""}}, "spec": {}})).await;
    // Two slots: both nodes upgrade at once.
    create_raw(
        &admin,
        "/api/v1/namespaces/rhel-node-agent/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "upgrade"}, "data": {"maxUnavailable": "2"}}),
    )
    .await;
    for n in ["m1", "m2"] {
        create_node(&admin, n).await;
    }
    let kc = server.kubeconfig("agent", AGENT_TOKEN);
    let agent = |node: &str| kube_agent(&kc, node, "pause_machine_health_checks = true\n", |_| {});
    let (d1, d2) = (agent("m1"), agent("m2"));
    let run = |d: &Daemon, phase: &str| {
        let o = d.cli(&["phase", "run", phase]);
        assert!(
            o.status.success(),
            "{phase}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let out = run(&d1, "pre-cordon");
    assert!(
        out.contains("paused MachineHealthCheck(s) workers"),
        "{out}"
    );
    let a = mhc_annotations(&admin, "workers").await;
    assert_eq!(
        a.get("cluster.x-k8s.io/paused").and_then(|v| v.as_str()),
        Some("")
    );
    assert!(a.contains_key(&format!("{PREFIX}/paused-mhc")), "{a:?}");
    let b = mhc_annotations(&admin, "admin-paused").await;
    assert!(
        !b.contains_key(&format!("{PREFIX}/paused-mhc")),
        "someone else's pause is not taken over"
    );
    run(&d2, "pre-cordon");
    for p in ["pre-upgrade", "pre-uncordon"] {
        run(&d1, p);
    }
    let out = run(&d1, "post-upgrade");
    assert!(
        out.contains("stay paused: another node holds an upgrade slot"),
        "{out}"
    );
    assert!(mhc_annotations(&admin, "workers")
        .await
        .contains_key("cluster.x-k8s.io/paused"));
    for p in ["pre-upgrade", "pre-uncordon"] {
        run(&d2, p);
    }
    let out = run(&d2, "post-upgrade");
    assert!(
        out.contains("unpaused MachineHealthCheck(s) workers"),
        "{out}"
    );
    let a = mhc_annotations(&admin, "workers").await;
    assert!(
        !a.contains_key("cluster.x-k8s.io/paused")
            && !a.contains_key(&format!("{PREFIX}/paused-mhc")),
        "{a:?}"
    );
    let b = mhc_annotations(&admin, "admin-paused").await;
    assert!(
        b.contains_key("cluster.x-k8s.io/paused"),
        "the administrator's pause stays"
    );
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn mirror_policies_from_the_cluster_are_applied_and_removed() {
    let mut server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    for (g, v, k, p) in [
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
    ] {
        register_crd(&admin, g, v, k, p, false, &format!("/apis/{g}/{v}/{p}")).await;
    }
    create_node(&admin, "pol").await;
    let kc = server.kubeconfig("agent", AGENT_TOKEN);
    let extra = "watch_cluster_policies = true\n[mirrors]\non_drain_required = \"apply\"\n";
    let d = kube_agent(&kc, "pol", extra, |_| {});
    create_raw(&admin, "/apis/config.openshift.io/v1/imagedigestmirrorsets", json!({
        "apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet", "metadata": {"name": "from-cluster"},
        "spec": {"imageDigestMirrors": [{"source": "quay.io/cluster-ns", "mirrors": ["mirror.cluster.local/ns"]}]}})).await;
    eventually("the cluster's IDMS in registries.conf", 60, || async {
        d.conf().contains("mirror.cluster.local/ns")
    })
    .await;
    // The watches break with the API server; they are set up again, and the next change is seen.
    server.stop_api();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart_api();
    for attempt in 0.. {
        let req = http::Request::delete(
            "/apis/config.openshift.io/v1/imagedigestmirrorsets/from-cluster",
        )
        .body(Vec::new())
        .unwrap();
        match admin.request_text(req).await {
            Ok(_) => break,
            // A pooled connection from before the restart.
            Err(kube::Error::Service(_)) if attempt < 3 => {}
            Err(e) => panic!("delete the IDMS: {e}"),
        }
    }
    eventually("the mirror removed with the object", 60, || async {
        !d.conf().contains("mirror.cluster.local/ns")
    })
    .await;
    assert_eq!(
        d.conf(),
        common::BASE,
        "the administrator's file is back, byte for byte"
    );
}

/// A private D-Bus daemon (session configuration) for CLI calls that need a bus to talk to.
struct PrivateBus {
    child: Child,
    _dir: tempfile::TempDir,
    address: String,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus");
        let address = format!("unix:path={}", socket.display());
        let child = Command::new("dbus-daemon")
            .args(["--config-file=/usr/share/dbus-1/session.conf", "--nofork"])
            .arg(format!("--address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (package dbus)");
        let started = Instant::now();
        while !socket.exists() {
            assert!(started.elapsed() < Duration::from_secs(10), "no bus");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateBus {
            child,
            _dir: dir,
            address,
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `firewall status --json`'s desired state, as the CLI on this root sees it (over `bus`, so the
/// --root confinement does not hide it).
fn firewalld_desired(d: &Daemon, bus: &PrivateBus) -> serde_json::Value {
    let o = d.cli(&["--system-bus", &bus.address, "firewall", "status", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["desired"].clone()
}

/// The slot Leases, as the admin.
fn leases(admin: &kube::Client) -> Api<Lease> {
    Api::namespaced(admin.clone(), "rhel-node-agent")
}

/// Slot `i`'s holder and renew time (as text), when the Lease exists.
async fn slot(admin: &kube::Client, i: u32) -> Option<(Option<String>, String)> {
    let l = leases(admin)
        .get_opt(&format!("rhel-node-agent-slot-{i}"))
        .await
        .unwrap()?;
    let spec = l.spec.unwrap_or_default();
    Some((
        spec.holder_identity,
        serde_json::to_string(&spec.renew_time).unwrap(),
    ))
}

/// An executable hook `10-<name>` for `phase` under the daemon's root.
fn hook(root: &Path, phase: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(format!("etc/rhel-node-agent/hooks.d/{phase}.d"));
    fs::create_dir_all(&dir).unwrap();
    let f = dir.join("10-test");
    fs::write(&f, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
}

fn stdout(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn the_mco_annotation_on_the_node_makes_auto_settings_treat_it_as_openshift() {
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    create_node(&admin, "node-mco").await;
    let bus = PrivateBus::start();
    let d = agent(&server.kubeconfig("agent", AGENT_TOKEN), "node-mco");
    eventually("the agent's condition on node-mco", 30, || async {
        condition(&node(&admin, "node-mco").await).is_some()
    })
    .await;
    // No MCD file and no annotation: not an OpenShift node.
    assert_eq!(d.status()["mirrors"]["mode"], "in-place");
    let desired = firewalld_desired(&d, &bus);
    assert_eq!(desired["state"], "unmanaged", "{desired}");
    assert!(
        desired["why"].as_str().unwrap().contains("not OpenShift"),
        "{desired}"
    );

    // MCO annotates the Node: both `auto` settings follow, without a restart or reload.
    let annotate = |v: serde_json::Value| {
        let admin = admin.clone();
        async move {
            Api::<Node>::all(admin)
                .patch(
                    "node-mco",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"metadata": {"annotations": {
                        "machineconfiguration.openshift.io/currentConfig": v}}})),
                )
                .await
                .unwrap();
        }
    };
    annotate(json!("rendered-worker-0123")).await;
    eventually(
        "mirrors.mode auto = verify on the annotated node",
        30,
        || async { d.status()["mirrors"]["mode"] == "verify" },
    )
    .await;
    assert_eq!(
        firewalld_desired(&d, &bus),
        json!({"state": "disabled", "mask": false})
    );

    // The annotation goes away: back to a node that is not OpenShift.
    annotate(serde_json::Value::Null).await;
    eventually("mirrors.mode auto = in-place again", 30, || async {
        d.status()["mirrors"]["mode"] == "in-place"
    })
    .await;
    assert_eq!(firewalld_desired(&d, &bus)["state"], "unmanaged");
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn a_slot_above_the_local_maximum_is_renewed_resumed_after_a_restart_and_released() {
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    create_node(&admin, "hi").await;
    // The ConfigMap allows 8 slots (the local max_unavailable stays 1); slots 0–5 are held by
    // other nodes, so this node takes slot 6 — beyond the local 1 + margin of 4.
    create_raw(
        &admin,
        "/api/v1/namespaces/rhel-node-agent/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "upgrade"}, "data": {"maxUnavailable": "8"}}),
    )
    .await;
    for i in 0..6 {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        );
        create_raw(
            &admin,
            "/apis/coordination.k8s.io/v1/namespaces/rhel-node-agent/leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": format!("rhel-node-agent-slot-{i}")},
                "spec": {"holderIdentity": format!("busy-{i}/u"), "leaseDurationSeconds": 3600,
                         "acquireTime": now, "renewTime": now}}),
        )
        .await;
    }
    let kc = server.kubeconfig("agent", AGENT_TOKEN);
    let first_run = server.dir.path().join("first-run");
    let mut d = kube_agent_env(&kc, "hi", "", &[FAST_RENEW], |root| {
        // The first pre-cordon sits in its hook (holding its slot) until the agent is killed.
        hook(
            root,
            "pre-cordon",
            &format!(
                "[ -e {m} ] || {{ touch {m}; sleep 120; }}",
                m = first_run.display()
            ),
        );
    });
    let mut first = Command::new(bin())
        .arg("--root")
        .arg(&d.root)
        .args(["phase", "run", "pre-cordon", "--upgrade-id", "high"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("slot 6 taken by hi/high", 60, || async {
        slot(&admin, 6).await.and_then(|s| s.0).as_deref() == Some("hi/high")
    })
    .await;
    // Renewed while the upgrade is open (every second with the test interval; 30 s otherwise).
    let renewed = slot(&admin, 6).await.unwrap().1;
    eventually("slot 6 renewed", 20, || async {
        slot(&admin, 6).await.unwrap().1 != renewed
    })
    .await;
    assert!(slot(&admin, 7).await.is_none(), "one slot only");

    // The agent dies mid-phase and comes back: the same holder resumes slot 6 at once, without
    // waiting for its 30 min Lease to expire and without taking another slot.
    d.kill9_and_restart();
    let _ = first.kill();
    let _ = first.wait();
    let t = Instant::now();
    let o = d.cli(&["phase", "run", "pre-cordon", "--upgrade-id", "high"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("holding upgrade slot rhel-node-agent-slot-6 of 8 as hi/high"),
        "{out}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "resumed at once: {:?}",
        t.elapsed()
    );
    assert!(slot(&admin, 7).await.is_none(), "no second slot taken");
    for p in ["pre-upgrade", "pre-uncordon"] {
        let o = d.cli(&["phase", "run", p]);
        assert!(o.status.success(), "{p}: {}", stdout(&o));
    }
    let o = d.cli(&["phase", "run", "post-upgrade"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("released rhel-node-agent-slot-6"), "{out}");
    assert_eq!(slot(&admin, 6).await.unwrap().0, None, "slot 6 given back");
    for i in 0..6 {
        assert_eq!(
            slot(&admin, i).await.unwrap().0,
            Some(format!("busy-{i}/u")),
            "other nodes' slots are untouched"
        );
    }
}

/// A client with the agent's identity (exactly deploy/rbac.yaml).
async fn client_of(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap()
}

/// The Events about `node`: (type, reason, message).
async fn node_events(admin: &kube::Client, node: &str) -> Vec<(String, String, String)> {
    use k8s_openapi::api::core::v1::Event;
    Api::<Event>::namespaced(admin.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(node))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn a_refused_token_idle_writes_events_rbac_and_a_graceful_stop() {
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    create_node(&admin, "cred").await;
    create_node(&admin, "drifted").await;

    // A kubeconfig whose token the server refuses: reported as unauthorized, nothing written.
    let wrong = server.kubeconfig("wrong", "not-the-agent-token");
    let mut d = kube_agent(&wrong, "cred", "heartbeat = \"10s\"\n", |root| {
        hook(root, "pre-cordon", "echo 'the hook fails' >&2; exit 4");
    });
    let status = |d: &Daemon| d.status()["cluster"].as_str().unwrap_or("").to_string();
    eventually("the 401 to be reported", 30, || async {
        status(&d).starts_with("unauthorized")
    })
    .await;
    assert!(condition(&node(&admin, "cred").await).is_none());
    // The token is rotated in the same file: picked up without a restart.
    let good = server.kubeconfig("agent", AGENT_TOKEN);
    common::write_atomically(
        &d.root.join("etc/rhel-node-agent/kubeconfig"),
        &fs::read_to_string(&good).unwrap(),
    );
    eventually("the condition written with the new token", 60, || async {
        condition(&node(&admin, "cred").await).is_some_and(|c| c.status == "True")
    })
    .await;
    eventually("the status to say connected", 30, || async {
        status(&d).starts_with("connected")
    })
    .await;
    eventually("the annotations", 30, || async {
        ann(&node(&admin, "cred").await, "state").as_deref() == Some("Done")
    })
    .await;

    // Idle: the Node is written at the heartbeat only (10 s here; the default 60 s makes it one
    // write a minute). Every write changes its resourceVersion (no other writer runs here).
    let mut versions = std::collections::BTreeSet::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(25) {
        versions.insert(node(&admin, "cred").await.metadata.resource_version);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let writes = versions.len() - 1;
    assert!(
        (1..=3).contains(&writes),
        "{writes} writes of an idle node in 25 s with a 10 s heartbeat"
    );

    // A failing phase: a PhaseFailed warning Event on the Node.
    let o = d.cli(&["phase", "run", "pre-cordon", "--upgrade-id", "bad"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    eventually("a PhaseFailed event", 30, || async {
        node_events(&admin, "cred").await.iter().any(|(t, r, m)| {
            t == "Warning" && r == "PhaseFailed" && m.contains("pre-cordon of upgrade bad failed")
        })
    })
    .await;
    let reasons: Vec<String> = node_events(&admin, "cred")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(reasons.contains(&"PhaseStarted".to_string()), "{reasons:?}");

    // Mirror drift (verify mode: registries.conf lacks what the policy asks): a MirrorsDrift Event.
    let idms = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: d}\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.local/ns]\n";
    let drifted = kube_agent(&good, "drifted", "[mirrors]\nmode = \"verify\"\n", |root| {
        fs::write(
            root.join("etc/rhel-node-agent/mirrors.d/10-idms.yaml"),
            idms,
        )
        .unwrap();
    });
    eventually("a MirrorsDrift event", 30, || async {
        node_events(&admin, "drifted")
            .await
            .iter()
            .any(|(t, r, m)| t == "Warning" && r == "MirrorsDrift" && m.contains("quay.io/ns"))
    })
    .await;
    drop(drifted);

    // Exactly deploy/rbac.yaml: calls outside it are refused.
    let agent = client_of(&good).await;
    let forbidden = |r: Result<(), kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    };
    forbidden(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(agent.clone(), "rhel-node-agent")
            .list(&Default::default())
            .await
            .map(|_| ()),
        "list secrets",
    );
    forbidden(
        Api::<Node>::all(agent.clone())
            .list(&Default::default())
            .await
            .map(|_| ()),
        "list nodes",
    );
    forbidden(
        leases(&agent)
            .delete("rhel-node-agent-slot-0", &Default::default())
            .await
            .map(|_| ()),
        "delete a slot lease",
    );
    forbidden(
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(agent.clone(), "rhel-node-agent")
            .patch(
                "upgrade",
                &PatchParams::default(),
                &Patch::Merge(&json!({"data": {"maxUnavailable": "99"}})),
            )
            .await
            .map(|_| ()),
        "patch the upgrade configmap",
    );
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "sneaky"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/x:1"}]}}))
    .unwrap();
    forbidden(
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(agent.clone(), "default")
            .create(&PostParams::default(), &pod)
            .await
            .map(|_| ()),
        "create a pod",
    );

    // A graceful stop leaves the condition Unknown (AgentStopped), not a stale True.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    loop {
        if d.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the daemon did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = condition(&node(&admin, "cred").await).unwrap();
    assert_eq!(c.status, "Unknown", "{c:?}");
    assert_eq!(c.reason.as_deref(), Some("AgentStopped"));
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn the_builtin_cordon_drain_and_uncordon_run_in_the_phases() {
    use k8s_openapi::api::core::v1::Pod;
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    create_node(&admin, "bi").await;
    create_raw(
        &admin,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "work"}}),
    )
    .await;
    create_raw(
        &admin,
        "/api/v1/namespaces/work/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    )
    .await;
    let rs_owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]}});
    let ds_owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "00000000-0000-0000-0000-000000000002", "controller": true}], "labels": {"app": "ds"}}});
    running_pod(&admin, "work", "web-1", "bi", rs_owner).await;
    running_pod(&admin, "work", "ds-1", "bi", ds_owner).await;
    let _kubelet = fake_kubelet(server.kubeconfig("kubelet", ADMIN_TOKEN));
    let kc = server.kubeconfig("agent", AGENT_TOKEN);
    let d = kube_agent(
        &kc,
        "bi",
        "[upgrade]\nbuiltin_cordon_drain = true\n",
        |_| {},
    );
    let run = |phase: &str| {
        let o = d.cli(&["phase", "run", phase, "--upgrade-id", "b1"]);
        let out = stdout(&o);
        assert!(o.status.success(), "{phase}: {out}");
        out
    };
    let out = run("pre-cordon");
    assert!(out.contains("cordoned node bi (upgrade b1)"), "{out}");
    assert!(out.contains("1 pod(s) evicted"), "{out}");
    let n = node(&admin, "bi").await;
    assert_eq!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    assert_eq!(ann(&n, "cordoned-by").as_deref(), Some("b1"));
    let pods = Api::<Pod>::namespaced(admin.clone(), "work");
    assert!(
        pods.get_opt("web-1").await.unwrap().is_none(),
        "evicted and gone"
    );
    assert!(
        pods.get_opt("ds-1").await.unwrap().is_some(),
        "the DaemonSet pod stays"
    );
    run("pre-upgrade");
    assert_eq!(
        node(&admin, "bi").await.spec.unwrap().unschedulable,
        Some(true),
        "still cordoned during the upgrade"
    );
    let out = run("pre-uncordon");
    assert!(out.contains("uncordoned node bi"), "{out}");
    let n = node(&admin, "bi").await;
    assert_ne!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    assert_eq!(ann(&n, "cordoned-by"), None);
    run("post-upgrade");
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the cached kube-apiserver (scripts/test runs it in the kube stage)"]
async fn machine_health_check_pauses_are_lifted_when_the_last_holder_died() {
    let server = ApiServer::start();
    let admin = server.admin().await;
    apply_rbac(&admin).await;
    register_mhc_crd(&admin).await;
    apply_manifest(&admin, "deploy/rbac-mhc.yaml").await;
    create_raw(
        &admin,
        "/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinehealthchecks",
        json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineHealthCheck",
        "metadata": {"name": "workers"}, "spec": {"maxUnhealthy": "40%"}}),
    )
    .await;
    create_raw(
        &admin,
        "/api/v1/namespaces/rhel-node-agent/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "upgrade"}, "data": {"maxUnavailable": "2"}}),
    )
    .await;
    for n in ["k1", "k2"] {
        create_node(&admin, n).await;
    }
    let kc = server.kubeconfig("agent", AGENT_TOKEN);
    let extra = "pause_machine_health_checks = true\nlease_duration = \"4s\"\n";
    let agent = |node: &str| kube_agent_env(&kc, node, extra, &[FAST_RENEW], |_| {});
    let (mut d1, d2) = (agent("k1"), agent("k2"));
    let run = |d: &Daemon, phase: &str| {
        let o = cli_fast(d, &["phase", "run", phase]);
        let out = stdout(&o);
        assert!(o.status.success(), "{phase}: {out}");
        out
    };
    assert!(run(&d1, "pre-cordon").contains("paused MachineHealthCheck(s) workers"));
    run(&d2, "pre-cordon");
    for p in ["pre-upgrade", "pre-uncordon"] {
        run(&d2, p);
    }
    let out = run(&d2, "post-upgrade");
    assert!(
        out.contains("stay paused: another node holds an upgrade slot"),
        "{out}"
    );
    // k1 dies mid-upgrade: nobody finishes its post-upgrade. Once its Lease expires, the idle
    // agent on k2 (which keeps checking while a pause of the agent's remains) lifts the pause.
    let _ = d1.child.kill();
    let _ = d1.child.wait();
    eventually(
        "the pause lifted after the dead holder's lease expired",
        45,
        || async {
            let a = mhc_annotations(&admin, "workers").await;
            !a.contains_key("cluster.x-k8s.io/paused")
                && !a.contains_key(&format!("{PREFIX}/paused-mhc"))
        },
    )
    .await;
    drop(d2);
}
