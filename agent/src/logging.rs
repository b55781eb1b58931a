//! Logging: structured fields to journald when running under systemd, readable lines
//! on a terminal. Everything logs through `tracing`; under systemd a small layer hands
//! each event, with its fields, to `systemd-journal-logger`, which speaks the journald
//! socket protocol itself (no libsystemd, so the binary stays static).
//!
//! On a terminal the log shares stderr with the download progress bars: each line
//! goes through their `MultiProgress`, which clears the bars, prints the line and
//! draws them again below, so no line lands on a bar's line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, OnceLock};

use indicatif::{MultiProgress, ProgressDrawTarget};

use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// The terminal's progress bars: `Some` when stderr is a terminal that the log also
/// writes to (not the journal, and `NODEWRIGHT_NO_PROGRESS_BARS` unset).
pub fn terminal_bars() -> Option<&'static MultiProgress> {
    static BARS: OnceLock<Option<MultiProgress>> = OnceLock::new();
    BARS.get_or_init(|| {
        let terminal = std::io::stderr().is_terminal()
            && std::env::var_os("JOURNAL_STREAM").is_none()
            && std::env::var_os("NODEWRIGHT_NO_PROGRESS_BARS").is_none();
        terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
    })
    .as_ref()
}

type Sink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Writes each log event whole, with the progress bars (if any) cleared first and
/// drawn again after it (indicatif's `suspend`).
#[derive(Clone)]
pub struct AboveBars {
    bars: Option<MultiProgress>,
    sink: Sink,
}

impl AboveBars {
    /// To stderr, around the terminal's bars.
    pub fn stderr() -> Self {
        Self::new(
            terminal_bars().cloned(),
            Arc::new(|line: &[u8]| {
                let _ = std::io::stderr().lock().write_all(line);
            }),
        )
    }

    pub fn new(bars: Option<MultiProgress>, sink: Sink) -> Self {
        Self { bars, sink }
    }
}

/// One event's text, handed over whole when the event is written (on drop).
pub struct EventWriter<'a> {
    to: &'a AboveBars,
    text: Vec<u8>,
}

impl std::io::Write for EventWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        match &self.to.bars {
            Some(bars) => bars.suspend(|| (self.to.sink)(&self.text)),
            None => (self.to.sink)(&self.text),
        }
    }
}

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            to: self,
            text: Vec::new(),
        }
    }
}

/// Sets up logging. `NODEWRIGHT_LOG` (an env-filter) overrides the default level.
pub fn init(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("NODEWRIGHT_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},aws_config=warn,aws_smithy_runtime=warn,hyper=warn"
        ))
    });
    let journal = systemd_journal_logger::connected_to_journal()
        .then(|| JournalLog::new().ok())
        .flatten();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match journal {
        Some(journal) => registry
            .with(JournalLayer {
                journal: journal.with_syslog_identifier("nodewright".to_owned()),
            })
            .try_init(),
        None => registry
            .with(
                fmt::layer()
                    .with_writer(AboveBars::stderr())
                    // Colours for a person at a terminal, not for a file or a pipe.
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false)
                    .compact(),
            )
            .try_init(),
    };
    // Already set (tests call this more than once): keep the first.
    let _ = result;
}

struct JournalLayer {
    journal: JournalLog,
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .insert(field.name().to_owned(), format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        // The message carries the fields too, so `journalctl` without -o verbose
        // shows them; each also goes as its own journal field (KEY=value).
        let mut text = visitor.message.clone();
        for (key, value) in &visitor.fields {
            let _ = write!(text, " {key}={value}");
        }
        let level = match *event.metadata().level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        let pairs: Vec<(&str, &str)> = visitor
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let kvs: &[(&str, &str)] = &pairs;
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .args(format_args!("{text}"))
                .level(level)
                .target(event.metadata().target())
                .key_values(&kvs)
                .build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{InMemoryTerm, ProgressBar, TermLike};

    /// The bar's filled part, as indicatif's default style draws it.
    const FILLED: char = '\u{2588}';

    #[test]
    fn a_log_line_goes_above_the_bars_never_onto_a_bars_line() {
        let term = InMemoryTerm::new(8, 60);
        let bars =
            MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(term.clone())));
        let bar = bars.add(ProgressBar::new(100));
        bar.set_position(40);
        bar.tick();
        assert!(term.contents().starts_with(FILLED), "{}", term.contents());
        let to_term = term.clone();
        let writer = AboveBars::new(
            Some(bars.clone()),
            Arc::new(move |line: &[u8]| {
                let text = String::from_utf8_lossy(line).replace('\n', "\r\n");
                let _ = to_term.write_str(&text);
            }),
        );
        for n in 1..=2 {
            let mut event = writer.make_writer();
            event.write_all(b" INFO download failed; ").unwrap();
            event
                .write_all(format!("trying the next URL ({n})\n").as_bytes())
                .unwrap();
            drop(event);
            bar.inc(10);
            bar.tick();
        }
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(
            lines[..2],
            [
                " INFO download failed; trying the next URL (1)",
                " INFO download failed; trying the next URL (2)"
            ],
            "{screen}"
        );
        // The bar is drawn once, whole, on its own line below the log.
        assert!(lines[2].starts_with(FILLED), "{screen}");
        assert_eq!(
            lines.iter().filter(|l| l.contains(FILLED)).count(),
            1,
            "{screen}"
        );
    }
}
