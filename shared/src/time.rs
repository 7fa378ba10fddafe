//! Time formats S3 uses, as pure functions of a `SystemTime` the adapter passes in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::time::{
    format_description::FormatItem, macros::format_description, OffsetDateTime, PrimitiveDateTime,
};

const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
const ISO8601: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

fn to_offset(t: SystemTime) -> OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `20130524T000000Z`, the form of `X-Amz-Date`.
///
/// Written digit by digit: every signed backend request and presigned URL needs one, and the
/// general formatter cost ten times as much (docs/performance.md).
pub fn amz_date(t: SystemTime) -> String {
    let dt = to_offset(t);
    let Some(year) = four_digit_year(&dt) else {
        return dt.format(AMZ_DATE).unwrap_or_default();
    };
    let mut out = *b"00000000T000000Z";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[4..6], u32::from(u8::from(dt.month())));
    put_digits(&mut out[6..8], u32::from(dt.day()));
    put_digits(&mut out[9..11], u32::from(dt.hour()));
    put_digits(&mut out[11..13], u32::from(dt.minute()));
    put_digits(&mut out[13..15], u32::from(dt.second()));
    ascii_string(&out)
}

/// `YYYY-MM`, the month operations are counted in (once per backend request: written digit by
/// digit, as [`amz_date`]).
pub fn year_month(t: SystemTime) -> String {
    let dt = to_offset(t);
    let Some(year) = four_digit_year(&dt) else {
        let mut month = iso8601(t);
        month.truncate("YYYY-MM".len());
        return month;
    };
    let mut out = *b"0000-00";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], u32::from(u8::from(dt.month())));
    ascii_string(&out)
}

/// `2026-12-01T12:45:27.972487Z` (UTC, microseconds): the log's timestamp, as
/// tracing-subscriber writes it, digit by digit (once per access-log line). `None` outside
/// years 0..=9999.
pub fn rfc3339_micros(t: SystemTime) -> Option<[u8; 27]> {
    let dt = OffsetDateTime::from(t);
    let year = four_digit_year(&dt)?;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], u32::from(u8::from(dt.month())));
    put_digits(&mut out[8..10], u32::from(dt.day()));
    put_digits(&mut out[11..13], u32::from(dt.hour()));
    put_digits(&mut out[14..16], u32::from(dt.minute()));
    put_digits(&mut out[17..19], u32::from(dt.second()));
    put_digits(&mut out[20..26], dt.microsecond());
    Some(out)
}

/// The year, when the digit-by-digit writers can take it (the general formatter takes the
/// others).
fn four_digit_year(dt: &OffsetDateTime) -> Option<u32> {
    u32::try_from(dt.year()).ok().filter(|y| *y <= 9999)
}

/// `bytes` (ASCII the caller wrote: digits, hex) as a `String` of exactly their length.
/// `str::from_utf8` checks ASCII a word at a time; `String::from_utf8_lossy` went through
/// its chunk iterator byte by byte (~500 instructions for 64 bytes).
pub fn ascii_string(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes).unwrap_or_default().to_owned()
}

/// The last `out.len()` decimal digits of `n` into `out`, zero-padded.
fn put_digits(out: &mut [u8], mut n: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Parses `X-Amz-Date`.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let dt = PrimitiveDateTime::parse(s, AMZ_DATE).ok()?.assume_utc();
    let secs = u64::try_from(dt.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// `2009-10-12T17:50:30.000Z`, the form of `<LastModified>` in XML bodies.
pub fn iso8601(t: SystemTime) -> String {
    to_offset(t).format(ISO8601).unwrap_or_default()
}

/// Parses `<LastModified>` as backends send it (with or without fractional seconds).
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let dt = OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(dt.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// `Wed, 12 Oct 2009 17:50:00 GMT`, the form of `Last-Modified` and `Date` headers (the
/// engine passes backends' headers through as they are; the tests write their own).
#[cfg(test)]
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok()
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        let t = from_unix_secs(1_369_353_600); // 2013-05-24T00:00:00Z
        assert_eq!(amz_date(t), "20130524T000000Z");
        assert_eq!(parse_amz_date("20130524T000000Z"), Some(t));
        assert_eq!(iso8601(t), "2013-05-24T00:00:00.000Z");
        assert_eq!(parse_iso8601("2013-05-24T00:00:00.000Z"), Some(t));
        assert_eq!(parse_iso8601("2013-05-24T00:00:00Z"), Some(t));
        assert_eq!(http_date(t), "Fri, 24 May 2013 00:00:00 GMT");
        assert_eq!(parse_http_date("Fri, 24 May 2013 00:00:00 GMT"), Some(t));
    }

    #[test]
    fn amz_date_and_month_are_what_the_general_formatter_writes() {
        // Every 100,003 s (so every hour, minute and second comes up) from 1970 to 2096.
        for secs in (0..4_000_000_000u64).step_by(100_003).chain([u64::MAX / 2]) {
            let t = from_unix_secs(secs.min(253_402_300_799));
            assert_eq!(
                amz_date(t),
                to_offset(t).format(AMZ_DATE).unwrap(),
                "{secs}"
            );
            assert_eq!(year_month(t), iso8601(t)[..7], "{secs}");
        }
    }

    #[test]
    fn log_timestamps_are_what_the_general_formatter_writes() {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        // Every 100,003.000127 s from 1970 to 2096: every hour, minute and second comes up.
        for i in 0..40_000u64 {
            let t = UNIX_EPOCH + Duration::from_nanos(i * 100_003_000_127_000);
            let ours = rfc3339_micros(t).unwrap();
            let general = OffsetDateTime::from(t).format(format).unwrap();
            assert_eq!(std::str::from_utf8(&ours).unwrap(), general);
        }
    }
}
