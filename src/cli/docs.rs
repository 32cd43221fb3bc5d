//! `rhel-node-agent generate-docs --out DIR` (hidden): the man pages and shell completions the
//! package ships, generated from the clap definitions themselves so they can never drift from the
//! command line. `scripts/build-rpm` runs it; the pages and completions are not committed.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};

use super::{CliError, Exit};

/// Where to write the generated files.
#[derive(Debug, Args)]
pub struct GenerateDocsArgs {
    /// Output directory: `man1/` (one page per command and subcommand) and `completions/`
    /// (`rhel-node-agent.bash`, `_rhel-node-agent` for zsh) are created under it.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Write the man pages and completions; prints one line per file written.
pub fn run(a: &GenerateDocsArgs) -> Result<Exit, CliError> {
    let written = generate(&a.out).map_err(|e| {
        CliError::failed(format!(
            "cannot generate documentation in {}: {e}",
            a.out.display()
        ))
    })?;
    for f in written {
        println!("{}", f.display());
    }
    Ok(Exit::Ok)
}

/// Generate everything under `out`; returns the files now in `man1/` and `completions/`, sorted.
pub fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man = out.join("man1");
    let comp = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let mut cmd = super::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let name = cmd.get_name().to_string();
    clap_complete::generate_to(clap_complete::Shell::Bash, &mut cmd, &name, &comp)?;
    clap_complete::generate_to(clap_complete::Shell::Zsh, &mut cmd, &name, &comp)?;
    let mut files = Vec::new();
    for dir in [&man, &comp] {
        for e in std::fs::read_dir(dir)? {
            files.push(e?.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_command_and_subcommand_and_both_completions() {
        let d = tempfile::tempdir().unwrap();
        let files = generate(d.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "rhel-node-agent.1",
            "rhel-node-agent-mirrors.1",
            "rhel-node-agent-mirrors-apply.1",
            "rhel-node-agent-phase-run.1",
            "rhel-node-agent-firewall-status.1",
            "rhel-node-agent-node-drain.1",
            "rhel-node-agent.bash",
            "_rhel-node-agent",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("generate-docs")),
            "the hidden command gets no page: {names:?}"
        );
        let apply =
            std::fs::read_to_string(d.path().join("man1/rhel-node-agent-mirrors-apply.1")).unwrap();
        assert!(apply.contains("registries\\-conf"), "{apply}");
        let bash =
            std::fs::read_to_string(d.path().join("completions/rhel-node-agent.bash")).unwrap();
        assert!(bash.contains("rollback"), "subcommands completed");
    }
}
