//! `yunzhang report …`: reports read with the caller's kubeconfig (so RBAC decides what they
//! may see). Today: `report scorecard`, the cloud chief's quarterly migration scorecard.

use anyhow::Context as _;
use chrono_tz::Asia::Shanghai;
use kube::{Api, Client, Config, ResourceExt, api::ListParams};

use crate::{
    api::{Department, MigrationWorkload},
    billing::Period,
    scorecard::{DepartmentFacts, SystemFacts, scorecard, to_csv},
};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// UTF-8 with a BOM (Excel opens the Chinese names).
    Csv,
    Json,
    /// Not in this build: no XLSX writer crate is a dependency yet; use csv.
    Xlsx,
}

/// `report` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ReportCommand {
    /// The quarterly scorecard (云长制季度报告): systems, migrated, integrated, retired and the
    /// migration (上云率) and integration (整合率) rates per department and per region, against
    /// the targets (75 %; 50 % and 75 %).
    Scorecard {
        /// The quarter, e.g. 2026-Q4; figures are as of its end (Asia/Shanghai).
        #[arg(long)]
        quarter: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
    },
}

pub fn main(command: ReportCommand) -> anyhow::Result<()> {
    crate::run::install_crypto_provider();
    let text = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(command))?;
    print!("{text}");
    Ok(())
}

async fn run(command: ReportCommand) -> anyhow::Result<String> {
    let ReportCommand::Scorecard { quarter, format } = command;
    if format == Format::Xlsx {
        anyhow::bail!(
            "--format xlsx is not available in this build (no XLSX writer among its dependencies): use --format csv, which Excel opens"
        );
    }
    let end = Period::parse_quarter(&quarter)
        .and_then(|p| p.bounds(Shanghai))
        .map_err(|e| anyhow::anyhow!("--quarter: {e}"))?
        .end;
    let config = Config::infer()
        .await
        .context("no Kubernetes configuration: set KUBECONFIG or the current context")?;
    let client = Client::try_from(config)?;
    let departments = Api::<Department>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Departments")?
        .items;
    let workloads = Api::<MigrationWorkload>::all(client)
        .list(&ListParams::default())
        .await
        .context("listing MigrationWorkloads (finance viewers and platform admins may)")?
        .items;
    let systems: Vec<SystemFacts> = workloads
        .iter()
        .filter_map(|mw| {
            let dept = Department::owner_of(&departments, &mw.namespace()?)?;
            Some(SystemFacts::of(mw, &dept.name_any()))
        })
        .collect();
    let facts: Vec<DepartmentFacts> = departments
        .iter()
        .map(|d| DepartmentFacts {
            name: d.name_any(),
            display_name: d.spec.display_name.clone(),
            parent: d.spec.parent.clone(),
        })
        .collect();
    let rows = scorecard(&quarter, &facts, &systems, end);
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&rows)? + "\n",
        _ => to_csv(&rows),
    })
}
