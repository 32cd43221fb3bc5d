//! systemd over its D-Bus API (zbus + zbus_systemd, systemd1): reload units the way the
//! machine-config-daemon does after a registries change (`systemctl reload crio`), and check that
//! they are still running afterwards. Only methods systemd 239 (RHEL 8) has are called: GetUnit,
//! Subscribe, ReloadUnit, the Unit ActiveState property and the JobRemoved signal.

use std::time::Duration;

use futures_util::StreamExt;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

/// systemd adapter errors, each naming the unit.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// The bus could not be reached.
    #[error("system bus {address}: {source}")]
    Bus {
        /// The address (or "system bus").
        address: String,
        /// The error.
        source: zbus::Error,
    },
    /// A D-Bus call failed.
    #[error("{unit}: {what}: {source}")]
    Call {
        /// The unit.
        unit: String,
        /// The call.
        what: &'static str,
        /// The error.
        source: zbus::Error,
    },
    /// A job finished with a result other than `done`.
    #[error("{unit}: {what} job ended with result {result:?}")]
    Job {
        /// The unit.
        unit: String,
        /// The call.
        what: &'static str,
        /// The job result.
        result: String,
    },
    /// The reload job did not finish in time.
    #[error("{unit}: reload did not finish within {0:?}", .timeout)]
    Timeout {
        /// The unit.
        unit: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// What happened to one unit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitReload {
    /// The unit.
    pub unit: String,
    /// `reloaded`, `skipped (inactive)`, `skipped (not loaded)` or `failed (<job result>)`.
    pub outcome: String,
    /// `ActiveState` after the reload (or when skipped).
    pub active_state: String,
}

impl UnitReload {
    /// A reload job was run (the unit was active), as opposed to skipped.
    pub fn attempted(&self) -> bool {
        self.outcome.starts_with("reloaded") || self.outcome.starts_with("failed")
    }
    /// True when the unit was active, we reloaded it, and it is not active any more.
    pub fn left_inactive(&self) -> bool {
        self.attempted() && self.active_state != "active" && self.active_state != "reloading"
    }
}

/// Connect to the system bus, or to `address` (tests, nspawn containers).
pub async fn connect(address: Option<&str>) -> Result<zbus::Connection, SystemdError> {
    let label = address.unwrap_or("system bus").to_string();
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a),
        None => zbus::connection::Builder::system(),
    };
    builder.build().await.map_err(|source| SystemdError::Bus {
        address: label,
        source,
    })
}

fn call<'a>(unit: &'a str, what: &'static str) -> impl FnOnce(zbus::Error) -> SystemdError + 'a {
    move |source| SystemdError::Call {
        unit: unit.to_string(),
        what,
        source,
    }
}

/// Reload `unit` if it is active (`ReloadUnit`, mode `replace`), wait for the job to finish, and
/// read its `ActiveState` afterwards.
pub async fn reload_if_active(
    conn: &zbus::Connection,
    unit: &str,
    timeout: Duration,
) -> Result<UnitReload, SystemdError> {
    let manager = ManagerProxy::new(conn)
        .await
        .map_err(call(unit, "Manager proxy"))?;
    let path = match manager.get_unit(unit.to_string()).await {
        Ok(p) => p,
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
        {
            return Ok(UnitReload {
                unit: unit.into(),
                outcome: "skipped (not loaded)".into(),
                active_state: "inactive".into(),
            })
        }
        Err(e) => return Err(call(unit, "GetUnit")(e)),
    };
    let unit_proxy = UnitProxy::new(conn, path)
        .await
        .map_err(call(unit, "Unit proxy"))?;
    let state = unit_proxy
        .active_state()
        .await
        .map_err(call(unit, "ActiveState"))?;
    if state != "active" {
        return Ok(UnitReload {
            unit: unit.into(),
            outcome: "skipped (inactive)".into(),
            active_state: state,
        });
    }
    let result = run_job(&manager, unit, "ReloadUnit", timeout, |m| async move {
        m.reload_unit(unit.to_string(), "replace".into()).await
    })
    .await?;
    // CRI-O reloads asynchronously (SIGHUP): watch the unit for a second after the job, so a
    // reload that makes it exit is seen.
    let mut after = String::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = unit_proxy
            .active_state()
            .await
            .map_err(call(unit, "ActiveState"))?;
        if after != "active" && after != "reloading" {
            break;
        }
    }
    let outcome = if result == "done" {
        "reloaded".to_string()
    } else {
        format!("failed ({result})")
    };
    Ok(UnitReload {
        unit: unit.into(),
        outcome,
        active_state: after,
    })
}

/// Start `unit` (`StartUnit`, mode `replace`) and wait for the job; returns its result (`done`, …).
/// Used after a rollback, when the reload of a bad configuration left the unit stopped.
pub async fn start_unit(
    conn: &zbus::Connection,
    unit: &str,
    timeout: Duration,
) -> Result<String, SystemdError> {
    let manager = ManagerProxy::new(conn)
        .await
        .map_err(call(unit, "Manager proxy"))?;
    run_job(&manager, unit, "StartUnit", timeout, |m| async move {
        m.start_unit(unit.to_string(), "replace".into()).await
    })
    .await
}

/// Stop `unit` (`StopUnit`, mode `replace`) and wait for the job; a unit systemd does not know is
/// already stopped. Used for a hook's transient unit, whose stop ends its whole cgroup.
pub async fn stop_unit(
    conn: &zbus::Connection,
    unit: &str,
    timeout: Duration,
) -> Result<String, SystemdError> {
    let manager = ManagerProxy::new(conn)
        .await
        .map_err(call(unit, "Manager proxy"))?;
    let result = run_job(&manager, unit, "StopUnit", timeout, |m| async move {
        m.stop_unit(unit.to_string(), "replace".into()).await
    })
    .await;
    match result {
        Err(SystemdError::Call {
            source: zbus::Error::MethodError(name, _, _),
            ..
        }) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => Ok("done".into()),
        r => r,
    }
}

/// `Subscribe()` to the manager's signals; a connection that already did is fine (systemd answers
/// a second call with `AlreadySubscribed`).
pub async fn subscribe(manager: &ManagerProxy<'_>) -> zbus::Result<()> {
    match manager.subscribe().await {
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Queue a job with `queue` and wait for its `JobRemoved`; returns the job result (`done`,
/// `failed`, …). Subscribes and listens before queueing, so the signal cannot be missed.
async fn run_job<'m, F, Fut>(
    manager: &'m ManagerProxy<'m>,
    unit: &str,
    what: &'static str,
    timeout: Duration,
    queue: F,
) -> Result<String, SystemdError>
where
    F: FnOnce(&'m ManagerProxy<'m>) -> Fut,
    Fut: std::future::Future<Output = zbus::Result<zbus::OwnedObjectPath>>,
{
    subscribe(manager).await.map_err(call(unit, "Subscribe"))?;
    let mut removed = manager
        .receive_job_removed()
        .await
        .map_err(call(unit, "JobRemoved"))?;
    let job = queue(manager).await.map_err(call(unit, what))?;
    let wait = async {
        while let Some(signal) = removed.next().await {
            if let Ok(args) = signal.args() {
                if args.job.as_str() == job.as_str() {
                    return args.result.to_string();
                }
            }
        }
        "unknown".to_string()
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| SystemdError::Timeout {
            unit: unit.into(),
            timeout,
        })
}
