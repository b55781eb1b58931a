//! What the translation cannot do, gathered so that one run names every such kops field
//! at once, and what it left out on purpose, so that nothing is dropped without a word.

use std::fmt;

/// A kops field nodewright will not translate, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field as kops spells it, e.g. `Networking.amazonVPC` or `KubeletConfig.rootDir`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A kops field that is set but deliberately has no counterpart in the node spec, as
/// nodeup itself ignores or replaces it. Shown as a comment above the translated spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub field: String,
    pub note: String,
}

/// The refusals and notes of one translation.
#[derive(Debug, Default)]
pub struct Ledger {
    pub refusals: Vec<Refusal>,
    pub notes: Vec<Note>,
}

impl Ledger {
    pub fn refuse(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.refusals.push(Refusal {
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub fn note(&mut self, field: impl Into<String>, note: impl Into<String>) {
        self.notes.push(Note {
            field: field.into(),
            note: note.into(),
        });
    }

    /// Refuses `field` when `present`.
    pub fn refuse_if(&mut self, present: bool, field: &str, reason: &str) {
        if present {
            self.refuse(field, reason);
        }
    }

    /// Checks a value with `parse`; a failure is a refusal of `field` with its message.
    pub fn value<T, E: fmt::Display>(&mut self, field: &str, parsed: Result<T, E>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(e) => {
                self.refuse(field, e.to_string());
                None
            }
        }
    }
}
