//! Dollars as people write them, to and from integer micro-USD, exactly: no float ever
//! touches an amount that will be hashed or summed.

/// Parses a non-negative decimal amount of dollars (`0.0015`, `12`, `1.5e-3`) into micro-USD.
/// An amount finer than a micro-dollar is refused rather than rounded.
pub fn parse_usd(text: &str) -> Result<u64, String> {
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
    if dropped.bytes().any(|byte| byte != b'0') {
        return Err(refuse("finer than a micro-dollar (six decimal places)"));
    }
    if kept.is_empty() {
        return Ok(0);
    }
    let micro: u64 = kept.parse().map_err(|_| too_large())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<u64, &str>) {
        match (parse_usd(text), expected) {
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
        check("1e-7", Err("finer than a micro-dollar"));
        check("0.0000015", Err("finer than a micro-dollar"));
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
}
