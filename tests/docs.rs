//! The docs stay true to the binary: every `WICKRIO_*` variable the README and `docs/` name is one
//! `retention-bot --help` knows, and every variable `--help` knows is in the README's settings table;
//! every `--flag` a documented `retention-bot COMMAND ...` line passes is one that command's `--help`
//! lists, and every flag a command's `--help` lists is named somewhere in the docs.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

const COMMANDS: [&str; 8] = [
    "import",
    "healthcheck",
    "verify",
    "decrypt",
    "legal-hold",
    "export",
    "shred",
    "verify-export",
];

/// Variables the docs name that are not the bot's settings, each with why.
const NOT_SETTINGS: [(&str, &str); 1] = [("WICKRIO_", "a prefix, as in `WICKRIO_*`")];

/// README.md and every docs/*.md, in reading order: (file name, text).
pub(crate) fn docs() -> Vec<(String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(&root).unwrap().display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn help(args: &[&str]) -> String {
    let (code, out) = common::run_to_end(Command::new(common::BIN).args(args).arg("--help").env_clear());
    assert_eq!(code, Some(0), "{args:?} --help: {out}");
    out
}

/// Every match of `WICKRIO_[A-Z0-9_]*` in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("WICKRIO_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The `retention-bot COMMAND ...` lines of `pages` (in code blocks and inline code, with `\`
/// continuations joined): (where, command, the flags it passes).
fn documented_commands(pages: &[(String, String)]) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for (file, text) in pages {
        let joined = text.replace("\\\n", " ");
        let mut pieces: Vec<&str> = Vec::new();
        let mut in_block = false;
        for line in joined.lines() {
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if in_block {
                pieces.push(line);
            } else {
                pieces.extend(line.split('`').skip(1).step_by(2));
            }
        }
        for piece in pieces {
            let words: Vec<&str> = piece.split_whitespace().collect();
            for (i, word) in words.iter().enumerate() {
                if !word.ends_with("retention-bot") || word.contains('=') {
                    continue;
                }
                let Some(&command) = words.get(i + 1) else { continue };
                if !COMMANDS.contains(&command) {
                    continue;
                }
                let flags = words[i + 2..]
                    .iter()
                    .take_while(|w| !matches!(**w, "|" | "&&" | ";" | "#"))
                    // `[--prefix P]`: an optional flag is a flag too.
                    .map(|w| w.trim_start_matches(['[', '(']))
                    .filter(|w| w.starts_with("--") && w.len() > 2)
                    .map(|w| {
                        w.split('=')
                            .next()
                            .unwrap()
                            .trim_end_matches([',', ')', ']', '.'])
                            .to_owned()
                    })
                    .collect();
                out.push((format!("{file}: {}", piece.trim()), command.to_owned(), flags));
            }
        }
    }
    out
}

/// The long flags a `--help` lists.
fn flags_in_help(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            // `-o, --out <DIR>`: the long form after the short one.
            let l = match l.as_bytes() {
                [b'-', short, b',', b' ', ..] if *short != b'-' => &l[4..],
                _ => l,
            };
            l.starts_with("--")
                .then(|| l.split([' ', '=', '<', ',']).next().unwrap().to_owned())
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

#[test]
fn every_variable_the_docs_name_is_a_setting_and_every_setting_is_in_the_readme() {
    let known = variables(&help(&[]));
    assert!(known.len() > 40, "{known:?}");
    let exempt: BTreeMap<&str, &str> = NOT_SETTINGS.into_iter().collect();
    let mut unknown = Vec::new();
    for (file, text) in docs() {
        for v in variables(&text) {
            if !known.contains(&v) && !exempt.contains_key(v.as_str()) {
                unknown.push(format!("{file}: {v}"));
            }
        }
    }
    assert!(unknown.is_empty(), "named in the docs, unknown to --help: {unknown:#?}");

    let readme = &docs()[0].1;
    let missing: Vec<&String> = known
        .iter()
        .filter(|v| !readme.contains(&format!("| `{v}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "in --help, not in the README's settings table: {missing:?}"
    );
}

#[test]
fn every_documented_command_line_passes_only_flags_its_help_lists_and_every_flag_is_documented() {
    let helps: BTreeMap<&str, BTreeSet<String>> = COMMANDS.iter().map(|c| (*c, flags_in_help(&help(&[c])))).collect();
    assert!(helps["export"].contains("--participant"), "{:?}", helps["export"]);
    let lines = documented_commands(&docs());
    assert!(lines.len() > 20, "{lines:#?}");
    let mut wrong = Vec::new();
    for (at, command, flags) in &lines {
        for flag in flags {
            if !helps[command.as_str()].contains(flag) {
                wrong.push(format!("{at}: {flag} is not a flag of `{command}`"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    let all_docs: String = docs().into_iter().map(|(_, t)| t).collect();
    let mut undocumented = Vec::new();
    for (command, flags) in &helps {
        for flag in flags {
            // The whole flag: `--to` is not documented by `--token`.
            let named = all_docs.match_indices(flag.as_str()).any(|(at, _)| {
                !all_docs[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            });
            if !named {
                undocumented.push(format!("{command} {flag}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "in --help, named nowhere in the docs: {undocumented:?}"
    );
}

/// The extraction is not blind: the flags of a documented line, optional ones and continued lines
/// included, are found, and one `--help` does not list is told apart.
#[test]
fn a_flag_no_command_knows_is_caught() {
    let help = flags_in_help(&help(&["verify"]));
    assert!(help.contains("--public-key"), "{help:?}");
    let page = (
        "page.md".to_owned(),
        "```sh\nretention-bot verify x \\\n  --publik-key k [--head H] # not --json\n```\nand `retention-bot shred --period 2026-01`\n"
            .to_owned(),
    );
    let found = documented_commands(&[page]);
    let flags: Vec<(&str, Vec<&str>)> = found
        .iter()
        .map(|(_, c, f)| (c.as_str(), f.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        flags,
        [("verify", vec!["--publik-key", "--head"]), ("shred", vec!["--period"])]
    );
    assert!(!help.contains("--publik-key") && help.contains("--head"));
    assert_eq!(
        variables("set `WICKRIO_BOT_NAME` and WICKRIO_X1_Y."),
        BTreeSet::from(["WICKRIO_BOT_NAME".to_owned(), "WICKRIO_X1_Y".to_owned()])
    );
}
