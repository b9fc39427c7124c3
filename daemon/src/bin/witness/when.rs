//! Times on the command line, as journalctl takes them: RFC 3339 (`2026-11-22T10:00:00Z`,
//! with any offset); a local date or date and time (`2026-11-22`, `2026-11-22 10:00`,
//! `2026-11-22 10:00:30`); `now`, `today`, `yesterday` (local midnight); or a span back from
//! now (`90s`, `15m`, `-15m`, `2h`, `7d`, `2w`). Tables print times in the local zone, in
//! UTC or relative to now ([`Shown`]); JSON always prints RFC 3339 in UTC.

use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// What a time may look like, for error messages.
const FORMS: &str = "expected RFC 3339 such as 2026-11-22T10:00:00Z, a local date or time such \
    as 2026-11-22 or \"2026-11-22 10:00\", now, today, yesterday, or a span back from now \
    such as 15m, 2h or 7d";

/// Parses a time into nanoseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let spanned = text.strip_prefix('-').unwrap_or(text);
    if let Some(span) = parse_span(spanned) {
        let span = span.map_err(|why| format!("invalid time {text:?}: {why}"))?;
        let now = Timestamp::now().as_nanosecond();
        return i64::try_from(now - span)
            .map_err(|_| format!("invalid time {text:?}: too far back"));
    }
    let timestamp = named(text)
        .or_else(|| text.parse::<Timestamp>().ok())
        .or_else(|| local(text))
        .ok_or_else(|| format!("invalid time {text:?}: {FORMS}"))?;
    i64::try_from(timestamp.as_nanosecond())
        .ok()
        .filter(|&ns| ns >= 0)
        .ok_or_else(|| format!("invalid time {text:?}: before 1970 or after 2262"))
}

/// `now`, `today` and `yesterday`, in the local time zone.
fn named(text: &str) -> Option<Timestamp> {
    let zone = TimeZone::system();
    let today = Timestamp::now().to_zoned(zone.clone()).date();
    let date = match text {
        "now" => return Some(Timestamp::now()),
        "today" => today,
        "yesterday" => today.yesterday().ok()?,
        _ => return None,
    };
    date.to_zoned(zone).ok().map(|zoned| zoned.timestamp())
}

/// A date, or a date and time with a space or a `T`, in the local time zone.
fn local(text: &str) -> Option<Timestamp> {
    let zone = TimeZone::system();
    let civil = match text.parse::<DateTime>() {
        Ok(datetime) => datetime,
        Err(_) => text
            .parse::<Date>()
            .ok()?
            .to_datetime(jiff::civil::Time::midnight()),
    };
    civil.to_zoned(zone).ok().map(|zoned| zoned.timestamp())
}

/// `Some` when the text looks like a span (digits then a unit), with its length in
/// nanoseconds or why it is wrong.
fn parse_span(text: &str) -> Option<Result<i128, String>> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    if split == 0 || text[split..].contains(|c: char| c.is_ascii_digit() || c == '-') {
        return None;
    }
    let (number, unit) = text.split_at(split);
    let seconds: i128 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        other => {
            return Some(Err(format!("unknown unit {other:?}: use s, m, h, d or w")));
        }
    };
    Some(
        number
            .parse::<i128>()
            .map_err(|error| error.to_string())
            .map(|n| n * seconds * 1_000_000_000),
    )
}

/// How tables show a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Shown {
    /// In the local time zone, to the millisecond: `2026-11-24 10:15:02.123`.
    #[default]
    Local,
    /// In UTC, as RFC 3339 to the millisecond: `2026-11-24T09:15:02.123Z`.
    Utc,
    /// Back from now: `5 min ago`, `3 d ago`.
    Relative,
}

static SHOWN: OnceLock<Shown> = OnceLock::new();

/// Sets how [`show`] prints times, once, from the command line.
pub fn set_shown(shown: Shown) {
    let _ = SHOWN.set(shown);
}

/// A time for a table, as the command line asked ([`set_shown`]).
pub fn show(ns: i64) -> String {
    show_as(
        ns,
        SHOWN.get().copied().unwrap_or_default(),
        Timestamp::now(),
    )
}

fn show_as(ns: i64, shown: Shown, now: Timestamp) -> String {
    let Ok(time) = Timestamp::from_nanosecond(i128::from(ns)) else {
        return ns.to_string();
    };
    match shown {
        Shown::Utc => format!("{time:.3}"),
        Shown::Local => time
            .to_zoned(TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        Shown::Relative => {
            let back = now.as_nanosecond() - time.as_nanosecond();
            match back {
                ..0 => format!("in {}", rough(-back)),
                0..1_000_000_000 => "now".to_owned(),
                _ => format!("{} ago", rough(back)),
            }
        }
    }
}

/// A span, to its largest unit: `40 s`, `5 min`, `3 h`, `2 d`.
fn rough(ns: i128) -> String {
    let seconds = ns / 1_000_000_000;
    match seconds {
        ..60 => format!("{seconds} s"),
        60..3_600 => format!("{} min", seconds / 60),
        3_600..86_400 => format!("{} h", seconds / 3_600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// RFC 3339 in UTC with all the digits stored, for JSON.
pub fn rfc3339(ns: i64) -> String {
    witness_daemon::read::rfc3339(ns)
}

/// A duration in nanoseconds, for people: `850 ms`, `4.2 s`, `3 min 10 s`, `2 h 5 min`,
/// `4 d 23 h`.
pub fn duration(ns: i64) -> String {
    let ms = ns / 1_000_000;
    if ms >= 86_400_000 {
        return format!("{} d {} h", ms / 86_400_000, ms % 86_400_000 / 3_600_000);
    }
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_as_asked() {
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let ns = |text: &str| text.parse::<Timestamp>().unwrap().as_nanosecond() as i64;
        let at = ns("2026-11-24T11:55:00.25Z");
        assert_eq!(show_as(at, Shown::Utc, now), "2026-11-24T11:55:00.250Z");
        assert_eq!(
            show_as(ns("2026-11-24T11:55:00Z"), Shown::Relative, now),
            "5 min ago"
        );
        assert_eq!(
            show_as(ns("2026-11-19T12:00:00Z"), Shown::Relative, now),
            "5 d ago"
        );
        assert_eq!(
            show_as(ns("2026-11-24T12:00:30Z"), Shown::Relative, now),
            "in 30 s"
        );
        let local = show_as(at, Shown::Local, now);
        let expected = Timestamp::from_nanosecond(i128::from(at))
            .unwrap()
            .to_zoned(TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S%.3f")
            .to_string();
        assert_eq!(local, expected);
        assert_eq!(
            duration(5 * 86_400_000_000_000 - 3_600_000_000_000),
            "4 d 23 h"
        );
    }

    #[test]
    fn parses_rfc3339_with_offsets() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert_eq!(parse_time("1970-01-01T01:00:01+01:00"), Ok(1_000_000_000));
        assert_eq!(
            parse_time("2026-11-22T10:00:00.5Z").map(rfc3339),
            Ok("2026-11-22T10:00:00.5Z".to_owned())
        );
    }

    #[test]
    fn parses_spans_back_from_now() {
        let now = Timestamp::now().as_nanosecond() as i64;
        let back = parse_time("15m").unwrap();
        let expected = now - 15 * 60 * 1_000_000_000;
        assert!(
            (back - expected).abs() < 5_000_000_000,
            "{back} vs {expected}"
        );
        assert!(parse_time("7d").unwrap() < parse_time("2h").unwrap());
    }

    #[test]
    fn takes_what_journalctl_takes() {
        let now = Timestamp::now().as_nanosecond() as i64;
        let today = parse_time("today").unwrap();
        let yesterday = parse_time("yesterday").unwrap();
        assert!(today <= now && now - today < 86_400_000_000_000 + 3_600_000_000_000);
        // A day, give or take a change of daylight saving time.
        assert!((today - yesterday - 86_400_000_000_000).abs() <= 3_600_000_000_000);
        assert!((parse_time("now").unwrap() - now).abs() < 5_000_000_000);
        let minus = parse_time("-5m").unwrap();
        assert!((minus - parse_time("5m").unwrap()).abs() < 5_000_000_000);
        let date = parse_time("2026-11-22").unwrap();
        assert_eq!(parse_time("2026-11-22 00:00").unwrap(), date);
        assert_eq!(
            parse_time("2026-11-22 10:00:30").unwrap(),
            date + 36_030_000_000_000
        );
        assert_eq!(
            parse_time("2026-11-22T10:00:30").unwrap(),
            date + 36_030_000_000_000
        );
    }

    #[test]
    fn refuses_garbage_without_the_parsers_words() {
        for text in [
            "",
            "tomorrowish",
            "15x",
            "2026-13-01T00:00:00Z",
            "2026-02-30",
            "1969-12-31T00:00:00Z",
            "5m3",
            "--5m",
        ] {
            let error = parse_time(text).expect_err(text);
            assert!(error.contains("invalid time"), "{text}: {error}");
            assert!(!error.contains("failed to parse"), "{text}: {error}");
        }
    }

    #[test]
    fn prints_milliseconds_and_durations() {
        assert_eq!(
            show_as(1_500_000_000, Shown::Utc, Timestamp::now()),
            "1970-01-01T00:00:01.500Z"
        );
        assert_eq!(duration(850_000_000), "850 ms");
        assert_eq!(duration(4_200_000_000), "4.2 s");
        assert_eq!(duration(190_000_000_000), "3 min 10 s");
    }
}
