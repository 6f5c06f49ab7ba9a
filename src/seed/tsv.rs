//! TSV rows in the format `LOAD DATA … FIELDS TERMINATED BY '\t' ESCAPED BY
//! '\\' LINES TERMINATED BY '\n'` reads: `\N` is NULL, backslash, tab and
//! newline inside text are escaped. Written by hand because it is on the
//! generator's hot path: integers, cents and timestamps are formatted without
//! going through `fmt`.

use bytes::Bytes;

/// Microseconds since 1970-01-01T00:00:00 UTC.
pub type Micros = i64;
pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// (year, month, day) of a day number since 1970-01-01 (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` as a string (for bound SQL parameters).
pub fn format_ts(micros: Micros) -> String {
    let mut t = Tsv::default();
    t.ts(micros);
    t.end();
    let mut bytes = t.take().to_vec();
    bytes.pop(); // the row's newline
    String::from_utf8(bytes).expect("ASCII")
}

/// A growing TSV buffer for one table.
#[derive(Default)]
pub struct Tsv {
    buf: Vec<u8>,
    rows: u64,
}

impl Tsv {
    pub fn with_capacity(bytes: usize) -> Self {
        Tsv {
            buf: Vec::with_capacity(bytes),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Hands the bytes over and starts a new buffer of the same capacity.
    pub fn take(&mut self) -> Bytes {
        let capacity = self.buf.capacity();
        Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(capacity),
        ))
    }

    fn digits(&mut self, mut v: u64, min_width: usize) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 && tmp.len() - i >= min_width {
                break;
            }
        }
        self.buf.extend_from_slice(&tmp[i..]);
    }

    fn signed(&mut self, v: i64) {
        if v < 0 {
            self.buf.push(b'-');
        }
        self.digits(v.unsigned_abs(), 1);
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.signed(v);
        self.buf.push(b'\t');
        self
    }

    /// A fixed-point decimal: `units` with `scale` digits after the point
    /// (cents: scale 2; discount rates in basis points of 1/10000: scale 4).
    pub fn fixed(&mut self, units: i64, scale: u32) -> &mut Self {
        let factor = 10u64.pow(scale);
        if units < 0 {
            self.buf.push(b'-');
        }
        let abs = units.unsigned_abs();
        self.digits(abs / factor, 1);
        self.buf.push(b'.');
        self.digits(abs % factor, scale as usize);
        self.buf.push(b'\t');
        self
    }

    pub fn money(&mut self, cents: i64) -> &mut Self {
        self.fixed(cents, 2)
    }

    pub fn text(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            match b {
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                0 => self.buf.extend_from_slice(b"\\0"),
                _ => self.buf.push(b),
            }
        }
        self.buf.push(b'\t');
        self
    }

    pub fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    pub fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }

    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(b"\\N\t");
        self
    }

    fn write_date(&mut self, days: i64) {
        let (y, m, d) = civil_from_days(days);
        self.digits(y as u64, 4);
        self.buf.push(b'-');
        self.digits(u64::from(m), 2);
        self.buf.push(b'-');
        self.digits(u64::from(d), 2);
    }

    /// `YYYY-MM-DD`
    pub fn date(&mut self, days: i64) -> &mut Self {
        self.write_date(days);
        self.buf.push(b'\t');
        self
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff` (UTC)
    pub fn ts(&mut self, micros: Micros) -> &mut Self {
        let days = micros.div_euclid(MICROS_PER_DAY);
        let rest = micros.rem_euclid(MICROS_PER_DAY);
        self.write_date(days);
        let secs = rest / MICROS_PER_SEC;
        self.buf.push(b' ');
        self.digits((secs / 3600) as u64, 2);
        self.buf.push(b':');
        self.digits((secs / 60 % 60) as u64, 2);
        self.buf.push(b':');
        self.digits((secs % 60) as u64, 2);
        self.buf.push(b'.');
        self.digits((rest % MICROS_PER_SEC) as u64, 6);
        self.buf.push(b'\t');
        self
    }

    pub fn opt_ts(&mut self, micros: Option<Micros>) -> &mut Self {
        match micros {
            Some(m) => self.ts(m),
            None => self.null(),
        }
    }

    /// Ends the row (the last field's tab becomes the newline).
    pub fn end(&mut self) {
        if let Some(last) = self.buf.last_mut() {
            *last = b'\n';
        }
        self.rows += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(f: impl FnOnce(&mut Tsv)) -> String {
        let mut t = Tsv::default();
        f(&mut t);
        t.end();
        String::from_utf8(t.take().to_vec()).unwrap()
    }

    #[test]
    fn formats_values_the_way_load_data_reads_them() {
        assert_eq!(
            row(|t| {
                t.int(0).int(-42).int(1234567);
            }),
            "0\t-42\t1234567\n"
        );
        assert_eq!(
            row(|t| {
                t.money(5).money(-1999).money(123456);
            }),
            "0.05\t-19.99\t1234.56\n"
        );
        assert_eq!(
            row(|t| {
                t.fixed(1250, 4).fixed(0, 4).fixed(-10000, 4);
            }),
            "0.1250\t0.0000\t-1.0000\n"
        );
        assert_eq!(
            row(|t| {
                t.text("O'Brien\ta\\b\nc").null();
            }),
            "O'Brien\\ta\\\\b\\nc\t\\N\n"
        );
        assert_eq!(
            row(|t| {
                t.text("Дар'я 🌬️");
            }),
            "Дар'я 🌬️\n"
        );
    }

    #[test]
    fn formats_dates_and_timestamps_in_utc() {
        // 2024-02-29T23:59:59.000001Z
        let micros = 1_709_251_199 * MICROS_PER_SEC + 1;
        assert_eq!(
            row(|t| {
                t.ts(micros);
            }),
            "2024-02-29 23:59:59.000001\n"
        );
        assert_eq!(
            row(|t| {
                t.date(0).date(-1).date(19_783);
            }),
            "1970-01-01\t1969-12-31\t2024-03-01\n"
        );
        let mut day = 0i64;
        let mut date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        while day < 40_000 {
            assert_eq!(
                row(|t| {
                    t.date(day);
                }),
                format!("{date}\n")
            );
            day += 97;
            date += chrono::Duration::days(97);
        }
    }
}
