//! Small statistics for the benchmarks: percentiles and millisecond figures.

use std::time::Duration;

/// The `q` quantile (0.0..=1.0) of `samples`, nearest rank.
pub fn percentile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One Markdown table row: name, median, p90 and minimum in milliseconds.
pub fn report_line(name: &str, samples: &[Duration]) -> String {
    format!(
        "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.9)),
        ms(*samples.iter().min().expect("samples"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let samples: Vec<Duration> = [5, 1, 4, 2, 3].map(Duration::from_millis).to_vec();
        assert_eq!(percentile(&samples, 0.5), Duration::from_millis(3));
        assert_eq!(percentile(&samples, 1.0), Duration::from_millis(5));
        assert_eq!(percentile(&samples, 0.0), Duration::from_millis(1));
        assert_eq!(
            report_line("x", &samples),
            "| x | 3.0 ms | 5.0 ms | 1.0 ms |"
        );
    }
}
