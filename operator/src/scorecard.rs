//! The cloud chief's scorecard (云长制): how many of a department's legacy systems have moved
//! onto the cloud (上云率) or been merged (整合率), rolled up the department tree, per quarter.
//! Pure: the caller gives the departments and the workloads as facts.
//!
//! How a system counts (also in `docs/guides/migration.md`):
//! - **systems**: MigrationWorkloads registered by the instant, except Rejected ones;
//! - a system is **done** once it has reached Verified (Decommissioned comes after), unless it
//!   was rolled back since;
//! - done systems count by strategy: rehost / replatform / refactor as **migrated**,
//!   integrate as **integrated**, retire as **retired**;
//! - **migration rate** = (migrated + integrated) / (systems − retired): a system merged into
//!   one on the cloud is on the cloud; a retired system is neither to be moved nor counted;
//! - **integration rate** = integrated / (systems − retired);
//! - rates are percentages with two decimals (half-up), `0.00` with nothing to count;
//! - **spend** is what the department's requests were charged from 1 January to the end of the
//!   quarter, against its annual **budget** (where it has one); a region's are its tree's sums.

use std::{collections::BTreeMap, ops::Add};

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::{
    api::{
        department::MigrationFigures,
        migration_workload::{MigrationPhase, MigrationWorkload, Strategy},
    },
    tenancy::hierarchy::roll_up,
};

/// Target migration rate (非涉密信息系统迁移上云比例), percent.
pub const MIGRATION_TARGET: &str = "75.00";
/// Interim target integration rate (部门内部信息系统整合率), percent.
pub const INTEGRATION_TARGET_INTERIM: &str = "50.00";
/// Final target integration rate, percent.
pub const INTEGRATION_TARGET: &str = "75.00";

/// One registered system, as far as the scorecard is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemFacts {
    /// The Department owning the workload's namespace.
    pub department: String,
    pub strategy: Strategy,
    /// `metadata.creationTimestamp`.
    pub registered: DateTime<Utc>,
    /// When it first reached Verified (or Decommissioned).
    pub done_at: Option<DateTime<Utc>>,
    /// When it was rolled back.
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// When it was rejected.
    pub rejected_at: Option<DateTime<Utc>>,
}

impl SystemFacts {
    /// The facts of a workload in `department`, from its status history.
    pub fn of(workload: &MigrationWorkload, department: &str) -> SystemFacts {
        let history = workload
            .status
            .as_ref()
            .map(|s| s.history.as_slice())
            .unwrap_or_default();
        let first = |phases: &[MigrationPhase]| {
            history
                .iter()
                .filter(|h| phases.contains(&h.phase))
                .filter_map(|h| DateTime::parse_from_rfc3339(&h.at).ok())
                .map(|t| t.with_timezone(&Utc))
                .min()
        };
        SystemFacts {
            department: department.to_owned(),
            strategy: workload.spec.strategy,
            registered: workload
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
                .unwrap_or_default(),
            done_at: first(&[MigrationPhase::Verified, MigrationPhase::Decommissioned]),
            rolled_back_at: first(&[MigrationPhase::RolledBack]),
            rejected_at: first(&[MigrationPhase::Rejected]),
        }
    }
}

/// Counts, before rates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub systems: u32,
    pub migrated: u32,
    pub integrated: u32,
    pub retired: u32,
}

impl Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            systems: self.systems + o.systems,
            migrated: self.migrated + o.migrated,
            integrated: self.integrated + o.integrated,
            retired: self.retired + o.retired,
        }
    }
}

/// Spend against budget, in CNY.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spend {
    pub spent: Decimal,
    /// The annual budgets summed (zero when none).
    pub budget: Decimal,
    /// Whether any department counted has a budget.
    pub budgeted: bool,
}

impl Add for Spend {
    type Output = Spend;
    fn add(self, o: Spend) -> Spend {
        Spend {
            spent: self.spent + o.spent,
            budget: self.budget + o.budget,
            budgeted: self.budgeted || o.budgeted,
        }
    }
}

impl Spend {
    /// spent / budget, percent with two decimals; `None` without a budget.
    pub fn percent(&self) -> Option<Decimal> {
        if !self.budgeted {
            return None;
        }
        if self.budget.is_zero() {
            return Some(if self.spent.is_zero() {
                Decimal::new(0, 2)
            } else {
                Decimal::new(10000, 2)
            });
        }
        let mut r = (self.spent * Decimal::from(100) / self.budget)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        r.rescale(2);
        Some(r)
    }
}

impl Counts {
    /// (migrated + integrated) / (systems − retired), percent.
    pub fn migration_rate(&self) -> Decimal {
        rate(self.migrated + self.integrated, self.systems - self.retired)
    }

    /// integrated / (systems − retired), percent.
    pub fn integration_rate(&self) -> Decimal {
        rate(self.integrated, self.systems - self.retired)
    }

    /// As Department status shows them.
    pub fn to_figures(self) -> MigrationFigures {
        MigrationFigures {
            systems: self.systems,
            migrated: self.migrated,
            integrated: self.integrated,
            retired: self.retired,
            migration_rate: self.migration_rate().to_string(),
            integration_rate: self.integration_rate().to_string(),
        }
    }
}

fn rate(part: u32, whole: u32) -> Decimal {
    if whole == 0 {
        return Decimal::new(0, 2);
    }
    let mut r = (Decimal::from(part) * Decimal::from(100) / Decimal::from(whole))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    r
}

/// Each department's own counts at instant `at` (systems in its own namespaces).
pub fn own_counts(systems: &[SystemFacts], at: DateTime<Utc>) -> BTreeMap<String, Counts> {
    let by = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t <= at);
    let mut own: BTreeMap<String, Counts> = BTreeMap::new();
    for s in systems
        .iter()
        .filter(|s| s.registered <= at && !by(s.rejected_at))
    {
        let c = own.entry(s.department.clone()).or_default();
        c.systems += 1;
        if by(s.done_at) && !by(s.rolled_back_at) {
            match s.strategy {
                Strategy::Rehost | Strategy::Replatform | Strategy::Refactor => c.migrated += 1,
                Strategy::Integrate => c.integrated += 1,
                Strategy::Retire => c.retired += 1,
            }
        }
    }
    own
}

/// A department for the scorecard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepartmentFacts {
    pub name: String,
    pub display_name: String,
    pub parent: Option<String>,
    /// `spec.budget.annual`.
    pub budget: Option<Decimal>,
}

/// Whether a row is one department's own systems or a region's (a root department's whole
/// tree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Department,
    Region,
}

/// One row of the scorecard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScorecardRow {
    pub quarter: String,
    pub scope: Scope,
    pub name: String,
    pub display_name: String,
    /// The root department above (for a region row, itself).
    pub region: String,
    pub systems: u32,
    pub migrated: u32,
    pub integrated: u32,
    pub retired: u32,
    pub migration_rate: String,
    pub migration_target: String,
    pub migration_met: bool,
    pub integration_rate: String,
    pub integration_target_interim: String,
    pub integration_interim_met: bool,
    pub integration_target: String,
    pub integration_met: bool,
    /// Charged from 1 January to the end of the quarter, CNY.
    pub spent: String,
    /// The annual budget (a region's: its tree's budgets summed); empty without one.
    pub budget: String,
    /// spent / budget, percent; empty without a budget.
    pub budget_used: String,
}

/// The scorecard as of `at` (the end of the quarter named `quarter`): one row per department
/// with its own systems and `spent` (its charges from 1 January to `at`), in name order, then
/// one row per region (root department) with its whole tree.
pub fn scorecard(
    quarter: &str,
    departments: &[DepartmentFacts],
    systems: &[SystemFacts],
    spent: &BTreeMap<String, Decimal>,
    at: DateTime<Utc>,
) -> Vec<ScorecardRow> {
    let parents: BTreeMap<String, Option<String>> = departments
        .iter()
        .map(|d| (d.name.clone(), d.parent.clone()))
        .collect();
    let own = own_counts(systems, at);
    let subtree = roll_up(&parents, &own);
    let own_spend: BTreeMap<String, Spend> = departments
        .iter()
        .map(|d| {
            let spend = Spend {
                spent: spent.get(&d.name).copied().unwrap_or_default(),
                budget: d.budget.unwrap_or_default(),
                budgeted: d.budget.is_some(),
            };
            (d.name.clone(), spend)
        })
        .collect();
    let subtree_spend = roll_up(&parents, &own_spend);
    let region_of = |name: &str| {
        let mut at = name.to_owned();
        for _ in 0..parents.len() {
            match parents.get(&at).cloned().flatten() {
                Some(p) if parents.contains_key(&p) => at = p,
                _ => break,
            }
        }
        at
    };
    let row = |d: &DepartmentFacts, scope: Scope, c: Counts, spend: Spend| {
        let (m, i) = (c.migration_rate(), c.integration_rate());
        let target = |t: &str| t.parse::<Decimal>().unwrap_or_default();
        ScorecardRow {
            quarter: quarter.to_owned(),
            scope,
            name: d.name.clone(),
            display_name: d.display_name.clone(),
            region: region_of(&d.name),
            systems: c.systems,
            migrated: c.migrated,
            integrated: c.integrated,
            retired: c.retired,
            migration_rate: m.to_string(),
            migration_target: MIGRATION_TARGET.to_owned(),
            migration_met: m >= target(MIGRATION_TARGET),
            integration_rate: i.to_string(),
            integration_target_interim: INTEGRATION_TARGET_INTERIM.to_owned(),
            integration_interim_met: i >= target(INTEGRATION_TARGET_INTERIM),
            integration_target: INTEGRATION_TARGET.to_owned(),
            integration_met: i >= target(INTEGRATION_TARGET),
            spent: format!("{:.2}", spend.spent.round_dp(2)),
            budget: if spend.budgeted {
                format!("{:.2}", spend.budget.round_dp(2))
            } else {
                String::new()
            },
            budget_used: spend.percent().map(|p| p.to_string()).unwrap_or_default(),
        }
    };
    let mut sorted: Vec<&DepartmentFacts> = departments.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows: Vec<ScorecardRow> = sorted
        .iter()
        .map(|d| {
            row(
                d,
                Scope::Department,
                own.get(&d.name).copied().unwrap_or_default(),
                own_spend.get(&d.name).copied().unwrap_or_default(),
            )
        })
        .collect();
    rows.extend(
        sorted
            .iter()
            .filter(|d| d.parent.as_ref().is_none_or(|p| !parents.contains_key(p)))
            .map(|d| {
                row(
                    d,
                    Scope::Region,
                    subtree.get(&d.name).copied().unwrap_or_default(),
                    subtree_spend.get(&d.name).copied().unwrap_or_default(),
                )
            }),
    );
    rows
}

/// The columns of the CSV and XLSX exports.
pub const COLUMNS: [&str; 20] = [
    "quarter",
    "scope",
    "name",
    "display_name",
    "region",
    "systems",
    "migrated",
    "integrated",
    "retired",
    "migration_rate",
    "migration_target",
    "migration_met",
    "integration_rate",
    "integration_target_interim",
    "integration_interim_met",
    "integration_target",
    "integration_met",
    "spent",
    "budget",
    "budget_used",
];

/// The columns that hold numbers (written as numbers in XLSX).
const NUMERIC: [usize; 11] = [5, 6, 7, 8, 9, 10, 12, 13, 15, 17, 18];

/// A row's cells, in [`COLUMNS`] order.
fn cells(r: &ScorecardRow) -> [String; 20] {
    let scope = match r.scope {
        Scope::Department => "department",
        Scope::Region => "region",
    };
    [
        r.quarter.clone(),
        scope.to_owned(),
        r.name.clone(),
        r.display_name.clone(),
        r.region.clone(),
        r.systems.to_string(),
        r.migrated.to_string(),
        r.integrated.to_string(),
        r.retired.to_string(),
        r.migration_rate.clone(),
        r.migration_target.clone(),
        r.migration_met.to_string(),
        r.integration_rate.clone(),
        r.integration_target_interim.clone(),
        r.integration_interim_met.to_string(),
        r.integration_target.clone(),
        r.integration_met.to_string(),
        r.spent.clone(),
        r.budget.clone(),
        r.budget_used.clone(),
    ]
}

/// CSV, UTF-8 with a BOM so that Excel opens the Chinese names, one header line.
pub fn to_csv(rows: &[ScorecardRow]) -> String {
    let mut out = String::from("\u{feff}");
    out.push_str(&COLUMNS.join(","));
    out.push('\n');
    for r in rows {
        let line: Vec<String> = cells(r).iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// An XLSX workbook (one sheet `Scorecard`), as bytes: counts, rates and money as numbers,
/// a budget's empty cells left empty.
pub fn to_xlsx(rows: &[ScorecardRow]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("Scorecard")?;
    let bold = Format::new().set_bold();
    let two = Format::new().set_num_format("0.00");
    for (col, name) in COLUMNS.iter().enumerate() {
        sheet.write_string_with_format(0, col as u16, *name, &bold)?;
    }
    for (n, r) in rows.iter().enumerate() {
        let row = n as u32 + 1;
        for (col, cell) in cells(r).iter().enumerate() {
            let number = NUMERIC
                .contains(&col)
                .then(|| cell.parse::<f64>().ok())
                .flatten();
            match number {
                Some(v) if cell.contains('.') => {
                    sheet.write_number_with_format(row, col as u16, v, &two)?;
                }
                Some(v) => {
                    sheet.write_number(row, col as u16, v)?;
                }
                None if cell.is_empty() => {}
                None => {
                    sheet.write_string(row, col as u16, cell)?;
                }
            }
        }
    }
    book.save_to_buffer()
}

/// RFC 4180 quoting; a leading `=`, `+`, `-` or `@` is prefixed with `'` so a spreadsheet
/// never runs a display name as a formula.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests;
