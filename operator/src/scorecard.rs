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
//! - rates are percentages with two decimals (half-up), `0.00` with nothing to count.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::{
    api::{
        department::MigrationFigures,
        migration_workload::{MigrationPhase, MigrationWorkload, Strategy},
    },
    tenancy::hierarchy::{in_cycle, top_down},
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

impl Counts {
    fn plus(self, o: Counts) -> Counts {
        Counts {
            systems: self.systems + o.systems,
            migrated: self.migrated + o.migrated,
            integrated: self.integrated + o.integrated,
            retired: self.retired + o.retired,
        }
    }

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

/// Each department's counts over its subtree (itself and every department below it).
pub fn roll_up(
    parents: &BTreeMap<String, Option<String>>,
    own: &BTreeMap<String, Counts>,
) -> BTreeMap<String, Counts> {
    let mut total: BTreeMap<String, Counts> = BTreeMap::new();
    for dept in top_down(parents).into_iter().rev() {
        let children = parents
            .iter()
            .filter(|(c, p)| p.as_deref() == Some(dept.as_str()) && !in_cycle(parents, c))
            .fold(Counts::default(), |acc, (c, _)| {
                acc.plus(total.get(c).copied().unwrap_or_default())
            });
        let mine = own.get(&dept).copied().unwrap_or_default();
        total.insert(dept, mine.plus(children));
    }
    total
}

/// A department for the scorecard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepartmentFacts {
    pub name: String,
    pub display_name: String,
    pub parent: Option<String>,
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
}

/// The scorecard as of `at` (the end of the quarter named `quarter`): one row per department
/// with its own systems, in name order, then one row per region (root department) with its
/// whole tree.
pub fn scorecard(
    quarter: &str,
    departments: &[DepartmentFacts],
    systems: &[SystemFacts],
    at: DateTime<Utc>,
) -> Vec<ScorecardRow> {
    let parents: BTreeMap<String, Option<String>> = departments
        .iter()
        .map(|d| (d.name.clone(), d.parent.clone()))
        .collect();
    let own = own_counts(systems, at);
    let subtree = roll_up(&parents, &own);
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
    let row = |d: &DepartmentFacts, scope: Scope, c: Counts| {
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
                )
            }),
    );
    rows
}

/// CSV, UTF-8 with a BOM so that Excel opens the Chinese names, one header line.
pub fn to_csv(rows: &[ScorecardRow]) -> String {
    let mut out = String::from("\u{feff}");
    out.push_str("quarter,scope,name,display_name,region,systems,migrated,integrated,retired,migration_rate,migration_target,migration_met,integration_rate,integration_target_interim,integration_interim_met,integration_target,integration_met\n");
    for r in rows {
        let scope = match r.scope {
            Scope::Department => "department",
            Scope::Region => "region",
        };
        let fields = [
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
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
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
