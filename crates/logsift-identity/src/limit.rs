//! Per-token ingest rates.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Instant;

use crate::principal::Principal;

/// A token over its ingest rate; the server answers 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token {token_id} is over its ingest rate of {bytes_per_sec} bytes/s; retry in {retry_after_secs} s")]
pub struct OverRate {
    pub token_id: String,
    pub bytes_per_sec: u64,
    /// Whole seconds until the token is out of debt, at least 1.
    pub retry_after_secs: u64,
}

/// A token's ingest allowance: it may go into debt by one request, and is refused while in
/// debt, so a body larger than a second's worth still gets through, then waits its turn.
///
/// Hand-written rather than `governor` (#21), because governor's GCRA cannot say this:
/// - `check_n(bytes)` admits a request only if the whole of it fits the burst now, and a
///   request larger than the burst (one second's worth) is `InsufficientCapacity` forever;
///   here it is admitted whenever the token is out of debt, and the debt it leaves is what
///   `Retry-After` counts down;
/// - `charge` adds bytes learnt after admission (a body without Content-Length) whatever
///   the balance; governor has no way to consume cells it would refuse;
/// - rates are per token and change when the tokens file is reloaded, while a keyed governor
///   limiter has one quota for every key.
///
/// Forcing it (a limiter per token, rebuilt on a rate change, requests cut into burst-sized
/// pieces) would be more code than this struct and would refuse large bodies outright.
struct Bucket {
    balance: f64,
    last: Instant,
}

/// The ingest allowances of every token that has sent something; anonymous principals
/// (authentication off) are never limited.
pub struct IngestLimiter {
    /// Bytes per second for tokens that name no rate of their own; 0: no limit.
    default_bytes_per_sec: u64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl IngestLimiter {
    pub fn new(default_bytes_per_sec: u64) -> IngestLimiter {
        IngestLimiter {
            default_bytes_per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits an ingest request of `bytes` for `principal` under its rate limit, or says how
    /// long until the token is out of debt.
    pub fn admit(&self, principal: &Principal, bytes: usize) -> Result<(), OverRate> {
        let Some(record) = principal.token_record() else {
            return Ok(());
        };
        let rate = record
            .ingest_bytes_per_sec
            .unwrap_or(self.default_bytes_per_sec);
        if rate == 0 {
            return Ok(());
        }
        let rate = rate as f64;
        let mut buckets = self.buckets.lock();
        let now = Instant::now();
        let b = buckets.entry(record.id.clone()).or_insert(Bucket {
            balance: rate,
            last: now,
        });
        b.balance = (b.balance + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        if b.balance < 0.0 {
            return Err(OverRate {
                token_id: record.id.clone(),
                bytes_per_sec: rate as u64,
                retry_after_secs: (-b.balance / rate).ceil().max(1.0) as u64,
            });
        }
        b.balance -= bytes as f64;
        Ok(())
    }

    /// Charges bytes learnt only after reading (a body without Content-Length).
    pub fn charge(&self, principal: &Principal, bytes: usize) {
        if let Some(record) = principal.token_record() {
            let mut buckets = self.buckets.lock();
            if let Some(b) = buckets.get_mut(&record.id) {
                b.balance -= bytes as f64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{NewToken, Role, Tokens};
    use std::sync::Arc;

    #[test]
    fn rate_limit_lets_one_request_into_debt_then_refuses() {
        let mut tokens = Tokens::default();
        let (record, _) = tokens
            .create(NewToken {
                roles: vec![Role::Ingest],
                ingest_bytes_per_sec: Some(1000),
                ..Default::default()
            })
            .unwrap();
        let limiter = IngestLimiter::new(0);
        let p = Principal::token(Arc::new(record), None);
        limiter.admit(&p, 5000).unwrap();
        let err = limiter.admit(&p, 10).unwrap_err();
        assert_eq!(err.bytes_per_sec, 1000);
        assert!((4..=5).contains(&err.retry_after_secs), "{err:?}");
        // Anonymous principals (authentication off) are never limited.
        limiter
            .admit(&Principal::anonymous(None), usize::MAX)
            .unwrap();
    }

    #[test]
    fn the_default_rate_applies_to_tokens_without_one() {
        let mut tokens = Tokens::default();
        let (record, _) = tokens
            .create(NewToken {
                roles: vec![Role::Ingest],
                ..Default::default()
            })
            .unwrap();
        let p = Principal::token(Arc::new(record), None);
        let unlimited = IngestLimiter::new(0);
        unlimited.admit(&p, usize::MAX / 2).unwrap();
        unlimited.admit(&p, usize::MAX / 2).unwrap();
        let limited = IngestLimiter::new(100);
        limited.admit(&p, 100).unwrap();
        limited.charge(&p, 1000);
        assert!(limited.admit(&p, 1).is_err());
    }
}
