//! The error type plugins return: any error converts into it with `?`.

use std::fmt;

/// An error a plugin returns from `init` or `on_message`; the gateway logs its text.
///
/// Every `std::error::Error` converts into it, so `?` works on parse errors, publish errors and
/// inference errors alike. Make one from text with [`Error::msg`].
pub struct Error(String);

/// `Result<T, edgewise_guest::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error(message.to_string())
    }

    /// Prefixes the message with what was being done, as in `reading setting: bad float`.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error(format!("{what}: {}", self.0))
    }
}

// Not `std::error::Error` itself, so that this blanket conversion does not overlap `From<T> for T`.
impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error(e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
