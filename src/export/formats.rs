//! What an export writes (`--format`): a comma list of `jsonl`, `csv`, `rsmf`, `html`.

use std::fmt;

/// The outputs chosen. The default is `jsonl,csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    pub jsonl: bool,
    pub csv: bool,
    pub rsmf: bool,
    pub html: bool,
}

impl Default for Formats {
    fn default() -> Self {
        Formats {
            jsonl: true,
            csv: true,
            rsmf: false,
            html: false,
        }
    }
}

const NAMES: &str =
    "jsonl, csv, rsmf (RSMF 2.0 for e-discovery review platforms), html (a transcript to read or print)";

impl Formats {
    /// `--format`'s value: each name once, at least one.
    pub fn parse(text: &str) -> Result<Formats, String> {
        let mut formats = Formats {
            jsonl: false,
            csv: false,
            rsmf: false,
            html: false,
        };
        for name in text.split(',').map(str::trim) {
            let flag = match name.to_ascii_lowercase().as_str() {
                "jsonl" => &mut formats.jsonl,
                "csv" => &mut formats.csv,
                "rsmf" => &mut formats.rsmf,
                "html" => &mut formats.html,
                "" => return Err(format!("{text:?} has an empty name: give a comma list of {NAMES}")),
                _ => {
                    return Err(format!(
                        "{name:?} is not an export format: give a comma list of {NAMES}"
                    ));
                }
            };
            if std::mem::replace(flag, true) {
                return Err(format!("{name:?} is given twice in {text:?}"));
            }
        }
        Ok(formats)
    }

    /// Whether the conversations are needed (RSMF, the transcript).
    pub fn conversations(self) -> bool {
        self.rsmf || self.html
    }
}

impl fmt::Display for Formats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.jsonl, "jsonl"),
            (self.csv, "csv"),
            (self.rsmf, "rsmf"),
            (self.html, "html"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&names.join(","))
    }
}

impl serde::Serialize for Formats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_list_of_known_names_each_once() {
        let all = Formats::parse("jsonl, CSV,rsmf,html").unwrap();
        assert!(all.jsonl && all.csv && all.rsmf && all.html);
        assert_eq!(Formats::parse("rsmf").unwrap().to_string(), "rsmf");
        assert_eq!(Formats::default().to_string(), "jsonl,csv");
        for bad in ["", "pdf", "jsonl,,csv", "csv,csv", "jsonl,"] {
            assert!(Formats::parse(bad).is_err(), "{bad:?}");
        }
    }
}
