//! `node cordon | node uncordon [--override-admin-cordon] | node drain [--dry-run]`: the cluster
//! side of the phases by hand, with the same ownership rules the built-ins follow (the agent only
//! lifts a cordon it made). Talks to the API server with `kubernetes.kubeconfig` directly.

use clap::Subcommand;

use super::{CliError, Exit, Global, OutputFormat};
use crate::adapters::drain::DrainOptions;
use crate::adapters::kube::{Cluster, CordonOutcome, KubeError};

/// `node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Cordon this node, recording that the agent did it.
    Cordon,
    /// Uncordon this node if the agent cordoned it.
    Uncordon {
        /// Also lift a cordon someone else made.
        #[arg(long)]
        override_admin_cordon: bool,
    },
    /// Drain this node (evictions that respect PodDisruptionBudgets).
    Drain {
        /// List what would be evicted; evict nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn kube_err(e: KubeError) -> CliError {
    match e {
        KubeError::Refused(m) => CliError::refused(m),
        KubeError::Config { .. } => CliError::invalid(e),
        other => CliError::failed(other),
    }
}

/// Run `node …`.
pub fn run(cmd: &NodeCommand, g: &Global) -> Result<Exit, CliError> {
    let s = g.settings()?;
    let node = crate::runtime::phases::node_name(&s);
    let upgrade_id =
        crate::runtime::phases::load_journal(&crate::runtime::phases::journal_path(&s.state_dir))
            .ok()
            .and_then(|j| j.open.map(|r| r.id))
            .unwrap_or_else(|| "manual".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::failed)?;
    let outcome = rt.block_on(async {
        let Some(c) = Cluster::connect(&s, &node).await.map_err(kube_err)? else {
            return Ok::<_, CliError>(None);
        };
        let r = match cmd {
            NodeCommand::Cordon => c.cordon(&upgrade_id).await,
            NodeCommand::Uncordon {
                override_admin_cordon,
            } => c.uncordon(*override_admin_cordon).await,
            NodeCommand::Drain { dry_run } => {
                let d = &s.kubernetes.drain;
                let opts = DrainOptions {
                    timeout: d.timeout,
                    concurrency: d.concurrency as usize,
                    force: d.force,
                    delete_emptydir_data: d.delete_emptydir_data,
                    escalate_after_timeout: d.escalate_after_timeout,
                    dry_run: *dry_run,
                };
                let r = c.drain(&opts).await.map_err(kube_err)?;
                let mut lines = Vec::new();
                for p in &r.would_evict {
                    lines.push(format!("would evict {p}"));
                }
                for p in &r.evicted {
                    lines.push(format!("evicted {p}"));
                }
                for p in &r.deleted {
                    lines.push(format!("deleted {p} (after the timeout)"));
                }
                for p in &r.left {
                    lines.push(format!("left {p}"));
                }
                lines.push(if *dry_run {
                    format!("dry run: nothing was evicted from node {node}")
                } else {
                    format!("node {node} drained")
                });
                return Ok(Some(if r.evicted.is_empty() && r.deleted.is_empty() {
                    CordonOutcome::Unchanged(lines.join("\n"))
                } else {
                    CordonOutcome::Changed(lines.join("\n"))
                }));
            }
        };
        r.map(Some).map_err(kube_err)
    })?;
    let msg = match &outcome {
        None => "skipped: no cluster configured (kubernetes.kubeconfig is empty)".to_string(),
        Some(o) => o.message().to_string(),
    };
    if g.format() == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({"schema": 1, "node": node,
                "changed": matches!(outcome, Some(CordonOutcome::Changed(_))), "message": msg})
        );
    } else {
        println!("{msg}");
    }
    Ok(Exit::Ok)
}
