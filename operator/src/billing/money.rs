//! Money and percentages: `Decimal` in, the API's decimal strings out. Never floats.
//!
//! Rounding is half-up (away from zero at the midpoint) to the fen (0.01 CNY), once per line.

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};

use super::BillingError;
use crate::api::{Money, Percent};

/// Decimal places of an amount in yuan: fen.
pub const FEN_PLACES: u32 = 2;

/// The largest amount a `Money` string can hold: 13 integer digits, two decimals.
fn money_max() -> Decimal {
    // 9_999_999_999_999.99 = 999_999_999_999_999 × 10⁻²; the mantissa fits, so this can't fail.
    Decimal::new(999_999_999_999_999, FEN_PLACES)
}

/// Rounds an amount half-up to the fen: `0.005 → 0.01`, `-0.005 → -0.01`, `2.344 → 2.34`.
pub fn round_fen(amount: Decimal) -> Decimal {
    let rounded = amount.round_dp_with_strategy(FEN_PLACES, RoundingStrategy::MidpointAwayFromZero);
    // `-0.001` rounds to a negative zero; write it as plain zero.
    if rounded.is_zero() {
        Decimal::ZERO
    } else {
        rounded
    }
}

/// Parses an API amount (`Money`), checking the API pattern
/// `^(0|[1-9][0-9]{0,12})(\.[0-9]{1,2})?$` so that e.g. `"1e3"`, `"01"`, `"-1"` or `"1_000"`
/// are refused here as they are by the API server. `field` names it in the error.
pub fn parse_money(field: &str, money: &Money) -> Result<Decimal, BillingError> {
    let s = money.0.as_str();
    let invalid = || BillingError::InvalidMoney {
        field: field.to_owned(),
        value: s.to_owned(),
    };
    let (int, frac) = split_decimal(s).ok_or_else(invalid)?;
    let int_ok = int == "0" || (!int.starts_with('0') && (1..=13).contains(&int.len()));
    let frac_ok = frac.is_none_or(|f| (1..=2).contains(&f.len()));
    if !int_ok || !frac_ok {
        return Err(invalid());
    }
    Decimal::from_str(s).map_err(|_| invalid())
}

/// Writes an amount as `Money` with exactly two decimals (`"929.03"`, `"0.00"`), rounding half-up
/// to the fen first. Negative amounts and amounts over 9999999999999.99 are refused.
pub fn format_money(field: &str, amount: Decimal) -> Result<Money, BillingError> {
    let rounded = round_fen(amount);
    if rounded < Decimal::ZERO || rounded > money_max() {
        return Err(BillingError::AmountOutOfRange {
            field: field.to_owned(),
            value: amount.to_string(),
        });
    }
    Ok(Money(format_fen(rounded)))
}

/// Writes a signed amount with exactly two decimals, e.g. `"-12.30"` or `"45.00"`: the form of
/// `status.estimate.monthlyDelta`, which may be negative.
pub fn format_signed(amount: Decimal) -> String {
    format_fen(round_fen(amount))
}

/// Two decimals, half-up; the one place amounts become text.
pub(crate) fn format_fen(amount: Decimal) -> String {
    format!("{:.2}", round_fen(amount))
}

/// Parses an API percentage (`Percent`): 0 to 100 with at most two decimals, checking the API
/// pattern `^(100(\.0{1,2})?|[0-9]{1,2}(\.[0-9]{1,2})?)$`.
pub fn parse_percent(field: &str, percent: &Percent) -> Result<Decimal, BillingError> {
    let s = percent.0.as_str();
    let invalid = || BillingError::InvalidPercent {
        field: field.to_owned(),
        value: s.to_owned(),
    };
    let (int, frac) = split_decimal(s).ok_or_else(invalid)?;
    let frac_ok = frac.is_none_or(|f| (1..=2).contains(&f.len()));
    let int_ok = (1..=2).contains(&int.len())
        || (int == "100" && frac.is_none_or(|f| f.bytes().all(|b| b == b'0')));
    if !int_ok || !frac_ok {
        return Err(invalid());
    }
    Decimal::from_str(s).map_err(|_| invalid())
}

/// Writes a percentage as `Percent` with two decimals, e.g. `"12.50"`. Refuses values outside
/// 0..=100 or with more than two decimals (a percentage is never rounded silently).
pub fn format_percent(field: &str, percent: Decimal) -> Result<Percent, BillingError> {
    if percent < Decimal::ZERO || percent > Decimal::ONE_HUNDRED || percent.normalize().scale() > 2
    {
        return Err(BillingError::InvalidPercent {
            field: field.to_owned(),
            value: percent.to_string(),
        });
    }
    Ok(Percent(format_fen(percent)))
}

/// `quantity × price × part ÷ whole × (100 − percent) ÷ 100`, unrounded, with ONE division at
/// the end. Dividing first (`… ÷ whole`, then the discount) truncates a repeating quotient to 28
/// digits, and an amount that is exactly half a fen, e.g. 5 × 0.80 × 73425 s ÷ 3600 s × 90% =
/// 73.425, came out as 73.42499… and rounded down. Found by the settlement benchmark's
/// comparison with DuckDB.
pub fn discounted_share(
    quantity: Decimal,
    price: Decimal,
    part: i64,
    whole: i64,
    percent: Decimal,
) -> Option<Decimal> {
    let keep = Decimal::ONE_HUNDRED.checked_sub(percent)?;
    let numerator = quantity
        .checked_mul(price)?
        .checked_mul(Decimal::from(part))?
        .checked_mul(keep)?;
    numerator.checked_div(Decimal::from(whole).checked_mul(Decimal::ONE_HUNDRED)?)
}

/// `round_fen(discounted_share(…))`, the amount of a line: the same value, with the same scale
/// (`57.6`, `57.60` and `0` stay apart in a line's JSON), or `None` where that overflows.
///
/// Computed in integers when the inputs are non-negative with at most six decimals between them
/// (quantities, prices and percentages have at most two each), the product `quantity × price ×
/// part × (100 − percent)` fits a `Decimal` (under 2⁹⁶, so `discounted_share` multiplies
/// exactly), `whole × 100` fits 32 bits and the amount is under 10⁸ yuan; through `Decimal`
/// otherwise. Where the integers apply, rounding the exact quotient is rounding `Decimal`'s:
/// a quotient `m ÷ (whole × 100 × 10^scale)` that is not a half fen is at least
/// `1 ÷ (200 × whole × 100 × 10⁶)` > 10⁻¹⁸ away from one, and `Decimal` keeps an amount under
/// 10⁸ to 19 or more places (28 significant digits), so its last-place error can't cross one.
pub fn discounted_amount(
    quantity: Decimal,
    price: Decimal,
    part: i64,
    whole: i64,
    percent: Decimal,
) -> Option<Decimal> {
    match amount_in_integers(quantity, price, part, whole, percent) {
        Some(amount) => Some(amount),
        None => discounted_share(quantity, price, part, whole, percent).map(round_fen),
    }
}

/// [`discounted_amount`] in integers, `None` where it must go through `Decimal`.
fn amount_in_integers(
    quantity: Decimal,
    price: Decimal,
    part: i64,
    whole: i64,
    percent: Decimal,
) -> Option<Decimal> {
    const DECIMAL_MANTISSA_END: i128 = 1 << 96;
    const FEN_END: i128 = 10_000_000_000;
    let pow10 = |n: u32| 10i128.pow(n);
    let non_negative = [quantity, price, percent].iter().all(|d| d.mantissa() >= 0);
    // `100 − percent` as `Decimal` subtracts: at the percentage's scale, but `100` itself when
    // the percentage is zero.
    let keep_scale = if percent.is_zero() {
        0
    } else {
        percent.scale()
    };
    let scale = quantity.scale() + price.scale() + keep_scale;
    let divisor = i128::from(whole) * 100;
    if !non_negative || part < 0 || keep_scale > 2 || scale > 6 {
        return None;
    }
    if !(1..=i128::from(u32::MAX)).contains(&divisor) {
        return None;
    }
    let keep = 100 * pow10(keep_scale) - percent.mantissa();
    if keep < 0 {
        return None;
    }
    // `discounted_share`'s numerator, with `scale` places.
    let numerator = quantity
        .mantissa()
        .checked_mul(price.mantissa())?
        .checked_mul(i128::from(part))?
        .checked_mul(keep)?;
    if numerator >= DECIMAL_MANTISSA_END {
        return None;
    }
    // numerator × 100 ÷ (divisor × 10^scale), rounded half-up.
    let denominator = divisor * pow10(scale);
    let fen = (numerator * 200 + denominator) / (2 * denominator);
    if fen == 0 {
        return Some(Decimal::ZERO);
    }
    if fen >= FEN_END {
        return None;
    }
    // `Decimal` divides to the fewest places that are exact; `round_fen` keeps up to two.
    let places = (scale..=2)
        .find(|&places| (numerator * pow10(places - scale)) % divisor == 0)
        .unwrap_or(2);
    Decimal::try_from_i128_with_scale(fen / pow10(2 - places), places).ok()
}

/// The amount after a department discount, unrounded: `gross × (1 − percent / 100)`.
/// Callers round the result once, with [`round_fen`].
pub fn apply_discount(gross: Decimal, percent: Decimal) -> Option<Decimal> {
    let keep = Decimal::ONE_HUNDRED.checked_sub(percent)?;
    gross.checked_mul(keep)?.checked_div(Decimal::ONE_HUNDRED)
}

/// Splits `"123.45"` into `("123", Some("45"))`; `None` unless both parts are ASCII digits and
/// the integer part is non-empty.
fn split_decimal(s: &str) -> Option<(&str, Option<&str>)> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (s, None),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !frac.is_none_or(digits) {
        return None;
    }
    Some((int, frac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn rounds_half_up_to_the_fen() {
        assert_eq!(round_fen(d("2.345")), d("2.35"));
        assert_eq!(round_fen(d("2.3449999")), d("2.34"));
        assert_eq!(round_fen(d("0.005")), d("0.01"));
        assert_eq!(round_fen(d("0.004999")), d("0.00"));
        assert_eq!(round_fen(d("-0.005")), d("-0.01"));
        assert_eq!(format_signed(d("-0.001")), "0.00");
    }

    #[test]
    fn parses_money_as_the_api_server_does() {
        for ok in ["0", "0.5", "0.50", "1234.56", "9999999999999.99", "10"] {
            assert!(parse_money("price", &Money::from(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".5",
            "01",
            "1.",
            "1.234",
            "-1",
            "1e3",
            "1_000",
            " 1",
            "10000000000000",
            "1,5",
            "１",
        ] {
            let err = parse_money("spec.items[0].price", &Money::from(bad)).unwrap_err();
            assert!(
                err.to_string().starts_with("spec.items[0].price: "),
                "{err}"
            );
        }
        assert_eq!(parse_money("p", &Money::from("0.80")).unwrap(), d("0.8"));
    }

    #[test]
    fn formats_money_with_two_decimals() {
        assert_eq!(format_money("total", d("929.032258")).unwrap().0, "929.03");
        assert_eq!(format_money("total", d("57.6")).unwrap().0, "57.60");
        assert_eq!(format_money("total", d("0")).unwrap().0, "0.00");
        assert_eq!(format_money("total", d("1.005")).unwrap().0, "1.01");
        assert!(format_money("total", d("-0.01")).is_err());
        assert!(format_money("total", d("10000000000000")).is_err());
        assert_eq!(format_signed(d("-12.3")), "-12.30");
    }

    #[test]
    fn parses_and_formats_percentages() {
        for ok in ["0", "10", "12.5", "99.99", "100", "100.0", "100.00", "05"] {
            assert!(
                parse_percent("percent", &Percent(ok.into())).is_ok(),
                "{ok}"
            );
        }
        for bad in ["", "100.01", "101", "1000", "-1", "12.345", "1e1", "."] {
            assert!(
                parse_percent("percent", &Percent(bad.into())).is_err(),
                "{bad}"
            );
        }
        assert_eq!(format_percent("p", d("12.5")).unwrap().0, "12.50");
        assert!(format_percent("p", d("12.505")).is_err());
        assert!(format_percent("p", d("100.5")).is_err());
    }

    #[test]
    fn discount_is_applied_before_rounding() {
        // 50% off 1.005 is 0.5025, rounded once: 0.50. Rounding the gross first would give
        // 1.01 → 0.505 → 0.51.
        assert_eq!(apply_discount(d("1.005"), d("50")).unwrap(), d("0.5025"));
        // The line the settlement benchmark caught: exactly 73.425, so 73.43.
        let exact = discounted_share(d("5"), d("0.80"), 73425, 3600, d("10")).unwrap();
        assert_eq!(exact, d("73.425"));
        assert_eq!(round_fen(exact), d("73.43"));
        assert_eq!(
            round_fen(apply_discount(d("1.005"), d("50")).unwrap()),
            d("0.50")
        );
        assert_eq!(apply_discount(d("200"), d("100")).unwrap(), d("0"));
    }

    /// What `discounted_amount` must give: `discounted_share` rounded, scale and all.
    fn through_decimal(q: Decimal, p: Decimal, part: i64, whole: i64, pct: Decimal) -> String {
        let amount = discounted_share(q, p, part, whole, pct).map(round_fen);
        format!("{amount:?}")
    }

    #[test]
    fn the_amount_in_integers_is_the_amount_through_decimal() {
        let quantities = [
            "0", "1", "3", "2.5", "2.50", "0.25", "1.000", "40000", "0.01",
        ];
        let prices = [
            "0",
            "0.8",
            "0.80",
            "1.65",
            "1200",
            "1200.00",
            "0.01",
            "9999999999999.99",
        ];
        let percents = [
            "0", "0.00", "5", "12.5", "33.33", "20.25", "99.99", "100", "100.00",
        ];
        let parts = [0, 1, 59, 3600, 73_425, 86_399, 1_339_200, 2_678_400];
        let wholes = [3600, 2_419_200, 2_592_000, 2_595_600, 2_678_400];
        let mut via_integers = 0;
        for q in quantities.map(d) {
            for p in prices.map(d) {
                for pct in percents.map(d) {
                    for part in parts {
                        for whole in wholes {
                            let amount = discounted_amount(q, p, part, whole, pct);
                            assert_eq!(
                                format!("{amount:?}"),
                                through_decimal(q, p, part, whole, pct),
                                "{q} × {p} × {part} ÷ {whole} less {pct} %"
                            );
                            via_integers +=
                                usize::from(amount_in_integers(q, p, part, whole, pct).is_some());
                        }
                    }
                }
            }
        }
        assert!(via_integers > 10_000, "{via_integers}");
        // Exactly half a fen rounds up; a hair under it, down.
        assert_eq!(
            discounted_amount(d("5"), d("0.80"), 73425, 3600, d("10")),
            Some(d("73.43"))
        );
        assert_eq!(
            discounted_amount(d("5"), d("0.80"), 73424, 3600, d("10")),
            Some(d("73.42"))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_amount_in_integers_is_the_amount_through_decimal(
            (q, q_scale) in (0i64..10_000_000_000, 0u32..=3),
            (p, p_scale) in (0i64..100_000_000, 0u32..=2),
            (pct, pct_scale) in (0i64..=10_000, 0u32..=2),
            part in 0i64..40_000_000,
            whole in 1i64..5_000_000,
        ) {
            let (q, p) = (Decimal::new(q, q_scale), Decimal::new(p, p_scale));
            let pct = Decimal::new(pct, pct_scale).min(Decimal::ONE_HUNDRED);
            proptest::prop_assert_eq!(
                format!("{:?}", discounted_amount(q, p, part, whole, pct)),
                through_decimal(q, p, part, whole, pct)
            );
        }
    }
}
