//! Figures measured several times: the median, the spread, and latency percentiles.

use std::time::Duration;

use hdrhistogram::Histogram;

/// One quantity measured once per run.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Adds one run's value.
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    /// The median (the mean of the middle two for an even count); 0 when empty.
    pub fn median(&self) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => 0.0,
            n if !n.is_multiple_of(2) => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// Half the range as a share of the median (0.05 is ±5%).
    pub fn spread(&self) -> f64 {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let median = self.median();
        if self.0.len() < 2 || median == 0.0 {
            0.0
        } else {
            (max - min) / 2.0 / median
        }
    }

    /// The largest value; 0 when empty.
    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }
}

/// Latencies of one run, in microseconds.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty record (1 µs to 10 min, 3 significant digits).
    pub fn new() -> Self {
        // Bounds are constants that hdrhistogram accepts.
        #[allow(clippy::expect_used)]
        let histogram = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        Latencies(histogram)
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// Adds another record's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The `q` quantile (0.5, 0.99) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }
}

/// `12,345` for a rate.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

/// A figure as `median (±spread%)`, formatted by `format`.
pub fn with_spread(samples: &Samples, format: impl Fn(f64) -> String) -> String {
    format!(
        "{} (±{:.0}%)",
        format(samples.median()),
        samples.spread() * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        let samples = Samples(vec![10.0, 30.0, 20.0]);
        assert_eq!(samples.median(), 20.0);
        assert_eq!(samples.spread(), 0.5);
        assert_eq!(Samples(vec![1.0, 3.0]).median(), 2.0);
        assert_eq!(Samples::default().median(), 0.0);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }

    #[test]
    fn latency_quantiles() {
        let mut latencies = Latencies::new();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        assert!((latencies.quantile_ms(0.5) - 50.0).abs() < 0.1);
        assert!((latencies.max_ms() - 100.0).abs() < 0.1);
    }
}
