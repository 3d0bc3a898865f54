//! Chunk codec: the points of one series packed into a compact blob. Pure.
//!
//! Layout (version 1): `[1][mode][count: varint][first ts: zigzag varint]`, then
//! timestamps as zigzag varint delta-of-delta (a steady rate costs one byte a point),
//! then values:
//! - mode 0: first value as 8 bytes, then each value XOR-ed with the previous one,
//!   written as a header byte (leading/trailing zero bytes) and the bytes between —
//!   as time-series databases do, at byte rather than bit granularity;
//! - mode k = 1..=6: every value is a decimal with k digits after the point (as
//!   sensors usually report them): the scaled integers as zigzag varint deltas.
//!
//! A point costs one to three bytes for typical sensor data.

use crate::model::Timestamp;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk is truncated")]
    Truncated,
    #[error("chunk has unknown version {0}")]
    Version(u8),
    #[error("chunk has unknown value mode {0}")]
    Mode(u8),
}

const VERSION: u8 = 1;

/// Packs `points` (in the order given; usually ascending time).
pub fn encode(points: &[(Timestamp, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + points.len() * 3);
    encode_into(&mut out, points);
    out
}

/// [`encode`], appending to `out`.
pub fn encode_into(out: &mut Vec<u8>, points: &[(Timestamp, f64)]) {
    out.push(VERSION);
    let mode = decimal_digits(points.iter().map(|p| p.1));
    out.push(mode);
    put_varint(out, points.len() as u64);
    let Some(&(first_ts, first_v)) = points.first() else {
        return;
    };
    put_varint(out, zigzag(first_ts));
    let mut prev_ts = first_ts;
    let mut prev_delta = 0i64;
    for &(ts, _) in &points[1..] {
        let delta = ts.wrapping_sub(prev_ts);
        put_varint(out, zigzag(delta.wrapping_sub(prev_delta)));
        prev_delta = delta;
        prev_ts = ts;
    }
    if mode == 0 {
        out.extend_from_slice(&first_v.to_bits().to_le_bytes());
        let mut prev = first_v.to_bits();
        for &(_, v) in &points[1..] {
            let bits = v.to_bits();
            let x = bits ^ prev;
            prev = bits;
            if x == 0 {
                out.push(0);
                continue;
            }
            let lz = (x.leading_zeros() / 8) as u8;
            let tz = (x.trailing_zeros() / 8) as u8;
            out.push(1 + lz * 8 + tz);
            let bytes = x.to_le_bytes();
            out.extend_from_slice(&bytes[tz as usize..8 - lz as usize]);
        }
    } else {
        let scale = 10f64.powi(i32::from(mode));
        let mut prev = 0i64;
        for &(_, v) in points {
            let n = (v * scale).round() as i64;
            put_varint(out, zigzag(n.wrapping_sub(prev)));
            prev = n;
        }
    }
}

/// Unpacks a blob made by [`encode`].
pub fn decode(data: &[u8]) -> Result<Vec<(Timestamp, f64)>, ChunkError> {
    let mut r = Reader { data, pos: 0 };
    let version = r.byte()?;
    if version != VERSION {
        return Err(ChunkError::Version(version));
    }
    let mode = r.byte()?;
    if mode > 6 {
        return Err(ChunkError::Mode(mode));
    }
    let count = usize::try_from(r.varint()?).map_err(|_| ChunkError::Truncated)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    // A point takes at least one byte: a larger count is a corrupt blob, not an allocation.
    if count > data.len() {
        return Err(ChunkError::Truncated);
    }
    let mut ts = Vec::with_capacity(count);
    let mut t = unzigzag(r.varint()?);
    ts.push(t);
    let mut delta = 0i64;
    for _ in 1..count {
        delta = delta.wrapping_add(unzigzag(r.varint()?));
        t = t.wrapping_add(delta);
        ts.push(t);
    }
    let mut out = Vec::with_capacity(count);
    if mode == 0 {
        let mut prev =
            u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| ChunkError::Truncated)?);
        out.push((ts[0], f64::from_bits(prev)));
        for &t in &ts[1..] {
            let h = r.byte()?;
            if h != 0 {
                let h = h - 1;
                let (lz, tz) = ((h / 8) as usize, (h % 8) as usize);
                if lz + tz > 7 {
                    return Err(ChunkError::Truncated);
                }
                let mut bytes = [0u8; 8];
                bytes[tz..8 - lz].copy_from_slice(r.take(8 - lz - tz)?);
                prev ^= u64::from_le_bytes(bytes);
            }
            out.push((t, f64::from_bits(prev)));
        }
    } else {
        let scale = 10f64.powi(i32::from(mode));
        let mut n = 0i64;
        for &t in &ts {
            n = n.wrapping_add(unzigzag(r.varint()?));
            out.push((t, n as f64 / scale));
        }
    }
    Ok(out)
}

/// The fewest decimal digits (1..=6) that represent every value exactly, or 0 when
/// some value needs more (or is too large for exact scaled integers).
fn decimal_digits(values: impl Iterator<Item = f64> + Clone) -> u8 {
    'digits: for k in 1..=6u8 {
        let scale = 10f64.powi(i32::from(k));
        for v in values.clone() {
            let n = (v * scale).round();
            // Compare through the integer, as decode sees it (-0.0 becomes 0).
            if n.abs() > 9.0e15 || ((n as i64) as f64 / scale).to_bits() != v.to_bits() {
                continue 'digits;
            }
        }
        return k;
    }
    0
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint of `data` at `pos`, moving `pos` past it.
pub(crate) fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64, ChunkError> {
    let mut r = Reader { data, pos: *pos };
    let v = r.varint()?;
    *pos = r.pos;
    Ok(v)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, ChunkError> {
        let b = *self.data.get(self.pos).ok_or(ChunkError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ChunkError> {
        let s = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or(ChunkError::Truncated)?;
        self.pos += n;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ChunkError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_sensor_values_cost_about_two_bytes_a_point() {
        let pts: Vec<_> = (0..1000)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 1000,
                    20.0 + ((i % 37) as f64) / 10.0,
                )
            })
            .collect();
        let blob = encode(&pts);
        assert_eq!(blob[1], 1, "one decimal digit");
        assert!(blob.len() < 2 * pts.len() + 16, "{} bytes", blob.len());
        assert_eq!(decode(&blob).unwrap(), pts);
    }

    #[test]
    fn arbitrary_floats_round_trip_exactly() {
        let pts: Vec<_> = (0..100)
            .map(|i| (i * 997 - 50, (i as f64).sin() * 1e3))
            .collect();
        let blob = encode(&pts);
        assert_eq!(blob[1], 0);
        assert_eq!(decode(&blob).unwrap(), pts);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        assert_eq!(decode(&encode(&[(5, -0.5)])).unwrap(), vec![(5, -0.5)]);
    }

    #[test]
    fn corrupt_blobs_are_errors_not_panics() {
        let blob = encode(&[(1, 1.25), (2, 2.5), (3, 3.75)]);
        for cut in 0..blob.len() {
            assert!(decode(&blob[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(&[9, 0, 0]), Err(ChunkError::Version(9)));
    }

    proptest! {
        #[test]
        fn any_points_round_trip(pts in proptest::collection::vec((any::<i64>(), any::<f64>().prop_filter("finite", |v| v.is_finite())), 0..200)) {
            let back = decode(&encode(&pts)).unwrap();
            prop_assert_eq!(back.len(), pts.len());
            for (a, b) in back.iter().zip(&pts) {
                prop_assert_eq!(a.0, b.0);
                prop_assert_eq!(a.1.to_bits(), b.1.to_bits());
            }
        }

        #[test]
        fn decimals_round_trip(pts in proptest::collection::vec((0i64..1_000_000, -100_000i64..100_000), 0..200)) {
            let pts: Vec<_> = pts.into_iter().map(|(t, v)| (t, v as f64 / 100.0)).collect();
            prop_assert_eq!(decode(&encode(&pts)).unwrap(), pts);
        }
    }
}
