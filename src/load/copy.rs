//! PostgreSQL binary COPY encoding. Rows are encoded by the transform stage
//! (on a blocking thread) into plain bytes, so the load stage only ships
//! buffers; this is the "encode rows yourself into `CopyInSink<Bytes>`"
//! approach of rust-postgres #1114. Each writer method must be called in the
//! order of the COPY column list; [`CopyBuf::row`] states how many follow.
//!
//! The fixed-width formats (integers, timestamps, dates) are written by
//! hand; NUMERIC goes through rust_decimal's own `ToSql`, so its encoding is
//! the driver's, not ours.

use bytes::{BufMut, Bytes, BytesMut};
use rust_decimal::Decimal;
use tokio_postgres::types::{ToSql, Type};

/// Microseconds from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// One COPY stream's bytes: header, rows, trailer.
pub struct CopyBuf {
    buf: BytesMut,
    rows: u64,
}

impl Default for CopyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyBuf {
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        CopyBuf { buf, rows: 0 }
    }

    /// Starts a row of `fields` values.
    pub fn row(&mut self, fields: i16) {
        self.buf.put_i16(fields);
        self.rows += 1;
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn null(&mut self) {
        self.buf.put_i32(-1);
    }

    pub fn i16(&mut self, v: i16) {
        self.buf.put_i32(2);
        self.buf.put_i16(v);
    }

    pub fn i32(&mut self, v: i32) {
        self.buf.put_i32(4);
        self.buf.put_i32(v);
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.put_i32(1);
        self.buf.put_u8(u8::from(v));
    }

    /// text / varchar: UTF-8 bytes.
    pub fn text(&mut self, v: &str) {
        self.buf.put_i32(v.len() as i32);
        self.buf.put_slice(v.as_bytes());
    }

    pub fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// jsonb: version byte 1, then the JSON text.
    pub fn jsonb(&mut self, json: &str) {
        self.buf.put_i32(json.len() as i32 + 1);
        self.buf.put_u8(1);
        self.buf.put_slice(json.as_bytes());
    }

    /// timestamptz from microseconds since the Unix epoch (UTC).
    pub fn timestamptz(&mut self, unix_micros: i64) {
        self.i64(unix_micros - PG_EPOCH_MICROS);
    }

    pub fn opt_timestamptz(&mut self, unix_micros: Option<i64>) {
        match unix_micros {
            Some(v) => self.timestamptz(v),
            None => self.null(),
        }
    }

    /// date from days since the Unix epoch.
    pub fn date(&mut self, unix_days: i32) {
        self.i32(unix_days - PG_EPOCH_DAYS);
    }

    /// numeric from an integer count of 10^-scale units (cents for scale 2).
    pub fn numeric(&mut self, units: i64, scale: u32) {
        let value = Decimal::new(units, scale);
        let at = self.buf.len();
        self.buf.put_i32(0);
        // Encoding a finite Decimal into a growable buffer cannot fail.
        let _ = value.to_sql(&Type::NUMERIC, &mut self.buf);
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Bytes encoded so far (flush them to the sink when this grows large).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes what is encoded so far, leaving the buffer empty (no header):
    /// for streaming one COPY in several pieces.
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// The rest of the stream, with the trailer.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rows_and_trailer() {
        let mut b = CopyBuf::new();
        b.row(2);
        b.i32(7);
        b.null();
        assert_eq!(b.rows(), 1);
        let bytes = b.finish();
        assert_eq!(&bytes[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&bytes[19..21], &2i16.to_be_bytes());
        assert_eq!(&bytes[21..25], &4i32.to_be_bytes());
        assert_eq!(&bytes[25..29], &7i32.to_be_bytes());
        assert_eq!(&bytes[29..33], &(-1i32).to_be_bytes());
        assert_eq!(&bytes[33..], &(-1i16).to_be_bytes());
    }

    #[test]
    fn timestamps_and_dates_match_the_driver() {
        use chrono::{NaiveDate, TimeZone, Utc};
        let ts = Utc.with_ymd_and_hms(2026, 3, 1, 12, 30, 15).unwrap()
            + chrono::Duration::microseconds(123_456);
        let mut ours = CopyBuf::new();
        ours.timestamptz(ts.timestamp_micros());
        let mut driver = BytesMut::new();
        ts.to_sql(&Type::TIMESTAMPTZ, &mut driver).unwrap();
        assert_eq!(&ours.take()[19 + 4..], &driver[..]);

        let d = NaiveDate::from_ymd_opt(1999, 12, 31).unwrap();
        let days = (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32;
        let mut ours = CopyBuf::new();
        ours.date(days);
        let mut driver = BytesMut::new();
        d.to_sql(&Type::DATE, &mut driver).unwrap();
        assert_eq!(&ours.take()[19 + 4..], &driver[..]);
    }

    #[test]
    fn numeric_length_prefix_matches_payload() {
        for (units, scale) in [(0, 2), (5, 2), (-123_456, 2), (100_000_000, 2), (1234, 4)] {
            let mut b = CopyBuf::new();
            let start = b.len();
            b.numeric(units, scale);
            let bytes = b.take();
            let len = i32::from_be_bytes(bytes[start..start + 4].try_into().unwrap());
            assert_eq!(len as usize, bytes.len() - start - 4);
        }
    }
}
