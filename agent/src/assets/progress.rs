//! Download progress: bars on a terminal, a line every few seconds in the journal, and
//! one summary line per asset.
//!
//! The bars share the terminal with the log: log lines go through the same
//! `MultiProgress` (see [`crate::logging`]), which clears the bars, prints the line and
//! draws them again below it.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::download::Counts;

/// How often a transfer logs its progress when there are no bars (the default of
/// `NODEWRIGHT_PROGRESS_SECONDS`).
const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
    every: Duration,
}

fn interval() -> Duration {
    std::env::var("NODEWRIGHT_PROGRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0 && s.is_finite())
        .map(Duration::from_secs_f64)
        .unwrap_or(LOG_EVERY)
}

impl Progress {
    /// Bars when stderr is a terminal and we are not logging to the journal.
    pub fn detect() -> Self {
        Self {
            bars: crate::logging::terminal_bars().cloned(),
            every: interval(),
        }
    }

    /// Lines only (tests, services).
    pub fn lines() -> Self {
        Self {
            bars: None,
            every: interval(),
        }
    }

    /// The progress of one asset's download in this run; `already` bytes are in its
    /// part (left by an earlier run).
    pub fn start(&self, name: &str, already: u64) -> Transfer {
        let bar = self.bars.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>18} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_owned());
            bar.set_position(already);
            // The rate and the time left count from here: the resumed bytes were
            // not transferred now.
            bar.reset_eta();
            bar
        });
        Transfer {
            name: name.to_owned(),
            every: self.every,
            bar,
            total: None,
            began: Instant::now(),
            last_log: Instant::now(),
        }
    }
}

/// One asset's download, across its attempts and URLs.
pub struct Transfer {
    name: String,
    every: Duration,
    bar: Option<ProgressBar>,
    total: Option<u64>,
    began: Instant,
    last_log: Instant,
}

impl Transfer {
    /// A request to `url`, for the bytes from `offset` on.
    pub fn attempt(&self, url: &str, offset: u64) {
        if offset == 0 {
            tracing::info!(asset = %self.name, url, "downloading");
        } else {
            tracing::info!(asset = %self.name, url, offset, "downloading the rest");
        }
    }

    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
        if let (Some(bar), Some(total)) = (&self.bar, total) {
            bar.set_length(total);
        }
    }

    /// The part holds `position` bytes; this run has received `transferred`.
    pub fn set_position(&mut self, position: u64, transferred: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        } else if self.last_log.elapsed() >= self.every {
            self.last_log = Instant::now();
            let rate = mib(transferred) / self.began.elapsed().as_secs_f64().max(0.001);
            match self.total {
                Some(total) if total > 0 => tracing::info!(
                    asset = %self.name,
                    "downloading: {:.1} of {:.1} MiB ({:.0}%), {rate:.1} MiB/s",
                    mib(position),
                    mib(total),
                    position as f64 * 100.0 / total as f64
                ),
                _ => tracing::info!(
                    asset = %self.name,
                    "downloading: {:.1} MiB, {rate:.1} MiB/s",
                    mib(position)
                ),
            }
        }
    }

    /// The download is in the cache: `size` bytes, moved as `counts` says in
    /// `elapsed` (this run's time on it).
    pub fn finish(self, outcome: &str, size: u64, counts: Counts, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        tracing::info!(
            asset = %self.name,
            bytes = size,
            transferred = counts.transferred,
            resumed = counts.resumed,
            discarded = counts.discarded,
            seconds = format!("{:.2}", elapsed.as_secs_f64()),
            "{outcome}: {}",
            summary(size, counts, elapsed)
        );
    }

    /// The download failed (the error says why).
    pub fn abandon(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `50.0 MiB in 2.1s (23.8 MiB/s)`, or with a resume or a restart, what came from
/// where: the rate is always this run's transferred bytes over this run's time.
pub fn summary(size: u64, counts: Counts, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = mib(counts.transferred) / seconds.max(0.001);
    if counts.resumed == 0 && counts.discarded == 0 && counts.transferred == size {
        return format!("{:.1} MiB in {seconds:.1}s ({rate:.1} MiB/s)", mib(size));
    }
    let mut text = format!(
        "{:.1} MiB; {:.1} MiB transferred in {seconds:.1}s ({rate:.1} MiB/s)",
        mib(size),
        mib(counts.transferred)
    );
    if counts.resumed > 0 {
        text.push_str(&format!(
            ", {:.1} MiB resumed from an earlier run's part",
            mib(counts.resumed)
        ));
    }
    if counts.discarded > 0 {
        text.push_str(&format!(
            ", {:.1} MiB thrown away to start over",
            mib(counts.discarded)
        ));
    }
    text
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_summary_counts_this_runs_bytes_over_this_runs_time() {
        let two = Duration::from_secs(2);
        assert_eq!(
            summary(
                50 * MIB,
                Counts {
                    transferred: 50 * MIB,
                    ..Counts::default()
                },
                two
            ),
            "50.0 MiB in 2.0s (25.0 MiB/s)"
        );
        // Resumed at 12 MiB: 38 MiB in 2 s is 19 MiB/s, not 50 MiB in the last attempt's time.
        assert_eq!(
            summary(
                50 * MIB,
                Counts {
                    transferred: 38 * MIB,
                    resumed: 12 * MIB,
                    discarded: 0
                },
                two
            ),
            "50.0 MiB; 38.0 MiB transferred in 2.0s (19.0 MiB/s), 12.0 MiB resumed from an earlier run's part"
        );
        // A server that ignored the range: the restarted bytes count too.
        assert_eq!(
            summary(
                50 * MIB,
                Counts {
                    transferred: 60 * MIB,
                    resumed: 0,
                    discarded: 10 * MIB
                },
                two
            ),
            "50.0 MiB; 60.0 MiB transferred in 2.0s (30.0 MiB/s), 10.0 MiB thrown away to start over"
        );
    }
}
