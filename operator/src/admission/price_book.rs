//! Judging a PriceBook as it is created or changed (pure): for one provider and SKU at most one
//! book may be in force at any instant, so a book that would overlap another is refused, naming
//! the other book, the provider, the SKU and the common window.

use crate::{api::PriceBook, billing::find_overlaps};

/// Whether `book` may join `existing` (the books in the cluster now; its own earlier version, by
/// name, is left out). A malformed book is left to the API server's schema validation.
pub fn judge_price_book(book: &PriceBook, existing: &[PriceBook]) -> Result<(), String> {
    let name = book.metadata.name.as_deref().unwrap_or_default();
    let others = existing
        .iter()
        .filter(|b| b.metadata.name.as_deref() != Some(name))
        .filter(|b| b.spec.provider == book.spec.provider)
        .filter(|b| {
            find_overlaps([(b.metadata.name.as_deref().unwrap_or_default(), &b.spec)]).is_ok()
        });
    let all = others
        .map(|b| (b.metadata.name.as_deref().unwrap_or_default(), &b.spec))
        .chain([(name, &book.spec)]);
    let Ok(overlaps) = find_overlaps(all) else {
        return Ok(());
    };
    let mine: Vec<String> = overlaps
        .iter()
        .filter(|o| o.first == name || o.second == name)
        .map(ToString::to_string)
        .collect();
    match mine.as_slice() {
        [] => Ok(()),
        found => Err(format!(
            "spec.effectiveFrom/spec.effectiveUntil: PriceBook {name} would overlap another book: {}. For one provider and SKU only one book may be in force at a time: end the earlier book where this one begins (its spec.effectiveUntil), or start this one where the other ends",
            found.join("; ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::price_book::PriceUnit;
    use crate::billing::prices::tests::book;

    fn named(name: &str, spec: crate::api::price_book::PriceBookSpec) -> PriceBook {
        PriceBook::new(name, spec)
    }

    #[test]
    fn an_overlapping_book_is_refused_naming_the_other() {
        let h = PriceUnit::Hour;
        let old = named(
            "p-2026",
            book(
                "p",
                "2026-01-01T00:00:00Z",
                None,
                &[("ecs", h, "1.00", false)],
                &[],
            ),
        );
        let other_provider = named(
            "q-2026",
            book(
                "q",
                "2026-01-01T00:00:00Z",
                None,
                &[("ecs", h, "1.00", false)],
                &[],
            ),
        );
        let new = named(
            "p-2027",
            book(
                "p",
                "2027-01-01T00:00:00Z",
                None,
                &[("ecs", h, "0.90", false)],
                &[],
            ),
        );
        let existing = [old.clone(), other_provider];
        let refused = judge_price_book(&new, &existing).unwrap_err();
        assert!(
            refused.contains("books p-2026 and p-2027 both price provider p SKU ecs from 2027-01-01T00:00:00Z to open end"),
            "{refused}"
        );
        // Ended where the new one begins, both are fine; and a book may be edited in place.
        let mut ended = old.clone();
        ended.spec.effective_until = Some("2027-01-01T00:00:00Z".into());
        assert_eq!(judge_price_book(&new, &[ended.clone()]), Ok(()));
        assert_eq!(judge_price_book(&ended, &existing), Ok(()));
        // Another SKU of the same provider doesn't overlap.
        let other_sku = named(
            "p-rds",
            book(
                "p",
                "2026-01-01T00:00:00Z",
                None,
                &[("rds", h, "9.00", false)],
                &[],
            ),
        );
        assert_eq!(judge_price_book(&other_sku, &existing), Ok(()));
    }
}
