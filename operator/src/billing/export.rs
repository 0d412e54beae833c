//! Settlement exports for finance: CSV, JSON and XLSX, from lines in canonical order.
//!
//! - Columns (CSV and XLSX, in this order): `department`, `departmentName` (the Department's
//!   `spec.displayName`, e.g. 自治区财政厅; empty when unknown), `provider`, `request`, `item`,
//!   `sku`, `type`, `from`, `to` (RFC 3339, UTC), `quantity`, `unitPrice`, `unit`,
//!   `discountPercent`, `amount` (two decimals, yuan).
//! - CSV is UTF-8 **with a byte-order mark**, so Excel opens Chinese names correctly, `\r\n` line
//!   ends and RFC 4180 quoting. It has the lines only, no total row (sum the `amount` column).
//! - XLSX has one sheet `Settlement`: the header, the lines (numbers as numbers with two
//!   decimals) and a last row `total` with the sum of the lines.
//! - JSON is [`SettlementDocument`]: period, scope, total, currency, line count, checksum, lines.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use super::SettlementLine;
use super::money::round_fen;

/// The column names, in order.
pub const COLUMNS: [&str; 14] = [
    "department",
    "departmentName",
    "provider",
    "request",
    "item",
    "sku",
    "type",
    "from",
    "to",
    "quantity",
    "unitPrice",
    "unit",
    "discountPercent",
    "amount",
];

/// The UTF-8 byte-order mark that starts every CSV export.
pub const BOM: &str = "\u{feff}";

/// A report as a JSON document.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementDocument {
    /// The period as given: `2026-10`, `2026-Q4` or `<from>..<to>`.
    pub period: String,
    /// Departments included; all when empty.
    pub departments: Vec<String>,
    /// Providers included; all when empty.
    pub providers: Vec<String>,
    /// Sum of the lines, two decimals.
    pub total: String,
    pub currency: &'static str,
    pub line_count: usize,
    /// `sha256:<hex>` over the canonical lines.
    pub checksum: String,
    /// Where the lines come from: `finalized report <name>` or `computed <instant>`.
    pub source: String,
    pub lines: Vec<SettlementLine>,
    /// Metered items left out of the lines because they have no price (overlapping PriceBooks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<crate::api::settlement_report::UnpricedItem>,
}

fn money(d: Decimal) -> String {
    format!("{:.2}", round_fen(d))
}

/// The cells of one line, as text, in [`COLUMNS`] order.
pub fn cells(line: &SettlementLine, names: &BTreeMap<String, String>) -> [String; 14] {
    [
        line.department.to_string(),
        names.get(&*line.department).cloned().unwrap_or_default(),
        line.provider.to_string(),
        line.request.to_string(),
        line.item.to_string(),
        line.sku.to_string(),
        line.resource_type.as_str().to_owned(),
        line.from.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        line.to.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        money(line.quantity),
        money(line.unit_price),
        line.unit_label().to_owned(),
        money(line.discount_percent),
        money(line.amount),
    ]
}

/// CSV with a BOM; `names` maps department names to display names.
pub fn to_csv(lines: &[SettlementLine], names: &BTreeMap<String, String>) -> String {
    let mut out = String::from(BOM);
    let row = |out: &mut String, cells: &[String]| {
        let quoted: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
        out.push_str(&quoted.join(","));
        out.push_str("\r\n");
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    row(&mut out, &header);
    for line in lines {
        row(&mut out, &cells(line, names));
    }
    out
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// An XLSX workbook (one sheet `Settlement`), as bytes.
pub fn to_xlsx(
    lines: &[SettlementLine],
    names: &BTreeMap<String, String>,
) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("Settlement")?;
    let bold = Format::new().set_bold();
    let two = Format::new().set_num_format("0.00");
    for (col, name) in COLUMNS.iter().enumerate() {
        sheet.write_string_with_format(0, col as u16, *name, &bold)?;
    }
    let numeric = [9usize, 10, 12, 13];
    let mut total = Decimal::ZERO;
    for (n, line) in lines.iter().enumerate() {
        let row = n as u32 + 1;
        for (col, cell) in cells(line, names).iter().enumerate() {
            if numeric.contains(&col) {
                let value = match col {
                    9 => line.quantity,
                    10 => line.unit_price,
                    12 => line.discount_percent,
                    _ => line.amount,
                };
                sheet.write_number_with_format(
                    row,
                    col as u16,
                    round_fen(value).to_f64().unwrap_or_default(),
                    &two,
                )?;
            } else {
                sheet.write_string(row, col as u16, cell)?;
            }
        }
        total += line.amount;
    }
    let last = lines.len() as u32 + 1;
    sheet.write_string_with_format(last, 0, "total", &bold)?;
    sheet.write_number_with_format(last, 13, total.to_f64().unwrap_or_default(), &two)?;
    book.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResourceType;
    use crate::api::price_book::PriceUnit;

    fn line(dept: &str, amount: &str) -> SettlementLine {
        SettlementLine {
            department: dept.into(),
            provider: "aliyun-gov".into(),
            request: "ns/portal".into(),
            item: "web".into(),
            sku: "ecs.c2.large".into(),
            resource_type: ResourceType::Ecs,
            from: "2026-10-01T00:00:00Z".parse().unwrap(),
            to: "2026-10-02T12:00:00Z".parse().unwrap(),
            quantity: Decimal::from(2),
            unit_price: "0.8".parse().unwrap(),
            unit: PriceUnit::Hour,
            per: None,
            discount_percent: Decimal::ZERO,
            amount: amount.parse().unwrap(),
        }
    }

    #[test]
    fn csv_starts_with_a_bom_and_quotes_what_needs_it() {
        let names = BTreeMap::from([("gx-finance".to_owned(), "自治区财政厅, 本级".to_owned())]);
        let csv = to_csv(&[line("gx-finance", "57.6")], &names);
        assert!(csv.starts_with('\u{feff}'));
        let rows: Vec<&str> = csv.trim_start_matches(BOM).split("\r\n").collect();
        assert_eq!(rows[0], COLUMNS.join(","));
        assert_eq!(
            rows[1],
            "gx-finance,\"自治区财政厅, 本级\",aliyun-gov,ns/portal,web,ecs.c2.large,ecs,2026-10-01T00:00:00Z,2026-10-02T12:00:00Z,2.00,0.80,hour,0.00,57.60"
        );
        assert_eq!(rows[2], "");
    }

    #[test]
    fn xlsx_is_a_zip_workbook() {
        let bytes = to_xlsx(&[line("a", "1.5"), line("b", "2")], &BTreeMap::new()).unwrap();
        assert_eq!(&bytes[..2], b"PK");
    }
}
