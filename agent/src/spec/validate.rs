//! Collects the problems found after parsing, each with its field path and line.

use std::fmt;

use super::{API_VERSION, SpecError, locate};

/// One thing wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)?;
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
        }
        Ok(())
    }
}

/// Problems found in one document; `finish` turns them into one error listing all.
pub struct Problems<'a> {
    source: &'a str,
    text: &'a str,
    found: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(source: &'a str, text: &'a str) -> Self {
        Self {
            source,
            text,
            found: Vec::new(),
        }
    }

    pub fn add(&mut self, path: &str, message: String) {
        self.found.push(Problem {
            path: path.to_owned(),
            line: locate::line_of(self.text, path),
            message,
        });
    }

    /// Checks `apiVersion` and `kind` (under `prefix`, empty for the top level).
    pub fn check_header(&mut self, prefix: &str, api_version: &str, kind: &str, want_kind: &str) {
        if api_version != API_VERSION {
            self.add(
                &format!("{prefix}apiVersion"),
                format!("{api_version:?} is not supported (expected {API_VERSION})"),
            );
        }
        if kind != want_kind {
            self.add(
                &format!("{prefix}kind"),
                format!("{kind:?} is not a {want_kind}"),
            );
        }
    }

    pub fn finish(self) -> Result<(), SpecError> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid {
                source_name: self.source.to_owned(),
                problems: self.found,
            })
        }
    }
}
