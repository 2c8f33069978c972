//! Per-peer rate limits: a token bucket each for gossip messages and for
//! requests.

use std::time::Instant;

/// A token bucket: `rate` events per second, bursts up to `rate`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One peer's buckets.
#[derive(Default)]
pub(crate) struct PeerBuckets {
    messages: Option<Bucket>,
    requests: Option<Bucket>,
}

impl PeerBuckets {
    /// Whether one more gossip message at `rate` per second is allowed.
    pub(crate) fn message(&mut self, rate: u32, now: Instant) -> bool {
        take(&mut self.messages, rate, now)
    }

    /// Whether one more request at `rate` per second is allowed.
    pub(crate) fn request(&mut self, rate: u32, now: Instant) -> bool {
        take(&mut self.requests, rate, now)
    }
}

fn take(bucket: &mut Option<Bucket>, rate: u32, now: Instant) -> bool {
    bucket
        .get_or_insert(Bucket {
            tokens: f64::from(rate),
            at: now,
        })
        .take(rate, now)
}
