//! How an error is finally reported: its own message, then each cause in turn. Errors in this crate
//! say what failed in their message and keep what caused it as `source()`, so the whole chain is
//! printed once, here, and never twice.

use std::error::Error;
use std::fmt;

/// An error and its causes on one line: `cannot upload s3://b/k: AccessDenied: Access Denied (HTTP
/// 403)`. A cause whose text its error already ends with (an error that shows its cause in its own
/// message, as `std::io::Error`'s custom errors do) is not printed again.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !shown.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            next = cause.source();
        }
        Ok(())
    }
}

/// The chain as a `String`, for events and answers that carry text.
pub fn chain(error: &(dyn Error + '_)) -> String {
    Chain(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the spool")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_printed_once_in_order() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(Chain(&e).to_string(), "cannot open the spool: disk on fire");
        let plain = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(chain(&plain), plain.to_string());
    }
}
