//! Request rate limits: one token bucket per credential (the contract, "Rate limits").
//!
//! Tenant API keys each have a bucket, and so does each tenant's portal (its sessions
//! count as the tenant); service tokens have their own setting, off by default. The admin
//! token is never limited, and a rate of 0 turns a class off. Limits are per replica.
//!
//! The buckets are `governor`'s keyed GCRA limiter on a `DashMap`: a decision is one
//! sharded-map update, no lock held across requests. `StateInformationMiddleware` gives
//! the remaining capacity the `RateLimit-*` headers need, so no bucket code of our own.
//!
//! Invariant: the keyed state stays bounded. Every [`SWEEP_EVERY`] decisions, buckets that
//! are full again (indistinguishable from a fresh one) are dropped, so the map holds the
//! credentials active within a bucket's refill time plus at most [`SWEEP_EVERY`] others.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use uuid::Uuid;

/// One class's setting: tokens per second and bucket size (0: one second's worth). A rate
/// of 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    pub const OFF: Rate = Rate { per_second: 0, burst: 0 };

    pub fn is_off(&self) -> bool {
        self.per_second == 0
    }

    /// `RPS/BURST`, or `off`: how a report or a log line names the setting.
    pub fn describe(&self) -> String {
        if self.is_off() {
            "off".into()
        } else {
            format!("{}/s burst {}", self.per_second, self.burst)
        }
    }
}

/// Whose bucket a request takes a token from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// A tenant API key, by key id.
    ApiKey(Uuid),
    /// A tenant's portal sessions, by tenant id.
    Portal(Uuid),
    /// A service token, by token id.
    Service(Uuid),
}

impl Bucket {
    /// The credential class, as a metric label.
    pub fn class(&self) -> &'static str {
        match self {
            Bucket::ApiKey(_) => "api_key",
            Bucket::Portal(_) => "portal",
            Bucket::Service(_) => "service_token",
        }
    }
}

/// The decision for one request, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The bucket size.
    pub limit: u32,
    /// Requests still allowed at once after this one.
    pub remaining: u32,
    /// Whole seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Refused: whole seconds (at least 1) until one request would be allowed.
    pub retry_after_secs: Option<u64>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.retry_after_secs.is_none()
    }
}

/// Decisions between sweeps of full buckets.
pub const SWEEP_EVERY: u64 = 4096;

type Keyed<C> = RateLimiter<Bucket, DashMapStateStore<Bucket>, C, StateInformationMiddleware>;

struct Class<C: Clock> {
    limiter: Keyed<C>,
    quota: Quota,
}

/// Both classes' buckets for this replica.
pub struct RateLimits<C: Clock = DefaultClock> {
    tenant: Option<Class<C>>,
    service: Option<Class<C>>,
    clock: C,
    decisions: AtomicU64,
}

impl RateLimits {
    pub fn new(tenant: Rate, service: Rate) -> RateLimits {
        RateLimits::with_clock(tenant, service, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(tenant: Rate, service: Rate, clock: C) -> RateLimits<C> {
        let class = |r: Rate| {
            let per_second = NonZeroU32::new(r.per_second)?;
            // A burst of 0 means one second's worth.
            let burst = NonZeroU32::new(r.burst).unwrap_or(per_second);
            let quota = Quota::per_second(per_second).allow_burst(burst);
            let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone()).with_middleware();
            Some(Class { limiter, quota })
        };
        RateLimits { tenant: class(tenant), service: class(service), clock, decisions: AtomicU64::new(0) }
    }

    /// Takes a token from `bucket`. `None`: that class is not limited (no headers).
    pub fn check(&self, bucket: Bucket) -> Option<Verdict> {
        let class = match bucket {
            Bucket::ApiKey(_) | Bucket::Portal(_) => self.tenant.as_ref()?,
            Bucket::Service(_) => self.service.as_ref()?,
        };
        if self.decisions.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let limit = class.quota.burst_size().get();
        let interval = class.quota.replenish_interval();
        Some(match class.limiter.check_key(&bucket) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Verdict {
                    limit,
                    remaining,
                    reset_secs: ceil_secs(interval * (limit - remaining.min(limit))),
                    retry_after_secs: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                // Full again once the refused token and the rest of the bucket have refilled.
                let full = wait + interval * (limit - 1);
                Verdict {
                    limit,
                    remaining: 0,
                    reset_secs: ceil_secs(full).max(1),
                    retry_after_secs: Some(ceil_secs(wait).max(1)),
                }
            }
        })
    }

    /// Drops the buckets that are full again.
    pub fn sweep(&self) {
        for class in [&self.tenant, &self.service].into_iter().flatten() {
            class.limiter.retain_recent();
            class.limiter.shrink_to_fit();
        }
    }

    /// Buckets held in memory (both classes).
    pub fn buckets(&self) -> usize {
        [&self.tenant, &self.service].into_iter().flatten().map(|c| c.limiter.len()).sum()
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limits(tenant: Rate, service: Rate) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimits::with_clock(tenant, service, clock.clone()), clock)
    }

    #[test]
    fn a_bucket_empties_refuses_and_refills() {
        let (l, clock) = limits(Rate { per_second: 2, burst: 3 }, Rate::OFF);
        let key = Bucket::ApiKey(Uuid::now_v7());
        let seen: Vec<Verdict> = (0..4).map(|_| l.check(key).unwrap()).collect();
        assert_eq!(seen.iter().map(|v| v.remaining).collect::<Vec<_>>(), [2, 1, 0, 0]);
        assert!(seen[..3].iter().all(Verdict::allowed));
        assert_eq!(seen[0].limit, 3);
        assert_eq!(seen[0].reset_secs, 1, "one token at 2/s: half a second, rounded up");
        let refused = seen[3];
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.reset_secs, 2, "three tokens at 2/s: 1.5 s, rounded up");
        // Another credential of the same class has its own bucket.
        assert_eq!(l.check(Bucket::ApiKey(Uuid::now_v7())).unwrap().remaining, 2);
        clock.advance(Duration::from_millis(500));
        assert!(l.check(key).unwrap().allowed(), "one token back after 1/rate");
        assert!(!l.check(key).unwrap().allowed());
    }

    #[test]
    fn a_rate_of_zero_is_off_and_classes_are_apart() {
        let (l, _) = limits(Rate { per_second: 1, burst: 1 }, Rate::OFF);
        let svc = Bucket::Service(Uuid::now_v7());
        assert!((0..1000).all(|_| l.check(svc).is_none()), "service tokens unlimited");
        let portal = Bucket::Portal(Uuid::now_v7());
        assert!(l.check(portal).unwrap().allowed());
        assert!(!l.check(portal).unwrap().allowed(), "the portal counts in the tenant class");
        let (off, _) = limits(Rate::OFF, Rate { per_second: 2, burst: 0 });
        assert!(off.check(Bucket::ApiKey(Uuid::now_v7())).is_none());
        assert_eq!(off.check(svc).unwrap().limit, 2, "a burst of 0 is one second's worth");
    }

    #[test]
    fn full_buckets_are_swept_so_state_stays_bounded() {
        let (l, clock) = limits(Rate { per_second: 10, burst: 10 }, Rate::OFF);
        // A new credential every millisecond; a used bucket is full again after 100 ms.
        for _ in 0..(SWEEP_EVERY * 3) {
            l.check(Bucket::ApiKey(Uuid::now_v7()));
            clock.advance(Duration::from_millis(1));
        }
        assert!(l.buckets() <= SWEEP_EVERY as usize, "{} buckets kept", l.buckets());
        clock.advance(Duration::from_secs(2));
        l.sweep();
        assert_eq!(l.buckets(), 0, "every bucket refilled: nothing to keep");
    }
}
