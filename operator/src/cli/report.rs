//! `yunzhang report …`, read with the caller's kubeconfig (so RBAC decides what they may see).
//!
//! `report settlement`: settlement figures for finance, from the cluster, as CSV (UTF-8
//! with BOM), JSON or XLSX. With `--report NAME` the figures are that report's (its stored lines
//! once finalized); with `--period` they are a finalized all-scope report of that period when one
//! exists, else settled now from the requests' metering and the PriceBooks.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::Datelike;
use chrono_tz::Asia::Shanghai;
use kube::{Api, ResourceExt, api::ListParams};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

use crate::api::settlement_report::{ChecksumAlgorithm, Scope};
use crate::api::{Department, MigrationWorkload};
use crate::billing::{self, BillingConfig, Period, money::parse_money};
use crate::reports::{self, Format};
use crate::scorecard::{DepartmentFacts, SystemFacts, scorecard, to_csv, to_xlsx};

/// `yunzhang report …`
#[derive(clap::Subcommand, Debug)]
pub enum ReportCommand {
    /// Settlement (结算) of a period: every charged line, with totals.
    Settlement(SettlementArgs),
    /// The quarterly scorecard (云长制季度报告): systems, migrated, integrated, retired and the
    /// migration (上云率) and integration (整合率) rates per department and per region, against
    /// the targets (75 %; 50 % and 75 %), with spend from 1 January against the annual budget.
    Scorecard {
        /// The quarter, e.g. 2026-Q4; figures are as of its end (Asia/Shanghai).
        #[arg(long)]
        quarter: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Write to this file instead of standard output (XLSX is binary).
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["period", "report"])))]
pub struct SettlementArgs {
    /// The period: a month `2026-10`, a quarter `2026-Q4`, or `<from>..<to>` (RFC 3339).
    #[arg(long)]
    pub period: Option<Period>,
    /// A SettlementReport by name (its stored lines when finalized).
    #[arg(long)]
    pub report: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Only this department's lines.
    #[arg(long)]
    pub department: Option<String>,
    /// Only these providers (with --period; may be given more than once).
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Entry point; the exit code.
pub fn main(command: ReportCommand) -> i32 {
    super::exit_code(run(command))
}

async fn run(command: ReportCommand) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API server (is KUBECONFIG set?)")?;
    let args = match command {
        ReportCommand::Settlement(args) => args,
        ReportCommand::Scorecard {
            quarter,
            format,
            output,
        } => {
            let bytes = scorecard_report(&client, &quarter, format).await?;
            return write_out(output.as_deref(), &bytes);
        }
    };
    let doc = match (&args.report, &args.period) {
        (Some(name), _) => reports::of_report(&client, name, None).await?,
        (None, Some(period)) => {
            let finalized = if args.providers.is_empty() {
                reports::finalized_for(&client, period).await?
            } else {
                None
            };
            match finalized {
                Some(name) => {
                    eprintln!("using the lines of finalized SettlementReport {name}");
                    reports::of_report(&client, &name, None).await?
                }
                None => {
                    let scope = Scope {
                        departments: vec![],
                        providers: args.providers.clone(),
                    };
                    reports::compute(&client, period, &scope, ChecksumAlgorithm::default()).await?
                }
            }
        }
        (None, None) => anyhow::bail!("give --period or --report"),
    };
    let doc = match &args.department {
        Some(d) => reports::for_department(doc, d),
        None => doc,
    };
    let names = reports::display_names(&client).await.unwrap_or_default();
    let bytes = reports::render(&doc, args.format, &names)?;
    write_out(args.output.as_deref(), &bytes)?;
    eprintln!(
        "{} lines, total {} CNY, {} ({})",
        doc.line_count, doc.total, doc.checksum, doc.source
    );
    for u in &doc.unpriced {
        eprintln!(
            "warning: left out {} item {} ({} {}): {}",
            u.request, u.item, u.provider, u.sku, u.reason
        );
    }
    Ok(())
}

/// `bytes` to `path`, or to standard output.
fn write_out(path: Option<&std::path::Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
        }
        None => Ok(std::io::stdout().write_all(bytes)?),
    }
}

async fn scorecard_report(
    client: &kube::Client,
    quarter: &str,
    format: Format,
) -> anyhow::Result<Vec<u8>> {
    let bounds = Period::parse_quarter(quarter)
        .and_then(|p| p.bounds(Shanghai))
        .map_err(|e| anyhow::anyhow!("--quarter: {e}"))?;
    let end = bounds.end;
    // Spend from 1 January (local) to the quarter's end, settled as a report would.
    let year = bounds.start.with_timezone(&Shanghai).year();
    let year_to_date = Period::Range {
        from: billing::budget::year_period(year, &BillingConfig::default())
            .and_then(|p| p.bounds(Shanghai))
            .map_err(|e| anyhow::anyhow!("--quarter: {e}"))?
            .start,
        to: end,
    };
    let settled = reports::compute(
        client,
        &year_to_date,
        &Scope::default(),
        ChecksumAlgorithm::default(),
    )
    .await
    .context("settling the year to date (finance viewers and platform admins may)")?;
    let mut spent: BTreeMap<String, Decimal> = BTreeMap::new();
    for line in &settled.lines {
        *spent.entry(line.department.to_string()).or_default() += line.amount;
    }
    let departments = Api::<Department>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Departments")?
        .items;
    let workloads = Api::<MigrationWorkload>::all(client.clone())
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
            budget: d
                .spec
                .budget
                .as_ref()
                .and_then(|b| parse_money("spec.budget.annual", &b.annual).ok()),
        })
        .collect();
    let rows = scorecard(quarter, &facts, &systems, &spent, end);
    Ok(match format {
        Format::Json => (serde_json::to_string_pretty(&rows)? + "\n").into_bytes(),
        Format::Csv => to_csv(&rows).into_bytes(),
        Format::Xlsx => to_xlsx(&rows)?,
    })
}
