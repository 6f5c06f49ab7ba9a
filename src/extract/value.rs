//! Reading MySQL values into the exact types the pipeline computes with:
//! money as integer units of its scale (never floats), instants as
//! microseconds since the Unix epoch (UTC; the session runs at '+00:00').
//!
//! Zero and invalid dates (MySQL accepts them under a relaxed sql_mode) are
//! a data-quality case, not an error, so they come back as [`Ts::Invalid`]
//! with the text the source holds.

use chrono::{NaiveDate, NaiveDateTime};
use mysql_async::Value;

/// A DATETIME as the source holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ts {
    Null,
    /// Zero or otherwise impossible date, as text.
    Invalid(String),
    /// Microseconds since 1970-01-01 UTC.
    At(i64),
}

impl Ts {
    pub fn micros(&self) -> Option<i64> {
        match self {
            Ts::At(v) => Some(*v),
            _ => None,
        }
    }

    /// JSON for a reject payload.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Ts::Null => serde_json::Value::Null,
            Ts::Invalid(raw) => raw.clone().into(),
            Ts::At(us) => format_micros(*us).into(),
        }
    }
}

/// Why a value could not be read: the column has a type the model does not
/// give it (the source was altered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected value {value} in column {column}")]
pub struct ValueError {
    pub column: &'static str,
    pub value: String,
}

fn bad(column: &'static str, v: &Value) -> ValueError {
    ValueError {
        column,
        value: v.as_sql(true),
    }
}

pub fn int(v: &Value, column: &'static str) -> Result<i64, ValueError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::UInt(u) => i64::try_from(*u).map_err(|_| bad(column, v)),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(column, v)),
        _ => Err(bad(column, v)),
    }
}

pub fn opt_int(v: &Value, column: &'static str) -> Result<Option<i64>, ValueError> {
    match v {
        Value::NULL => Ok(None),
        _ => int(v, column).map(Some),
    }
}

pub fn text(v: Value, column: &'static str) -> Result<String, ValueError> {
    match v {
        Value::Bytes(b) => String::from_utf8(b).map_err(|e| ValueError {
            column,
            value: format!("{:?}", String::from_utf8_lossy(e.as_bytes())),
        }),
        Value::NULL => Err(ValueError {
            column,
            value: "NULL".into(),
        }),
        other => Ok(other.as_sql(true)),
    }
}

pub fn opt_text(v: Value, column: &'static str) -> Result<Option<String>, ValueError> {
    match v {
        Value::NULL => Ok(None),
        v => text(v, column).map(Some),
    }
}

/// A DECIMAL as integer units of 10^-scale ("12.34" at scale 2 → 1234).
pub fn units(v: &Value, scale: u32, column: &'static str) -> Result<i64, ValueError> {
    let parsed = match v {
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| parse_units(s, scale)),
        Value::Int(i) => i.checked_mul(10i64.pow(scale)),
        _ => None,
    };
    parsed.ok_or_else(|| bad(column, v))
}

/// Parses a decimal text exactly; `None` if it has more fraction digits
/// than `scale` or does not fit.
pub fn parse_units(s: &str, scale: u32) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if frac_part.len() > scale as usize
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut value: i64 = 0;
    for b in int_part.bytes() {
        value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    for i in 0..scale as usize {
        let d = frac_part.as_bytes().get(i).map_or(0, |b| b - b'0');
        value = value.checked_mul(10)?.checked_add(i64::from(d))?;
    }
    Some(if neg { -value } else { value })
}

/// Integer units back to decimal text ("1234" at scale 2 → "12.34").
pub fn format_units(units: i64, scale: u32) -> String {
    let p = 10i64.pow(scale);
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    if scale == 0 {
        return format!("{sign}{abs}");
    }
    format!(
        "{sign}{}.{:0width$}",
        abs / p as u64,
        abs % p as u64,
        width = scale as usize
    )
}

pub fn timestamp(v: Value, column: &'static str) -> Result<Ts, ValueError> {
    match v {
        Value::NULL => Ok(Ts::Null),
        Value::Date(y, mo, d, h, mi, s, us) => Ok(
            match NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d)).and_then(
                |date| date.and_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us),
            ) {
                Some(dt) => Ts::At(dt.and_utc().timestamp_micros()),
                None => Ts::Invalid(format!(
                    "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}",
                    if us > 0 {
                        format!(".{us:06}")
                    } else {
                        String::new()
                    }
                )),
            },
        ),
        Value::Bytes(b) => {
            let s = String::from_utf8_lossy(&b).into_owned();
            Ok(
                match NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f") {
                    Ok(dt) => Ts::At(dt.and_utc().timestamp_micros()),
                    Err(_) => Ts::Invalid(s),
                },
            )
        }
        other => Err(bad(column, &other)),
    }
}

/// A DATE as days since 1970-01-01.
pub fn date_days(v: &Value, column: &'static str) -> Result<Option<i32>, ValueError> {
    let date = match v {
        Value::NULL => return Ok(None),
        Value::Date(y, mo, d, ..) => {
            NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d))
        }
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()),
        _ => None,
    };
    match date {
        Some(d) => Ok(Some(
            (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days() as i32,
        )),
        // A zero hired_at reads as unknown rather than failing the run.
        None if matches!(v, Value::Date(0, ..)) => Ok(None),
        None => Err(bad(column, v)),
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (UTC).
pub fn format_micros(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => us.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_units("12.34", 2), Some(1234));
        assert_eq!(parse_units("-0.05", 2), Some(-5));
        assert_eq!(parse_units("7", 2), Some(700));
        assert_eq!(parse_units("0.0500", 4), Some(500));
        assert_eq!(parse_units("1.0000", 4), Some(10_000));
        assert_eq!(parse_units("9999999999.99", 2), Some(999_999_999_999));
        assert_eq!(parse_units("1.234", 2), None);
        assert_eq!(parse_units("1e5", 2), None);
        assert_eq!(parse_units("", 2), None);
        assert_eq!(parse_units("99999999999999999999", 2), None);
        for (u, s) in [(1234, 2), (-5, 2), (0, 2), (500, 4), (-10_000, 4)] {
            assert_eq!(parse_units(&format_units(u, s), s), Some(u));
        }
        assert_eq!(format_units(-5, 2), "-0.05");
        assert_eq!(format_units(500, 4), "0.0500");
    }

    #[test]
    fn datetimes_zero_and_valid() {
        assert_eq!(
            timestamp(Value::Date(0, 0, 0, 0, 0, 0, 0), "t").unwrap(),
            Ts::Invalid("0000-00-00 00:00:00".into())
        );
        let ts = timestamp(Value::Date(2026, 1, 2, 3, 4, 5, 6), "t").unwrap();
        assert_eq!(
            format_micros(ts.micros().unwrap()),
            "2026-01-02 03:04:05.000006"
        );
        assert_eq!(
            timestamp(Value::Bytes(b"2026-01-02 03:04:05.5".to_vec()), "t").unwrap(),
            ts_of("2026-01-02 03:04:05.500000")
        );
        assert_eq!(timestamp(Value::NULL, "t").unwrap(), Ts::Null);
    }

    fn ts_of(s: &str) -> Ts {
        Ts::At(
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .unwrap()
                .and_utc()
                .timestamp_micros(),
        )
    }
}
