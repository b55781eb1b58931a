//! Logging: structured fields to journald when running under systemd, readable lines
//! on a terminal. Everything logs through `tracing`; under systemd a small layer hands
//! each event, with its fields, to `systemd-journal-logger`, which speaks the journald
//! socket protocol itself (no libsystemd, so the binary stays static).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

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
                    .with_writer(std::io::stderr)
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
