//! Benchmark: controller-shim under a fleet booting at once, alone and next to a
//! credential-less flood. N workers (each its own source address, connection and TLS
//! handshake, as separate nodes would be) bootstrap concurrently against the shim
//! binary given in `NODEWRIGHT_BIN_CONTROLLER_SHIM`, backed by the AWS emulator with
//! SigV4 checks on. Then the same again while keep-alive clients from four other source
//! addresses send requests without a proof as fast as they can (the flood of issue 15).
//! Reports bootstraps per second and latency percentiles side by side, with the shim's
//! own time separated from its STS, EC2 and S3 calls (from each answer's
//! `Server-Timing` header, and the shim's /metrics for comparison), and what the flood
//! got. Run by `bench/shim.sh`.
//!
//! Pinned (`taskset -c 0 bench-shim` with `NODEWRIGHT_SHIM_CPUS=1`, as bench/shim.sh
//! runs it), the shim has CPU 1 to itself and the emulator, the workers and the flood
//! share CPU 0, so the shim's own time is its work and not time the emulator's Python
//! took from it on the same core; unpinned, everything shares both cores.
//!
//! Usage: bench-shim [--quick] [WORKERS...]   (default: 200 1000; --quick: 20)

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nodewright_e2e::runtime::{block_on, runtime};
use nodewright_e2e::shim::{FloodCount, Node, ShimWorld, flood};
use nodewright_shim::identity::IdentityToken;

/// One worker's outcome.
#[derive(Debug, Default, Clone)]
struct Sample {
    ok: bool,
    attempts: u32,
    /// Client-side time of the successful attempt (connect, TLS, request, answer).
    total_ms: f64,
    /// From Server-Timing: the shim's own time, queueing, and each upstream.
    shim_ms: f64,
    queue_ms: f64,
    receive_ms: f64,
    sts_ms: f64,
    ec2_ms: f64,
    s3_ms: f64,
    server_total_ms: f64,
    error: String,
}

/// One fleet's run.
struct Run {
    workers: usize,
    flood: Option<(FloodCount, Duration)>,
    wall: Duration,
    samples: Vec<Sample>,
    own_mean_metrics: f64,
    ec2_calls: u64,
}

/// Keep-alive clients per flooding source address; four sources.
const FLOOD_CLIENTS_PER_SOURCE: usize = 32;

fn main() {
    let pinned = std::env::var_os("NODEWRIGHT_SHIM_CPUS").is_some();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = match (sizes.is_empty(), quick) {
        (false, _) => sizes,
        (true, true) => vec![20],
        (true, false) => vec![200, 1000],
    };
    // The global upstream budget sized for the fleet, as an operator would for a
    // scale-up this large: the flood must not be what spends it.
    let largest = sizes.iter().copied().max().unwrap_or(1).max(1000);
    let world = ShimWorld::start_with(
        &[],
        &format!(
            "limits:\n  requestsPerSecond: {largest}\n  burst: {largest}\n  concurrency: {largest}\n"
        ),
    );
    println!(
        "controller-shim: {} ({})",
        nodewright_e2e::tools::workspace_bin("controller-shim").display(),
        if pinned {
            "pinned: the shim on CPU 1, the emulator, the workers and the flood on CPU 0"
        } else {
            "shared: everything on both CPUs"
        }
    );
    let mut report = Vec::new();
    for workers in sizes {
        for flooded in [false, true] {
            report.push(run(&world, workers, flooded));
        }
    }
    print_report(&report);
}

fn run(world: &ShimWorld, workers: usize, flooded: bool) -> Run {
    eprintln!("preparing {workers} instances, role sessions and CSRs...");
    let nodes = world.launch_many(workers as i32);
    let bodies: Vec<Vec<u8>> = nodes.iter().map(|n| request_body(world, n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flooded.then(|| {
        eprintln!("flooding from 4 sources, {FLOOD_CLIENTS_PER_SOURCE} clients each...");
        let began = Instant::now();
        let task = runtime().spawn(flood(
            format!("{}/v1/bootstrap", world.url()),
            world.ca.cert_pem().to_owned(),
            (2..6).map(|i| IpAddr::from([127, 0, 0, i])).collect(),
            FLOOD_CLIENTS_PER_SOURCE,
            stop.clone(),
        ));
        // Let it reach full speed before the fleet starts.
        std::thread::sleep(Duration::from_secs(1));
        (task, began)
    });
    eprintln!(
        "{workers} workers bootstrapping at once{}...",
        if flooded { " in the flood" } else { "" }
    );
    let before = world.metrics();
    let started = Instant::now();
    let samples = run_fleet(world, nodes, bodies);
    let wall = started.elapsed();
    let after = world.metrics();
    let flood = flooding.map(|(task, began)| {
        stop.store(true, Ordering::Relaxed);
        let count = block_on(task).unwrap_or_default();
        (count, began.elapsed())
    });
    Run {
        workers,
        flood,
        wall,
        samples,
        own_mean_metrics: own_from_metrics(&before, &after),
        ec2_calls: counter(&after, "controller_shim_ec2_describe_calls_total")
            - counter(&before, "controller_shim_ec2_describe_calls_total"),
    }
}

fn print_report(report: &[Run]) {
    println!();
    println!(
        "| workers | flood | bootstraps/s | errors | retried | client p50 | client p99 | shim own p50 | shim own p99 | receive p99 | queue p99 | STS p50 / p99 | EC2 p50 / p99 | S3 p50 / p99 | own mean (metrics) | DescribeInstances calls |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in report {
        let samples = &run.samples;
        let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
        let errors = samples.len() - ok.len();
        let retried = samples.iter().filter(|s| s.attempts > 1).count();
        let pick = |f: fn(&Sample) -> f64| -> Vec<f64> { ok.iter().map(|s| f(s)).collect() };
        let p = |values: Vec<f64>, q: f64| percentile(values, q);
        let flood = match &run.flood {
            Some((count, took)) => {
                format!("{:.0} req/s", count.requests as f64 / took.as_secs_f64())
            }
            None => "none".to_owned(),
        };
        println!(
            "| {} | {flood} | {:.1} | {errors} | {retried} | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms | {:.1} ms | {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.2} ms | {} |",
            run.workers,
            ok.len() as f64 / run.wall.as_secs_f64(),
            p(pick(|s| s.total_ms), 0.5),
            p(pick(|s| s.total_ms), 0.99),
            p(pick(|s| s.shim_ms), 0.5),
            p(pick(|s| s.shim_ms), 0.99),
            p(pick(|s| s.receive_ms), 0.99),
            p(pick(|s| s.queue_ms), 0.99),
            p(pick(|s| s.sts_ms), 0.5),
            p(pick(|s| s.sts_ms), 0.99),
            p(pick(|s| s.ec2_ms), 0.5),
            p(pick(|s| s.ec2_ms), 0.99),
            p(pick(|s| s.s3_ms), 0.5),
            p(pick(|s| s.s3_ms), 0.99),
            run.own_mean_metrics,
            run.ec2_calls,
        );
    }
    println!();
    for run in report {
        let ok: Vec<f64> = run
            .samples
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.shim_ms)
            .collect();
        let errors = run.samples.len() - ok.len();
        let shim_p99 = percentile(ok, 0.99);
        let flood = match &run.flood {
            Some((count, _)) => format!(
                " in a flood of {} requests ({})",
                count.requests,
                statuses(&count.statuses)
            ),
            None => String::new(),
        };
        println!(
            "workers={}{flood}: shim own p99 {shim_p99:.2} ms = {:.2}x the 10 ms target; {errors} errors",
            run.workers,
            shim_p99 / 10.0
        );
        if let Some(error) = run.samples.iter().find(|s| !s.ok) {
            println!("  first error: {}", error.error);
        }
    }
}

fn statuses(statuses: &BTreeMap<u16, u64>) -> String {
    statuses
        .iter()
        .map(|(status, n)| match status {
            0 => format!("{n} without an answer"),
            s => format!("{n}x {s}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bootstrap request of a node, with keys generated beforehand (not timed).
fn request_body(world: &ShimWorld, node: &Node) -> Vec<u8> {
    nodewright_e2e::shim::request_body(
        &nodewright::spec::digest(&world.spec),
        &format!("system:node:{}", node.private_dns_name),
        &["system:nodes"],
    )
    .0
}

fn run_fleet(world: &ShimWorld, nodes: Vec<Node>, bodies: Vec<Vec<u8>>) -> Vec<Sample> {
    let url = Arc::new(format!("{}/v1/bootstrap", world.url()));
    let ca = Arc::new(world.ca.cert_pem().to_owned());
    let endpoint = Arc::new(world.sts_endpoint());
    block_on(async move {
        let mut tasks = Vec::new();
        // All workers start together, as a fleet scaling up does.
        let gate = Arc::new(tokio::sync::Barrier::new(nodes.len()));
        for (i, (node, body)) in nodes.into_iter().zip(bodies).enumerate() {
            let (url, ca, endpoint, gate) =
                (url.clone(), ca.clone(), endpoint.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                // Each worker is its own node: its own source address (127.1.x.y), client,
                // connection and handshake.
                let source = IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8]);
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .local_address(source)
                    .tls_certs_only(
                        reqwest::Certificate::from_pem_bundle(ca.as_bytes()).expect("CA"),
                    )
                    .timeout(Duration::from_secs(120))
                    .build()
                    .expect("a client");
                gate.wait().await;
                worker(&client, &url, &endpoint, &node, body).await
            }));
        }
        let mut samples = Vec::new();
        for task in tasks {
            samples.push(task.await.unwrap_or_else(|e| Sample {
                error: e.to_string(),
                ..Sample::default()
            }));
        }
        samples
    })
}

/// Bootstraps like the agent's client: retries 429/503 with jittered backoff, up to 20
/// attempts; anything else is an error.
async fn worker(
    client: &reqwest::Client,
    url: &str,
    endpoint: &nodewright_shim::identity::StsEndpoint,
    node: &Node,
    body: Vec<u8>,
) -> Sample {
    let credentials = node.aws_credentials();
    let mut sample = Sample::default();
    let mut request: nodewright_shim::protocol::BootstrapRequest =
        serde_json::from_slice(&body).expect("a request");
    for attempt in 1..=20u32 {
        sample.attempts = attempt;
        // Each attempt its own proof, as the library client does.
        request.nonce = nodewright_shim::protocol::nonce();
        let body = serde_json::to_vec(&request).expect("JSON");
        let token =
            IdentityToken::sign(&credentials, endpoint, &body, SystemTime::now()).expect("a proof");
        let began = Instant::now();
        let response = client
            .post(url)
            .header("authorization", token.to_header())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                sample.error = nodewright_shim::client::error_chain(&e);
                backoff(attempt).await;
                continue;
            }
        };
        let status = response.status().as_u16();
        let timing = response
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.unwrap_or_default();
        if status == 200 {
            sample.ok = true;
            sample.total_ms = began.elapsed().as_secs_f64() * 1000.0;
            for part in timing.split(',') {
                let Some((name, dur)) = part.trim().split_once(";dur=") else {
                    continue;
                };
                let ms: f64 = dur.parse().unwrap_or(0.0);
                match name {
                    "shim" => sample.shim_ms = ms,
                    "queue" => sample.queue_ms = ms,
                    "receive" => sample.receive_ms = ms,
                    "sts" => sample.sts_ms = ms,
                    "ec2" => sample.ec2_ms = ms,
                    "s3" => sample.s3_ms = ms,
                    "total" => sample.server_total_ms = ms,
                    _ => {}
                }
            }
            return sample;
        }
        sample.error = format!("HTTP {status}: {text}");
        if status != 429 && status != 503 {
            return sample;
        }
        backoff(attempt).await;
    }
    sample
}

async fn backoff(attempt: u32) {
    let base = Duration::from_millis(100) * (1 << attempt.min(5));
    let jitter = base.mul_f64(fastrand::f64());
    tokio::time::sleep(base / 2 + jitter / 2).await;
}

fn percentile(mut values: Vec<f64>, q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[index.min(values.len() - 1)]
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The mean of the shim's own time over the run, from its /metrics histogram.
fn own_from_metrics(before: &str, after: &str) -> f64 {
    let read = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "controller_shim_own_duration_seconds_{name}{{endpoint=\"bootstrap\"}} "
                ))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let sum = read(after, "sum") - read(before, "sum");
    let count = read(after, "count") - read(before, "count");
    if count > 0.0 {
        sum / count * 1000.0
    } else {
        f64::NAN
    }
}
