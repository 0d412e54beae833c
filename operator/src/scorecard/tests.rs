use chrono::TimeZone;

use super::*;

fn t(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, day, 4, 0, 0)
        .single()
        .expect("time")
}

/// End of 2026-Q4 in Asia/Shanghai.
fn q4_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 31, 16, 0, 0)
        .single()
        .expect("time")
}

fn dept(name: &str, display: &str, parent: Option<&str>) -> DepartmentFacts {
    DepartmentFacts {
        name: name.into(),
        display_name: display.into(),
        parent: parent.map(str::to_owned),
        budget: None,
    }
}

/// `n` systems of `strategy` in `department`, done on `done` (if any).
fn systems(
    out: &mut Vec<SystemFacts>,
    department: &str,
    n: usize,
    strategy: Strategy,
    done: Option<DateTime<Utc>>,
) -> Vec<usize> {
    (0..n)
        .map(|_| {
            out.push(SystemFacts {
                department: department.into(),
                strategy,
                registered: t(3, 1),
                done_at: done,
                rolled_back_at: None,
                rejected_at: None,
            });
            out.len() - 1
        })
        .collect()
}

/// The fixture of `tests/tests/migration.rs`'s scorecard, and the docs: three departments of
/// twenty systems each, a region and two departments below it.
fn fixture() -> (Vec<DepartmentFacts>, Vec<SystemFacts>) {
    use Strategy::*;
    let departments = vec![
        dept("gx", "广西壮族自治区大数据发展局", None),
        dept("gx-finance", "广西壮族自治区财政厅", Some("gx")),
        dept("gx-tax", "国家税务总局广西壮族自治区税务局", Some("gx")),
    ];
    let mut s = Vec::new();
    let done = Some(t(11, 15));
    // gx: 12 rehosted, 2 still migrating, 4 integrated, 2 retired.
    systems(&mut s, "gx", 12, Rehost, done);
    systems(&mut s, "gx", 2, Rehost, None);
    systems(&mut s, "gx", 4, Integrate, done);
    systems(&mut s, "gx", 2, Retire, done);
    // gx-finance: 10 rehosted, 5 integrated, 3 integrating, 1 rejected, 1 rolled back.
    systems(&mut s, "gx-finance", 10, Replatform, done);
    systems(&mut s, "gx-finance", 5, Integrate, done);
    systems(&mut s, "gx-finance", 3, Integrate, None);
    let rejected = systems(&mut s, "gx-finance", 1, Rehost, None)[0];
    s[rejected].rejected_at = Some(t(4, 1));
    let rolled_back = systems(&mut s, "gx-finance", 1, Rehost, done)[0];
    s[rolled_back].rolled_back_at = Some(t(12, 1));
    // gx-tax: 4 rehosted, 10 integrated, 2 refactored only after the quarter, 4 retired.
    systems(&mut s, "gx-tax", 4, Rehost, done);
    systems(&mut s, "gx-tax", 10, Integrate, done);
    systems(
        &mut s,
        "gx-tax",
        2,
        Refactor,
        Some(t(12, 31) + chrono::Duration::days(2)),
    );
    systems(&mut s, "gx-tax", 4, Retire, done);
    assert_eq!(s.len(), 60);
    (departments, s)
}

/// scope, name, systems, migrated, integrated, retired, migration rate, met, integration rate,
/// interim met, final met.
type Row<'a> = (
    Scope,
    &'a str,
    u32,
    u32,
    u32,
    u32,
    &'a str,
    bool,
    &'a str,
    bool,
    bool,
);

#[test]
fn the_quarterly_scorecard_of_three_departments_equals_the_expected_table() {
    let (departments, systems) = fixture();
    let rows = scorecard(
        "2026-Q4",
        &departments,
        &systems,
        &BTreeMap::new(),
        q4_end(),
    );
    let table: Vec<Row> = rows
        .iter()
        .map(|r| {
            (
                r.scope,
                r.name.as_str(),
                r.systems,
                r.migrated,
                r.integrated,
                r.retired,
                r.migration_rate.as_str(),
                r.migration_met,
                r.integration_rate.as_str(),
                r.integration_interim_met,
                r.integration_met,
            )
        })
        .collect();
    use Scope::*;
    assert_eq!(
        table,
        vec![
            // 16 / 18, 4 / 18
            (
                Department, "gx", 20, 12, 4, 2, "88.89", true, "22.22", false, false
            ),
            // 15 / 19, 5 / 19: the rejected system doesn't count, the rolled-back one isn't done
            (
                Department,
                "gx-finance",
                19,
                10,
                5,
                0,
                "78.95",
                true,
                "26.32",
                false,
                false
            ),
            // 14 / 16, 10 / 16: refactored after the quarter isn't done yet
            (
                Department, "gx-tax", 20, 4, 10, 4, "87.50", true, "62.50", true, false
            ),
            // 45 / 53, 19 / 53
            (
                Region, "gx", 59, 26, 19, 6, "84.91", true, "35.85", false, false
            ),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.region == "gx" && r.quarter == "2026-Q4")
    );
    // A quarter earlier nothing was done yet.
    let q3 = scorecard(
        "2026-Q3",
        &departments,
        &systems,
        &BTreeMap::new(),
        t(9, 30),
    );
    assert!(
        q3.iter()
            .all(|r| r.migrated == 0 && r.migration_rate == "0.00")
    );
    assert_eq!(
        q3.last().map(|r| r.systems),
        Some(59),
        "the rejected one never counts"
    );
}

#[test]
fn the_csv_has_a_bom_a_header_and_one_line_per_row_and_defuses_formulas() {
    let (departments, systems) = fixture();
    let mut rows = scorecard(
        "2026-Q4",
        &departments,
        &systems,
        &BTreeMap::new(),
        q4_end(),
    );
    rows[0].display_name = "=HYPERLINK(\"x\",\"y\")".into();
    let csv = to_csv(&rows);
    assert!(csv.starts_with("\u{feff}quarter,scope,name,"));
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.contains("department,gx-tax,国家税务总局广西壮族自治区税务局,gx,20,4,10,4,87.50,75.00,true,62.50,50.00,true,75.00,false,0.00,,\n"), "{csv}");
    assert!(
        csv.contains(",\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\","),
        "{csv}"
    );
}

#[test]
fn subtree_figures_roll_up_through_the_hierarchy() {
    let (departments, systems) = fixture();
    let parents = departments
        .iter()
        .map(|d| (d.name.clone(), d.parent.clone()))
        .collect();
    let own = own_counts(&systems, q4_end());
    let up = roll_up(&parents, &own);
    assert_eq!(up["gx"].to_figures().migration_rate, "84.91");
    assert_eq!(up["gx-tax"], own["gx-tax"]);
    assert_eq!(Counts::default().to_figures().integration_rate, "0.00");
}

#[test]
fn spend_against_budget_rolls_up_to_the_region() {
    let (mut departments, systems) = fixture();
    departments[1].budget = Some(Decimal::new(1_000_000, 2)); // gx-finance ¥10,000.00
    departments[2].budget = Some(Decimal::new(500_000, 2)); // gx-tax ¥5,000.00
    let spent = BTreeMap::from([
        ("gx".to_owned(), Decimal::new(12_345, 2)),
        ("gx-finance".to_owned(), Decimal::new(812_345, 2)),
        ("gx-tax".to_owned(), Decimal::new(250_000, 2)),
    ]);
    let rows = scorecard("2026-Q4", &departments, &systems, &spent, q4_end());
    let spend: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.spent.as_str(),
                r.budget.as_str(),
                r.budget_used.as_str(),
            )
        })
        .collect();
    assert_eq!(
        spend,
        vec![
            ("gx", "123.45", "", ""),
            ("gx-finance", "8123.45", "10000.00", "81.23"),
            ("gx-tax", "2500.00", "5000.00", "50.00"),
            // 123.45 + 8,123.45 + 2,500.00 = 10,746.90; / 15,000.00 = 71.646
            ("gx", "10746.90", "15000.00", "71.65"),
        ]
    );
}
