//! Dollars as people write them, to and from integer micro-USD, exactly: no float ever
//! touches an amount that will be hashed or summed.

/// Parses a non-negative decimal amount of dollars (`0.0015`, `12`, `1.5e-3`) into micro-USD,
/// rounding an amount finer than a micro-dollar to the nearest one (half up), as billing and
/// the daemon's prices do: one rule for every amount given, typed or written by a program
/// whose floats carry noise such as `0.30000000000000004`.
pub fn round_usd(text: &str) -> Result<u64, String> {
    let refuse = |why: &str| format!("invalid amount of dollars {text:?}: {why}");
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => {
            let exponent: i32 = text[at + 1..].parse().map_err(|_| refuse("bad exponent"))?;
            (&text[..at], exponent)
        }
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(refuse("no digits"));
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|byte| byte.is_ascii_digit())
    {
        return Err(refuse("expected digits with an optional decimal point"));
    }
    // value = digits × 10^(exponent − fraction digits); micro-USD = value × 10^6.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let scale = exponent + 6 - fraction.len() as i32;
    if digits.is_empty() {
        return Ok(0);
    }
    let too_large = || refuse("too large");
    if scale >= 0 {
        let base: u64 = digits.parse().map_err(|_| too_large())?;
        let factor = 10u64.checked_pow(scale as u32).ok_or_else(too_large)?;
        let micro = base.checked_mul(factor).ok_or_else(too_large)?;
        return if micro > i64::MAX as u64 {
            Err(too_large())
        } else {
            Ok(micro)
        };
    }
    let cut = digits.len() as i32 + scale;
    let (kept, dropped) = if cut <= 0 {
        ("", digits)
    } else {
        digits.split_at(cut as usize)
    };
    // When the cut falls before the first digit, implied zeros come first: nothing to round
    // up.
    let up = cut >= 0
        && dropped
            .as_bytes()
            .first()
            .is_some_and(|digit| *digit >= b'5');
    let micro: u64 = if kept.is_empty() {
        0
    } else {
        kept.parse().map_err(|_| too_large())?
    };
    let micro = micro.saturating_add(u64::from(up));
    if micro > i64::MAX as u64 {
        Err(too_large())
    } else {
        Ok(micro)
    }
}

/// Micro-USD as dollars with all six decimals, such as `$0.002310`.
pub fn format_usd(micro_usd: u64) -> String {
    format!("${}.{:06}", micro_usd / 1_000_000, micro_usd % 1_000_000)
}

/// An entry's money as a table shows it: dollars, or `unpriced` when nobody could price the
/// call (never `$0.000000`, which would say it was free).
pub fn show_money(micro_usd: Option<u64>) -> String {
    micro_usd.map_or_else(|| "unpriced".to_owned(), format_usd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<u64, &str>) {
        match (round_usd(text), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn amounts() {
        check("0.0015", Ok(1500));
        check("12", Ok(12_000_000));
        check("0", Ok(0));
        check(".5", Ok(500_000));
        check("3.", Ok(3_000_000));
        check("1.5e-3", Ok(1500));
        check("2E2", Ok(200_000_000));
        check("0.000001", Ok(1));
        check("0.0000010", Ok(1));
        check("1e-7", Ok(0));
        check("0.0000015", Ok(2));
        check("-1", Err("expected digits"));
        check("abc", Err("expected digits"));
        check("", Err("no digits"));
        check(".", Err("no digits"));
        check("1e", Err("bad exponent"));
        check("1e99999999999", Err("bad exponent"));
        check("99999999999999999999", Err("too large"));
        check("1e30", Err("too large"));
        check("9223372036854.775807", Ok(9_223_372_036_854_775_807));
        check("9223372036854.775808", Err("too large"));
    }

    #[test]
    fn rounding_takes_float_noise_to_the_nearest_micro_dollar() {
        assert_eq!(round_usd("0.30000000000000004"), Ok(300_000));
        assert_eq!(round_usd("0.0000015"), Ok(2));
        assert_eq!(round_usd("0.0000014999"), Ok(1));
        assert_eq!(round_usd("0.0000005"), Ok(1));
        assert_eq!(round_usd("0.00000049"), Ok(0));
        assert_eq!(round_usd("1e-7"), Ok(0));
        assert_eq!(round_usd("1.2345675e-1"), Ok(123_457));
        assert_eq!(round_usd("0.0015"), Ok(1500));
        assert!(round_usd("9223372036854.7758075").is_err());
        assert!(round_usd("-0.1").is_err());
    }
}
