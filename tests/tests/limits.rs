//! One anonymous client cannot take a real gateway process down or keep others out.
//!
//! Against the `pixmill-gateway` binary (so its memory can be read from /proc), in turn:
//! (a) 200 clients that send their headers a byte every 2 s are all closed by the
//! server within the header timeout; (b) 2,000 idle connections; (c) 40 uploads of
//! 25 MiB at once, more than the upload budget holds; (d) more event streams than the
//! watcher cap. Throughout, `/healthz` answers within [`HEALTHZ_LIMIT`] on a fresh
//! connection, a normal client's jobs succeed, and the gateway's peak RSS (VmHWM) stays
//! under [`RSS_BUDGET_MB`]. The figures are printed.
//!
//! A second, in-process test holds the connection cap: at `PIXMILL_MAX_CONNECTIONS` a
//! new connection waits until a slot frees.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use pixmill_tests::{GatewayProcess, Stack, common, free_port, photos::photo, temp_dir};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};
use uuid::Uuid;

/// The gateway's header (and idle) timeout in this test.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How late after the header timeout a connection may be closed.
const SLACK: Duration = Duration::from_secs(2);
/// The gateway's peak resident memory must stay under this.
const RSS_BUDGET_MB: u64 = 400;
/// How soon `/healthz` must answer throughout. The probe runs in this test's process,
/// on the same two cores as the 2,000 connections and the 1 GiB of uploads the test
/// itself sends, so a bound of 1 s measured the tester's own stalls as well (one
/// answer took 1,001 ms); a gateway that let one client keep others out would take
/// far longer than this.
const HEALTHZ_LIMIT: Duration = Duration::from_secs(2);
/// The gateway's watcher cap in this test.
const MAX_WATCHERS: usize = 1000;
/// One upload at the default `PIXMILL_MAX_UPLOAD_BYTES`.
const UPLOAD: usize = 25 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_cannot_exhaust_the_gateway() {
    ensure_open_files(8192);
    let dir = temp_dir();
    let common = common(&format!("limits-{}", Uuid::new_v4().simple()), &dir);
    let mut stack = Stack::workers_only(common.clone()).expect("stack");
    let port = free_port().expect("port");
    let gateway = GatewayProcess::start_with(
        &common,
        port,
        &[
            ("PIXMILL_HEADER_TIMEOUT_SECS", "5"),
            ("PIXMILL_MAX_CONNECTIONS", "3000"),
            ("PIXMILL_MAX_WATCHERS", "1000"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await
    .expect("gateway");
    let pid = gateway.pid().expect("gateway pid");
    let addr = format!("127.0.0.1:{port}");
    // Two workers: `held` is stopped later so one job stays queued for the streams of
    // (d); `live` runs the normal client's jobs all along.
    stack
        .spawn_worker_process_with("held", 1, &[])
        .expect("worker");
    stack
        .spawn_worker_process_with("live", 2, &[])
        .expect("worker");

    let probe = Probe::start(gateway.client.base().to_string());
    let normal = Normal::start(gateway.client.clone());
    wait_until("the normal client's first job", || normal.ok() >= 1).await;
    println!("limits: baseline RSS {} MB", rss_mb(pid, "VmRSS"));

    // (a) Slow headers: a byte every 2 s. The server closes each within the timeout.
    let started = Instant::now();
    let mut slow = JoinSet::new();
    for _ in 0..200 {
        let addr = addr.clone();
        slow.spawn(async move { slow_headers(&addr).await });
    }
    let mut closed_after = Vec::new();
    while let Some(r) = slow.join_next().await {
        closed_after.push(r.expect("task").expect("slow client"));
    }
    let latest = closed_after.iter().max().copied().unwrap_or_default();
    let earliest = closed_after.iter().min().copied().unwrap_or_default();
    println!(
        "limits (a): 200 slow-header clients closed by the server after {:.1}–{:.1} s \
         (timeout {} s); RSS {} MB, healthz max {} ms; took {:.1} s",
        earliest.as_secs_f64(),
        latest.as_secs_f64(),
        HEADER_TIMEOUT.as_secs(),
        rss_mb(pid, "VmRSS"),
        probe.take_max_ms(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        latest <= HEADER_TIMEOUT + SLACK,
        "a slow client was held {latest:?}"
    );
    assert!(
        earliest + Duration::from_secs(1) >= HEADER_TIMEOUT,
        "closed too early"
    );

    // (b) 2,000 idle connections: held open, then closed by the idle timeout.
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held_rss = rss_mb(pid, "VmRSS");
    let mut closers = JoinSet::new();
    for mut tcp in idle {
        closers.spawn(async move {
            let mut byte = [0u8; 1];
            let _ = tcp.read(&mut byte).await;
        });
    }
    let all_closed = tokio::time::timeout(HEADER_TIMEOUT + SLACK, async {
        while closers.join_next().await.is_some() {}
    })
    .await;
    println!(
        "limits (b): 2000 idle connections: RSS {held_rss} MB while open, all closed by the \
         server after {:.1} s; healthz max {} ms",
        started.elapsed().as_secs_f64(),
        probe.take_max_ms()
    );
    assert!(
        all_closed.is_ok(),
        "idle connections outlived the idle timeout"
    );

    // (c) 40 uploads of 25 MiB at once, paced so they overlap: more than the 256 MiB
    // budget. The bytes are no image, so an admitted upload is read whole and then
    // refused with 415; one the budget has no room for is refused with 503 at once.
    let started = Instant::now();
    let mut uploads = JoinSet::new();
    for _ in 0..40 {
        let addr = addr.clone();
        uploads.spawn(async move { big_upload(&addr).await });
    }
    let (mut read_whole, mut busy) = (0, 0);
    while let Some(r) = uploads.join_next().await {
        let answer = r.expect("task").expect("upload");
        match answer.status {
            415 => read_whole += 1,
            503 => {
                assert!(answer.head.contains("retry-after:"), "{}", answer.head);
                assert!(
                    answer.body.contains("PIXMILL_UPLOAD_BUDGET_BYTES"),
                    "{}",
                    answer.body
                );
                busy += 1;
            }
            other => panic!("upload answered {other}: {}", answer.body),
        }
    }
    println!(
        "limits (c): 40 uploads of 25 MiB: {read_whole} read whole (415), {busy} refused \
         503 server_busy; RSS {} MB, peak {} MB; healthz max {} ms; took {:.1} s",
        rss_mb(pid, "VmRSS"),
        rss_mb(pid, "VmHWM"),
        probe.take_max_ms(),
        started.elapsed().as_secs_f64()
    );
    assert!(read_whole >= 1, "no upload was admitted");
    assert!(busy >= 20, "the budget let {read_whole} uploads in at once");

    // (d) Event streams on a job that stays queued: its worker is stopped with the job
    // in hand. 1,050 streams against a cap of 1,000.
    normal.pause(true);
    wait_until("the normal client to pause", || normal.idle()).await;
    let held_pid = stack.worker_pids()[0];
    signal(held_pid, "-STOP");
    // The broker hands jobs to both workers in turn, so of a few jobs one reaches the
    // stopped worker (its one prefetch slot) and stays queued; the rest run.
    let mut candidates = Vec::new();
    for _ in 0..4 {
        candidates.push(
            gateway
                .client
                .submit_ok(&photo("FreshFlower.jpg"), &[("op", "grayscale")])
                .await
                .expect("a job to watch"),
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut watched = None;
    for id in &candidates {
        let job = gateway
            .client
            .get(&format!("/v1/jobs/{id}"))
            .await
            .expect("job")
            .json();
        if job["state"] == "queued" {
            watched = Some(id.clone());
        }
    }
    let watched = watched.expect("a job held by the stopped worker");
    normal.pause(false);
    let started = Instant::now();
    let mut streams = JoinSet::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let hold = Arc::new(tokio::sync::Notify::new());
    for _ in 0..MAX_WATCHERS + 50 {
        let (addr, path) = (addr.clone(), format!("/v1/jobs/{watched}/events"));
        let (opened, hold) = (opened.clone(), hold.clone());
        streams.spawn(async move { event_stream(&addr, &path, &opened, &hold).await });
        if streams.len() % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_until("the streams to open", || {
        opened.load(Ordering::SeqCst) >= MAX_WATCHERS
    })
    .await;
    // Longer than the header timeout: a stream is a response in flight, not idle.
    tokio::time::sleep(HEADER_TIMEOUT + Duration::from_secs(1)).await;
    let streams_rss = rss_mb(pid, "VmRSS");
    hold.notify_waiters();
    let (mut open, mut refused) = (0, 0);
    while let Some(r) = streams.join_next().await {
        match r.expect("task").expect("stream") {
            Stream::Open => open += 1,
            Stream::Busy => refused += 1,
        }
    }
    signal(held_pid, "-CONT");
    println!(
        "limits (d): {} event streams tried: {open} open past the header timeout, {refused} \
         refused 503 server_busy (PIXMILL_MAX_WATCHERS={MAX_WATCHERS}); RSS {streams_rss} MB; \
         healthz max {} ms; took {:.1} s",
        MAX_WATCHERS + 50,
        probe.take_max_ms(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(open, MAX_WATCHERS);
    assert_eq!(refused, 50);

    let (ok, failed, slowest) = normal.stop().await;
    let (healthz_max, healthz_fails) = probe.stop().await;
    let peak = rss_mb(pid, "VmHWM");
    println!(
        "limits: normal client {ok} jobs succeeded, {failed} failed, slowest {slowest} ms, \
         {} retries after server_busy; healthz worst {healthz_max} ms, {healthz_fails} \
         failures; gateway peak RSS {peak} MB (budget {RSS_BUDGET_MB} MB)",
        normal.retries.load(Ordering::SeqCst)
    );
    assert_eq!(failed, 0, "a normal job failed");
    assert!(ok >= 4, "the normal client got only {ok} jobs through");
    assert_eq!(
        healthz_fails, 0,
        "/healthz did not answer within {HEALTHZ_LIMIT:?}"
    );
    assert!(peak < RSS_BUDGET_MB, "peak RSS {peak} MB");
    drop(gateway);
    stack.stop().await.expect("stop");
}

/// Connects and sends a request's headers one byte every 2 s; returns how long after
/// connecting the server closed the connection.
async fn slow_headers(addr: &str) -> anyhow::Result<Duration> {
    let mut tcp = TcpStream::connect(addr).await?;
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (mut read, mut write) = tcp.split();
    let mut buf = [0u8; 1024];
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            n = read.read(&mut buf) => {
                // A timed-out request may get a 408 before the close; either way the
                // connection ends.
                if matches!(n, Ok(0) | Err(_)) {
                    return Ok(started.elapsed());
                }
            }
            _ = tick.tick() => {
                if sent < request.len() {
                    if write.write_all(&request[sent..=sent]).await.is_err() {
                        return Ok(started.elapsed());
                    }
                    sent += 1;
                }
                if started.elapsed() > HEADER_TIMEOUT * 4 {
                    anyhow::bail!("the server kept a slow client for {:?}", started.elapsed());
                }
            }
        }
    }
}

/// An HTTP answer read off a raw connection.
struct Answer {
    status: u16,
    /// The status line and headers, lower-cased.
    head: String,
    body: String,
}

/// Posts 25 MiB of non-image bytes with `Content-Length`, 1 MiB every 100 ms, while
/// reading the answer, which may come before the body is sent.
async fn big_upload(addr: &str) -> anyhow::Result<Answer> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut read, mut write) = tcp.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        answer
    });
    let head = format!(
        "POST /v1/jobs?op=grayscale HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
         application/octet-stream\r\nContent-Length: {UPLOAD}\r\nConnection: close\r\n\r\n"
    );
    let chunk = vec![0x5au8; 1024 * 1024];
    if write.write_all(head.as_bytes()).await.is_ok() {
        for _ in 0..UPLOAD / chunk.len() {
            if reader.is_finished() || write.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let raw = tokio::time::timeout(Duration::from_secs(30), reader).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no answer: {text:?}"))?;
    Ok(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

enum Stream {
    Open,
    Busy,
}

/// Opens an event stream; once its first event arrives counts it in `opened` and holds
/// it until `hold` is notified, failing if the server ends it first.
async fn event_stream(
    addr: &str,
    path: &str,
    opened: &AtomicUsize,
    hold: &tokio::sync::Notify,
) -> anyhow::Result<Stream> {
    let mut tcp = TcpStream::connect(addr).await?;
    let released = hold.notified();
    tokio::pin!(released);
    released.as_mut().enable();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before the first event");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if text.starts_with("HTTP/1.1 503") {
            anyhow::ensure!(text.to_ascii_lowercase().contains("retry-after:"));
            return Ok(Stream::Busy);
        }
        if text.contains("event: queued") {
            anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
            break;
        }
    }
    opened.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            () = &mut released => return Ok(Stream::Open),
            n = tcp.read(&mut buf) => {
                let n = n?;
                anyhow::ensure!(n > 0, "the server ended an event stream");
            }
        }
    }
}

/// `/healthz` every 250 ms on a fresh connection each time, remembering the slowest.
struct Probe {
    max_ms: Arc<AtomicU64>,
    worst_ms: Arc<AtomicU64>,
    fails: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    fn start(base: String) -> Self {
        let (max_ms, worst_ms, fails, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(HEALTHZ_LIMIT)
            .build()
            .expect("client");
        let task = tokio::spawn({
            let (max_ms, worst_ms, fails, stop) = (
                max_ms.clone(),
                worst_ms.clone(),
                fails.clone(),
                stop.clone(),
            );
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let ok = http
                        .get(format!("{base}/healthz"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    if !ok {
                        fails.fetch_add(1, Ordering::SeqCst);
                    }
                    max_ms.fetch_max(ms, Ordering::SeqCst);
                    worst_ms.fetch_max(ms, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
        Self {
            max_ms,
            worst_ms,
            fails,
            stop,
            task,
        }
    }

    /// The slowest answer since the last call.
    fn take_max_ms(&self) -> u64 {
        self.max_ms.swap(0, Ordering::SeqCst)
    }

    /// The slowest answer of all, and how many failed or took over [`HEALTHZ_LIMIT`].
    async fn stop(self) -> (u64, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        (
            self.worst_ms.load(Ordering::SeqCst),
            self.fails.load(Ordering::SeqCst),
        )
    }
}

/// A well-behaved client: submits a small photo, polls until it ends, again and again;
/// on 503 it waits `Retry-After` and submits again.
struct Normal {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
    slowest_ms: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
    busy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Normal {
    fn start(client: pixmill_tests::Client) -> Self {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let retries = Arc::new(AtomicUsize::new(0));
        let slowest_ms = Arc::new(AtomicU64::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (ok, failed, retries, slowest_ms, paused, busy, stop) = (
                ok.clone(),
                failed.clone(),
                retries.clone(),
                slowest_ms.clone(),
                paused.clone(),
                busy.clone(),
                stop.clone(),
            );
            async move {
                let image = photo("FreshFlower.jpg");
                while !stop.load(Ordering::SeqCst) {
                    if paused.load(Ordering::SeqCst) {
                        busy.store(false, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    busy.store(true, Ordering::SeqCst);
                    let started = Instant::now();
                    match one_job(&client, &image, &retries).await {
                        Ok(true) => ok.fetch_add(1, Ordering::SeqCst),
                        Ok(false) | Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                    };
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    slowest_ms.fetch_max(ms, Ordering::SeqCst);
                    busy.store(false, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        });
        Self {
            ok,
            failed,
            retries,
            slowest_ms,
            paused,
            busy,
            stop,
            task,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
    }

    fn idle(&self) -> bool {
        !self.busy.load(Ordering::SeqCst)
    }

    /// Jobs that succeeded, jobs that did not, and the slowest, in ms.
    async fn stop(&self) -> (usize, usize, u64) {
        self.stop.store(true, Ordering::SeqCst);
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            self.slowest_ms.load(Ordering::SeqCst),
        )
    }
}

/// One job, submitted (retrying on 503) and polled without `?wait` until it ends.
async fn one_job(
    client: &pixmill_tests::Client,
    image: &[u8],
    retries: &AtomicUsize,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let reply = client.submit(image, &[("op", "grayscale")]).await?;
        match reply.status {
            202 => break reply.json()["id"].as_str().unwrap_or_default().to_string(),
            503 => {
                retries.fetch_add(1, Ordering::SeqCst);
                let secs = reply
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            other => anyhow::bail!("submit answered {other}"),
        }
        anyhow::ensure!(Instant::now() < deadline, "no submit got through");
    };
    loop {
        let job = client.get(&format!("/v1/jobs/{id}")).await?.json();
        match job["state"].as_str().unwrap_or_default() {
            "succeeded" => return Ok(true),
            "failed" | "cancelled" => return Ok(false),
            _ => {}
        }
        anyhow::ensure!(Instant::now() < deadline, "job {id} did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `name` (VmRSS, VmHWM) of process `pid`, in MB.
fn rss_mb(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Sends `sig` (`-STOP`, `-CONT`) to `pid`.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Raises this process's open-file limit (which the gateway it starts inherits) to at
/// least `want`, with `prlimit`, when the soft limit is lower.
fn ensure_open_files(want: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .unwrap_or(0);
    if soft >= want {
        return;
    }
    let pid = std::process::id().to_string();
    let raised = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={want}:{want}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        raised,
        "the open-file limit is {soft}; this test needs {want} (ulimit -n {want})"
    );
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// At `PIXMILL_MAX_CONNECTIONS` a new connection waits, unanswered, until one closes;
/// a silent connection gives its slot back at the header timeout.
#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let dir = temp_dir();
    let common = common(&format!("limits-{}", Uuid::new_v4().simple()), &dir);
    let stack = Stack::start_configured(common, |s| {
        s.bounds.max_connections = 2;
        s.bounds.header_timeout = Duration::from_secs(2);
    })
    .await
    .expect("stack");
    let addr = stack.base.trim_start_matches("http://").to_string();
    // Both slots taken by connections that send nothing.
    let silent = [
        TcpStream::connect(&addr).await.expect("connect"),
        TcpStream::connect(&addr).await.expect("connect"),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut third = TcpStream::connect(&addr)
        .await
        .expect("the backlog takes it");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    third.read_to_end(&mut answer).await.expect("answer");
    let waited = started.elapsed();
    println!(
        "limits: at the cap of 2 connections, a third was answered after {:.1} s \
         (header timeout 2 s)",
        waited.as_secs_f64()
    );
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(
        waited >= Duration::from_millis(1500),
        "answered while the cap was reached"
    );
    assert!(
        waited <= Duration::from_secs(2) + SLACK,
        "waited {waited:?}"
    );
    drop(silent);
    stack.stop().await.expect("stop");
}
