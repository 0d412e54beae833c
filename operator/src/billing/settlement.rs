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
use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use sm3::Sm3;

use super::calendar::MonthBounds;
use super::charge::{Piece, SettlementLine, charge_interval, charge_pieces, unit_label};
use super::money::{format_money, round_fen};
use super::period::{Period, TimeRange};
use super::prices::Prices;
use super::{BillingConfig, BillingError, Clock, Interval};
use crate::api::price_book::{PricePer, PriceUnit};
use crate::api::settlement_report::{
    ChecksumAlgorithm, Scope, SettlementReportStatus, Subtotal, UnpricedItem,
};
use crate::api::{Currency, ResourceType};

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
    /// Intervals in scope left out because no price is in force for them (overlapping
    /// PriceBooks), in the order they came in; the figures cover everything else.
    pub unpriced: Vec<UnpricedItem>,
}

impl Settlement {
    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// Writes the figures into a report's status: total, currency, subtotals, line count and
    /// checksum. Phase, conditions and generation are the controller's.
    pub fn write_status(&self, status: &mut SettlementReportStatus) -> Result<(), BillingError> {
        status.unpriced = self.unpriced.iter().take(UNPRICED_SHOWN).cloned().collect();
        status.unpriced_count = (!self.unpriced.is_empty()).then_some(self.unpriced.len() as u64);
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

/// How many unpriced items a report's status lists (all are counted).
pub const UNPRICED_SHOWN: usize = 20;

/// Whether `scope` (empty lists mean all) takes in `interval`.
pub fn in_scope(scope: &Scope, interval: &Interval) -> bool {
    (scope.departments.is_empty() || scope.departments.contains(&interval.department))
        && (scope.providers.is_empty() || scope.providers.contains(&interval.provider))
}

/// Splits `intervals` into those `prices` can charge over `window` (up to `now` while open) and
/// the items that can't be, with why: an interval whose provider and SKU two books price at once
/// somewhere in its charged range, or no book prices somewhere in it.
pub fn split_unpriced<'a>(
    intervals: &'a [Interval],
    prices: &Prices,
    window: TimeRange,
    now: DateTime<Utc>,
) -> (Vec<&'a Interval>, Vec<UnpricedItem>) {
    let mut chargeable = Vec::with_capacity(intervals.len());
    let mut unpriced = Vec::new();
    for i in intervals {
        let from = i.from.max(window.start);
        let to = i.to.unwrap_or(now).min(window.end);
        let reason = match prices.conflict_within(&i.provider, &i.sku, from, to) {
            _ if from >= to => None,
            Some(overlap) => Some(format!(
                "no price: {overlap}; end one book where the other begins (spec.effectiveUntil) or delete one"
            )),
            None => prices.gap_within(&i.provider, &i.sku, from, to).map(|at| {
                format!(
                    "no price: no PriceBook prices provider {} SKU {} at {}; add a book that does (or extend one's spec.effectiveUntil)",
                    i.provider,
                    i.sku,
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            }),
        };
        match reason {
            Some(reason) => unpriced.push(UnpricedItem {
                request: i.request.clone(),
                item: i.item.clone(),
                department: i.department.clone(),
                provider: i.provider.clone(),
                sku: i.sku.clone(),
                reason,
            }),
            None => chargeable.push(i),
        }
    }
    (chargeable, unpriced)
}

/// Settles `period` for `scope` (empty lists mean all departments / providers): charges the part
/// of each interval in scope that lies in the period — an open interval up to the earlier of the
/// period's end and `clock.now()`, a closed one up to its recorded end — sorts the lines
/// canonically and totals them. Fails when any interval in scope can't be charged (no price in
/// force, malformed interval): a settlement is complete or it is not computed.
///
/// The pieces are charged, ordered, totalled and fingerprinted without copying a name: each
/// piece is kept in its sort key, which refers to its interval. Only the lines handed out own
/// (shared) names. A large settlement uses two threads; the result is the same as on one (the
/// halves are merged in canonical order, the checksum is one sequential hash).
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
    let selected: Vec<&Interval> = intervals.iter().filter(|i| in_scope(scope, i)).collect();
    // Charged in the order the intervals came in (their memory is read in order), in two halves
    // on two threads when there are many.
    let parallel = selected.len() >= PARALLEL_FROM;
    let middle = if parallel {
        selected.len() / 2
    } else {
        selected.len()
    };
    // Each piece is kept in the sort key of its line, made while both are at hand: sorted, the
    // keys are read in canonical order without going back to the pieces.
    let charge = |part: Range<usize>| -> Result<KeysMet<'_, Charged>, BillingError> {
        let mut months = MonthBounds::new(config.zone);
        let mut keys = KeysMet::with_capacity(part.len());
        for k in part {
            let interval = selected[k];
            charge_pieces(interval, window, now, prices, &mut months, |piece| {
                let charged = Charged::of(interval, &piece);
                keys.push(
                    &charged.fields(interval, piece.from, piece.to),
                    k as u32,
                    charged,
                );
            })?;
        }
        Ok(keys)
    };
    let keys = match both(
        parallel,
        || charge(0..middle),
        || charge(middle..selected.len()),
    ) {
        (Ok(first), Ok(second)) => [first, second],
        (Err(e), _) | (_, Err(e)) => {
            // The first failure in the order the intervals came in, whichever half found one.
            for interval in &selected {
                charge_interval(interval, window, now, prices, config)?;
            }
            return Err(e);
        }
    };

    let fields = |key: &LineKey<Charged>| {
        key.rest
            .fields(selected[key.origin as usize], key.from, key.to)
    };
    let order = CanonicalOrder::of(keys, &fields, parallel);
    // Both threads go through the lines in canonical order: one makes and sums them, the other
    // fingerprints them.
    let ((lines, sums), checksum) = both(
        parallel,
        || order.lines_and_sums(&fields),
        || order.checksum(&fields),
    );
    let Totals {
        total,
        by_department,
        by_provider,
        by_type,
    } = totals(&order.names, &sums?)?;
    Ok(Settlement {
        period: window,
        lines,
        total,
        by_department,
        by_provider,
        by_type,
        checksum,
        unpriced: Vec::new(),
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

/// A charged piece of an interval: what its line says but the names and the instants (those are
/// in its key) — the interval's type and quantity, and the piece's price, discount and amount.
#[derive(Clone, Copy)]
struct Charged {
    resource_type: ResourceType,
    unit: PriceUnit,
    per: Option<PricePer>,
    quantity: Decimal,
    unit_price: Decimal,
    discount_percent: Decimal,
    amount: Decimal,
}

impl Charged {
    fn of(interval: &Interval, piece: &Piece) -> Self {
        Charged {
            resource_type: interval.resource_type,
            unit: piece.unit,
            per: piece.per,
            quantity: interval.quantity,
            unit_price: piece.unit_price,
            discount_percent: piece.discount_percent,
            amount: piece.amount,
        }
    }

    /// The fields of its line, with `interval`'s names.
    fn fields<'a>(
        &self,
        interval: &'a Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> LineFields<'a> {
        self.fields_named(
            (&interval.department, &interval.provider),
            (&interval.item, &interval.sku),
            &interval.request,
            (from, to),
        )
    }

    /// The fields of its line, with the names given: its interval's.
    fn fields_named<'a>(
        &self,
        (department, provider): Pair<'a>,
        (item, sku): Pair<'a>,
        request: &'a str,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
    ) -> LineFields<'a> {
        LineFields {
            department,
            provider,
            request,
            item,
            sku,
            resource_type: self.resource_type,
            from,
            to,
            quantity: self.quantity,
            unit_price: self.unit_price,
            unit: unit_label(self.unit, self.per),
            discount_percent: self.discount_percent,
            amount: self.amount,
        }
    }
}

/// What a canonical line says, borrowed from wherever the line is kept: a [`SettlementLine`], or
/// a charged piece, its key and its interval.
#[derive(Clone, Copy)]
struct LineFields<'a> {
    department: &'a str,
    provider: &'a str,
    request: &'a str,
    item: &'a str,
    sku: &'a str,
    resource_type: ResourceType,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    quantity: Decimal,
    unit_price: Decimal,
    /// `hour`, `month`, `GiB-hour` or `GiB-month`.
    unit: &'static str,
    discount_percent: Decimal,
    amount: Decimal,
}

impl<'a> LineFields<'a> {
    fn of(line: &'a SettlementLine) -> Self {
        LineFields {
            department: &line.department,
            provider: &line.provider,
            request: &line.request,
            item: &line.item,
            sku: &line.sku,
            resource_type: line.resource_type,
            from: line.from,
            to: line.to,
            quantity: line.quantity,
            unit_price: line.unit_price,
            unit: line.unit_label(),
            discount_percent: line.discount_percent,
            amount: line.amount,
        }
    }

    /// The canonical form, `\n` included.
    fn canonical(&self) -> String {
        let mut out = String::with_capacity(160);
        write_canonical_line(&mut out, self);
        out
    }
}

/// Lines in canonical order: each of two parts' keys grouped by (department, provider) pair and
/// sorted within each group, the parts merged group by group as they are read by
/// [`in_order`](Self::in_order).
struct CanonicalOrder<'a, R> {
    /// The lines' distinct (department, provider) and (item, SKU) pairs, in byte order: a key's
    /// `names` and `kind` are positions here.
    names: Vec<Pair<'a>>,
    kinds: Vec<Pair<'a>>,
    parts: [Grouped<R>; 2],
}

/// Keys grouped by their `names`, the rank of their (department, provider) pair: group `r` is
/// `keys[starts[r]..starts[r + 1]]`.
struct Grouped<R> {
    keys: Vec<LineKey<R>>,
    starts: Vec<usize>,
}

impl<R> Grouped<R> {
    fn group(&self, group: usize) -> &[LineKey<R>] {
        &self.keys[self.starts[group]..self.starts[group + 1]]
    }
}

impl<R: Copy> Grouped<R> {
    /// `keys` grouped by `names`, each less than `groups`, keeping their order within a group (a
    /// counting sort).
    fn of(keys: &[LineKey<R>], groups: usize) -> Self {
        let mut starts = vec![0; groups + 1];
        for key in keys {
            starts[key.names as usize + 1] += 1;
        }
        for group in 0..groups {
            starts[group + 1] += starts[group];
        }
        // Where each key goes, found in one pass; then the keys, gathered in that order.
        let mut next = starts.clone();
        let mut order = vec![0u32; keys.len()];
        for (k, key) in keys.iter().enumerate() {
            let at = &mut next[key.names as usize];
            order[*at] = k as u32;
            *at += 1;
        }
        Grouped {
            keys: order.iter().map(|&k| keys[k as usize]).collect(),
            starts,
        }
    }
}

impl<'a, R: Copy + Send + Sync> CanonicalOrder<'a, R> {
    /// The order of the lines of `parts`, read with `fields` where their keys tie. Each part is
    /// grouped, then sorted group by group (a few hundred keys each: they fit in cache), on a
    /// thread of its own when `parallel`.
    fn of(
        parts: [KeysMet<'a, R>; 2],
        fields: &(impl Fn(&LineKey<R>) -> LineFields<'a> + Sync),
        parallel: bool,
    ) -> Self {
        let [a, b] = parts;
        let (names, [names_a, names_b]) = ranked([&a.names.pairs, &b.names.pairs]);
        let (kinds, [kinds_a, kinds_b]) = ranked([&a.kinds.pairs, &b.kinds.pairs]);
        let sorted = |mut keys: Vec<LineKey<R>>, ranks: &[u32], kinds: &[u32]| {
            for key in &mut keys {
                key.names = ranks[key.names as usize];
                key.kind = kinds[key.kind as usize];
            }
            let mut grouped = Grouped::of(&keys, names.len());
            drop(keys);
            for group in 0..names.len() {
                let range = grouped.starts[group]..grouped.starts[group + 1];
                grouped.keys[range].sort_unstable_by(|x, y| x.cmp(y, fields));
            }
            grouped
        };
        let (a, b) = both(
            parallel,
            || sorted(a.keys, &names_a, &kinds_a),
            || sorted(b.keys, &names_b, &kinds_b),
        );
        CanonicalOrder {
            names,
            kinds,
            parts: [a, b],
        }
    }
}

impl<'a, R> CanonicalOrder<'a, R> {
    fn len(&self) -> usize {
        self.parts[0].keys.len() + self.parts[1].keys.len()
    }

    /// The keys in canonical order: group by group, the two parts' keys merged (`fields` reads
    /// the lines where keys tie).
    fn in_order<'s>(
        &'s self,
        fields: &'s impl Fn(&LineKey<R>) -> LineFields<'a>,
    ) -> impl Iterator<Item = &'s LineKey<R>> + 's {
        let [a, b] = &self.parts;
        (0..self.names.len()).flat_map(move |group| {
            let (mut a, mut b) = (
                a.group(group).iter().peekable(),
                b.group(group).iter().peekable(),
            );
            std::iter::from_fn(move || match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if y.cmp(x, fields) == Ordering::Less => b.next(),
                (Some(_), _) => a.next(),
                (None, _) => b.next(),
            })
        })
    }
}

/// The sort keys of some lines, made as the lines are met, with their (department, provider) and
/// (item, SKU) pairs numbered in the order met: a key's `names` and `kind` are these numbers
/// until [`CanonicalOrder::of`] makes them ranks.
struct KeysMet<'a, R> {
    names: Numbered<'a>,
    kinds: Numbered<'a>,
    keys: Vec<LineKey<R>>,
}

impl<'a, R> KeysMet<'a, R> {
    fn with_capacity(lines: usize) -> Self {
        KeysMet {
            names: Numbered::default(),
            kinds: Numbered::default(),
            keys: Vec::with_capacity(lines),
        }
    }

    /// Adds the key of `line`, found at `origin`, keeping `rest` in it.
    fn push(&mut self, line: &LineFields<'a>, origin: u32, rest: R) {
        let names = self.names.number((line.department, line.provider));
        let kind = self.kinds.number((line.item, line.sku));
        self.keys
            .push(LineKey::of(line, origin, (names, kind), rest));
    }
}

/// Distinct pairs, numbered in the order met. Hashed with foldhash: a settlement numbers the
/// pairs of a million lines, and SipHash took a tenth of its time.
#[derive(Default)]
struct Numbered<'a> {
    numbers: foldhash::HashMap<Pair<'a>, u32>,
    /// The pairs by number.
    pairs: Vec<Pair<'a>>,
    /// The pair met last, and its number: consecutive lines often have the very same strings
    /// (the pieces of one interval), found without hashing.
    last: Option<(Pair<'a>, u32)>,
}

impl<'a> Numbered<'a> {
    fn number(&mut self, pair: Pair<'a>) -> u32 {
        if let Some((last, number)) = self.last
            && std::ptr::eq(last.0, pair.0)
            && std::ptr::eq(last.1, pair.1)
        {
            return number;
        }
        let next = self.pairs.len() as u32;
        let number = *self.numbers.entry(pair).or_insert(next);
        if number == next {
            self.pairs.push(pair);
        }
        self.last = Some((pair, number));
        number
    }
}

/// What a line is sorted by, compact, and `rest` of what the line says: the canonical order
/// compares these fields, in this order, and reads the lines themselves only to break ties
/// (requests longer than [`REQUEST_PREFIX`] bytes that share it, equal keys). Sorting keys, not
/// lines, keeps the comparisons in one array instead of a million strings; keeping the rest of
/// a charged piece in its key lets the sorted keys be read in order, not the pieces at random.
#[derive(Clone, Copy)]
struct LineKey<R> {
    /// The request's first bytes, big-endian, zero-padded: compared as integers they order as
    /// the strings do (a request can't contain a NUL, so the padding sorts before any byte).
    request: [u64; REQUEST_PREFIX / 8],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// Rank of the (department, provider) pair among the lines' (byte order).
    names: u32,
    /// Rank of the (item, SKU) pair.
    kind: u32,
    /// Where the line's names are: the number of its line, or of its piece's interval.
    origin: u32,
    /// The request's length in bytes: when longer than the prefix, equal prefixes are compared
    /// in full.
    request_len: u32,
    rest: R,
}

const REQUEST_PREFIX: usize = 32;

impl<R> LineKey<R> {
    fn of(fields: &LineFields<'_>, origin: u32, (names, kind): (u32, u32), rest: R) -> Self {
        let bytes = fields.request.as_bytes();
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
            from: fields.from,
            to: fields.to,
            names,
            kind,
            origin,
            request_len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            rest,
        }
    }

    fn long(&self) -> bool {
        self.request_len as usize > REQUEST_PREFIX
    }

    /// The request of the key's line: from the key when it holds all of it (copied into
    /// `buffer`), which spares reading the line; from `fields` otherwise.
    fn request<'s, 'a: 's>(
        &self,
        buffer: &'s mut [u8; REQUEST_PREFIX],
        fields: &impl Fn(&LineKey<R>) -> LineFields<'a>,
    ) -> &'s str {
        if !self.long() {
            for (chunk, word) in buffer.chunks_exact_mut(8).zip(self.request) {
                chunk.copy_from_slice(&word.to_be_bytes());
            }
            if let Ok(request) = std::str::from_utf8(&buffer[..self.request_len as usize]) {
                return request;
            }
        }
        fields(self).request
    }

    /// The canonical order of the lines these keys are of (see the module docs).
    fn cmp<'a>(&self, other: &Self, fields: &impl Fn(&Self) -> LineFields<'a>) -> Ordering {
        self.names
            .cmp(&other.names)
            .then_with(|| self.request.cmp(&other.request))
            .then_with(|| {
                if self.long() || other.long() {
                    fields(self).request.cmp(fields(other).request)
                } else {
                    Ordering::Equal
                }
            })
            .then_with(|| self.kind.cmp(&other.kind))
            .then_with(|| self.from.cmp(&other.from))
            .then_with(|| self.to.cmp(&other.to))
            .then_with(|| fields(self).canonical().cmp(&fields(other).canonical()))
    }
}

type Pair<'a> = (&'a str, &'a str);

/// The distinct pairs of all parts in byte order, and for each part's pairs (by number) their
/// rank there.
fn ranked<'a, const N: usize>(parts: [&[Pair<'a>]; N]) -> (Vec<Pair<'a>>, [Vec<u32>; N]) {
    let mut all: Vec<Pair<'a>> = parts.concat();
    all.sort_unstable();
    all.dedup();
    let ranks = parts.map(|part| {
        part.iter()
            .map(|pair| all.binary_search(pair).unwrap_or_else(|at| at) as u32)
            .collect()
    });
    (all, ranks)
}

impl<'a> CanonicalOrder<'a, Charged> {
    /// The charged lines in canonical order, as [`SettlementLine`]s — each distinct department,
    /// provider, item and SKU is one `Arc<str>`, and so is the request of consecutive lines of
    /// one request — and the sums of their amounts.
    fn lines_and_sums(
        &self,
        fields: &impl Fn(&LineKey<Charged>) -> LineFields<'a>,
    ) -> (Vec<SettlementLine>, Result<Sums, BillingError>) {
        let shared = |pairs: &[Pair<'_>]| -> Vec<[Arc<str>; 2]> {
            pairs
                .iter()
                .map(|(a, b)| [Arc::from(*a), Arc::from(*b)])
                .collect()
        };
        let (names, kinds) = (shared(&self.names), shared(&self.kinds));
        let mut sums: Sums = vec![[None; ResourceType::ALL.len()]; self.names.len()];
        let mut overflow = false;
        let mut request: Arc<str> = Arc::from("");
        let mut buffer = [0; REQUEST_PREFIX];
        let mut lines = Vec::with_capacity(self.len());
        lines.extend(self.in_order(fields).map(|key| {
            let this = key.request(&mut buffer, fields);
            if *request != *this {
                request = Arc::from(this);
            }
            let [department, provider] = names[key.names as usize].clone();
            let [item, sku] = kinds[key.kind as usize].clone();
            let charged = &key.rest;
            let sum = &mut sums[key.names as usize][charged.resource_type as usize];
            match sum.unwrap_or_default().checked_add(charged.amount) {
                Some(s) => *sum = Some(s),
                None => overflow = true,
            }
            SettlementLine {
                department,
                provider,
                request: request.clone(),
                item,
                sku,
                resource_type: charged.resource_type,
                from: key.from,
                to: key.to,
                quantity: charged.quantity,
                unit_price: charged.unit_price,
                unit: charged.unit,
                per: charged.per,
                discount_percent: charged.discount_percent,
                amount: charged.amount,
            }
        }));
        let sums = if overflow {
            Err(totals_overflow())
        } else {
            Ok(sums)
        };
        (lines, sums)
    }

    /// The SHA-256 checksum of the charged lines' canonical text, in canonical order.
    fn checksum(&self, fields: &impl Fn(&LineKey<Charged>) -> LineFields<'a>) -> String {
        // Each pair of names as its lines start: `department|provider|`, `item|sku|`.
        let pair_texts = |pairs: &[Pair<'_>]| -> Vec<String> {
            pairs.iter().map(|&(a, b)| format!("{a}|{b}|")).collect()
        };
        let (names, kinds) = (pair_texts(&self.names), pair_texts(&self.kinds));
        let mut hasher = Sha256::new();
        let mut text = String::with_capacity(TEXT_CHUNK + 1024);
        let mut buffer = [0; REQUEST_PREFIX];
        for key in self.in_order(fields) {
            let line = key.rest.fields_named(
                self.names[key.names as usize],
                self.kinds[key.kind as usize],
                key.request(&mut buffer, fields),
                (key.from, key.to),
            );
            // What `write_canonical_line` writes, with the names' texts made once.
            text.push_str(&names[key.names as usize]);
            text.push_str(line.request);
            text.push('|');
            text.push_str(&kinds[key.kind as usize]);
            write_line_from_type(&mut text, &line);
            if text.len() >= TEXT_CHUNK {
                hasher.update(text.as_bytes());
                text.clear();
            }
        }
        hasher.update(text.as_bytes());
        checksum_of(hasher)
    }
}

/// Sums of amounts by (department, provider) pair — as ranked in a [`CanonicalOrder`] — and
/// resource type; `None` where no line has that pair and type.
type Sums = Vec<[Option<Decimal>; ResourceType::ALL.len()]>;

/// Canonical text is hashed in chunks of about this many bytes.
const TEXT_CHUNK: usize = 64 * 1024;

fn totals_overflow() -> BillingError {
    BillingError::Overflow {
        what: "the settlement totals".to_owned(),
    }
}

struct Totals {
    total: Decimal,
    by_department: BTreeMap<String, Decimal>,
    by_provider: BTreeMap<String, Decimal>,
    by_type: BTreeMap<String, Decimal>,
}

/// The totals from sums by (department, provider) pair (`names`, by rank) and type.
fn totals(names: &[Pair<'_>], sums: &Sums) -> Result<Totals, BillingError> {
    let add = |sum: &mut Decimal, amount: Decimal| -> Result<(), BillingError> {
        *sum = sum.checked_add(amount).ok_or_else(totals_overflow)?;
        Ok(())
    };
    let mut totals = Totals {
        total: Decimal::ZERO,
        by_department: BTreeMap::new(),
        by_provider: BTreeMap::new(),
        by_type: BTreeMap::new(),
    };
    for (&(department, provider), by_type) in names.iter().zip(sums) {
        for (resource_type, sum) in ResourceType::ALL.iter().zip(by_type) {
            let Some(sum) = *sum else { continue };
            add(&mut totals.total, sum)?;
            for (map, key) in [
                (&mut totals.by_department, department),
                (&mut totals.by_provider, provider),
                (&mut totals.by_type, resource_type.as_str()),
            ] {
                add(map.entry(key.to_owned()).or_default(), sum)?;
            }
        }
    }
    Ok(totals)
}

/// Sorts lines in canonical order (see the module docs), as [`settle`] orders them.
pub fn sort_canonically(lines: &mut [SettlementLine]) {
    let parallel = lines.len() >= PARALLEL_FROM;
    let middle = lines.len() / 2;
    let (a, b) = both(
        parallel,
        || keys_of(lines, 0..middle),
        || keys_of(lines, middle..lines.len()),
    );
    let fields = |key: &LineKey<()>| LineFields::of(&lines[key.origin as usize]);
    let mut order: Vec<u32> = CanonicalOrder::of([a, b], &fields, parallel)
        .in_order(&fields)
        .map(|key| key.origin)
        .collect();
    // Line `order[i]` goes to `i`: follow each cycle of the permutation, marking places done.
    for start in 0..order.len() {
        let mut at = start;
        while order[at] as usize != at {
            let next = order[at] as usize;
            order[at] = at as u32;
            if next == start {
                break;
            }
            lines.swap(at, next);
            at = next;
        }
    }
}

/// The keys of `lines[part]`, each with its line's number.
fn keys_of(lines: &[SettlementLine], part: Range<usize>) -> KeysMet<'_, ()> {
    let mut keys = KeysMet::with_capacity(part.len());
    for k in part {
        keys.push(&LineFields::of(&lines[k]), k as u32, ());
    }
    keys
}

/// The canonical form of one line, `\n` included (see the module docs).
pub fn canonical_line(line: &SettlementLine) -> String {
    LineFields::of(line).canonical()
}

/// Append the canonical form of `line` to `out`, without allocating or formatting per field
/// (the checksum of a million lines reuses one buffer).
fn write_canonical_line(out: &mut String, line: &LineFields<'_>) {
    for text in [
        line.department,
        line.provider,
        line.request,
        line.item,
        line.sku,
    ] {
        out.push_str(text);
        out.push('|');
    }
    write_line_from_type(out, line);
}

/// The canonical form of `line` from its type on, `\n` included (its names are not read).
fn write_line_from_type(out: &mut String, line: &LineFields<'_>) {
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
    out.push_str(line.unit);
    out.push('|');
    push_two_places(out, line.discount_percent);
    out.push('|');
    push_two_places(out, line.amount);
    out.push('\n');
}

/// `2026-10-15T16:00:00Z`: RFC 3339 in UTC, whole seconds.
fn push_instant(out: &mut String, t: DateTime<Utc>) {
    // The UTC date and time as stored: no offset to apply.
    let (date, time) = (t.naive_utc().date(), t.naive_utc().time());
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
    // Written from the end: the two places, the point, then the whole part's digits (at most
    // 18 of them in a u64 of hundredths).
    let mut text = [b'.'; 21];
    let mut start = text.len() - 3;
    put_digits(&mut text[start + 1..], hundredths % 100);
    let mut whole = hundredths / 100;
    loop {
        start -= 1;
        text[start] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    push_ascii(out, &text[start..]);
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
        write_canonical_line(&mut buffer, &LineFields::of(line));
        hasher.update(buffer.as_bytes());
    }
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
