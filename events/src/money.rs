//! Money as integer cents.
//!
//! Floating point cannot represent 0.10 exactly, and the seed's `DECIMAL(10,2)` column
//! rounded differently from its Python service; integer cents make totals exact and
//! make "order total equals the sum of its lines" a check that can actually hold.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount in cents (the smallest currency unit). Signed so refunds and corrections fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cents(i64);

/// Why a decimal amount could not be read as cents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a decimal amount with at most two fractional digits")]
pub struct ParseCentsError {
    input: String,
}

impl Cents {
    /// Zero cents.
    pub const ZERO: Cents = Cents(0);

    /// Wraps a number of cents.
    pub const fn new(cents: i64) -> Self {
        Self(cents)
    }

    /// The number of cents.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    /// `self * n`, or `None` on overflow.
    pub fn checked_mul(self, n: i64) -> Option<Cents> {
        self.0.checked_mul(n).map(Cents)
    }

    /// Reads a decimal amount such as `"12.5"`, `"12.50"` or `"-3"` exactly.
    pub fn parse_decimal(input: &str) -> Result<Cents, ParseCentsError> {
        let err = || ParseCentsError {
            input: input.to_owned(),
        };
        let s = input.trim();
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > 2 {
            return Err(err());
        }
        let whole: i64 = whole.parse().map_err(|_| err())?;
        let frac: i64 = match frac.len() {
            0 => 0,
            1 => frac.parse::<i64>().map_err(|_| err())? * 10,
            _ => frac.parse().map_err(|_| err())?,
        };
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac))
            .ok_or_else(err)?;
        Ok(Cents(if negative { -cents } else { cents }))
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(Cents::parse_decimal("12.50"), Ok(Cents(1250)));
        assert_eq!(Cents::parse_decimal("12.5"), Ok(Cents(1250)));
        assert_eq!(Cents::parse_decimal("0.07"), Ok(Cents(7)));
        assert_eq!(Cents::parse_decimal("3"), Ok(Cents(300)));
        assert_eq!(Cents::parse_decimal("-1.01"), Ok(Cents(-101)));
        for bad in ["", ".5", "1.234", "1,50", "abc", "1.-5", "99999999999999999999"] {
            assert!(Cents::parse_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_as_decimal() {
        assert_eq!(Cents(1250).to_string(), "12.50");
        assert_eq!(Cents(-5).to_string(), "-0.05");
    }

    proptest::proptest! {
        #[test]
        fn display_then_parse_round_trips(c in any_cents()) {
            proptest::prop_assert_eq!(Cents::parse_decimal(&Cents(c).to_string()), Ok(Cents(c)));
        }
    }

    fn any_cents() -> impl proptest::strategy::Strategy<Value = i64> {
        -1_000_000_000_000i64..1_000_000_000_000
    }
}
