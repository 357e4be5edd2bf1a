//! Rate caps: this peer's upload (all seeder connections together) and download (all
//! downloads together), changed at once by `limit_rate` (issue 20).
//!
//! `Pacer` is the pure core: each transfer reserves its share of time after the ones
//! before it. `RateCap` is the shared, changeable cap around it: a transfer waits for its
//! reservation in short slices, so a new cap (or none) applies to transfers already
//! waiting, within `SLICE`.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The longest a waiting transfer sleeps before it looks at the cap again.
const SLICE: Duration = Duration::from_millis(100);

/// Spaces transfers to `bytes_per_sec`: each reserves its share of time after the ones
/// before it. Idle time is not saved up.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_sec: u64,
    next_free: Instant,
}

impl Pacer {
    /// A pacer for `bytes_per_sec` (at least 1), free at `now`.
    pub fn new(bytes_per_sec: u64, now: Instant) -> Pacer {
        Pacer { bytes_per_sec: bytes_per_sec.max(1), next_free: now }
    }

    /// Reserves the time to transfer `len` bytes at `now` if the pacer is free then; else
    /// returns how long until it is, reserving nothing.
    pub fn try_reserve(&mut self, len: usize, now: Instant) -> Result<(), Duration> {
        if self.next_free > now {
            return Err(self.next_free - now);
        }
        self.reserve(len, now);
        Ok(())
    }

    /// Reserves the time to transfer `len` bytes, asked at `now`; returns when the transfer
    /// may start.
    pub fn reserve(&mut self, len: usize, now: Instant) -> Instant {
        let cost = Duration::from_secs_f64(len as f64 / self.bytes_per_sec as f64);
        let start = self.next_free.max(now);
        self.next_free = start + cost;
        start
    }
}

/// A changeable cap shared by many threads.
#[derive(Debug, Default)]
pub struct RateCap {
    state: Mutex<CapState>,
}

#[derive(Debug, Default)]
struct CapState {
    pacer: Option<Pacer>,
    /// Bumped at each change, so that waiters reserve again under the new cap.
    generation: u64,
}

impl RateCap {
    /// A cap of `bytes_per_sec` (`None` or 0: unlimited).
    pub fn new(bytes_per_sec: Option<u64>) -> RateCap {
        let cap = RateCap::default();
        cap.set(bytes_per_sec);
        cap
    }

    /// Changes the cap (`None` or 0: unlimited), for transfers waiting too.
    pub fn set(&self, bytes_per_sec: Option<u64>) {
        let mut state = self.state.lock();
        state.pacer = bytes_per_sec.filter(|&r| r > 0).map(|r| Pacer::new(r, Instant::now()));
        state.generation += 1;
    }

    /// The cap now, in bytes per second (`None`: unlimited).
    pub fn get(&self) -> Option<u64> {
        self.state.lock().pacer.as_ref().map(|p| p.bytes_per_sec)
    }

    /// Waits until `len` more bytes fit under the cap (at once without one). The lock is
    /// held only to reserve, never while sleeping.
    pub fn wait(&self, len: usize) {
        'reserve: loop {
            let (start, generation) = {
                let mut state = self.state.lock();
                let generation = state.generation;
                match state.pacer.as_mut() {
                    None => return,
                    Some(pacer) => (pacer.reserve(len, Instant::now()), generation),
                }
            };
            loop {
                let now = Instant::now();
                if now >= start {
                    return;
                }
                std::thread::sleep((start - now).min(SLICE));
                if self.state.lock().generation != generation {
                    continue 'reserve;
                }
            }
        }
    }

    /// Takes `len` bytes' share of the cap if it is free now; else says how long until it
    /// is (nothing is reserved: the caller asks again then, or sooner).
    pub fn try_take(&self, len: usize) -> Result<(), Duration> {
        match self.state.lock().pacer.as_mut() {
            None => Ok(()),
            Some(pacer) => pacer.try_reserve(len, Instant::now()),
        }
    }
}

/// Parses a rate as `limit_rate` takes it: bytes per second with an optional `K`, `M` or
/// `G` suffix (10^3, 10^6, 10^9; `k`, `m`, `g` too), or `off` (or `0`) for no cap.
pub fn parse_rate(text: &str) -> Result<Option<u64>, RateError> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (digits, scale) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1_000),
        Some((i, 'm' | 'M')) => (&text[..i], 1_000_000),
        Some((i, 'g' | 'G')) => (&text[..i], 1_000_000_000),
        _ => (text, 1),
    };
    let bad = || RateError(text.to_string());
    let value: f64 = digits.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 || digits.starts_with(['+', '-']) {
        return Err(bad());
    }
    let bytes = value * scale as f64;
    if bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Some(bytes.round() as u64).filter(|&b| b > 0))
}

/// A rate that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a rate: give bytes per second, like 500K, 10M or 1G (10^3, 10^6, 10^9), or off"
)]
pub struct RateError(pub String);

/// A rate as people read it: `10.0 MB/s` (powers of 1000, as `limit_rate` takes them).
pub fn shown(bytes_per_sec: u64) -> String {
    match bytes_per_sec {
        r if r >= 1_000_000_000 => format!("{:.1} GB/s", r as f64 / 1e9),
        r if r >= 1_000_000 => format!("{:.1} MB/s", r as f64 / 1e6),
        r if r >= 1_000 => format!("{:.1} kB/s", r as f64 / 1e3),
        r => format!("{r} B/s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rates_parse_with_decimal_suffixes_or_off() {
        assert_eq!(parse_rate("off"), Ok(None));
        assert_eq!(parse_rate("0"), Ok(None));
        assert_eq!(parse_rate("1500"), Ok(Some(1500)));
        assert_eq!(parse_rate("500K"), Ok(Some(500_000)));
        assert_eq!(parse_rate("2.5M"), Ok(Some(2_500_000)));
        assert_eq!(parse_rate("1g"), Ok(Some(1_000_000_000)));
        for bad in ["", "M", "-1M", "+3", "ten", "1.2.3K", "1T", "NaN", "inf", "1e30G"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_rate("fast").unwrap_err().to_string(),
            "'fast' is not a rate: give bytes per second, like 500K, 10M or 1G (10^3, 10^6, 10^9), or off"
        );
        assert_eq!(shown(10_000_000), "10.0 MB/s");
        assert_eq!(shown(999), "999 B/s");
    }

    #[test]
    fn the_pacer_spaces_transfers_to_the_cap() {
        let now = Instant::now();
        let mut pacer = Pacer::new(1000, now);
        assert_eq!(pacer.reserve(500, now), now);
        assert_eq!(pacer.reserve(500, now), now + Duration::from_millis(500));
        // Idle time is not saved up.
        let later = now + Duration::from_secs(10);
        assert_eq!(pacer.reserve(100, later), later);
    }

    #[test]
    fn try_reserve_takes_only_what_is_free_now() {
        let now = Instant::now();
        let mut pacer = Pacer::new(1000, now);
        assert_eq!(pacer.try_reserve(500, now), Ok(()));
        assert_eq!(pacer.try_reserve(500, now), Err(Duration::from_millis(500)));
        // Refused asks reserve nothing.
        assert_eq!(pacer.try_reserve(500, now), Err(Duration::from_millis(500)));
        assert_eq!(pacer.try_reserve(500, now + Duration::from_millis(500)), Ok(()));
        let cap = RateCap::new(None);
        assert_eq!(cap.try_take(usize::MAX), Ok(()));
    }

    #[test]
    fn a_new_cap_releases_transfers_already_waiting() {
        let cap = std::sync::Arc::new(RateCap::new(Some(1)));
        cap.wait(1); // the first byte goes at once
        let waiter = {
            let cap = std::sync::Arc::clone(&cap);
            std::thread::spawn(move || {
                let started = Instant::now();
                cap.wait(1_000_000); // at 1 B/s: eleven days
                started.elapsed()
            })
        };
        cap.set(None);
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(cap.get(), None);
    }

    proptest! {
        /// Parsing never panics, and what parses is what it says.
        #[test]
        fn parsing_never_panics(text in "\\PC{0,12}") {
            let _ = parse_rate(&text);
        }

        #[test]
        fn whole_numbers_parse_exactly(n in 1u64..1_000_000, suffix in 0usize..4) {
            let (s, scale) = [("", 1), ("K", 1_000), ("M", 1_000_000), ("G", 1_000_000_000)][suffix];
            prop_assert_eq!(parse_rate(&format!("{n}{s}")), Ok(Some(n * scale)));
        }

        /// Pacing: the transfers of a run start no sooner than the cap allows.
        #[test]
        fn transfers_never_beat_the_cap(lens in proptest::collection::vec(1usize..600_000, 1..50)) {
            let start = Instant::now();
            let mut pacer = Pacer::new(1_000_000, start);
            let mut sent = 0usize;
            for len in lens {
                let at = pacer.reserve(len, start);
                let floor = Duration::from_secs_f64(sent as f64 / 1e6);
                prop_assert!(at - start + Duration::from_micros(1) >= floor);
                sent += len;
            }
        }
    }
}
