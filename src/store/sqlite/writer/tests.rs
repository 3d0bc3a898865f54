use super::*;
use crate::store::sqlite::{open, query_readings, query_series};

fn reading(series: &SeriesId, ts: Timestamp, value: f64) -> Reading {
    Reading {
        series: series.clone(),
        value,
        ts,
        unit: Some(Arc::from("°C")),
    }
}

#[tokio::test]
async fn flush_writes_chunks_rollups_and_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open(&dir.path().join("t.db")).await.unwrap();
    let mut w = Writer::new(pool.clone());
    w.force = true;
    let a: SeriesId = Arc::from("gh/n1/temperature");
    let b: SeriesId = Arc::from("gh/n2/temperature");
    let base = 1_700_000_020_000; // 40 s into a minute
    let batch: Vec<Reading> = (0..30)
        .flat_map(|i| {
            [
                reading(&a, base + i * 1000, 20.0 + i as f64 / 10.0),
                reading(&b, base + i * 1000, 5.0),
            ]
        })
        .collect();
    w.add(&batch);
    assert_eq!(w.flush().await.unwrap(), 60);
    w.add(&[reading(&a, base + 30_000, 30.0)]);
    assert_eq!(w.flush().await.unwrap(), 1);

    let got = query_readings(&pool, "gh/n1/#", 0).await.unwrap();
    assert_eq!(got.len(), 31);
    assert_eq!(got[0], ("gh/n1/temperature".to_string(), base, 20.0));
    assert_eq!(
        got[30],
        ("gh/n1/temperature".to_string(), base + 30_000, 30.0)
    );
    assert_eq!(
        query_readings(&pool, "gh/+/temperature", base + 29_000)
            .await
            .unwrap()
            .len(),
        3
    );

    let rows: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM blocks), (SELECT count(*) FROM chunks)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, (2, 0), "one block row per flush");
    let totals = crate::store::sqlite::Totals {
        readings: 61,
        series: 2,
        alert_events: 0,
    };
    assert_eq!(crate::store::sqlite::totals(&pool).await.unwrap(), totals);
    // Merged: one chunk per series (and hour), the same readings.
    let before = query_readings(&pool, "#", 0).await.unwrap();
    assert_eq!(w.merge_blocks(MERGE_POINTS).await.unwrap(), (2, 61, false));
    assert_eq!(
        crate::store::sqlite::totals(&pool).await.unwrap(),
        totals,
        "chunks count as blocks did"
    );
    let rows: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM blocks), (SELECT count(*) FROM chunks)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, (0, 2));
    assert_eq!(query_readings(&pool, "#", 0).await.unwrap(), before);

    let r: Vec<(String, i64, f64, f64, f64, i64)> = sqlx::query_as(
        "SELECT series, minute, min, max, avg, count FROM rollups_named WHERE series = 'gh/n1/temperature' ORDER BY minute",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // 20 readings in the first minute (40 s..59 s), 11 in the next (incl. the second flush).
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].2, r[0].3, r[0].5), (20.0, 21.9, 20));
    assert!((r[0].4 - 20.95).abs() < 1e-9);
    assert_eq!((r[1].2, r[1].3, r[1].5), (22.0, 30.0, 11));

    let (unit, last_seen, last_value): (String, i64, f64) = sqlx::query_as(
        "SELECT unit, last_seen, last_value FROM series WHERE name = 'gh/n1/temperature'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (unit.as_str(), last_seen, last_value),
        ("°C", base + 30_000, 30.0)
    );
}

#[tokio::test]
async fn compaction_merges_small_chunks_and_keeps_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open(&dir.path().join("t.db")).await.unwrap();
    let mut w = Writer::new(pool.clone());
    let a: SeriesId = Arc::from("x/y");
    let base = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
    for i in 0..50 {
        w.add(&[reading(&a, base + i * 1000, i as f64)]);
        w.flush().await.unwrap();
    }
    // Blocks of at most 20 points per merge: three chunks, then one.
    assert_eq!(w.merge_blocks(20).await.unwrap(), (1, 20, true));
    assert_eq!(w.merge_blocks(20).await.unwrap(), (1, 20, true));
    assert_eq!(w.merge_blocks(20).await.unwrap(), (1, 10, false));
    assert_eq!(w.merge_blocks(20).await.unwrap(), (0, 0, false));
    assert_eq!(w.compact(base + 3_600_000, 100).await.unwrap(), 1);
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(chunks, 1);
    let got = query_readings(&pool, "#", 0).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.2).collect::<Vec<_>>(),
        (0..50).map(|i| i as f64).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn deadband_keeps_flat_readings_out_of_chunks_but_not_out_of_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open(&dir.path().join("t.db")).await.unwrap();
    let band = crate::config::DeadbandConfig {
        series: "gh/+/t".into(),
        delta: 0.5,
        max_interval: crate::config::Duration::from_secs(10),
    };
    let mut w = Writer::new(pool.clone()).with_deadband(vec![band]);
    let a: SeriesId = Arc::from("gh/n1/t");
    let other: SeriesId = Arc::from("lab/x");
    let base = 1_699_999_980_000; // a minute's start
                                  // 20.0 stored; 20.2, 20.4 within the band; 21.0 moved; 21.1 within; at +12 s the
                                  // interval forces a store; the other series has no band.
    let values = [
        (0, 20.0),
        (1, 20.2),
        (2, 20.4),
        (3, 21.0),
        (4, 21.1),
        (16, 21.1),
    ];
    let batch: Vec<Reading> = values
        .iter()
        .map(|&(s, v)| reading(&a, base + s * 1000, v))
        .chain((0..6).map(|i| reading(&other, base + i * 1000, 1.0)))
        .collect();
    w.add(&batch);
    w.flush().await.unwrap();
    let stored: Vec<f64> = query_series(&pool, "gh/n1/t", 0)
        .await
        .unwrap()
        .iter()
        .map(|p| p.1)
        .collect();
    assert_eq!(stored, vec![20.0, 21.0, 21.1]);
    assert_eq!(query_series(&pool, "lab/x", 0).await.unwrap().len(), 6);
    let (count, max): (i64, f64) =
        sqlx::query_as("SELECT count, max FROM rollups_named WHERE series = 'gh/n1/t'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((count, max), (6, 21.1), "rollups count every reading");
}

#[tokio::test]
async fn a_flush_of_many_series_writes_one_row_and_is_merged_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open(&dir.path().join("t.db")).await.unwrap();
    let mut w = Writer::new(pool.clone());
    let names: Vec<SeriesId> = (0..2000).map(|i| Arc::from(format!("s/{i}"))).collect();
    let t = 1_800_000_012_345;
    let hour = t - t % HOUR_MS;
    let count = |pool: SqlitePool| async move {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT count(*) FROM blocks), (SELECT count(*) FROM chunks)",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // 2,000 series, one reading each per flush: one block row per flush.
    for round in 0..3 {
        let batch: Vec<Reading> = names
            .iter()
            .enumerate()
            .map(|(i, s)| reading(s, hour + round * 1000, i as f64 + 0.5))
            .collect();
        w.add(&batch);
        assert_eq!(w.flush_at(hour + round * 1000 + 1000).await.unwrap(), 2000);
        assert_eq!(w.merge_if_due(hour + round * 1000 + 1000).await.unwrap(), 0);
    }
    assert_eq!(count(pool.clone()).await, (3, 0));
    let stored = query_readings(&pool, "#", 0).await.unwrap();
    assert_eq!(stored.len(), 6000);
    assert_eq!(
        query_series(&pool, "s/7", 0).await.unwrap(),
        vec![(hour, 7.5), (hour + 1000, 7.5), (hour + 2000, 7.5)]
    );
    // Many points per series in one flush: one chunk row per series instead.
    let many: Vec<Reading> = (0..CHUNK_POINTS_MIN as i64)
        .flat_map(|k| names[..10].iter().map(move |s| (s, k)))
        .map(|(s, k)| reading(s, hour + 10_000 + k, 1.0))
        .collect();
    w.add(&many);
    w.flush_at(hour + 20_000).await.unwrap();
    assert_eq!(count(pool.clone()).await, (3, 10));
    // Once the hour is over, the blocks become one chunk per series.
    assert_eq!(w.merge_if_due(hour + HOUR_MS).await.unwrap(), 2000);
    assert_eq!(count(pool.clone()).await, (0, 2010));
    let merged = query_readings(&pool, "#", 0).await.unwrap();
    assert_eq!(merged.len(), 6000 + many.len());
    assert_eq!(
        query_series(&pool, "s/7", 0).await.unwrap()[..3],
        [(hour, 7.5), (hour + 1000, 7.5), (hour + 2000, 7.5)]
    );
}

#[tokio::test]
async fn rollups_of_past_minutes_are_written_every_few_minutes_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open(&dir.path().join("t.db")).await.unwrap();
    let mut w = Writer::new(pool.clone());
    let a: SeriesId = Arc::from("r/a");
    let t = 1_800_000_012_345;
    let minute = t - t % 60_000;
    let rollups = |pool: SqlitePool| async move {
        sqlx::query_as::<_, (i64, i64, f64)>(
            "SELECT minute, count, avg FROM rollups ORDER BY minute",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    // A reading a second for three minutes, flushed each second: the minutes that
    // are over wait in memory for the next write of rollups.
    for s in 0..180 {
        w.add(&[reading(&a, minute + s * 1000, s as f64)]);
        w.flush_at(minute + s * 1000 + 1000).await.unwrap();
    }
    assert_eq!(rollups(pool.clone()).await, vec![]);
    // A late reading of the first minute joins it in memory.
    w.add(&[reading(&a, minute + 59_500, 29.5)]);
    w.flush_at(minute + 1000 + ROLLUPS_EVERY_MS).await.unwrap();
    assert_eq!(
        rollups(pool.clone()).await,
        vec![
            (minute, 61, 29.5),
            (minute + 60_000, 60, 89.5),
            (minute + 120_000, 60, 149.5)
        ]
    );
    // Later still: it merges into the stored row.
    w.add(&[reading(&a, minute + 59_600, 29.5)]);
    w.flush_at(minute + 1000 + 2 * ROLLUPS_EVERY_MS)
        .await
        .unwrap();
    assert_eq!(rollups(pool.clone()).await[0], (minute, 62, 29.5));
}

#[tokio::test]
async fn retention_deletes_old_chunks_only() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open(&dir.path().join("t.db")).await.unwrap();
    let mut w = Writer::new(pool.clone());
    let a: SeriesId = Arc::from("x/y");
    w.add(&[reading(&a, 1000, 1.0)]);
    w.flush().await.unwrap();
    w.add(&[reading(&a, 9000, 2.0)]);
    w.flush().await.unwrap();
    w.retention(5000, 0, 10).await.unwrap();
    let got = query_readings(&pool, "#", 0).await.unwrap();
    assert_eq!(got, vec![("x/y".to_string(), 9000, 2.0)]);
}
