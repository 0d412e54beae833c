//! Filing numbers (备案号): a unique, sequential, human-readable number per year for every
//! approved request, e.g. `YZ-2026-000123`.
//!
//! This module only formats, parses and computes the next number from those already given.
//! Uniqueness under concurrency is the controller's job: only the leader allocates, one number
//! at a time under its allocation lock, and the last number per year is recorded in a ConfigMap
//! written with optimistic concurrency (`resourceVersion` precondition), so that a replica that
//! lost the lease — or a write that raced another — fails instead of handing out a number twice.
//! The year is the approval's calendar year in `Asia/Shanghai`.

use std::{fmt, str::FromStr};

/// Prefix of every filing number.
pub const PREFIX: &str = "YZ";

/// A filing number: `YZ-<year>-<seq>`, the sequence zero-padded to six digits (more digits once
/// a year has more than 999999 filings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilingNumber {
    pub year: i32,
    /// 1 for the first filing of the year.
    pub seq: u64,
}

impl fmt::Display for FilingNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{:04}-{:06}", self.year, self.seq)
    }
}

/// Why a string is not a filing number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a filing number: expected YZ-<4-digit year>-<sequence of at least 6 digits, from 000001>, e.g. YZ-2026-000123"
)]
pub struct FilingNumberError {
    pub value: String,
}

impl FromStr for FilingNumber {
    type Err = FilingNumberError;

    /// Parses the canonical form only, so that parsing and writing back gives the same string:
    /// a sequence longer than six digits has no leading zero, and 0 is not a sequence number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || FilingNumberError {
            value: s.to_owned(),
        };
        let rest = s
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .ok_or_else(invalid)?;
        let (year, seq) = rest.split_once('-').ok_or_else(invalid)?;
        let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if year.len() != 4 || !all_digits(year) || !all_digits(seq) || seq.len() < 6 {
            return Err(invalid());
        }
        if seq.len() > 6 && seq.starts_with('0') {
            return Err(invalid());
        }
        let year = year.parse::<i32>().map_err(|_| invalid())?;
        let seq = seq.parse::<u64>().map_err(|_| invalid())?;
        if seq == 0 {
            return Err(invalid());
        }
        Ok(FilingNumber { year, seq })
    }
}

/// The next filing number of `year`: one more than the highest sequence of that year among
/// `existing`, or 1 for the year's first filing. Numbers of other years are ignored.
pub fn next_filing_number<'a>(
    year: i32,
    existing: impl Iterator<Item = &'a FilingNumber>,
) -> FilingNumber {
    let max = existing
        .filter(|f| f.year == year)
        .map(|f| f.seq)
        .max()
        .unwrap_or(0);
    FilingNumber {
        year,
        // 2^64 filings in a year can't happen; saturating keeps this total without a panic path.
        seq: max.saturating_add(1),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn f(year: i32, seq: u64) -> FilingNumber {
        FilingNumber { year, seq }
    }

    #[test]
    fn format_pads_to_six_digits_and_grows_beyond() {
        assert_eq!(f(2026, 123).to_string(), "YZ-2026-000123");
        assert_eq!(f(2026, 1).to_string(), "YZ-2026-000001");
        assert_eq!(f(2026, 999_999).to_string(), "YZ-2026-999999");
        assert_eq!(f(2026, 1_000_000).to_string(), "YZ-2026-1000000");
    }

    #[test]
    fn parse_canonical_forms() {
        assert_eq!("YZ-2026-000123".parse(), Ok(f(2026, 123)));
        assert_eq!("YZ-2027-1000000".parse(), Ok(f(2027, 1_000_000)));
    }

    #[test]
    fn parse_refuses_other_forms_with_a_message() {
        for bad in [
            "",
            "YZ-2026-123",
            "yz-2026-000123",
            "XX-2026-000123",
            "YZ2026-000123",
            "YZ-26-000123",
            "YZ-2026-000000",
            "YZ-2026-0001234",
            "YZ-2026-00012a",
            "YZ-2026-+00123",
            "YZ-2026-000123-1",
            "YZ--2026-000123",
            "YZ-2026-99999999999999999999999",
        ] {
            let err = bad.parse::<FilingNumber>().expect_err(bad);
            assert_eq!(err.value, bad);
        }
        assert_eq!(
            "YZ-2026-123"
                .parse::<FilingNumber>()
                .unwrap_err()
                .to_string(),
            "\"YZ-2026-123\" is not a filing number: expected YZ-<4-digit year>-<sequence of at least 6 digits, from 000001>, e.g. YZ-2026-000123"
        );
    }

    #[test]
    fn next_is_max_of_the_year_plus_one() {
        let existing = [
            f(2025, 900),
            f(2026, 3),
            f(2026, 17),
            f(2026, 5),
            f(2027, 1),
        ];
        assert_eq!(next_filing_number(2026, existing.iter()), f(2026, 18));
        assert_eq!(next_filing_number(2025, existing.iter()), f(2025, 901));
    }

    #[test]
    fn first_of_a_year_is_one() {
        let existing = [f(2025, 900)];
        assert_eq!(next_filing_number(2026, existing.iter()), f(2026, 1));
        assert_eq!(next_filing_number(2026, [].iter()), f(2026, 1));
        assert_eq!(
            next_filing_number(2026, [].iter()).to_string(),
            "YZ-2026-000001"
        );
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(year in 1000i32..=9999, seq in 1u64..=u64::MAX) {
            let n = f(year, seq);
            prop_assert_eq!(n.to_string().parse::<FilingNumber>(), Ok(n));
        }

        #[test]
        fn next_is_new_and_greatest(year in 2024i32..2028, seqs in prop::collection::vec((2024i32..2028, 1u64..1000), 0..50)) {
            let existing: Vec<_> = seqs.iter().map(|(y, s)| f(*y, *s)).collect();
            let next = next_filing_number(year, existing.iter());
            prop_assert_eq!(next.year, year);
            prop_assert!(existing.iter().filter(|e| e.year == year).all(|e| e.seq < next.seq));
        }
    }
}
