//! Sources: where messages come from. Each turns its world into validated messages and attachments
//! and acknowledges its producer only after the spool says the data is durable.

pub mod http;
pub mod import;
pub mod matrix;
