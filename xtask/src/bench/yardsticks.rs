//! The yardsticks printed beside the figures: what the broker gives a bare
//! client in the same run, and jobsmith's ratio to it. Brokers on machines
//! of one kind differ up to 2× (`FACTS.md`), so only the ratios compare
//! across runs.

use super::Figures;
use std::process::Command;

/// The output lines of `redis-benchmark` with `args` that carry a rate
/// (`-q` prints progress with `\r` before each final line).
fn redis_benchmark(args: &[&str]) -> Result<Vec<String>, String> {
    let out = Command::new("redis-benchmark")
        .args(args)
        .output()
        .map_err(|e| format!("redis-benchmark could not run: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .map(|l| l.trim().to_owned())
        .collect())
}

/// The number after `key` in a `redis-benchmark -q` line (`RPOP: 56673.28
/// requests per second, p50=0.487 msec`): `""` for the rate, `"p50="`.
fn number_after(line: &str, key: &str) -> Option<f64> {
    let rest = if key.is_empty() {
        line.split_once(": ")?.1
    } else {
        line.split_once(key)?.1
    };
    rest.split_whitespace().next()?.parse().ok()
}

/// Redis: `redis-benchmark` LPUSH/RPOP with its default 50 clients (the
/// drain at concurrency 50 against RPOP), pipelined by 16 (the broker's
/// ceiling), and one client's `EVALSHA` of a one-line script (a single
/// awaited enqueue against that round trip).
pub(super) fn redis(ours: Option<&Figures>) {
    let mut rpop = None;
    for extra in [&[][..], &["-P", "16"][..]] {
        let mut args = vec!["-q", "-t", "lpush,rpop", "-n", "200000"];
        args.extend_from_slice(extra);
        eprintln!(
            "bench: redis ceiling, `redis-benchmark {}`:",
            args.join(" ")
        );
        match redis_benchmark(&args) {
            Ok(lines) => {
                for l in lines {
                    if extra.is_empty() && l.starts_with("RPOP") {
                        rpop = number_after(&l, "");
                    }
                    eprintln!("bench:   {l}");
                }
            }
            Err(e) => eprintln!("bench:   {e}"),
        }
    }
    let evalsha = evalsha_round_trip();
    let Some(f) = ours.filter(|f| f.backend == "redis") else {
        return;
    };
    if let (Some(rpop), Some(c50)) = (rpop, f.drain_c50_per_s) {
        eprintln!(
            "bench:   jobsmith's drain at concurrency 50 is {:.2}× that RPOP rate (at defaults {:.2}×)",
            c50 / rpop,
            f.drain_per_s / rpop
        );
    }
    if let Some(rtt) = f.evalsha_p50_ms {
        eprintln!(
            "bench:   a single awaited enqueue (p50 {:.3} ms) is {:.2}× one awaited EVALSHA from the redis crate in the same process (p50 {rtt:.3} ms)",
            f.enqueue_one_p50_ms,
            f.enqueue_one_p50_ms / rtt
        );
    }
    if let (Some(one), Some(rtt)) = (f.enqueue_alone_p50_ms, f.evalsha_alone_p50_ms) {
        eprintln!(
            "bench:   with no worker in the process, a single awaited enqueue (p50 {one:.3} ms) is {:.2}× one awaited EVALSHA (p50 {rtt:.3} ms)",
            one / rtt
        );
    }
    if let Some(rtt) = evalsha {
        eprintln!(
            "bench:   and {:.2}× redis-benchmark's EVALSHA round trip",
            f.enqueue_one_p50_ms / rtt
        );
    }
}

/// One client's `EVALSHA` of `return 1`, as `redis-benchmark` times it: its p50 in ms.
fn evalsha_round_trip() -> Option<f64> {
    let sha = Command::new("redis-cli")
        .args(["SCRIPT", "LOAD", "return 1"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| s.len() == 40)?;
    let args = ["-q", "-c", "1", "-n", "20000", "EVALSHA", &sha, "0"];
    eprintln!(
        "bench: redis round trip, `redis-benchmark {}`:",
        args.join(" ")
    );
    match redis_benchmark(&args) {
        Ok(lines) => {
            let line = lines.into_iter().next()?;
            eprintln!("bench:   {line}");
            number_after(&line, "p50=")
        }
        Err(e) => {
            eprintln!("bench:   {e}");
            None
        }
    }
}

/// RabbitMQ: pika (`xtask/pika_rate.py`, FACTS.md's method: 500 confirms in
/// flight, then prefetch 100 and one ack each) and a plain lapin client by
/// the same method, on the same broker; jobsmith's ratios to the faster.
pub(super) fn amqp(rt: &tokio::runtime::Runtime, url: &str, jobs: u64, ours: Option<&Figures>) {
    use jobsmith::amqp::RawQueue;
    let n = usize::try_from(jobs).unwrap_or(usize::MAX);
    let mut best: Option<(f64, f64)> = None;
    let mut keep = |publish: f64, consume: f64| {
        let (p, c) = best.get_or_insert((0.0, 0.0));
        *p = p.max(publish);
        *c = c.max(consume);
    };
    match pika(url, jobs) {
        Ok((publish, consume)) => {
            eprintln!(
                "bench: amqp pika, a plain durable queue: publish {publish:.0}/s (500 confirms in flight), consume {consume:.0}/s (prefetch 100, one ack each)"
            );
            keep(publish, consume);
        }
        Err(e) => eprintln!("bench: amqp pika rate could not be measured: {e}"),
    }
    for (queue, what) in [
        (RawQueue::Plain, "a queue with no arguments"),
        (
            RawQueue::AsWorkQueue,
            "a queue with the arguments jobsmith gives a work queue at this URL",
        ),
    ] {
        match rt.block_on(jobsmith::amqp::raw_rate(url, n, queue)) {
            Ok((publish, consume)) => {
                eprintln!(
                    "bench: amqp plain lapin client, {what}: publish {publish:.0}/s (500 confirms in flight), consume {consume:.0}/s (prefetch 100, one ack each)"
                );
                if matches!(queue, RawQueue::Plain) {
                    keep(publish, consume);
                }
            }
            Err(e) => eprintln!("bench: amqp raw rate could not be measured: {e}"),
        }
    }
    if let (Some((publish, consume)), Some(f)) = (best, ours.filter(|f| f.backend == "amqp")) {
        eprintln!(
            "bench:   against the faster bare client on a plain queue: jobsmith's enqueue is {:.2}× its publish, its drain at defaults {:.2}× its consume",
            f.enqueue_per_s / publish,
            f.drain_per_s / consume
        );
    }
}

/// pika's publish and consume rates, from `xtask/pika_rate.py`.
fn pika(url: &str, jobs: u64) -> Result<(f64, f64), String> {
    // pika takes the URL without jobsmith's settings.
    let bare = url.split('?').next().unwrap_or(url);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/pika_rate.py");
    let out = Command::new("python3")
        .args([script, bare, &jobs.to_string()])
        .output()
        .map_err(|e| format!("python3 could not run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["publish", p, "consume", c] => Ok((
            p.parse().map_err(|_| format!("pika printed `{text}`"))?,
            c.parse().map_err(|_| format!("pika printed `{text}`"))?,
        )),
        _ => Err(format!(
            "{} (pika is installed with `pip install pika`)",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// SQS: the raw AWS SDK against the same endpoint, and the requests jobsmith
/// made per job and per idle worker, priced at list price.
pub(super) fn sqs(rt: &tokio::runtime::Runtime, url: &str, jobs: u64, ours: Option<&Figures>) {
    let n = usize::try_from(jobs).unwrap_or(usize::MAX);
    let ours = ours.filter(|f| f.backend == "sqs");
    if let Some(f) = ours {
        if let (Some(per_job), Some(idle)) = (f.requests_per_job, f.idle_requests_per_min) {
            // $0.40 per million standard-queue requests (AWS list price, first tier).
            let usd_per_million_requests = 0.40;
            let setup = f.setup_requests.unwrap_or(0);
            eprintln!(
                "bench: sqs requests: {per_job:.3} per job over the enqueue and the drain at defaults, set-up included ({:.3} in steady state, without the {setup} set-up requests), {idle:.1} per idle worker per minute",
                per_job - setup as f64 / jobs as f64
            );
            eprintln!(
                "bench:   at $0.40 per million requests: ${:.3} per million jobs, ${:.2} per idle worker per month (30 days)",
                per_job * usd_per_million_requests,
                idle * 60.0 * 24.0 * 30.0 * usd_per_million_requests / 1e6
            );
        }
    }
    match rt.block_on(jobsmith::sqs::raw_rate(url, n)) {
        Ok((send, recv)) => {
            eprintln!("bench: sqs raw SDK on the same endpoint: batched send {send:.0}/s, receive+delete {recv:.0}/s");
            if let Some(f) = ours {
                eprintln!(
                    "bench:   jobsmith reaches {:.0}% of the raw send rate and {:.0}% of the raw receive+delete rate",
                    100.0 * f.enqueue_per_s / send,
                    100.0 * f.drain_per_s / recv
                );
            }
        }
        Err(e) => eprintln!("bench: sqs raw rate could not be measured: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::number_after;

    #[test]
    fn redis_benchmark_lines_are_read() {
        let l = "RPOP: 56673.28 requests per second, p50=0.487 msec";
        assert_eq!(number_after(l, ""), Some(56673.28));
        assert_eq!(number_after(l, "p50="), Some(0.487));
        let l = "EVALSHA abc 0: 14000.00 requests per second, p50=0.063 msec";
        assert_eq!(number_after(l, ""), Some(14000.0));
        assert_eq!(number_after(l, "p50="), Some(0.063));
    }
}
