//! Repetition and summaries: median and spread over repeats, as the Python baseline computes
//! them (linear-interpolated percentiles, one untimed warm-up call).

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How many times each measurement is repeated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Repeat {
    /// Stop once this much time was measured (and `min_reps` reached).
    pub(crate) min_time: Duration,
    /// At least this many repetitions.
    pub(crate) min_reps: usize,
    /// At most this many repetitions.
    pub(crate) max_reps: usize,
    /// Exactly this many repetitions, when set.
    pub(crate) fixed: Option<usize>,
    /// Stop after this much wall time (setup and teardown included) once `min_reps` is reached.
    pub(crate) wall_cap: Duration,
}

impl Repeat {
    /// Run `op` once untimed, then repeatedly; each call returns the time of its measured part.
    pub(crate) async fn run<F, Fut>(&self, mut op: F) -> anyhow::Result<Summary>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Duration>>,
    {
        op().await?;
        let mut samples = Vec::new();
        let mut timed = Duration::ZERO;
        let start = Instant::now();
        loop {
            let dt = op().await?;
            samples.push(dt);
            timed += dt;
            let n = samples.len();
            if let Some(fixed) = self.fixed {
                if n >= fixed {
                    break;
                }
                continue;
            }
            if n >= self.max_reps
                || (n >= self.min_reps
                    && (timed >= self.min_time || start.elapsed() >= self.wall_cap))
            {
                break;
            }
        }
        Ok(Summary::of(&samples))
    }

    /// Run `a` and `b` alternately (a b, b a, a b, ...), once each untimed first, so that
    /// both see the same machine: their ratio is what a noisy, shared machine can still
    /// measure. Stops as [`Repeat::run`] does, counting the time of both.
    pub(crate) async fn run_paired<A, FA, B, FB>(
        &self,
        mut a: A,
        mut b: B,
    ) -> anyhow::Result<(Summary, Summary)>
    where
        A: FnMut() -> FA,
        FA: Future<Output = anyhow::Result<Duration>>,
        B: FnMut() -> FB,
        FB: Future<Output = anyhow::Result<Duration>>,
    {
        a().await?;
        b().await?;
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        let mut timed = Duration::ZERO;
        let start = Instant::now();
        loop {
            let (da, db) = if sa.len() % 2 == 0 {
                let da = a().await?;
                (da, b().await?)
            } else {
                let db = b().await?;
                (a().await?, db)
            };
            sa.push(da);
            sb.push(db);
            timed += da + db;
            let n = sa.len();
            if let Some(fixed) = self.fixed {
                if n >= fixed {
                    break;
                }
                continue;
            }
            if n >= self.max_reps
                || (n >= self.min_reps
                    && (timed >= 2 * self.min_time || start.elapsed() >= 2 * self.wall_cap))
            {
                break;
            }
        }
        Ok((Summary::of(&sa), Summary::of(&sb)))
    }

    /// The same settings with at most `n` repetitions (for very slow operations).
    pub(crate) fn at_most(mut self, n: usize) -> Self {
        self.max_reps = self.max_reps.min(n).max(1);
        self.min_reps = self.min_reps.min(self.max_reps);
        if let Some(f) = self.fixed.as_mut() {
            *f = (*f).min(n).max(1);
        }
        self
    }
}

/// Median and spread of repeated timings, in seconds.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Summary {
    pub(crate) reps: usize,
    pub(crate) median_s: f64,
    pub(crate) p10_s: f64,
    pub(crate) p90_s: f64,
    pub(crate) min_s: f64,
    pub(crate) max_s: f64,
    pub(crate) mean_s: f64,
}

impl Summary {
    /// Summarise `samples` (at least one).
    pub(crate) fn of(samples: &[Duration]) -> Self {
        let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        s.sort_by(f64::total_cmp);
        Summary::of_sorted_secs(&s)
    }

    /// Summarise seconds already sorted ascending.
    pub(crate) fn of_sorted_secs(s: &[f64]) -> Self {
        let n = s.len();
        Summary {
            reps: n,
            median_s: percentile(s, 50.0),
            p10_s: percentile(s, 10.0),
            p90_s: percentile(s, 90.0),
            min_s: s.first().copied().unwrap_or(f64::NAN),
            max_s: s.last().copied().unwrap_or(f64::NAN),
            mean_s: if n == 0 {
                f64::NAN
            } else {
                s.iter().sum::<f64>() / n as f64
            },
        }
    }
}

/// Linear-interpolated percentile (numpy's default) of sorted values, `q` in 0..=100.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = (n - 1) as f64 * q / 100.0;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 10.0) - 1.3).abs() < 1e-12);
        assert!((percentile(&v, 90.0) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 90.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[tokio::test]
    async fn repeat_stops_at_fixed_count() {
        let r = Repeat {
            min_time: Duration::from_secs(100),
            min_reps: 1,
            max_reps: 1000,
            fixed: Some(7),
            wall_cap: Duration::from_secs(100),
        };
        let mut calls = 0;
        let s = r
            .run(|| {
                calls += 1;
                async { Ok(Duration::from_micros(3)) }
            })
            .await
            .unwrap();
        assert_eq!(s.reps, 7);
        assert_eq!(calls, 8, "one untimed warm-up");
        assert!((s.median_s - 3e-6).abs() < 1e-12);
    }

    #[tokio::test]
    async fn paired_runs_alternate_and_count_both() {
        let r = Repeat {
            min_time: Duration::from_secs(100),
            min_reps: 1,
            max_reps: 4,
            fixed: None,
            wall_cap: Duration::from_secs(100),
        };
        let order = std::cell::RefCell::new(String::new());
        let (a, b) = r
            .run_paired(
                || {
                    order.borrow_mut().push('a');
                    async { Ok(Duration::from_micros(1)) }
                },
                || {
                    order.borrow_mut().push('b');
                    async { Ok(Duration::from_micros(2)) }
                },
            )
            .await
            .unwrap();
        assert_eq!(order.into_inner(), "ababbaabba");
        assert_eq!((a.reps, b.reps), (4, 4));
        assert!((b.median_s / a.median_s - 2.0).abs() < 1e-9);
    }
}
