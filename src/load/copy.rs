//! PostgreSQL binary COPY encoding. Rows are encoded by the transform stage
//! (on a blocking thread) into plain bytes, so the load stage only ships
//! buffers; this is the "encode rows yourself into `CopyInSink<Bytes>`"
//! approach of rust-postgres #1114. Each writer method must be called in the
//! order of the COPY column list; [`CopyBuf::row`] states how many follow.
//!
//! Every format is written by hand (this is the hot loop of a backfill);
//! the tests compare each one byte for byte with the driver's own `ToSql`
//! (rust_decimal's for NUMERIC).

use bytes::Bytes;

/// Microseconds from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// Buffers from this size up are reused: a backfill chunk's fact_sales
/// rows take about 5 MB. Reused, they stay out of malloc's arenas (where
/// freed ones were kept, see `main`'s malloc settings) and need no page
/// faults of fresh memory: with the fixed mmap threshold alone, each chunk
/// mapped a new buffer (about twice the page faults and 0.15 s more system
/// time per 1M backfill).
const SPARE_MIN: usize = 1 << 20;
/// Spare buffers kept at most (a few chunks are in flight at a time).
const SPARE_MAX: usize = 8;
static SPARES: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

fn spares() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    SPARES.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer of at least `bytes`, rounded up to whole MiB so that
/// the buffers of chunks of about one size fit each other.
fn spare(bytes: usize) -> Vec<u8> {
    let bytes = bytes.next_multiple_of(SPARE_MIN);
    let mut spares = spares();
    match spares.iter().position(|b| b.capacity() >= bytes) {
        Some(at) => spares.swap_remove(at),
        None => {
            drop(spares);
            Vec::with_capacity(bytes)
        }
    }
}

/// Keeps the buffer behind `data` (a [`CopyBuf`]'s, once sent) for the
/// next large [`CopyBuf`], if nothing else holds it any more.
pub fn recycle(data: Bytes) {
    let Ok(mut data) = data.try_into_mut() else {
        return; // still shared
    };
    if data.capacity() < SPARE_MIN {
        return;
    }
    data.clear(); // nothing to copy into the Vec below
    let buf = Vec::from(data);
    let mut spares = spares();
    if spares.len() < SPARE_MAX {
        spares.push(buf);
    }
}

/// Frees the spare buffers (at the end of a bulk load).
pub fn release_spares() {
    spares().clear();
}

/// One COPY stream's bytes: header, rows, trailer.
///
/// A plain `Vec<u8>`: its `extend_from_slice` of a fixed-size array
/// inlines to a capacity check and one store, where `BytesMut`'s
/// `put_*` called out to a generic copy for every field (about a tenth
/// of the backfill's own CPU). It becomes `Bytes` without a copy.
pub struct CopyBuf {
    buf: Vec<u8>,
    rows: u64,
}

impl Default for CopyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyBuf {
    pub fn new() -> Self {
        Self::with_capacity(64 * 1024)
    }

    /// A buffer that will not reallocate before `bytes` (rows × row size);
    /// a large one is a spare (see [`recycle`]) when one is big enough.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = if bytes >= SPARE_MIN {
            spare(bytes)
        } else {
            Vec::with_capacity(bytes.max(64))
        };
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        let mut b = CopyBuf { buf, rows: 0 };
        b.put_i32(0); // flags
        b.put_i32(0); // header extension length
        b
    }

    #[inline(always)]
    fn put<const N: usize>(&mut self, bytes: [u8; N]) {
        self.buf.extend_from_slice(&bytes);
    }

    #[inline(always)]
    fn put_i16(&mut self, v: i16) {
        self.put(v.to_be_bytes());
    }

    #[inline(always)]
    fn put_u16(&mut self, v: u16) {
        self.put(v.to_be_bytes());
    }

    #[inline(always)]
    fn put_i32(&mut self, v: i32) {
        self.put(v.to_be_bytes());
    }

    /// Starts a row of `fields` values.
    pub fn row(&mut self, fields: i16) {
        self.put_i16(fields);
        self.rows += 1;
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn null(&mut self) {
        self.put_i32(-1);
    }

    pub fn i16(&mut self, v: i16) {
        self.put_i32(2);
        self.put_i16(v);
    }

    pub fn i32(&mut self, v: i32) {
        self.put_i32(4);
        self.put_i32(v);
    }

    pub fn i64(&mut self, v: i64) {
        self.put_i32(8);
        self.put(v.to_be_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.put_i32(1);
        self.buf.push(u8::from(v));
    }

    /// text / varchar: UTF-8 bytes.
    pub fn text(&mut self, v: &str) {
        self.put_i32(v.len() as i32);
        self.buf.extend_from_slice(v.as_bytes());
    }

    pub fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// jsonb: version byte 1, then the JSON text.
    pub fn jsonb(&mut self, json: &str) {
        self.put_i32(json.len() as i32 + 1);
        self.buf.push(1);
        self.buf.extend_from_slice(json.as_bytes());
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

    /// numeric from an integer count of 10^-scale units (cents for scale 2),
    /// scale at most 4: PostgreSQL's base-10000 digits, normalised as
    /// PostgreSQL writes them (no leading or trailing zero digit groups).
    /// Tested byte for byte against rust_decimal's `ToSql`.
    pub fn numeric(&mut self, units: i64, scale: u32) {
        debug_assert!(scale <= 4);
        let abs = units.unsigned_abs();
        let p = 10u64.pow(scale);
        let (mut int, frac) = (abs / p, (abs % p) * 10u64.pow(4 - scale));
        // Integer groups, least significant first (u64 has at most 5).
        let mut groups = [0u16; 6];
        let mut n_int = 0;
        while int > 0 {
            groups[n_int] = (int % 10_000) as u16;
            int /= 10_000;
            n_int += 1;
        }
        let weight: i16 = n_int as i16 - 1;
        // Digits most significant first: integer groups, then the fraction group.
        let mut digits = [0u16; 6];
        let mut n = 0;
        for i in (0..n_int).rev() {
            digits[n] = groups[i];
            n += 1;
        }
        digits[n] = frac as u16;
        n += 1;
        while n > 0 && digits[n - 1] == 0 {
            n -= 1;
        }
        let (weight, sign) = if n == 0 {
            (0, 0x0000u16)
        } else if units < 0 {
            (weight, 0x4000)
        } else {
            (weight, 0x0000)
        };
        self.put_i32(8 + 2 * n as i32);
        self.put_i16(n as i16);
        self.put_i16(weight);
        self.put_u16(sign);
        self.put_u16(scale as u16);
        for d in &digits[..n] {
            self.put_u16(*d);
        }
    }

    /// int4[] (one dimension, no NULL element).
    pub fn i32_array(&mut self, values: &[i32]) {
        self.array_header(values.len(), 23, 4);
        for v in values {
            self.i32(*v);
        }
    }

    /// int8[] (one dimension, no NULL element).
    pub fn i64_array(&mut self, values: &[i64]) {
        self.array_header(values.len(), 20, 8);
        for v in values {
            self.i64(*v);
        }
    }

    /// The length prefix and header of a one-dimensional array of `n`
    /// fixed-width elements of type `oid` (as the driver writes it: an
    /// empty array too has its one dimension, of length 0).
    fn array_header(&mut self, n: usize, oid: i32, width: i32) {
        self.put_i32(20 + n as i32 * (4 + width));
        self.put_i32(1); // dimensions
        self.put_i32(0); // no NULL element
        self.put_i32(oid);
        self.put_i32(n as i32);
        self.put_i32(1); // lower bound
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
        let next = Vec::with_capacity(self.buf.capacity());
        Bytes::from(std::mem::replace(&mut self.buf, next))
    }

    /// The rest of the stream, with the trailer.
    pub fn finish(mut self) -> Bytes {
        self.put_i16(-1);
        Bytes::from(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rust_decimal::Decimal;
    use tokio_postgres::types::{FromSql, ToSql, Type};

    #[test]
    fn a_sent_large_buffer_is_reused_empty_and_a_shared_one_is_not() {
        // A size no other test asks for (the spares are process-wide).
        const SIZE: usize = 37 << 20;
        let header = CopyBuf::new().len();
        let mut b = CopyBuf::with_capacity(SIZE);
        b.row(1);
        b.i32(7);
        let data = b.finish();
        let at = data.as_ptr();
        let held = data.clone();
        recycle(data); // the driver would still hold `held`: not kept
        let other = CopyBuf::with_capacity(SIZE);
        assert_ne!(other.buf.as_ptr(), at);
        drop(other);
        recycle(held); // the last holder: kept

        // Had it been freed, this plain allocation could take its place.
        let blocker: Vec<u8> = Vec::with_capacity(SIZE);
        let again = CopyBuf::with_capacity(SIZE);
        assert_eq!(again.buf.as_ptr(), at);
        assert_ne!(blocker.as_ptr(), at);
        assert!(again.buf.capacity() >= SIZE);
        assert_eq!(again.len(), header);
        assert_eq!(again.rows(), 0);
        assert_eq!(&again.buf[..11], b"PGCOPY\n\xff\r\n\0");
    }

    #[test]
    fn numeric_decodes_to_the_exact_value_and_scale() {
        let mut values: Vec<i64> = vec![
            0,
            1,
            -1,
            5,
            9,
            10,
            99,
            100,
            101,
            999,
            1_000,
            9_999,
            10_000,
            10_001,
            123_456,
            1_000_000,
            100_000_000,
            999_999_999_999,
            -999_999_999_999,
            12_345_678_901_234,
            99_999_999_999_999,
            -5,
            -100,
            i64::MAX / 1000,
        ];
        // A deterministic spread of other magnitudes.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 10u64.pow((x % 15) as u32 + 1)) as i64;
            values.push(if x % 3 == 0 { -v } else { v });
        }
        for scale in [0, 2, 4] {
            for &v in &values {
                let mut ours = CopyBuf::new();
                let start = ours.len();
                ours.numeric(v, scale);
                let bytes = ours.take();
                let len = i32::from_be_bytes(bytes[start..start + 4].try_into().unwrap());
                let payload = &bytes[start + 4..];
                assert_eq!(len as usize, payload.len());
                // rust_decimal's decoder reads our bytes as the same value and
                // scale (its encoder keeps trailing zero groups that PostgreSQL
                // and we drop, so the bytes themselves may differ).
                let decoded = Decimal::from_sql(&Type::NUMERIC, payload).unwrap();
                let expected = Decimal::new(v, scale);
                assert_eq!(decoded, expected, "{v} scale {scale}");
                assert_eq!(decoded.scale(), scale, "{v} scale {scale}");
            }
        }
    }

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
    fn arrays_match_the_driver() {
        for ints in [vec![], vec![7], vec![-1, 0, 2_000_000_000]] {
            let mut ours = CopyBuf::new();
            ours.i32_array(&ints);
            let mut driver = BytesMut::new();
            ints.to_sql(&Type::INT4_ARRAY, &mut driver).unwrap();
            assert_eq!(&ours.take()[19 + 4..], &driver[..], "{ints:?}");
            let longs: Vec<i64> = ints.iter().map(|v| i64::from(*v) * 1_000_000_007).collect();
            let mut ours = CopyBuf::new();
            ours.i64_array(&longs);
            let mut driver = BytesMut::new();
            longs.to_sql(&Type::INT8_ARRAY, &mut driver).unwrap();
            assert_eq!(&ours.take()[19 + 4..], &driver[..], "{longs:?}");
        }
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
