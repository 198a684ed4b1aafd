//! HTTP delivery: each channel's background task ([`worker`]) takes notifications off the
//! channel's queue one at a time, renders them ([`super::payload`]) and POSTs them with
//! [`deliver`]: ureq (blocking; the agent's client, so one TLS stack) on tokio's blocking
//! pool, with a timeout per attempt. Each one is an outbox row ([`super::outbox`]): a failed
//! attempt records the attempt count and the next due time there, and the task marks the row
//! delivered or failed when done — so after a restart delivery resumes where it stopped, with
//! the attempts left.
//!
//! Retries: up to `retry.attempts` attempts; 5xx, 429, connection errors and timeouts are
//! retried after `initial_backoff · 2^(k-1)` (capped at `max_backoff`), or after the
//! receiver's `Retry-After` seconds when longer (also capped); other 4xx, redirects and bad
//! TLS are final. A generic webhook is signed afresh on every attempt (new timestamp) and
//! keeps its `X-Edgecd-Delivery` id, so receivers can both reject replays and deduplicate.
//!
//! Logs name the channel, its type and URL host, the event, the rollout and the delivery id;
//! error text is redacted (see [`super::redact`]) — never the URL's path or the HMAC key.
use super::outbox::{self, Queued};
use super::{ChannelConfig, ChannelKind, ChannelStats, InFlight, Notification, RetryConfig};
use super::{event_name, payload, redact};
use crate::store::{SharedStore, Store};
use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered(u16),
    /// Worth trying again (after `retry_after` if the receiver said so).
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Trying again would not help.
    Rejected(String),
}

/// Why a notification was not delivered (redacted: no URL path, no key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("refused after {attempts} attempt(s), not retried: {why}")]
    Rejected { attempts: u32, why: String },
    #[error("gave up after {attempts} attempt(s); last: {why}")]
    GaveUp { attempts: u32, why: String },
}

impl DeliveryError {
    /// Attempts made, those before a restart included.
    pub fn attempts(&self) -> u32 {
        match self {
            DeliveryError::Rejected { attempts, .. } | DeliveryError::GaveUp { attempts, .. } => {
                *attempts
            }
        }
    }
}

/// One rendered notification on its way.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: &'static str,
    pub rollout: String,
    /// `X-Edgecd-Delivery`: the same on every attempt.
    pub id: String,
    pub body: Bytes,
}

/// What a response status means for delivery (pure). `body` is the start of the response
/// body, kept for the log (Slack answers e.g. `invalid_payload` or `no_service`).
pub fn classify_status(status: u16, retry_after: Option<&str>, body: &str) -> Attempt {
    let body: String = body.trim().chars().take(200).collect();
    let detail = if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    };
    match status {
        200..=299 => Attempt::Delivered(status),
        429 | 500..=599 => Attempt::Retry {
            why: format!("HTTP {status}{detail}"),
            retry_after: retry_after.and_then(parse_retry_after),
        },
        300..=399 => Attempt::Rejected(format!(
            "HTTP {status}: redirects are not followed, configure the final URL"
        )),
        _ => Attempt::Rejected(format!("HTTP {status}{detail}")),
    }
}

/// `Retry-After` in seconds (an HTTP date is ignored: the backoff applies).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The delay after `failed` failed attempts (1-based): `initial · 2^(failed-1)`, capped.
pub fn backoff(retry: &RetryConfig, failed: u32) -> Duration {
    let factor = 1u32 << failed.saturating_sub(1).min(20);
    retry
        .initial_backoff
        .saturating_mul(factor)
        .min(retry.max_backoff)
}

/// The delay before the next attempt: the backoff, or the receiver's `Retry-After` when
/// longer, never more than `max_backoff`.
pub fn next_delay(retry: &RetryConfig, failed: u32, retry_after: Option<Duration>) -> Duration {
    backoff(retry, failed)
        .max(retry_after.unwrap_or_default())
        .min(retry.max_backoff)
}

/// A random delivery id in UUID v4 form.
pub fn delivery_id() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The HTTP client of one channel: the attempt timeout covers connecting, sending and the
/// response; redirects are not followed (a POST body would not survive them).
pub fn agent(retry: &RetryConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(retry.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(concat!("edgecd-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The request headers of one attempt at `now` (unix seconds).
pub fn headers(ch: &ChannelConfig, d: &Delivery, now: u64) -> Vec<(&'static str, String)> {
    let mut h = vec![("content-type", "application/json".to_string())];
    if ch.kind == ChannelKind::Webhook {
        h.push(("x-edgecd-event", d.event.to_string()));
        h.push(("x-edgecd-delivery", d.id.clone()));
        h.push(("x-edgecd-timestamp", now.to_string()));
        if let Some(key) = &ch.secret {
            h.push((
                "x-edgecd-signature-256",
                payload::signature(key.expose().as_bytes(), now, &d.body),
            ));
        }
    }
    h
}

/// One blocking POST.
fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> Attempt {
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    match req.send(body) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut buf = Vec::new();
            let _ = resp.body_mut().as_reader().take(512).read_to_end(&mut buf);
            classify_status(
                status,
                retry_after.as_deref(),
                &String::from_utf8_lossy(&buf),
            )
        }
        Err(e) => {
            let why = e.to_string();
            match e {
                ureq::Error::Timeout(_) => Attempt::Retry {
                    why: format!("no answer in time ({why})"),
                    retry_after: None,
                },
                ureq::Error::Io(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
                | ureq::Error::Protocol(_) => Attempt::Retry {
                    why,
                    retry_after: None,
                },
                _ => Attempt::Rejected(why),
            }
        }
    }
}

/// The strings that must not leave this module: the URL, its path and query, the HMAC key.
fn secrets(ch: &ChannelConfig) -> Vec<String> {
    let url = ch.url.expose();
    let mut s = vec![url.to_string()];
    if let Some(i) = url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
    {
        s.push(url[i..].to_string());
    }
    if let Some(k) = &ch.secret {
        s.push(k.expose().to_string());
    }
    s
}

/// Where [`deliver`] records failed attempts that will be retried: an outbox row.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub store: &'a dyn Store,
    pub row: i64,
}

/// Delivers `d` to `ch` with retries, `done` attempts having been made already (before a
/// restart); counts every attempt in `attempts` and records each failed one that will be
/// retried in `progress`. Makes at least one attempt. Returns the number of attempts it took,
/// `done` included.
pub async fn deliver(
    agent: &ureq::Agent,
    ch: &ChannelConfig,
    retry: &RetryConfig,
    attempts: &AtomicU64,
    d: &Delivery,
    done: u32,
    progress: Option<Progress<'_>>,
) -> Result<u32, DeliveryError> {
    let secrets = secrets(ch);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let max = retry.attempts.max(1);
    let mut attempt = done;
    loop {
        attempt += 1;
        attempts.fetch_add(1, Ordering::Relaxed);
        let headers = headers(ch, d, crate::util::now());
        let (agent, url, body) = (agent.clone(), ch.url.expose().to_string(), d.body.clone());
        let task = tokio::task::spawn_blocking(move || post(&agent, &url, &headers, &body));
        // ureq enforces the timeout; this one only guards against a stuck blocking thread.
        let outcome = match tokio::time::timeout(retry.timeout + Duration::from_secs(1), task).await
        {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => Attempt::Rejected("the delivery task failed".into()),
            Err(_) => Attempt::Retry {
                why: format!("no answer within {} ms", retry.timeout.as_millis()),
                retry_after: None,
            },
        };
        match outcome {
            Attempt::Delivered(_) => return Ok(attempt),
            Attempt::Rejected(why) => {
                return Err(DeliveryError::Rejected {
                    attempts: attempt,
                    why: redact(&why, &secrets),
                });
            }
            Attempt::Retry { why, retry_after } => {
                let why = redact(&why, &secrets);
                if attempt >= max {
                    return Err(DeliveryError::GaveUp {
                        attempts: attempt,
                        why,
                    });
                }
                let delay = next_delay(retry, attempt, retry_after);
                tracing::warn!(
                    channel = %ch.name,
                    r#type = ch.kind.as_str(),
                    host = %ch.host,
                    event = d.event,
                    rollout = %d.rollout,
                    delivery = %d.id,
                    attempt,
                    of = max,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %why,
                    "notification attempt failed; retrying"
                );
                if let Some(p) = progress {
                    let due = outbox::now_ms().saturating_add(delay.as_millis() as i64);
                    if let Err(e) = outbox::retry_later(p.store, p.row, attempt, due, &why).await {
                        tracing::warn!(channel = %ch.name, delivery = %d.id, error = %e, "cannot record the attempt in the notification outbox");
                    }
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Renders a notification for its channel type.
pub fn render(kind: ChannelKind, n: &Notification) -> Bytes {
    let v = match kind {
        ChannelKind::Slack => payload::slack(n),
        ChannelKind::Teams => payload::teams(n),
        ChannelKind::Webhook => payload::webhook(n),
    };
    Bytes::from(v.to_string())
}

/// What a channel's background task works with.
pub struct Worker {
    pub ch: Arc<ChannelConfig>,
    pub retry: RetryConfig,
    pub stats: Arc<ChannelStats>,
    pub store: SharedStore,
    pub in_flight: Arc<InFlight>,
}

/// Takes a row out of the in-flight set when its delivery is over (or abandoned).
struct Release<'a>(&'a InFlight, i64);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// A channel's background task: delivers its queue in order until the notifier is dropped,
/// marking each outbox row delivered or failed. A row found no longer pending (finished
/// while it was queued a second time) is skipped; one not yet due (a retry before a restart)
/// is waited for, at most `max_backoff`.
pub async fn worker(w: Worker, mut queue: mpsc::Receiver<Queued>) {
    let Worker {
        ch,
        retry,
        stats,
        store,
        in_flight,
    } = w;
    let agent = agent(&retry);
    while let Some(q) = queue.recv().await {
        let _release = Release(&in_flight, q.id);
        let (done, due_ms) = match outbox::pending_state(store.as_ref(), q.id).await {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(channel = %ch.name, delivery = %q.delivery_id, error = %e, "cannot read the notification outbox; the notification stays pending");
                continue;
            }
        };
        let wait = Duration::from_millis(due_ms.saturating_sub(outbox::now_ms()).max(0) as u64);
        if !wait.is_zero() {
            tokio::time::sleep(wait.min(retry.max_backoff)).await;
        }
        let n = &q.notification;
        let d = Delivery {
            event: event_name(&n.event),
            rollout: n.rollout.id.clone(),
            id: q.delivery_id.clone(),
            body: render(ch.kind, n),
        };
        let progress = Some(Progress {
            store: store.as_ref(),
            row: q.id,
        });
        let (attempts, error) = match deliver(
            &agent,
            &ch,
            &retry,
            &stats.attempts,
            &d,
            done,
            progress,
        )
        .await
        {
            Ok(attempts) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(channel = %ch.name, r#type = ch.kind.as_str(), host = %ch.host, event = d.event, rollout = %d.rollout, delivery = %d.id, attempts, "notification delivered");
                (attempts, None)
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %ch.name, r#type = ch.kind.as_str(), host = %ch.host, event = d.event, rollout = %d.rollout, delivery = %d.id, error = %e, "notification not delivered");
                (e.attempts(), Some(e.to_string()))
            }
        };
        if let Err(e) = outbox::finish(store.as_ref(), q.id, attempts, error.as_deref()).await {
            tracing::warn!(channel = %ch.name, delivery = %d.id, error = %e, "cannot mark the notification done in the outbox: it may be sent again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Notifier, NotifyConfig, Secret};
    use std::io::Write as _;
    use std::sync::Mutex;

    fn retry(ms: u64) -> RetryConfig {
        RetryConfig {
            attempts: 3,
            initial_backoff: Duration::from_millis(ms),
            max_backoff: Duration::from_millis(ms * 5),
            timeout: Duration::from_millis(2000),
        }
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200, None, "ok"), Attempt::Delivered(200));
        assert_eq!(classify_status(202, None, ""), Attempt::Delivered(202));
        assert_eq!(
            classify_status(503, None, " busy "),
            Attempt::Retry {
                why: "HTTP 503: busy".into(),
                retry_after: None
            }
        );
        assert_eq!(
            classify_status(429, Some("7"), ""),
            Attempt::Retry {
                why: "HTTP 429".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify_status(404, None, "no_service"),
            Attempt::Rejected("HTTP 404: no_service".into())
        );
        assert_eq!(
            classify_status(400, Some("5"), ""),
            Attempt::Rejected("HTTP 400".into())
        );
        assert!(
            matches!(classify_status(302, None, ""), Attempt::Rejected(w) if w.contains("redirects"))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let r = RetryConfig {
            attempts: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_millis(3000),
            timeout: Duration::from_secs(1),
        };
        let ms: Vec<u128> = (1..=6).map(|k| backoff(&r, k).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(backoff(&r, 1000).as_millis(), 3000);
        assert_eq!(
            next_delay(&r, 1, Some(Duration::from_secs(2))).as_millis(),
            2000
        );
        assert_eq!(
            next_delay(&r, 1, Some(Duration::from_secs(60))).as_millis(),
            3000
        );
        assert_eq!(next_delay(&r, 2, Some(Duration::ZERO)).as_millis(), 1000);
    }

    #[test]
    fn delivery_ids_are_unique_uuids() {
        let a = delivery_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, delivery_id());
    }

    /// A receiver answering each connection with the next status (then 200).
    fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let mut buf = vec![0u8; 65536];
                let mut n = 0;
                // Read the head and a Content-Length body.
                while let Ok(k) = c.read(&mut buf[n..]) {
                    if k == 0 {
                        break;
                    }
                    n += k;
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len = text[..h]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if n >= h + 4 + len {
                            break;
                        }
                    }
                }
                s.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&buf[..n]).to_string());
                let status = statuses.next().unwrap_or(200);
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
                );
            }
        });
        (format!("http://{addr}"), seen)
    }

    /// An address nobody listens on.
    fn closed_port() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    /// Every log line of this test binary (a global subscriber, set once, at TRACE).
    fn global_logs() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let l = logs.clone();
            let sub = tracing_subscriber::fmt()
                .with_writer(move || l.clone())
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(sub).expect("the test binary's subscriber");
            logs
        })
        .clone()
    }
    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn channel(name: &str, kind: ChannelKind, url: String) -> ChannelConfig {
        ChannelConfig {
            name: name.into(),
            kind,
            host: crate::notify::check_url(&url).expect("url"),
            url: Secret::new(url),
            runbook_url: None,
            secret: (kind == ChannelKind::Webhook).then(|| Secret::new("HMACSECRETKEY")),
        }
    }

    #[test]
    fn retries_then_delivers_and_never_logs_secrets() {
        let (ok_base, ok_seen) = receiver(vec![500, 503]);
        let (bad_base, bad_seen) = receiver(vec![400]);
        let closed_addr = closed_port();
        let mut cfg = NotifyConfig {
            retry: retry(20),
            ..NotifyConfig::default()
        };
        for ch in [
            channel(
                "flaky",
                ChannelKind::Webhook,
                format!("{ok_base}/hooks/TOPSECRETPATH?token=QUERYSECRET"),
            ),
            channel(
                "refusing",
                ChannelKind::Slack,
                format!("{bad_base}/services/TOPSECRETPATH"),
            ),
            channel(
                "down",
                ChannelKind::Teams,
                format!("http://{closed_addr}/workflows/TOPSECRETPATH?sig=QUERYSECRET"),
            ),
        ] {
            cfg.channels.insert(ch.name.clone(), ch);
        }
        // The binary's global subscriber: a scoped one (`with_default`) misses events
        // whose callsites another test's thread registered first under `cargo test`.
        let logs = global_logs();
        let counts = {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                let dir = tempfile::tempdir().expect("tmp");
                let store = crate::store::open(None, dir.path()).await.expect("store");
                let notifier = Notifier::start(
                    &cfg,
                    "http://127.0.0.1:1",
                    store.clone(),
                    std::sync::Arc::default(),
                )
                .await
                .expect("notifier");
                let dbg = format!("{notifier:?}");
                assert!(!dbg.contains("TOPSECRETPATH"), "{dbg}");
                for name in ["flaky", "refusing", "down"] {
                    let mut n = crate::notify::payload::tests_support::notification();
                    n.channel = name.into();
                    notifier.enqueue(n).await.expect("enqueue");
                }
                for _ in 0..200 {
                    let c = notifier.counts();
                    if c.iter().all(|c| c.delivered + c.failed == 1) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // The outbox rows are marked done once delivered or failed.
                let mut rows: Vec<(String, String, String, i64, Option<String>)> = vec![];
                for _ in 0..100 {
                    rows = store
                        .outbox_rows()
                        .await
                        .expect("rows")
                        .into_iter()
                        .map(|r| (r.channel, r.delivery_id, r.status, r.attempts, r.last_error))
                        .collect();
                    rows.sort();
                    if rows.iter().all(|r| r.2 != "pending") {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (notifier.counts(), rows)
            })
        };
        let (counts, rows) = counts;
        let summary: Vec<(&str, &str, i64)> = rows
            .iter()
            .map(|r| (r.0.as_str(), r.2.as_str(), r.3))
            .collect();
        assert_eq!(
            summary,
            [
                ("down", "failed", 3),
                ("flaky", "delivered", 3),
                ("refusing", "failed", 1)
            ]
        );
        assert!(
            rows[2].4.as_deref().is_some_and(|e| e.contains("HTTP 400")),
            "{rows:?}"
        );
        assert!(!format!("{rows:?}").contains("TOPSECRETPATH"), "{rows:?}");
        let by: std::collections::BTreeMap<String, (u64, u64, u64)> = counts
            .iter()
            .map(|c| (c.channel.clone(), (c.delivered, c.failed, c.attempts)))
            .collect();
        assert_eq!(by["flaky"], (1, 0, 3), "500, 503, then 200");
        assert_eq!(by["refusing"], (0, 1, 1), "a 400 is not retried");
        assert_eq!(by["down"], (0, 1, 3), "connection refused is retried");
        assert_eq!(ok_seen.lock().expect("lock").len(), 3);
        assert_eq!(bad_seen.lock().expect("lock").len(), 1);
        // The same delivery id on every attempt of the webhook.
        let ids: std::collections::BTreeSet<String> = ok_seen
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|r| {
                r.lines()
                    .find_map(|l| l.strip_prefix("x-edgecd-delivery: ").map(str::to_string))
            })
            .collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        assert!(
            ids.contains(&rows[1].1),
            "the outbox row's delivery id: {ids:?}"
        );

        // This test's lines: those naming its receivers (other tests log to the same place).
        let hosts: Vec<String> = [&ok_base, &bad_base]
            .iter()
            .map(|b| b.trim_start_matches("http://").to_string())
            .chain([closed_addr.to_string()])
            .collect();
        let all = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
        for secret in ["TOPSECRETPATH", "QUERYSECRET", "HMACSECRETKEY"] {
            assert!(!all.contains(secret), "{secret} logged:\n{all}");
        }
        let text: String = all
            .lines()
            .filter(|l| hosts.iter().any(|h| l.contains(&format!("host={h}"))))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(text.contains("notification delivered"), "{text}");
        assert!(text.contains("notification not delivered"), "{text}");
        assert!(
            text.contains("notification attempt failed; retrying"),
            "{text}"
        );
        assert!(text.contains("HTTP 400"), "{text}");
        assert!(text.contains(&format!("host={}", closed_addr)), "{text}");
        for secret in [
            "TOPSECRETPATH",
            "QUERYSECRET",
            "HMACSECRETKEY",
            "/hooks/",
            "/services/",
        ] {
            assert!(!text.contains(secret), "{secret} logged:\n{text}");
        }
    }

    #[test]
    fn errors_are_redacted() {
        let ch = channel(
            "h",
            ChannelKind::Webhook,
            format!("http://{}/hooks/TOPSECRETPATH", closed_port()),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let n = AtomicU64::new(0);
        let d = Delivery {
            event: "started",
            rollout: "r".into(),
            id: delivery_id(),
            body: Bytes::from_static(b"{}"),
        };
        // A port nobody listens on: connection refused, retried, then given up.
        let e = rt
            .block_on(deliver(&agent(&retry(1)), &ch, &retry(1), &n, &d, 0, None))
            .expect_err("refused");
        assert_eq!(n.load(Ordering::Relaxed), 3);
        let s = format!("{e} {e:?}");
        assert!(s.contains("gave up after 3 attempt(s)"), "{s}");
        assert!(
            !s.contains("TOPSECRETPATH") && !s.contains("HMACSECRETKEY"),
            "{s}"
        );
        // A URL ureq refuses outright is reported without its path.
        let mut bad = ch.clone();
        bad.url = Secret::new("http://exa mple/TOPSECRETPATH");
        let e = rt
            .block_on(deliver(&agent(&retry(1)), &bad, &retry(1), &n, &d, 0, None))
            .expect_err("bad url");
        assert!(!e.to_string().contains("TOPSECRETPATH"), "{e}");
    }
}
