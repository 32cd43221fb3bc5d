//! The control socket: HTTP/JSON over a Unix socket, authorised per connection by the peer's
//! credentials (SO_PEERCRED). uid 0 and the daemon's own uid may change things; members of
//! `api.read_group` may read; everyone else is refused.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::connect_info::{self, ConnectInfo};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use super::status::DaemonStatus;

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, when the kernel tells.
    pub pid: Option<i32>,
}

impl connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            // Unknown peer: treated as nobody.
            Err(_) => Peer {
                uid: u32::MAX,
                gid: u32::MAX,
                pid: None,
            },
        }
    }
}

pub use super::phases::ReconcileRequest;

/// Shared state of the socket handlers.
#[derive(Clone)]
pub struct Api {
    /// The daemon's status.
    pub status: Arc<Mutex<DaemonStatus>>,
    /// Ask the main loop to reconcile.
    pub reconcile: mpsc::Sender<ReconcileRequest>,
    /// The group whose members may read (follows configuration reloads).
    pub read_group: Arc<Mutex<String>>,
    /// Upgrade phases.
    pub phases: Arc<super::phases::PhaseService>,
}

/// What a peer may do.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    Write,
    Read,
    None,
}

fn access(peer: &Peer, read_group: &str) -> Access {
    let own = nix::unistd::geteuid().as_raw();
    if peer.uid == 0 || peer.uid == own {
        return Access::Write;
    }
    if read_group.is_empty() {
        return Access::None;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_name(read_group) else {
        return Access::None;
    };
    if peer.gid == group.gid.as_raw()
        || supplementary_groups(peer.pid).contains(&group.gid.as_raw())
    {
        return Access::Read;
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
        .ok()
        .flatten();
    match user {
        Some(u) if group.mem.contains(&u.name) || u.gid == group.gid => Access::Read,
        _ => Access::None,
    }
}

/// The peer's supplementary groups (`Groups:` of /proc/PID/status; SO_PEERCRED has the primary gid
/// only). Empty when unknown.
fn supplementary_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else { return vec![] };
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return vec![];
    };
    text.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn refuse(peer: &Peer, what: &str) -> Response {
    tracing::warn!(uid = peer.uid, pid = ?peer.pid, what, "control socket request refused");
    (
        StatusCode::FORBIDDEN,
        Json(json!({"schema": 1, "error": format!("uid {} may not {what}", peer.uid)})),
    )
        .into_response()
}

async fn status(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    let group = api.read_group.lock().map(|g| g.clone()).unwrap_or_default();
    if access(&peer, &group) == Access::None {
        return refuse(&peer, "read the status");
    }
    let st = api.status.lock().map(|s| s.clone());
    match st {
        Ok(s) => Json(s).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "status lock poisoned").into_response(),
    }
}

async fn reconcile(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    let group = api.read_group.lock().map(|g| g.clone()).unwrap_or_default();
    if access(&peer, &group) != Access::Write {
        return refuse(&peer, "trigger a reconcile");
    }
    let (tx, rx) = oneshot::channel();
    let req = ReconcileRequest {
        reply: tx,
        release_held: false,
    };
    if api.reconcile.send(req).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"schema": 1, "error": "the daemon is stopping"})),
        )
            .into_response();
    }
    match rx.await {
        Ok(v) => Json(v).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"schema": 1, "error": "the daemon is stopping"})),
        )
            .into_response(),
    }
}

fn peer_access(api: &Api, peer: &Peer) -> Access {
    let group = api.read_group.lock().map(|g| g.clone()).unwrap_or_default();
    access(peer, &group)
}

/// `POST /v1/phases/run`: start or attach to a phase; the reply is a stream of JSON lines
/// (progress events, then one `result` event). The phase does not depend on this connection.
async fn phase_run(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(trigger): Json<crate::core::phases::Trigger>,
) -> Response {
    if peer_access(&api, &peer) != Access::Write {
        return refuse(&peer, "run upgrade phases");
    }
    tracing::info!(uid = peer.uid, pid = ?peer.pid, phase = ?trigger.phase, "phase trigger");
    let rx = api.phases.trigger(trigger);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        let mut line = v.to_string();
        line.push('\n');
        Some((
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line)),
            rx,
        ))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// `GET /v1/upgrade`: the upgrade journal.
async fn upgrade_status(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    if peer_access(&api, &peer) == Access::None {
        return refuse(&peer, "read the upgrade record");
    }
    Json(api.phases.status_json()).into_response()
}

/// `POST /v1/upgrade/reset`: close the open upgrade record.
async fn upgrade_reset(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    if peer_access(&api, &peer) != Access::Write {
        return refuse(&peer, "reset the upgrade record");
    }
    match api.phases.reset() {
        Ok(closed) => Json(json!({"schema": 1, "ok": true, "closed": closed})).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(json!({"schema": 1, "ok": false, "error": e})),
        )
            .into_response(),
    }
}

/// Bind the socket (replacing a stale one) and build the router.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Anyone may connect; what they may do is decided per request from their credentials.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serve the API until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    api: Api,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/phases/run", post(phase_run))
        .route("/v1/upgrade", get(upgrade_status))
        .route("/v1/upgrade/reset", post(upgrade_reset))
        .with_state(api);
    let make = app.into_make_service_with_connect_info::<Peer>();
    if let Err(e) = axum::serve(listener, make)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "control socket server stopped");
    }
}
