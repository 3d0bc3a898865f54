//! `centinela bench`: runs [`crate::bench`] and prints its report.

use std::process::ExitCode;

use super::{init_logging, load, BenchArgs};

pub(super) async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (cfg, source) = load(args.config.config.as_deref())?;
    init_logging(&cfg, true);
    let opts = crate::bench::BenchOptions {
        load: crate::bench::Load {
            publishers: args.publishers.max(1),
            series: args.series.max(1),
            rate: if args.flat_out { None } else { args.rate },
            qos: args.qos,
            messages: args.messages,
        },
        duration: args.duration,
        broker: args.broker.clone(),
        raw: args.raw,
    };
    let what = match (&args.broker, args.raw) {
        (None, false) => "pipeline, embedded broker".to_string(),
        (Some(b), false) => format!("pipeline through {b}"),
        (None, true) => "embedded broker alone (raw)".to_string(),
        (Some(b), true) => format!("{b} alone (raw)"),
    };
    let length = match args.messages {
        Some(m) => format!("{m} messages"),
        None => format!("{}", humantime::format_duration(args.duration)),
    };
    let rate = opts
        .load
        .rate
        .map_or("flat out".to_string(), |r| format!("{r:.0} msg/s"));
    eprintln!(
        "bench: {what}; {length}, {rate}, QoS {}, {} series, {} connections; config {source}",
        args.qos, opts.load.series, opts.load.publishers
    );
    let mut progress = |p: &crate::bench::Progress| {
        let stored = p
            .stored
            .map_or(String::new(), |s| format!("  stored {s:>11}"));
        eprintln!(
            "  {:>5.1}s  published {:>11}  received {:>11}{stored}  {:>9.0}/s",
            p.elapsed_s, p.published, p.received, p.rate
        );
    };
    let r = crate::bench::run(cfg, &opts, &mut progress).await?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!("mode             {:>12}   broker {}", r.mode, r.broker);
        println!(
            "published        {:>12}   {:>10.0} msg/s (load generator, {:.1} s)",
            r.published, r.publish_rate, r.publish_seconds
        );
        if let Some(a) = r.acked {
            println!("acknowledged     {a:>12}");
        }
        println!(
            "received         {:>12}   {:>10.0} msg/s end to end",
            r.received, r.received_rate
        );
        if r.readings.is_some() {
            println!("readings         {:>12}", opt(r.readings));
            println!(
                "stored           {:>12}   {:>10.0} readings/s end to end",
                opt(r.stored),
                r.stored_rate.unwrap_or(0.0)
            );
        }
        println!(
            "lost             {:>12}   (published − received){}",
            r.lost,
            r.lost_in_broker
                .map_or(String::new(), |l| format!("; broker log overran by {l}"))
        );
        println!("decode errors    {:>12}", r.decode_errors);
        if let Some(l) = &r.latency {
            println!(
                "publish→alert    p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms   ({} samples, {} missed)",
                l.p50_ms, l.p99_ms, l.max_ms, l.samples, l.missed
            );
        }
        println!("elapsed          {:>12.2} s", r.end_to_end_seconds);
        println!("peak RSS         {:>12.1} MiB", r.peak_rss_mib);
        println!(
            "CPU              {:>12.2} s per million messages (process {:.1} s − load generator {:.1} s)",
            r.cpu_s_per_million, r.process_cpu_s, r.loadgen_cpu_s
        );
        if let Some(b) = r.db_bytes_per_reading {
            println!("database         {b:>12.1} bytes/reading");
        }
    }
    let lossless = r.lost == 0 && r.stored.is_none_or(|s| Some(s) == r.readings);
    if !lossless {
        eprintln!(
            "bench: messages were lost: {} of {} published did not arrive{}",
            r.lost,
            r.published,
            match (r.stored, r.readings) {
                (Some(s), Some(n)) if s != n => format!("; {} readings not stored", n - s),
                _ => String::new(),
            }
        );
    }
    Ok(if lossless {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
