//! Admission to an upstream: how many requests the gateway lets into a service at once.
//!
//! A service pushed past what it can do answers everyone late; when thousands arrive at once (a
//! flash sale), every one of them waits for all the others. So each upstream has a limit on the
//! requests in flight, found as TCP finds its window (additive increase, multiplicative
//! decrease): while the upstream answers within `latency_target` the limit grows by one per
//! limit's worth of answers, and each time it answers late the limit shrinks as much as the answer
//! was late — to the target's share of the time taken, by a tenth at least and half at most (a
//! 503 takes a tenth) — at most once per `latency_target / 4` so that one slow burst counts once.
//! It starts low: a service swamped at once by thousands of requests (a flash sale's first
//! second) takes every process on the machine down with it, the gateway included. A request that finds
//! the limit reached waits for a place up to `queue_timeout`, in arrival order — unless
//! `queue_length` requests (or as many as may be in flight, if more) already wait, when it could
//! not get a place in time anyway — and is then
//! answered 503 with `Retry-After`: promptly refused rather than served too late, and never
//! having reached the service, so that a retry is always safe. `Retry-After` grows with the
//! demand turned away: requests shed per request let in over the last second, so that thousands
//! of clients retrying do not spend the capacity the ones let in need. And it is spread: the
//! requests shed in turn are told 1, 2, … up to that ratio, round and round, so that they come
//! back over as many seconds, about as many each second as were let in — told alike, a second's
//! rush would all come back as one rush again.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::config::UpstreamConfig;

/// The limit never falls below this (a service that is merely slow still serves), and starts at
/// `START` (raised by answers that come in time, up to `max_in_flight`); a burst from a quiet
/// start beyond it waits in the queue.
const MIN: f64 = 4.0;
const START: f64 = 32.0;
/// Most and least a late answer keeps of the limit.
const DECREASE: f64 = 0.9;
const MAX_DECREASE: f64 = 0.5;

pub struct Admission {
    state: Mutex<State>,
    freed: Notify,
    max: f64,
    latency_target: Duration,
    queue_timeout: Duration,
    queue_length: f64,
    limit_gauge: metrics::Gauge,
    shed: metrics::Counter,
}

struct State {
    limit: f64,
    in_flight: u32,
    waiting: u32,
    last_decrease: Option<Instant>,
    /// Requests let in and shed in the current second, and the `Retry-After` the last one gave.
    window: Instant,
    admitted: u32,
    shed: u32,
    retry_after: u64,
}

/// Most a shed request is told to wait.
const MAX_RETRY_AFTER: u64 = 30;

impl State {
    fn has_place(&self) -> bool {
        f64::from(self.in_flight) < self.limit.floor()
    }

    /// Counts one request let in or shed; the `Retry-After` for a shed one.
    fn count(&mut self, shed: bool, now: Instant) -> u64 {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            let ratio = f64::from(self.shed) / f64::from(self.admitted.max(1));
            self.retry_after = (ratio.ceil() as u64).clamp(1, MAX_RETRY_AFTER);
            (self.window, self.admitted, self.shed) = (now, 0, 0);
        }
        if shed {
            self.shed += 1;
            1 + u64::from(self.shed) % self.retry_after
        } else {
            self.admitted += 1;
            self.retry_after
        }
    }
}

/// A place in flight; give it back with [`Ticket::done`] (dropped unused, it counts as neither
/// fast nor slow).
pub struct Ticket<'a> {
    admission: &'a Admission,
    entered: Instant,
    done: bool,
}

impl Admission {
    pub fn new(upstream: &str, config: &UpstreamConfig) -> Self {
        let max = f64::from(config.max_in_flight.max(1));
        let limit = START.min(max);
        let limit_gauge = metrics::gauge!("gateway_upstream_in_flight_limit", "upstream" => upstream.to_owned());
        limit_gauge.set(limit);
        Self {
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                waiting: 0,
                last_decrease: None,
                window: Instant::now(),
                admitted: 0,
                shed: 0,
                retry_after: 1,
            }),
            freed: Notify::new(),
            max,
            latency_target: config.latency_target,
            queue_timeout: config.queue_timeout,
            queue_length: f64::from(config.queue_length),
            limit_gauge,
            shed: metrics::counter!("gateway_upstream_shed_total", "upstream" => upstream.to_owned()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place in flight, waiting for one up to `queue_timeout`; else the request is shed, and
    /// the error is the `Retry-After` (seconds) to answer.
    pub async fn enter(&self) -> Result<Ticket<'_>, u64> {
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        let mut queued = false;
        let outcome = loop {
            // Registered before looking, so that a place freed in between still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.state();
                if state.has_place() {
                    state.in_flight += 1;
                    state.waiting -= u32::from(queued);
                    state.count(false, Instant::now());
                    return Ok(Ticket { admission: self, entered: Instant::now(), done: false });
                }
                if !queued {
                    if self.queue_full(&state) {
                        break Err(state.count(true, Instant::now()));
                    }
                    state.waiting += 1;
                    queued = true;
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let mut state = self.state();
                state.waiting -= 1;
                break Err(state.count(true, Instant::now()));
            }
        };
        self.shed.increment(1);
        outcome
    }

    /// Sheds a request at once when it could not even wait for a place (the `Retry-After`), before
    /// the gateway spends anything on it: in a rush, checking tokens and budgets of requests that
    /// are turned away anyway would take the time of those let in.
    pub fn full(&self) -> Option<u64> {
        let mut state = self.state();
        if state.has_place() || !self.queue_full(&state) {
            return None;
        }
        let retry_after = state.count(true, Instant::now());
        drop(state);
        self.shed.increment(1);
        Some(retry_after)
    }

    /// Whether as many wait as may: `queue_length`, or as many as may be in flight if that is more.
    fn queue_full(&self, state: &State) -> bool {
        f64::from(state.waiting) >= state.limit.floor().max(self.queue_length)
    }

    /// Gives a place back; `judged`: the share of the limit to keep (1 when the answer came in
    /// time), or `None` when there was no answer to judge by.
    fn leave(&self, judged: Option<f64>) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        let before = state.limit;
        match judged {
            Some(keep) if keep >= 1.0 => state.limit = (state.limit + 1.0 / state.limit).min(self.max),
            Some(keep) => {
                let now = Instant::now();
                if state.last_decrease.is_none_or(|at| now.duration_since(at) >= self.latency_target / 4) {
                    state.limit = (state.limit * keep).max(MIN.min(self.max));
                    state.last_decrease = Some(now);
                }
            }
            None => {}
        }
        let (limit, grew) = (state.limit, state.limit.floor() > before.floor());
        drop(state);
        if limit != before {
            self.limit_gauge.set(limit);
        }
        self.freed.notify_one();
        if grew {
            self.freed.notify_one();
        }
    }

    #[cfg(test)]
    fn limit(&self) -> f64 {
        self.state().limit
    }
}

impl Ticket<'_> {
    /// The upstream answered: `overloaded` when it said so (503).
    pub fn done(mut self, overloaded: bool) {
        self.done = true;
        let (took, target) = (self.entered.elapsed(), self.admission.latency_target);
        let keep = if overloaded {
            DECREASE
        } else if took <= target {
            1.0
        } else {
            (target.as_secs_f64() / took.as_secs_f64()).clamp(MAX_DECREASE, DECREASE)
        };
        self.admission.leave(Some(keep));
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.admission.leave(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: u32, latency_target_ms: u64, queue_timeout_ms: u64) -> Admission {
        let config = UpstreamConfig {
            max_in_flight: max,
            latency_target: Duration::from_millis(latency_target_ms),
            queue_timeout: Duration::from_millis(queue_timeout_ms),
            queue_length: 0,
            ..UpstreamConfig::default()
        };
        Admission::new("test", &config)
    }

    #[tokio::test]
    async fn beyond_the_limit_a_request_waits_for_a_place_then_is_shed() {
        let admission = admission(2, 1_000, 50);
        let first = admission.enter().await.expect("a place");
        let _second = admission.enter().await.expect("a place");
        let waited = Instant::now();
        assert_eq!(admission.enter().await.err(), Some(1), "the third is shed");
        assert!(waited.elapsed() >= Duration::from_millis(50), "after waiting for a place");
        // A place freed while one waits goes to it.
        let (waiter, freer) = tokio::join!(admission.enter(), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            first.done(false);
        });
        let () = freer;
        assert!(waiter.is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_sheds_at_once() {
        let admission = admission(2, 1_000, 1_000);
        let _places = (admission.enter().await.unwrap(), admission.enter().await.unwrap());
        // Two may wait (as many as may be in flight); the next is shed without waiting.
        let waiters = async {
            let (a, b) = tokio::join!(admission.enter(), admission.enter());
            (a.is_err(), b.is_err())
        };
        let shed_at_once = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let started = Instant::now();
            let shed = admission.enter().await;
            (shed.err(), started.elapsed())
        };
        let full = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            admission.full()
        };
        let ((a, b), (shed, waited), full) = tokio::join!(waiters, shed_at_once, full);
        assert_eq!(full, Some(1), "full while two wait");
        assert_eq!(admission.full(), None, "not once the waiters have gone");
        assert!(a && b, "the waiters are shed after queue_timeout");
        assert_eq!(shed, Some(1));
        assert!(waited < Duration::from_millis(100), "shed at once: {waited:?}");
    }

    #[test]
    fn retry_after_grows_with_the_demand_turned_away() {
        let admission = admission(2, 1_000, 1_000);
        let mut state = admission.state();
        let start = state.window;
        for n in 0..23 {
            state.count(n >= 2, start);
        }
        // A second later: 21 shed for 2 let in; the next 22 shed are told 1 to 11 s, each twice.
        let next = start + Duration::from_millis(1_100);
        let mut told: Vec<u64> = (0..22).map(|_| state.count(true, next)).collect();
        told.sort();
        assert_eq!(told, (1..=11).flat_map(|s| [s, s]).collect::<Vec<_>>());
        for _ in 0..10 {
            state.count(false, next);
        }
        // 22 shed for 10 let in: 3 s at most.
        let later = next + Duration::from_millis(1_100);
        assert_eq!((0..6).map(|_| state.count(true, later)).max(), Some(3));
        // None shed for ten let in: 1 s.
        for _ in 0..10 {
            state.count(false, later + Duration::from_millis(1_100));
        }
        assert_eq!(state.count(true, later + Duration::from_millis(2_200)), 1, "none shed for ten let in");
        for _ in 0..1_000 {
            state.count(true, later + Duration::from_millis(2_200));
        }
        let most = (0..MAX_RETRY_AFTER).map(|_| state.count(true, later + Duration::from_millis(3_300))).max();
        assert_eq!(most, Some(MAX_RETRY_AFTER));
    }

    #[tokio::test]
    async fn the_limit_grows_while_answers_come_in_time_and_shrinks_when_late() {
        let admission = admission(1_000, 20, 10);
        let start = admission.limit();
        // Each late answer, a while after the last, takes off as much as it was late (a fifth).
        for _ in 0..5 {
            let ticket = admission.enter().await.unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
            ticket.done(false);
        }
        let shrunk = admission.limit();
        assert!(shrunk < start * 0.8_f64.powi(5) + 0.01, "shrank: {shrunk} from {start}");
        assert!(shrunk > start * 0.5_f64.powi(5), "not more than it was late: {shrunk} from {start}");
        for _ in 0..300 {
            admission.enter().await.unwrap().done(false);
        }
        assert!(admission.limit() > shrunk + 1.0, "grew: {} from {shrunk}", admission.limit());
        let small = self::admission(5, 20, 10);
        for _ in 0..200 {
            small.enter().await.unwrap().done(false);
        }
        assert_eq!(small.limit(), 5.0, "never past max_in_flight");
        // A 503 counts as late; the floor holds.
        for _ in 0..200 {
            let ticket = admission.enter().await.unwrap();
            tokio::time::sleep(Duration::from_millis(6)).await;
            ticket.done(true);
        }
        assert_eq!(admission.limit(), MIN);
    }
}
