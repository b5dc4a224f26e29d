//! `homelab-autopilot crd`: print the CRDs, or write them into `crds/` and the chart.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::generate::{all_crds_yaml, generated_files};

/// Arguments of `homelab-autopilot crd`.
#[derive(clap::Args, Debug)]
pub struct CrdArgs {
    /// Write crds/<plural>.autopilot.homelab.dev.yaml and the same CRDs into
    /// charts/homelab-autopilot/templates/crds/ instead of printing them.
    #[arg(long)]
    pub write: bool,
    /// Repository root to write into (with --write).
    #[arg(long, default_value = ".", requires = "write")]
    pub dir: PathBuf,
}

/// Runs `crd`: prints every CRD as one multi-document YAML stream, or writes the files.
pub fn run(args: CrdArgs) -> anyhow::Result<ExitCode> {
    if !args.write {
        let yaml = all_crds_yaml().context("rendering the CRDs as YAML")?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(yaml.as_bytes()).context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.dir.is_dir() {
        anyhow::bail!(
            "--dir {}: no such directory (point it at the repository root; it is not created)",
            args.dir.display()
        );
    }
    for file in generated_files().context("rendering the CRDs as YAML")? {
        let path = args.dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &file.content).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", file.path.display());
    }
    Ok(ExitCode::SUCCESS)
}
