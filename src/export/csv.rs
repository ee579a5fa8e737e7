//! `messages.csv`: a flat view of the export a reviewer opens in a spreadsheet. The JSONL is the
//! record; this is for reading, so a cell a spreadsheet would run as a formula (starting with `=`,
//! `+`, `-`, `@`, `|`, a tab or a carriage return, after any spaces, or a full-width sign) is
//! prefixed with `'`.

use std::io::Write;

use super::selection::Line;

const HEADER: [&str; 12] = [
    "time",
    "msg_ts",
    "message_id",
    "msgtype",
    "type",
    "sender",
    "receiver",
    "room",
    "text",
    "attachment",
    "refers_to",
    "verified",
];

pub(crate) struct Writer<W: Write> {
    csv: csv::Writer<W>,
    header_written: bool,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            csv: csv::Writer::from_writer(out),
            header_written: false,
        }
    }

    pub fn row(&mut self, line: &Line, trust: super::collect::Trust) -> std::io::Result<()> {
        if !self.header_written {
            self.csv.write_record(HEADER)?;
            self.header_written = true;
        }
        let text = |v: &Option<std::borrow::Cow<str>>| defuse(v.as_deref().unwrap_or_default());
        let attachment = match (&line.file_name, &line.attachment) {
            (_, Some(archived)) => archived.to_string(),
            (Some(name), None) => name.to_string(),
            (None, None) => String::new(),
        };
        self.csv.write_record([
            line.time
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .unwrap_or_default(),
            text(&line.msg_ts),
            text(&line.message_id),
            line.msgtype.map(|t| t.to_string()).unwrap_or_default(),
            type_name(line.msgtype).to_owned(),
            text(&line.sender),
            text(&line.receiver),
            text(&line.room),
            text(&line.text),
            defuse(&attachment),
            text(&line.refers_to),
            match trust {
                super::collect::Trust::Signed => "yes",
                super::collect::Trust::Unsigned => "unsigned",
                super::collect::Trust::Unverified => "no",
            }
            .to_owned(),
        ])?;
        Ok(())
    }

    pub fn into_inner(mut self) -> std::io::Result<W> {
        if !self.header_written {
            self.csv.write_record(HEADER)?;
        }
        self.csv.into_inner().map_err(|e| e.into_error())
    }
}

fn type_name(msgtype: Option<i64>) -> &'static str {
    match msgtype {
        Some(1000) => "text",
        Some(3000) => "verification",
        Some(6000) => "file",
        Some(7000) => "call",
        Some(8000) => "location",
        Some(9000) => "edit",
        Some(9100) => "reaction",
        Some(4011) => "delete",
        Some(4001..=4005 | 4012..=4014) => "control",
        _ => "",
    }
}

fn defuse(cell: &str) -> String {
    // Spreadsheets skip leading spaces, and some read full-width signs as their ASCII forms.
    match cell.trim_start_matches([' ', '\u{3000}']).chars().next() {
        Some('=' | '+' | '-' | '@' | '|' | '\t' | '\r' | '＝' | '＋' | '－' | '＠') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::selection::read_line;

    #[test]
    fn rows_quote_what_needs_it_and_defuse_formulas() {
        let mut w = Writer::new(Vec::new());
        let line = r#"{"message":"=HYPERLINK(\"x\"), then\na new line","message_id":"m","msg_ts":"1700000000.5","msgtype":1000,"sender":"a"}"#;
        w.row(
            &read_line(line.as_bytes()).unwrap(),
            crate::export::collect::Trust::Signed,
        )
        .unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let mut rows = csv::Reader::from_reader(text.as_bytes());
        let row = rows.records().next().unwrap().unwrap();
        assert_eq!(&row[0], "2023-11-14T22:13:20.500000Z");
        assert_eq!(&row[4], "text");
        assert_eq!(&row[8], "'=HYPERLINK(\"x\"), then\na new line");
        assert_eq!(&row[11], "yes");
        for risky in [" =1+1", "＝1", "|cmd", "-2"] {
            assert!(defuse(risky).starts_with('\''), "{risky:?}");
        }
        assert_eq!(defuse("a = b"), "a = b");
    }
}
