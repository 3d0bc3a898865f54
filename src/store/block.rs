//! Block codec: the new points of many series from one flush in one blob. Pure.
//!
//! A flush writes one block row whatever the number of series, so its cost follows
//! the readings; blocks are merged into per-series chunks later, in the background.
//!
//! Layout (version 1): `[1][series count: varint]`, then per series
//! `[series id: varint][length: varint][chunk]`, the chunk being that series' points
//! in the chunk codec ([`super::chunk`]). The length lets a reader skip the series it
//! does not want without decoding them.

use super::chunk::{self, ChunkError};
use crate::model::Timestamp;

const VERSION: u8 = 1;

/// Packs the points of every series; `series` gives (series id, points in the order
/// to keep).
pub fn encode<'a>(series: impl IntoIterator<Item = (i64, &'a [(Timestamp, f64)])>) -> Vec<u8> {
    let series = series.into_iter();
    let mut out = Vec::with_capacity(8 + series.size_hint().0 * 8);
    out.push(VERSION);
    let mut count = 0u64;
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    for (id, points) in series {
        scratch.clear();
        chunk::encode_into(&mut scratch, points);
        chunk::put_varint(&mut body, id as u64);
        chunk::put_varint(&mut body, scratch.len() as u64);
        body.extend_from_slice(&scratch);
        count += 1;
    }
    chunk::put_varint(&mut out, count);
    out.extend_from_slice(&body);
    out
}

/// Calls `f` with (series id, chunk blob) for every series in a block made by
/// [`encode`], in the order written.
pub fn for_each(
    data: &[u8],
    mut f: impl FnMut(i64, &[u8]) -> Result<(), ChunkError>,
) -> Result<(), ChunkError> {
    let mut pos = 0usize;
    let version = *data.first().ok_or(ChunkError::Truncated)?;
    if version != VERSION {
        return Err(ChunkError::Version(version));
    }
    pos += 1;
    let count = chunk::read_varint(data, &mut pos)?;
    for _ in 0..count {
        let id = chunk::read_varint(data, &mut pos)?;
        let len = usize::try_from(chunk::read_varint(data, &mut pos)?)
            .map_err(|_| ChunkError::Truncated)?;
        let end = pos.checked_add(len).ok_or(ChunkError::Truncated)?;
        let blob = data.get(pos..end).ok_or(ChunkError::Truncated)?;
        pos = end;
        f(id as i64, blob)?;
    }
    Ok(())
}

/// The points of one series.
pub type Points = Vec<(Timestamp, f64)>;

/// Unpacks a whole block: (series id, points) per series.
pub fn decode(data: &[u8]) -> Result<Vec<(i64, Points)>, ChunkError> {
    let mut out = Vec::new();
    for_each(data, |id, blob| {
        out.push((id, chunk::decode(blob)?));
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_series_round_trip_and_cost_a_few_bytes_a_point() {
        let series: Vec<(i64, Points)> = (1..=1000)
            .map(|id| {
                (
                    id,
                    vec![(1_800_000_000_000 + id, 20.0 + (id % 50) as f64 / 10.0)],
                )
            })
            .collect();
        let blob = encode(series.iter().map(|(id, p)| (*id, p.as_slice())));
        assert!(blob.len() < 16 * series.len(), "{} bytes", blob.len());
        assert_eq!(decode(&blob).unwrap(), series);
    }

    #[test]
    fn a_reader_skips_the_series_it_does_not_want() {
        let a = [(1, 1.5), (2, 2.5)];
        let b = [(1, -3.0)];
        let blob = encode([(7, &a[..]), (9, &b[..])]);
        let mut got = Vec::new();
        for_each(&blob, |id, chunk| {
            if id == 9 {
                got = chunk::decode(chunk)?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(got, b);
    }

    #[test]
    fn corrupt_blocks_are_errors_not_panics() {
        let blob = encode([(3, &[(1, 1.25), (2, 2.5)][..]), (4, &[(5, 9.0)][..])]);
        for cut in 0..blob.len() {
            assert!(decode(&blob[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(&[7, 0]), Err(ChunkError::Version(7)));
        assert_eq!(decode(&encode(std::iter::empty())).unwrap(), vec![]);
    }
}
