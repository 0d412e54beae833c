//! Settling a period: charge every interval in scope, sort the lines canonically, total them,
//! and fingerprint them.
//!
//! # Canonical lines
//!
//! The checksum is `sha256:` followed by the lower-case hex SHA-256 of the canonical lines,
//! concatenated in canonical order. One canonical line per [`SettlementLine`], UTF-8, thirteen
//! fields separated by `|` and terminated by `\n`:
//!
//! ```text
//! department|provider|request|item|sku|type|from|to|quantity|unitPrice|unit|discountPercent|amount\n
//! ```
//!
//! - `type`: `ecs`, `rds`, `oss`, `slb` or `eip`;
//! - `from`, `to`: RFC 3339 in UTC with whole seconds and `Z`, e.g. `2026-10-15T16:00:00Z`;
//! - `quantity`, `unitPrice`, `discountPercent`, `amount`: decimals with exactly two places and
//!   `.` as separator, no sign, no grouping, e.g. `2.00`, `0.80`, `10.00`, `57.60`;
//! - `unit`: `hour`, `month`, `GiB-hour` or `GiB-month`.
//!
//! Text fields can't contain `|` or control characters (intervals with them are refused), so
//! the form is unambiguous. Example:
//!
//! ```text
//! gx-finance|aliyun-gov|gx-finance-prod/web|web|ecs.c2.large|ecs|2026-10-01T00:00:00Z|2026-10-02T12:00:00Z|2.00|0.80|hour|0.00|57.60
//! ```
//!
//! Canonical order sorts by department, provider, request, item, SKU, from, to (strings by
//! bytes, instants by time), then by the whole canonical line; it doesn't depend on the order
//! the intervals came in. No lines gives the SHA-256 of the empty string.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use sm3::Sm3;

use super::calendar::MonthBounds;
use super::charge::{SettlementLine, charge_interval, charge_pieces};
use super::money::{format_money, round_fen};
use super::period::{Period, TimeRange};
use super::prices::Prices;
use super::{BillingConfig, BillingError, Clock, Interval};
use crate::api::Currency;
use crate::api::settlement_report::{ChecksumAlgorithm, Scope, SettlementReportStatus, Subtotal};

/// A settled period: its lines in canonical order and their totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The instants the period covers.
    pub period: TimeRange,
    /// Lines in canonical order.
    pub lines: Vec<SettlementLine>,
    /// Sum of the lines' amounts.
    pub total: Decimal,
    /// Sums by department, provider and resource type (`ecs`, …); only keys with lines appear.
    pub by_department: BTreeMap<String, Decimal>,
    pub by_provider: BTreeMap<String, Decimal>,
    pub by_type: BTreeMap<String, Decimal>,
    /// `sha256:<hex>` over the canonical lines.
    pub checksum: String,
}

impl Settlement {
    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// Writes the figures into a report's status: total, currency, subtotals, line count and
    /// checksum. Phase, conditions and generation are the controller's.
    pub fn write_status(&self, status: &mut SettlementReportStatus) -> Result<(), BillingError> {
        status.total = Some(format_money("status.total", self.total)?);
        status.currency = Some(Currency::CNY);
        status.by_department = subtotals("status.byDepartment", &self.by_department)?;
        status.by_provider = subtotals("status.byProvider", &self.by_provider)?;
        status.by_type = subtotals("status.byType", &self.by_type)?;
        status.lines = Some(self.lines.len() as u64);
        status.checksum = Some(self.checksum.clone());
        Ok(())
    }
}

/// Settles `period` for `scope` (empty lists mean all departments / providers): charges the part
/// of each interval in scope that lies in the period — an open interval up to the earlier of the
/// period's end and `clock.now()`, a closed one up to its recorded end — sorts the lines
/// canonically and totals them. Fails when any interval in scope can't be charged (no price in
/// force, malformed interval): a settlement is complete or it is not computed.
///
/// A large settlement is charged, totalled and fingerprinted on two threads; the result is the
/// same as on one (the halves are joined in canonical order, the checksum is one sequential hash).
pub fn settle(
    intervals: &[Interval],
    prices: &Prices,
    period: &Period,
    scope: &Scope,
    config: &BillingConfig,
    clock: &dyn Clock,
) -> Result<Settlement, BillingError> {
    let window = period.bounds(config.zone)?;
    let now = clock.now();
    let in_scope = |i: &&Interval| {
        (scope.departments.is_empty() || scope.departments.contains(&i.department))
            && (scope.providers.is_empty() || scope.providers.contains(&i.provider))
    };
    let selected: Vec<&Interval> = intervals.iter().filter(in_scope).collect();
    // Charged in the order the intervals came in (their memory is read in order), in two halves
    // on two threads when there are many; then sorted.
    let parallel = selected.len() >= PARALLEL_FROM;
    let (first, second) = selected.split_at(if parallel {
        selected.len() / 2
    } else {
        selected.len()
    });
    let charge = |part: &[&Interval]| -> Result<Vec<SettlementLine>, BillingError> {
        let mut months = MonthBounds::new(config.zone);
        let mut lines = Vec::with_capacity(part.len());
        for interval in part {
            charge_pieces(interval, window, now, prices, &mut months, |c| {
                lines.push(c.line)
            })?;
        }
        Ok(lines)
    };
    let lines = match both(parallel, || charge(first), || charge(second)) {
        (Ok(first), Ok(second)) => sort_settled([first, second]),
        (Err(e), _) | (_, Err(e)) => {
            // The first failure in the order the intervals came in, whichever half found one.
            for interval in &selected {
                charge_interval(interval, window, now, prices, config)?;
            }
            return Err(e);
        }
    };

    let (totals, checksum) = totals_and_checksum(&lines);
    let Totals {
        total,
        by_department,
        by_provider,
        by_type,
    } = totals?;
    Ok(Settlement {
        period: window,
        lines,
        total,
        by_department,
        by_provider,
        by_type,
        checksum,
    })
}

/// From this many intervals (or lines) on, a settlement uses a second thread: below, starting
/// one costs more than it saves.
const PARALLEL_FROM: usize = 20_000;

/// `a()` here and `b()` on a second thread when `parallel`; both here otherwise.
fn both<A: Send, B: Send>(
    parallel: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if !parallel {
        return (a(), b());
    }
    std::thread::scope(|s| {
        let b = s.spawn(b);
        let a = a();
        let b = b
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (a, b)
    })
}

/// What a line is sorted by, compact: the canonical order compares these fields, in this order,
/// and reads the lines themselves only to break ties (requests longer than [`REQUEST_PREFIX`]
/// bytes that share it, equal keys). Sorting keys, not lines, moves 72 bytes instead of 230 and
/// keeps the comparisons in one array instead of a million strings.
#[derive(Clone, Copy)]
struct LineKey {
    /// The request's first bytes, big-endian, zero-padded: compared as integers they order as
    /// the strings do (a request can't contain a NUL, so the padding sorts before any byte).
    request: [u64; REQUEST_PREFIX / 8],
    from: i64,
    to: i64,
    /// Rank of the (department, provider) pair among the lines' (byte order).
    names: u32,
    /// Rank of the (item, SKU) pair.
    kind: u32,
    /// Sub-second parts of `from` and `to` (zero: lines are charged by the whole second).
    nanos: (u32, u32),
    /// The line: its half and its position there.
    half: u8,
    line: u32,
    /// The request is longer than the prefix: equal prefixes are compared in full.
    long: bool,
}

const REQUEST_PREFIX: usize = 32;

impl LineKey {
    fn of(line: &SettlementLine, half: u8, at: u32, names: u32, kind: u32) -> Self {
        let bytes = line.request.as_bytes();
        let mut request = [0; REQUEST_PREFIX / 8];
        for (k, word) in request.iter_mut().enumerate() {
            let mut chunk = [0u8; 8];
            let from = (k * 8).min(bytes.len());
            let to = (k * 8 + 8).min(bytes.len());
            chunk[..to - from].copy_from_slice(&bytes[from..to]);
            *word = u64::from_be_bytes(chunk);
        }
        LineKey {
            request,
            from: line.from.timestamp(),
            to: line.to.timestamp(),
            names,
            kind,
            nanos: (
                line.from.timestamp_subsec_nanos(),
                line.to.timestamp_subsec_nanos(),
            ),
            half,
            line: at,
            long: bytes.len() > REQUEST_PREFIX,
        }
    }

    /// The canonical order of the lines these keys are of (see the module docs).
    fn cmp(&self, other: &LineKey, halves: &[Vec<SettlementLine>; 2]) -> Ordering {
        let line = |k: &LineKey| &halves[usize::from(k.half)][k.line as usize];
        self.names
            .cmp(&other.names)
            .then_with(|| self.request.cmp(&other.request))
            .then_with(|| {
                if self.long || other.long {
                    line(self).request.cmp(&line(other).request)
                } else {
                    Ordering::Equal
                }
            })
            .then_with(|| self.kind.cmp(&other.kind))
            .then_with(|| (self.from, self.nanos.0).cmp(&(other.from, other.nanos.0)))
            .then_with(|| (self.to, self.nanos.1).cmp(&(other.to, other.nanos.1)))
            .then_with(|| canonical_line(line(self)).cmp(&canonical_line(line(other))))
    }
}

/// The lines of both halves in canonical order, as [`sort_canonically`] sorts them: compact keys
/// are sorted (each half on a thread of its own when there are many) and merged, then each line
/// is moved once, to its place.
fn sort_settled(halves: [Vec<SettlementLine>; 2]) -> Vec<SettlementLine> {
    let parallel = halves[0].len() + halves[1].len() >= PARALLEL_FROM;
    let (a, b) = both(parallel, || Pairs::of(&halves[0]), || Pairs::of(&halves[1]));
    let [names_a, names_b] = global_ranks([&a.names, &b.names]);
    let [kinds_a, kinds_b] = global_ranks([&a.kinds, &b.kinds]);
    let keys = |half: u8, pairs: &Pairs, names: &[u32], kinds: &[u32]| -> Vec<LineKey> {
        let mut keys: Vec<LineKey> = halves[usize::from(half)]
            .iter()
            .zip(pairs.line_names.iter().zip(&pairs.line_kinds))
            .enumerate()
            .map(|(k, (line, (n, i)))| {
                LineKey::of(line, half, k as u32, names[*n as usize], kinds[*i as usize])
            })
            .collect();
        keys.sort_unstable_by(|x, y| x.cmp(y, &halves));
        keys
    };
    let (a, b) = both(
        parallel,
        || keys(0, &a, &names_a, &kinds_a),
        || keys(1, &b, &names_b, &kinds_b),
    );
    // Merge the two sorted halves into the order.
    let mut order = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if b[j].cmp(&a[i], &halves) == Ordering::Less {
            order.push((b[j].half, b[j].line));
            j += 1;
        } else {
            order.push((a[i].half, a[i].line));
            i += 1;
        }
    }
    order.extend(a[i..].iter().chain(&b[j..]).map(|k| (k.half, k.line)));
    // Each line taken from its slot once: the order is a permutation of both halves.
    let mut slots = halves.map(|h| h.into_iter().map(Some).collect::<Vec<_>>());
    order
        .into_iter()
        .filter_map(|(half, k)| slots[usize::from(half)][k as usize].take())
        .collect()
}

type Pair<'a> = (&'a str, &'a str);

/// The (department, provider) and (item, SKU) pairs of some lines, numbered in the order met.
struct Pairs<'a> {
    /// Distinct pairs, by number.
    names: Vec<Pair<'a>>,
    kinds: Vec<Pair<'a>>,
    /// Each line's pair numbers.
    line_names: Vec<u32>,
    line_kinds: Vec<u32>,
}

impl<'a> Pairs<'a> {
    fn of(lines: &'a [SettlementLine]) -> Self {
        let mut names = HashMap::new();
        let mut kinds = HashMap::new();
        let number = |map: &mut HashMap<Pair<'a>, u32>, pair| {
            let next = map.len() as u32;
            *map.entry(pair).or_insert(next)
        };
        let (line_names, line_kinds) = lines
            .iter()
            .map(|l| {
                (
                    number(&mut names, (l.department.as_str(), l.provider.as_str())),
                    number(&mut kinds, (l.item.as_str(), l.sku.as_str())),
                )
            })
            .unzip();
        let by_number = |map: HashMap<Pair<'a>, u32>| {
            let mut pairs = vec![("", ""); map.len()];
            for (pair, k) in map {
                pairs[k as usize] = pair;
            }
            pairs
        };
        Pairs {
            names: by_number(names),
            kinds: by_number(kinds),
            line_names,
            line_kinds,
        }
    }
}

/// For each part's pairs (by number), its rank among the pairs of all parts, in byte order.
fn global_ranks<const N: usize>(parts: [&[Pair<'_>]; N]) -> [Vec<u32>; N] {
    let mut all: Vec<Pair<'_>> = parts.concat();
    all.sort_unstable();
    all.dedup();
    parts.map(|part| {
        part.iter()
            .map(|pair| all.binary_search(pair).unwrap_or_else(|at| at) as u32)
            .collect()
    })
}

struct Totals {
    total: Decimal,
    by_department: BTreeMap<String, Decimal>,
    by_provider: BTreeMap<String, Decimal>,
    by_type: BTreeMap<String, Decimal>,
}

/// The sums of `lines`, which are in canonical order (a department's lines are together).
fn totals(lines: &[SettlementLine]) -> Result<Totals, BillingError> {
    let overflow = || BillingError::Overflow {
        what: "the settlement totals".to_owned(),
    };
    let add = |sum: &mut Decimal, amount: Decimal| -> Result<(), BillingError> {
        *sum = sum.checked_add(amount).ok_or_else(overflow)?;
        Ok(())
    };
    let mut total = Decimal::ZERO;
    let mut by_department = BTreeMap::new();
    // Few providers and types: keyed by the lines' own strings, owned only at the end.
    let mut by_provider: BTreeMap<&str, Decimal> = BTreeMap::new();
    let mut by_type: BTreeMap<&str, Decimal> = BTreeMap::new();
    for department in lines.chunk_by(|a, b| a.department == b.department) {
        let mut sum = Decimal::ZERO;
        for line in department {
            add(&mut total, line.amount)?;
            add(&mut sum, line.amount)?;
            add(by_provider.entry(&line.provider).or_default(), line.amount)?;
            add(
                by_type.entry(line.resource_type.as_str()).or_default(),
                line.amount,
            )?;
        }
        by_department.insert(department[0].department.clone(), sum);
    }
    let owned =
        |m: BTreeMap<&str, Decimal>| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Ok(Totals {
        total,
        by_department,
        by_provider: owned(by_provider),
        by_type: owned(by_type),
    })
}

/// Sorts lines in canonical order (see the module docs).
pub fn sort_canonically(lines: &mut [SettlementLine]) {
    // A total order (ties broken by the whole line), so the unstable sort is deterministic and
    // moves the large lines less.
    lines.sort_unstable_by(|a, b| {
        sort_key(a)
            .cmp(&sort_key(b))
            .then_with(|| canonical_line(a).cmp(&canonical_line(b)))
    });
}

type SortKey<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn sort_key(l: &SettlementLine) -> SortKey<'_> {
    (
        &l.department,
        &l.provider,
        &l.request,
        &l.item,
        &l.sku,
        l.from,
        l.to,
    )
}

/// The canonical form of one line, `\n` included (see the module docs).
pub fn canonical_line(line: &SettlementLine) -> String {
    let mut out = String::with_capacity(160);
    write_canonical_line(&mut out, line);
    out
}

/// Append the canonical form of `line` to `out`, without allocating or formatting per field
/// (the checksum of a million lines reuses one buffer).
fn write_canonical_line(out: &mut String, line: &SettlementLine) {
    for text in [
        &line.department,
        &line.provider,
        &line.request,
        &line.item,
        &line.sku,
    ] {
        out.push_str(text);
        out.push('|');
    }
    out.push_str(line.resource_type.as_str());
    out.push('|');
    push_instant(out, line.from);
    out.push('|');
    push_instant(out, line.to);
    out.push('|');
    push_two_places(out, line.quantity);
    out.push('|');
    push_two_places(out, line.unit_price);
    out.push('|');
    out.push_str(line.unit_label());
    out.push('|');
    push_two_places(out, line.discount_percent);
    out.push('|');
    push_two_places(out, line.amount);
    out.push('\n');
}

/// `2026-10-15T16:00:00Z`: RFC 3339 in UTC, whole seconds.
fn push_instant(out: &mut String, t: DateTime<Utc>) {
    let (date, time) = (t.date_naive(), t.time());
    if !(0..=9999).contains(&date.year()) || time.nanosecond() >= 1_000_000_000 {
        // Years of other widths and leap seconds: chrono's formatting, as before.
        let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%SZ"));
        return;
    }
    let mut text = *b"0000-00-00T00:00:00Z";
    put_digits(&mut text[0..4], date.year() as u64);
    put_digits(&mut text[5..7], u64::from(date.month()));
    put_digits(&mut text[8..10], u64::from(date.day()));
    put_digits(&mut text[11..13], u64::from(time.hour()));
    put_digits(&mut text[14..16], u64::from(time.minute()));
    put_digits(&mut text[17..19], u64::from(time.second()));
    push_ascii(out, &text);
}

/// `amount` rounded half-up to two places, written with exactly two (`57.60`, `0.00`): what
/// `format!("{:.2}", round_fen(amount))` writes.
fn push_two_places(out: &mut String, amount: Decimal) {
    // Amounts, prices and quantities have at most two places already: nothing to round.
    let rounded = if amount.scale() <= 2 && !amount.is_zero() {
        amount
    } else {
        round_fen(amount)
    };
    let hundredths = match rounded.scale() {
        0 => rounded.mantissa().checked_mul(100),
        1 => rounded.mantissa().checked_mul(10),
        2 => Some(rounded.mantissa()),
        _ => None,
    }
    .and_then(|h| u64::try_from(h).ok());
    let Some(hundredths) = hundredths else {
        // Negative or huge: never in a canonical line, but written the same way.
        let _ = write!(out, "{rounded:.2}");
        return;
    };
    // Up to 20 digits of the whole part, the point, two places.
    let mut text = [b'0'; 23];
    let whole = hundredths / 100;
    let mut width = 1;
    while width < 20 && whole >= 10u64.pow(width as u32) {
        width += 1;
    }
    put_digits(&mut text[..width], whole);
    text[width] = b'.';
    put_digits(&mut text[width + 1..width + 3], hundredths % 100);
    push_ascii(out, &text[..width + 3]);
}

/// Writes the last `digits.len()` decimal digits of `n` into `digits`, zero-padded.
fn put_digits(digits: &mut [u8], mut n: u64) {
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn push_ascii(out: &mut String, text: &[u8]) {
    // Digits and punctuation only: always UTF-8.
    if let Ok(text) = std::str::from_utf8(text) {
        out.push_str(text);
    }
}

/// `sha256:<hex>` over the canonical lines of `lines`, in the order given (sort them first with
/// [`sort_canonically`]; [`settle`] does).
pub fn checksum(lines: &[SettlementLine]) -> String {
    checksum_with(lines, ChecksumAlgorithm::Sha256)
}

/// `sha256:<hex>` or `sm3:<hex>` (GB/T 32905, the national standard digest) over the canonical
/// lines of `lines`, in the order given.
pub fn checksum_with(lines: &[SettlementLine], algorithm: ChecksumAlgorithm) -> String {
    match algorithm {
        ChecksumAlgorithm::Sha256 => {
            let mut hasher = Sha256::new();
            hash_lines(&mut hasher, lines);
            checksum_of(hasher)
        }
        ChecksumAlgorithm::Sm3 => {
            let mut hasher = Sm3::new();
            hash_lines(&mut hasher, lines);
            format!("sm3:{}", hex::encode(hasher.finalize()))
        }
    }
}

/// The checksum of `lines` with the algorithm `recorded` (a checksum) was made with.
pub fn checksum_like(lines: &[SettlementLine], recorded: &str) -> String {
    let algorithm = if recorded.starts_with("sm3:") {
        ChecksumAlgorithm::Sm3
    } else {
        ChecksumAlgorithm::Sha256
    };
    checksum_with(lines, algorithm)
}

fn checksum_of(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Feeds the canonical lines of `lines` to `hasher`, through one reused buffer.
fn hash_lines<D: Digest>(hasher: &mut D, lines: &[SettlementLine]) {
    let mut buffer = String::with_capacity(256);
    for line in lines {
        buffer.clear();
        write_canonical_line(&mut buffer, line);
        hasher.update(buffer.as_bytes());
    }
}

/// The totals and the SHA-256 checksum of `lines` (in canonical order). With many lines, on two
/// threads: one hashes the first half; the other sums every line, then writes the second half's
/// canonical text, which the first hashes next (SHA-256 is one sequential pass, the writing is
/// not).
fn totals_and_checksum(lines: &[SettlementLine]) -> (Result<Totals, BillingError>, String) {
    if lines.len() < PARALLEL_FROM {
        return (totals(lines), checksum(lines));
    }
    let (first, second) = lines.split_at(lines.len() / 2);
    let (mut hasher, (totals, text)) = both(
        true,
        || {
            let mut hasher = Sha256::new();
            hash_lines(&mut hasher, first);
            hasher
        },
        || {
            let totals = totals(lines);
            let mut text = String::with_capacity(second.len() * 160);
            for line in second {
                write_canonical_line(&mut text, line);
            }
            (totals, text)
        },
    );
    hasher.update(text.as_bytes());
    (totals, checksum_of(hasher))
}

fn subtotals(field: &str, sums: &BTreeMap<String, Decimal>) -> Result<Vec<Subtotal>, BillingError> {
    sums.iter()
        .map(|(key, amount)| {
            Ok(Subtotal {
                key: key.clone(),
                amount: format_money(field, *amount)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::api::ResourceType;
    use crate::api::price_book::{PricePer, PriceUnit};

    /// The canonical form as first written, with `format!`: the fast writer must match it.
    fn formatted(line: &SettlementLine) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{:.2}|{:.2}|{}|{:.2}|{:.2}\n",
            line.department,
            line.provider,
            line.request,
            line.item,
            line.sku,
            line.resource_type.as_str(),
            line.from.format("%Y-%m-%dT%H:%M:%SZ"),
            line.to.format("%Y-%m-%dT%H:%M:%SZ"),
            round_fen(line.quantity),
            round_fen(line.unit_price),
            line.unit_label(),
            round_fen(line.discount_percent),
            round_fen(line.amount),
        )
    }

    #[test]
    fn the_canonical_writer_writes_what_format_wrote() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let amounts = [
            "0",
            "0.005",
            "0.004999",
            "57.6",
            "1000",
            "2.345",
            "99.995",
            "9.999",
            "12.5",
            "33.33",
            "100",
            "0.1",
            "123456789012.345",
            "-0.005",
            "-12.3",
        ];
        let instants = [
            "2026-10-01T00:00:00+08:00",
            "2026-12-31T23:59:59Z",
            "0999-01-02T03:04:05Z",
            "1970-01-01T00:00:00Z",
        ];
        for (k, amount) in amounts.iter().enumerate() {
            let line = SettlementLine {
                department: "gx-finance".into(),
                provider: "aliyun-gov".into(),
                request: "gx-finance-prod/web".into(),
                item: "web".into(),
                sku: "ecs.c2.large".into(),
                resource_type: ResourceType::Ecs,
                from: t(instants[k % instants.len()]),
                to: t(instants[(k + 1) % instants.len()]),
                quantity: d(amounts[(k + 3) % amounts.len()]),
                unit_price: d(amounts[(k + 5) % amounts.len()]),
                unit: if k % 2 == 0 {
                    PriceUnit::Hour
                } else {
                    PriceUnit::Month
                },
                per: (k % 3 == 0).then_some(PricePer::GiB),
                discount_percent: d(amounts[(k + 7) % amounts.len()]),
                amount: d(amount),
            };
            assert_eq!(canonical_line(&line), formatted(&line));
        }
    }
}
