//! The house stays in order: `docs/architecture.md` names every file under `src/` and `benches/`,
//! `docs/testing.md` every file under `tests/`; no function in `src/` runs past 80 lines; and the
//! crate's modules import each other without circles. Each rule reads the sources as text (rustfmt's
//! layout: an item's closing brace at its own indentation), so it costs no build.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Longest function allowed in `src/`, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 80;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (relative to the repository), skipping Python caches.
fn files_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "__pycache__") {
                    stack.push(path);
                }
            } else {
                out.push(path.strip_prefix(root()).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

#[test]
fn the_architecture_names_every_source_and_bench_file_and_testing_every_test_file() {
    let architecture = read("docs/architecture.md");
    let testing = read("docs/testing.md");
    let mut missing = Vec::new();
    for file in files_under("src").into_iter().chain(files_under("benches")) {
        let named = file.strip_prefix("src/").unwrap_or(&file);
        if !architecture.contains(named) {
            missing.push(format!("docs/architecture.md does not name {file}"));
        }
    }
    for file in files_under("tests") {
        let named = file.strip_prefix("tests/").unwrap();
        if !testing.contains(named) {
            missing.push(format!("docs/testing.md does not name {file}"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// Each `fn` in `text` (rustfmt's layout) with its first line number and its length in lines.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let head = ["pub ", "pub(crate) ", "pub(super) ", "async ", "const ", "unsafe "]
            .iter()
            .fold(trimmed, |t, p| t.strip_prefix(p).unwrap_or(t));
        let head = head.strip_prefix("async ").unwrap_or(head);
        let Some(rest) = head.strip_prefix("fn ") else {
            continue;
        };
        // The signature ends at a `{` (a body) or a `;` (a declaration).
        let Some(open) = (i..lines.len()).find(|&j| lines[j].ends_with('{') || lines[j].ends_with(';')) else {
            continue;
        };
        if lines[open].ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) {
            let name = rest.split(['(', '<']).next().unwrap_or(rest).to_owned();
            out.push((name, i + 1, end - i + 1));
        }
    }
    out
}

#[test]
fn no_function_in_src_runs_past_80_lines() {
    let long: Vec<String> = files_under("src")
        .iter()
        .filter(|f| f.ends_with(".rs"))
        .flat_map(|file| {
            functions(&read(file))
                .into_iter()
                .filter(|(_, _, len)| *len > MAX_FN_LINES)
                .map(move |(name, line, len)| format!("{file}:{line} {name} is {len} lines"))
        })
        .collect();
    assert!(long.is_empty(), "split these along their phases: {long:#?}");
}

#[test]
fn the_function_counter_counts_what_it_should() {
    let text =
        "fn a() {\n    x();\n}\n\n    pub async fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n    fn c();\n";
    assert_eq!(functions(text), vec![("a".to_owned(), 1, 3), ("b".to_owned(), 5, 5)]);
}

/// The module path of a file under `src/` (`src/sink/s3/mod.rs` → `sink::s3`).
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_start_matches("src/")
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The crate's own paths a file names outside its tests: `crate::a::b` and `super::c`, resolved to
/// module paths (`use crate::{a, b::c}` groups too).
fn paths_named(file: &str, text: &str) -> Vec<Vec<String>> {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let me = module_of(file);
    let mut out = Vec::new();
    let words = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|w| w.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
            .take_while(|w: &String| !w.is_empty())
            .collect()
    };
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if rest.starts_with('{') {
            let group = &rest[1..rest.find("};").unwrap_or(rest.len())];
            for item in group.split(',') {
                out.push(words(item.trim()));
            }
        } else {
            out.push(words(rest));
        }
    }
    for (at, _) in text.match_indices("super::") {
        if text[..at].ends_with("super::") {
            continue;
        }
        let mut rest = &text[at..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            up += 1;
        }
        let base = &me[..me.len().saturating_sub(up)];
        let mut names: Vec<Vec<String>> = Vec::new();
        if rest.starts_with('{') {
            let group = &rest[1..rest.find("};").unwrap_or(rest.len())];
            names.extend(group.split(',').map(|item| words(item.trim())));
        } else {
            names.push(words(rest));
        }
        out.extend(names.into_iter().map(|n| base.iter().cloned().chain(n).collect()));
    }
    out
}

#[test]
fn modules_import_each_other_without_circles() {
    let files: Vec<String> = files_under("src")
        .into_iter()
        .filter(|f| f.ends_with(".rs") && !f.starts_with("src/bin/"))
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(f)).collect();
    // An edge between siblings: the children of the modules' deepest common parent.
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let from = module_of(file);
        for path in paths_named(file, &read(file)) {
            let Some(to) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|m| modules.contains(m))
            else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common < from.len() && common < to.len() {
                edges
                    .entry(from[..=common].to_vec())
                    .or_default()
                    .insert(to[..=common].to_vec());
            }
        }
    }
    let circles = strongly_connected(&edges);
    assert!(
        circles.is_empty(),
        "modules that import each other: {circles:?}; move what they share down a layer"
    );
}

/// The groups of more than one module that reach each other (Tarjan's algorithm), each sorted.
fn strongly_connected(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                group.push(w.clone());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn the_circle_finder_finds_a_circle_and_only_it() {
    let m = |s: &str| vec![s.to_owned()];
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("a"), m("c")]));
    edges.insert(m("c"), BTreeSet::new());
    assert_eq!(strongly_connected(&edges), vec![vec![m("a"), m("b")]]);
    let paths = paths_named(
        "src/x/y.rs",
        "use super::{z, w::q};\nuse crate::{a::b, c};\nfn f() { crate::d::e(); }\n",
    );
    assert!(paths.contains(&vec!["x".to_owned(), "z".to_owned()]), "{paths:?}");
    assert!(
        paths.contains(&vec!["x".to_owned(), "w".to_owned(), "q".to_owned()]),
        "{paths:?}"
    );
    assert!(paths.contains(&vec!["a".to_owned(), "b".to_owned()]), "{paths:?}");
    assert!(paths.contains(&vec!["d".to_owned(), "e".to_owned()]), "{paths:?}");
}
