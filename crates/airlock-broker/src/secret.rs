//! [`Secret`]: a credential value that does not print.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// A credential value. `Debug` and `Display` print `[REDACTED]`, never the value; the
/// memory is zeroed when the last clone is dropped. Read it with [`Secret::expose`] only
/// where it leaves Airlock (a header, an environment variable, a token request).
#[derive(Clone)]
pub struct Secret(Arc<Zeroizing<String>>);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Arc::new(Zeroizing::new(value.into())))
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}
