//! The crate's one error type, and the byte-offset → `line:col` mapping behind it.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a config could not be loaded.
///
/// Both variants render as one line that starts with the config path, so the
/// CLI can print it as is (`airlock check` and `airlock run` exit 2 with it).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Something at a position in the file: TOML syntax, unknown key, wrong type,
    /// bad value, dangling reference. `line` and `col` are 1-based; `col` counts
    /// characters, not bytes.
    #[error("{path}:{line}:{col}: {message}", path = path.display())]
    At {
        /// The config path as given to [`crate::load`] or [`crate::parse`].
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        col: usize,
        /// What is wrong, without the position.
        message: String,
    },
    /// Something about the file as a whole (it cannot be read).
    #[error("{path}: {message}", path = path.display())]
    File {
        /// The config path as given to [`crate::load`].
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The text being parsed and its path: turns byte spans into positioned errors.
pub(crate) struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str, path: &'a Path) -> Self {
        Self { text, path }
    }

    /// An error at the start of `span` (a byte range into the text).
    pub(crate) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.error_at(span.start, message)
    }

    /// An error at byte `offset`.
    pub(crate) fn error_at(&self, offset: usize, message: impl Into<String>) -> ConfigError {
        let (line, col) = line_col(self.text, offset);
        ConfigError::At {
            path: self.path.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// 1-based line and character column of byte `offset` in `text`.
///
/// An offset past the end (or inside a character) is clamped back, so a
/// malformed span still yields a position rather than a panic.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_characters() {
        let text = "ab\ncé\nx";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 1), (1, 2));
        assert_eq!(line_col(text, 2), (1, 3)); // the '\n' itself
        assert_eq!(line_col(text, 3), (2, 1));
        // 'é' is two bytes; the character after it is column 3.
        assert_eq!(line_col(text, 6), (2, 3));
        assert_eq!(line_col(text, 7), (3, 1));
    }

    #[test]
    fn line_col_clamps_bad_offsets() {
        let text = "cé";
        // Byte 2 is inside 'é': clamp back to its start.
        assert_eq!(line_col(text, 2), (1, 2));
        assert_eq!(line_col(text, 999), (1, 3));
    }

    #[test]
    fn errors_render_as_path_line_col_message() {
        let src = Source::new("a\nbad = 1\n", Path::new("dir/airlock.toml"));
        let err = src.error(2..5, "unknown field `bad`");
        assert_eq!(err.to_string(), "dir/airlock.toml:2:1: unknown field `bad`");
        let file = ConfigError::File {
            path: PathBuf::from("x.toml"),
            message: "cannot read: gone".into(),
        };
        assert_eq!(file.to_string(), "x.toml: cannot read: gone");
    }
}
