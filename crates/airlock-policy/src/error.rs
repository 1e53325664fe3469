//! The one error type of this crate, and the source-position helpers that fill it.

use miette::Diagnostic;

/// Why the policy set could not be loaded: a file that cannot be read, a
/// schema or policy that does not parse or does not validate, a duplicate
/// policy id, or an entity model that does not fit the schema.
///
/// Displays as `file:line:col: message` (1-based). When no position applies
/// (`line == 0`, e.g. an unreadable file or an entity-model problem) it
/// displays as `file: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct PolicyError {
    /// The file the problem is in (as given to the loader).
    pub file: String,
    /// 1-based line; 0 when the problem has no position.
    pub line: usize,
    /// 1-based column in characters; 0 when the problem has no position.
    pub col: usize,
    /// What is wrong, for a human.
    pub message: String,
}

impl PolicyError {
    /// A problem at a byte offset into `text`, the contents of `file`.
    pub(crate) fn at(file: &str, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, col) = line_col(text, offset);
        Self {
            file: file.to_owned(),
            line,
            col,
            message: message.into(),
        }
    }

    /// A problem with no position inside `file`.
    pub(crate) fn whole(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: 0,
            col: 0,
            message: message.into(),
        }
    }

    /// A problem from one of Cedar's diagnostics over `text`; falls back to
    /// `fallback` (a byte offset) when Cedar gives no span.
    pub(crate) fn from_diagnostic(
        file: &str,
        text: &str,
        diag: &dyn Diagnostic,
        fallback: usize,
        prefix: &str,
    ) -> Self {
        let offset = diagnostic_offset(diag).unwrap_or(fallback);
        Self::at(file, text, offset, format!("{prefix}{}", describe(diag)))
    }

    fn render(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file, self.message)
        } else {
            format!("{}:{}:{}: {}", self.file, self.line, self.col, self.message)
        }
    }
}

/// 1-based (line, column) of a byte offset; columns count characters.
/// An offset past the end (or inside a character) is clamped.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// `file:line:col` of a byte offset.
pub(crate) fn location(file: &str, text: &str, offset: usize) -> String {
    let (line, col) = line_col(text, offset);
    format!("{file}:{line}:{col}")
}

/// The byte offset of a diagnostic's primary label (or its first label).
pub(crate) fn diagnostic_offset(diag: &dyn Diagnostic) -> Option<usize> {
    let labels: Vec<_> = diag.labels()?.collect();
    labels
        .iter()
        .find(|l| l.primary())
        .or_else(|| labels.first())
        .map(|l| l.offset())
}

/// The diagnostic's message plus Cedar's help text, when it has some.
pub(crate) fn describe(diag: &dyn Diagnostic) -> String {
    let mut out = diag.to_string();
    if let Some(help) = diag.help() {
        out.push_str(&format!(" (help: {help})"));
    }
    out
}
