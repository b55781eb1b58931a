//! Download progress: bars on a terminal, a line every few seconds in the journal.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
        let terminal = std::io::stderr().is_terminal()
            && std::env::var_os("JOURNAL_STREAM").is_none()
            && std::env::var_os("NODEWRIGHT_NO_PROGRESS_BARS").is_none();
        Self {
            bars: terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
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

    pub fn start(&self, name: &str, url: &str) -> Transfer {
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
            bar
        });
        tracing::info!(asset = name, url, "downloading");
        Transfer {
            name: name.to_owned(),
            every: self.every,
            bar,
            total: None,
            done: 0,
            began: Instant::now(),
            last_log: Instant::now(),
        }
    }
}

pub struct Transfer {
    name: String,
    every: Duration,
    bar: Option<ProgressBar>,
    total: Option<u64>,
    done: u64,
    began: Instant,
    last_log: Instant,
}

impl Transfer {
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
        if let (Some(bar), Some(total)) = (&self.bar, total) {
            bar.set_length(total);
        }
    }

    /// The bytes received so far (after a resume: including the earlier part).
    pub fn set_position(&mut self, done: u64) {
        self.done = done;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_log.elapsed() >= self.every {
            self.last_log = Instant::now();
            let rate = mib(done) / self.began.elapsed().as_secs_f64().max(0.001);
            match self.total {
                Some(total) if total > 0 => tracing::info!(
                    asset = %self.name,
                    "downloading: {:.1} of {:.1} MiB ({:.0}%), {rate:.1} MiB/s",
                    mib(done),
                    mib(total),
                    done as f64 * 100.0 / total as f64
                ),
                _ => tracing::info!(
                    asset = %self.name,
                    "downloading: {:.1} MiB, {rate:.1} MiB/s",
                    mib(done)
                ),
            }
        }
    }

    pub fn finish(self, outcome: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let seconds = self.began.elapsed().as_secs_f64();
        if self.done == 0 {
            tracing::debug!(asset = %self.name, "{outcome}");
            return;
        }
        tracing::info!(
            asset = %self.name,
            bytes = self.done,
            seconds = format!("{seconds:.2}"),
            "{outcome}: {:.1} MiB in {seconds:.1}s ({:.1} MiB/s)",
            mib(self.done),
            mib(self.done) / seconds.max(0.001)
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
