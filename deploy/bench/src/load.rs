//! The load loop: C workers, each with its own keep-alive HTTP/1.1
//! connection, take request numbers from one counter until the request count
//! or the duration is used up.
//!
//! Without `--rate` the loop is closed (a worker sends its next request as
//! soon as the previous answer is in): it finds the server's throughput at
//! concurrency C. With `--rate` request i is due at `start + i / rate`, and
//! its latency is measured from that due time, not from when a worker got to
//! it, so a server that falls behind shows it in the latency (no coordinated
//! omission).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::error::{usage, BenchError, Result};
use crate::target::Target;

/// Hard caps: every run ends by itself.
pub const MAX_REQUESTS: u64 = 10_000_000;
pub const MAX_DURATION: Duration = Duration::from_secs(1_800);
pub const MAX_CONCURRENCY: usize = 4_096;
/// Answers are small JSON documents; anything bigger is cut off.
const MAX_BODY: usize = 64 * 1024;

type Sender = SendRequest<Full<Bytes>>;

/// What to send, how often, and for how long.
pub struct LoadSpec {
    pub target: Target,
    pub method: Method,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request i carries `authorizations[i % len]` (one token per user).
    pub authorizations: Vec<HeaderValue>,
    /// Request i goes to `paths[i % len]` instead of the target's path (the
    /// read path's flood of made-up ids).
    pub paths: Vec<hyper::Uri>,
    pub requests: u64,
    pub duration: Duration,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub progress: bool,
}

impl LoadSpec {
    fn validate(&self) -> Result<()> {
        if !(1..=MAX_REQUESTS).contains(&self.requests) {
            return Err(usage(format!("requests must be 1..={MAX_REQUESTS}")));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(usage(format!(
                "duration must be 1..={} s",
                MAX_DURATION.as_secs()
            )));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(usage(format!("concurrency must be 1..={MAX_CONCURRENCY}")));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(usage("rate must be a positive number"));
            }
        }
        if self.timeout.is_zero() {
            return Err(usage("timeout must be positive"));
        }
        Ok(())
    }
}

/// How one request ended: the HTTP status and the body's `"code"` for
/// non-2xx answers; status 0 for a transport error, with its kind as code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Outcome {
    pub status: u16,
    pub code: String,
}

impl Outcome {
    fn error(kind: &str) -> Self {
        Self {
            status: 0,
            code: kind.to_owned(),
        }
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn label(&self) -> String {
        match (self.status, self.code.is_empty()) {
            (0, _) => format!("error {}", self.code),
            (s, true) => s.to_string(),
            (s, false) => format!("{s} {}", self.code),
        }
    }
}

/// One request: when it was sent (or due), how long it took, how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub start_us: u64,
    pub latency_us: u64,
    /// Index into [`RunData::outcomes`].
    pub outcome: u32,
}

impl Sample {
    pub fn end_us(&self) -> u64 {
        self.start_us + self.latency_us
    }
}

/// Everything a run recorded, samples sorted by start.
pub struct RunData {
    pub samples: Vec<Sample>,
    pub outcomes: Vec<Outcome>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When the load began, for anything measured alongside (persistence).
    pub start: Instant,
    /// From the start to the last answer.
    pub elapsed: Duration,
    /// TCP connections opened, the initial one per worker included: more
    /// than the concurrency means the server closed keep-alive connections.
    pub connections: u64,
}

impl RunData {
    pub fn outcome(&self, sample: &Sample) -> &Outcome {
        &self.outcomes[sample.outcome as usize]
    }
}

struct Shared {
    spec: LoadSpec,
    next: AtomicU64,
    done: AtomicU64,
    connections: AtomicU64,
    start: OnceLock<Instant>,
    /// All workers connected; then the start is set; then all go at once.
    connected: Barrier,
    go: Barrier,
}

/// A worker's own record, merged at the end (no shared lock on the hot path).
#[derive(Default)]
struct Local {
    samples: Vec<Sample>,
    outcomes: Vec<Outcome>,
}

impl Local {
    fn push(&mut self, start_us: u64, latency_us: u64, outcome: Outcome) {
        let index = match self.outcomes.iter().position(|o| *o == outcome) {
            Some(i) => i,
            None => {
                self.outcomes.push(outcome);
                self.outcomes.len() - 1
            }
        };
        self.samples.push(Sample {
            start_us,
            latency_us,
            outcome: index as u32,
        });
    }
}

/// Runs the load and returns what it recorded.
pub async fn run(spec: LoadSpec) -> Result<RunData> {
    spec.validate()?;
    let workers = spec.concurrency;
    let progress = spec.progress;
    let total = spec.requests;
    let shared = Arc::new(Shared {
        spec,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        start: OnceLock::new(),
        connected: Barrier::new(workers + 1),
        go: Barrier::new(workers + 1),
    });
    let handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();
    shared.connected.wait().await;
    let started_at = chrono::Utc::now();
    let start = Instant::now();
    let _ = shared.start.set(start);
    shared.go.wait().await;

    let bar = progress.then(|| progress_bar(total, Arc::clone(&shared)));
    let mut merged = Local::default();
    for handle in handles {
        let local = handle
            .await
            .map_err(|e| BenchError::Http(format!("worker failed: {e}")))?;
        for s in local.samples {
            let outcome = local.outcomes[s.outcome as usize].clone();
            merged.push(s.start_us, s.latency_us, outcome);
        }
    }
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    merged.samples.sort_unstable_by_key(|s| s.start_us);
    let elapsed = merged.samples.iter().map(Sample::end_us).max().unwrap_or(0);
    Ok(RunData {
        samples: merged.samples,
        outcomes: merged.outcomes,
        started_at,
        start,
        elapsed: Duration::from_micros(elapsed),
        connections: shared.connections.load(Ordering::Relaxed),
    })
}

/// Drawn from a ticker, not per request: the hot path only bumps a counter.
/// indicatif draws nothing when stderr is not a terminal.
fn progress_bar(total: u64, shared: Arc<Shared>) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let ticking = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            ticking.set_position(shared.done.load(Ordering::Relaxed));
        }
    });
    (bar, ticker)
}

async fn worker(shared: Arc<Shared>) -> Local {
    let spec = &shared.spec;
    // Connect before the clock starts, so the run measures requests, not handshakes.
    let mut sender = connect(&shared).await.ok();
    shared.connected.wait().await;
    shared.go.wait().await;
    let mut local = Local::default();
    let Some(&start) = shared.start.get() else {
        return local;
    };
    let deadline = start + spec.duration;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= spec.requests {
            break;
        }
        let due = match spec.rate {
            Some(rate) => {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
        };
        let outcome = match tokio::time::timeout(spec.timeout, send(&shared, &mut sender, i)).await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                // The answer may still come on this connection: drop it.
                sender = None;
                Outcome::error("timeout")
            }
        };
        let end = Instant::now();
        local.push(
            micros(due.saturating_duration_since(start)),
            micros(end.saturating_duration_since(due)),
            outcome,
        );
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    local
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn connect(shared: &Shared) -> std::result::Result<Sender, &'static str> {
    let spec = &shared.spec;
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let stream = tokio::time::timeout(spec.timeout, TcpStream::connect(spec.target.addr))
        .await
        .map_err(|_| "connect_timeout")?
        .map_err(|_| "connect")?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn request(spec: &LoadSpec, i: u64) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(spec.body.clone()));
    *req.method_mut() = spec.method.clone();
    *req.uri_mut() = match spec.paths.len() as u64 {
        0 => spec.target.path.clone(),
        n => spec.paths[(i % n) as usize].clone(),
    };
    let headers = req.headers_mut();
    headers.insert(HOST, spec.target.authority.clone());
    for (name, value) in &spec.headers {
        headers.insert(name.clone(), value.clone());
    }
    if !spec.authorizations.is_empty() {
        let n = spec.authorizations.len() as u64;
        headers.insert(AUTHORIZATION, spec.authorizations[(i % n) as usize].clone());
    }
    req
}

/// One request on the worker's connection; (re)connects when it is gone.
async fn send(shared: &Shared, slot: &mut Option<Sender>, i: u64) -> Outcome {
    let spec = &shared.spec;
    if slot.as_ref().is_none_or(Sender::is_closed) {
        match connect(shared).await {
            Ok(sender) => *slot = Some(sender),
            Err(kind) => {
                *slot = None;
                return Outcome::error(kind);
            }
        }
    }
    let Some(sender) = slot.as_mut() else {
        return Outcome::error("connect");
    };
    if sender.ready().await.is_err() {
        *slot = None;
        return Outcome::error("connection_closed");
    }
    let response = match sender.send_request(request(spec, i)).await {
        Ok(response) => response,
        Err(_) => {
            *slot = None;
            return Outcome::error("send");
        }
    };
    let status = response.status().as_u16();
    let body = match Limited::new(response.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            *slot = None;
            return Outcome::error("body");
        }
    };
    let code = if (200..300).contains(&status) {
        String::new()
    } else {
        error_code(&body).unwrap_or_default()
    };
    Outcome { status, code }
}

/// The `"code"` of an error body (`{"error":{"code":"sold_out",...}}` or
/// `{"code":"sold_out",...}`), found without a JSON parse.
pub fn error_code(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"code\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &body[at..];
    let open = rest.iter().position(|&b| b == b'"')?;
    if rest[..open]
        .iter()
        .any(|&b| b != b':' && !b.is_ascii_whitespace())
    {
        return None;
    }
    let value = &rest[open + 1..];
    let close = value.iter().position(|&b| b == b'"')?;
    let code = std::str::from_utf8(&value[..close]).ok()?;
    (!code.is_empty() && code.len() <= 64).then(|| code.to_owned())
}

/// One request outside the load loop (sale creation): status and body.
pub async fn one_off(
    target: &Target,
    method: Method,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<(u16, Bytes)> {
    let exchange = async {
        let stream = TcpStream::connect(target.addr).await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = target.path.clone();
        req.headers_mut().insert(HOST, target.authority.clone());
        for (name, value) in headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?
            .to_bytes();
        Ok::<_, BenchError>((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| BenchError::Timeout(format!("{} {}", target.addr, target.path)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_error_codes() {
        let nested = br#"{"error":{"code":"sold_out","message":"the sale is sold out"}}"#;
        assert_eq!(error_code(nested).as_deref(), Some("sold_out"));
        assert_eq!(
            error_code(br#"{"code" : "rate_limited"}"#).as_deref(),
            Some("rate_limited")
        );
        assert_eq!(error_code(b"{}"), None);
        assert_eq!(error_code(br#"{"code": 5}"#), None);
        assert_eq!(error_code(b"not json"), None);
    }

    #[test]
    fn outcome_labels() {
        let ok = Outcome {
            status: 202,
            code: String::new(),
        };
        assert!(ok.is_success());
        assert_eq!(ok.label(), "202");
        let gone = Outcome {
            status: 410,
            code: "sold_out".into(),
        };
        assert_eq!(gone.label(), "410 sold_out");
        assert_eq!(Outcome::error("timeout").label(), "error timeout");
    }
}
