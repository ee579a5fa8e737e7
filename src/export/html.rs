//! `export --format html`: the verified messages as a transcript a person reads, or prints to PDF:
//! `transcript/index.html` lists the conversations (participants, first and last time, counts) and
//! links one static page per conversation, its messages in time order with sender, time (UTC),
//! replies, edit history, reactions, deletions (shown struck through, with when and by whom) and
//! attachments (linked from the export's `attachments/`; images shown, scaled down).
//!
//! Self-contained: no script, nothing fetched from anywhere (a Content-Security-Policy says so to the
//! browser too), one stylesheet inline with a print part that numbers the pages. Everything from the
//! archive is escaped: a message text or file name of `<script>` renders as that text.

use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use super::ExportError;
use super::output::{ATTACHMENTS, conversation_stem, create_new};
use super::timeline::{Conversation, Timeline, TimelineEvent};

pub(crate) const TRANSCRIPT_DIR: &str = "transcript";

/// Image files shown inline (by their name's extension).
const IMAGES: &[&str] = &["png", "jpg", "jpeg", "gif", "webp", "bmp"];

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 60em; color: #111; }
h1 { font-size: 1.4em; margin-bottom: .2em; } .meta { color: #555; margin-top: 0; }
table.index { border-collapse: collapse; width: 100%; } table.index td, table.index th { border-bottom: 1px solid #ddd; padding: .3em .5em; text-align: left; vertical-align: top; }
.event { border-bottom: 1px solid #eee; padding: .4em 0; page-break-inside: avoid; break-inside: avoid; }
.head { color: #555; font-size: .9em; } .who { font-weight: 600; color: #111; }
.body { white-space: pre-wrap; overflow-wrap: anywhere; margin: .15em 0; }
.system .body { color: #555; font-style: italic; }
.deleted .body { text-decoration: line-through; color: #777; }
.note, .edits, .reactions, .reply { font-size: .88em; color: #444; }
.note.unsigned { color: #a00; font-weight: 600; }
.edits li { margin: .1em 0; } img.attachment { max-width: 24em; max-height: 16em; display: block; margin: .3em 0; border: 1px solid #ccc; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; }
  a { color: inherit; text-decoration: none; }
  @page { margin: 18mm 15mm; @bottom-center { content: "page " counter(page) " of " counter(pages); font-size: 9pt; } }
}
"#;

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |error| ExportError::Write {
        path: path.to_owned(),
        error,
    }
}

/// Escapes text for HTML, in content and in quoted attribute values alike.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A file name as a relative URL: every byte but unreserved ones percent-encoded.
fn url_part(name: &str) -> String {
    /// Everything but letters, digits and `-_.`: what file names and ids are mostly made of.
    const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    percent_encoding::utf8_percent_encode(name, ENCODED).to_string()
}

fn page_start(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'\">\n\
         <meta name=\"generator\" content=\"retention-bot {}\">\n<title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        escape(title)
    )
}

/// Writes `transcript/index.html` and a page per conversation. Returns the pages written.
pub fn write_all(staging: &Path, timeline: &Timeline) -> Result<usize, ExportError> {
    let dir = staging.join(TRANSCRIPT_DIR);
    std::fs::create_dir_all(&dir).map_err(write_error(&dir))?;
    let attachments = staging.join(ATTACHMENTS);
    let mut rows = String::new();
    for (id, conversation) in &timeline.conversations {
        let page = format!("{}.html", conversation_stem(id));
        let summary = write_page(&dir.join(&page), id, conversation, timeline, &attachments)?;
        let _ = writeln!(
            rows,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&url_part(&page)),
            escape(title(id, conversation)),
            escape(&conversation.people.iter().cloned().collect::<Vec<_>>().join(", ")),
            escape(&summary.first),
            escape(&summary.last),
            summary.messages,
            summary.attachments
        );
    }
    let index = dir.join("index.html");
    let mut html = page_start("Transcript");
    let _ = write!(
        html,
        "<h1>Transcript</h1>\n<p class=\"meta\">{} conversation(s); times are UTC. Made by retention-bot export from the archive's verified messages (and, when --unsigned-source took files no signed manifest lists, theirs, each marked UNSIGNED SOURCE); the export's custody.txt says where from.</p>\n\
         <table class=\"index\"><thead><tr><th>Conversation</th><th>Participants</th><th>First</th><th>Last</th><th>Messages</th><th>Attachments</th></tr></thead><tbody>\n{rows}</tbody></table>\n</body></html>\n",
        timeline.conversations.len()
    );
    write_file(&index, html.as_bytes())?;
    Ok(timeline.conversations.len() + 1)
}

fn title<'a>(id: &'a str, conversation: &'a Conversation) -> &'a str {
    conversation.title.as_deref().unwrap_or(id)
}

/// What the index says of a conversation.
#[derive(Default)]
struct Summary {
    first: String,
    last: String,
    messages: usize,
    attachments: usize,
}

fn write_page(
    path: &Path,
    id: &str,
    conversation: &Conversation,
    timeline: &Timeline,
    attachments: &Path,
) -> Result<Summary, ExportError> {
    let mut stored: Vec<_> = conversation.events.iter().collect();
    stored.sort_by_key(|s| s.time);
    let file = create_new(path)?;
    let mut out = BufWriter::new(file);
    let kind = if conversation.is_direct() {
        "direct conversation"
    } else {
        "room"
    };
    let head = format!(
        "{}<h1>{}</h1>\n<p class=\"meta\">{kind} {} &middot; participants: {} &middot; times are UTC &middot; <a href=\"index.html\">all conversations</a></p>\n",
        page_start(title(id, conversation)),
        escape(title(id, conversation)),
        escape(id),
        escape(&conversation.people.iter().cloned().collect::<Vec<_>>().join(", "))
    );
    out.write_all(head.as_bytes()).map_err(write_error(path))?;
    let mut summary = Summary::default();
    for s in stored {
        let event = timeline.read(s).map_err(|error| ExportError::Read {
            path: path.to_owned(),
            error,
        })?;
        if summary.first.is_empty() {
            summary.first = shown_time(&event.timestamp);
        }
        summary.last = shown_time(&event.timestamp);
        summary.messages += usize::from(event.kind == "message");
        summary.attachments += event.attachments.len();
        out.write_all(event_html(&event, attachments).as_bytes())
            .map_err(write_error(path))?;
    }
    out.write_all(b"</body></html>\n").map_err(write_error(path))?;
    // Made durable with the rest of the export, at once (the caller's).
    out.into_inner().map_err(|e| write_error(path)(e.into_error()))?;
    Ok(summary)
}

/// `2026-03-01 09:00:00.123456`: an RFC 3339 UTC time as a person reads it.
fn shown_time(timestamp: &str) -> String {
    timestamp.replace('T', " ").trim_end_matches('Z').to_owned()
}

/// One event as HTML; every text from the archive escaped.
fn event_html(event: &TimelineEvent, attachments: &Path) -> String {
    let mut html = event_head(event);
    let reply = event.parent.as_deref().or_else(|| event.custom("reply_to"));
    if let Some(parent) = reply {
        let _ = writeln!(
            html,
            "<div class=\"reply\">in reply to <a href=\"#m-{}\">{}</a></div>",
            escape(&url_part(parent)),
            escape(parent)
        );
    }
    if let Some(body) = event.body.as_deref().filter(|b| !b.is_empty()) {
        let _ = writeln!(html, "<div class=\"body\">{}</div>", escape(body));
    }
    push_attachments(&mut html, event, attachments);
    push_changes(&mut html, event);
    html.push_str("</div>\n");
    html
}

/// An event's opening: its `div` (classed by kind and deletion), the head line with sender, time
/// and kind, and the note an unsigned source or change needs; kept apart so `event_html` stays
/// short.
fn event_head(event: &TimelineEvent) -> String {
    let mut classes = vec!["event"];
    if event.kind != "message" {
        classes.push("system");
    }
    if event.deleted {
        classes.push("deleted");
    }
    let mut html = format!(
        "<div class=\"{}\" id=\"m-{}\">\n<div class=\"head\"><span class=\"who\"><bdi>{}</bdi></span> &middot; <time>{}</time>{}</div>\n",
        classes.join(" "),
        escape(&url_part(&event.id)),
        escape(&event.participant),
        escape(&shown_time(&event.timestamp)),
        if event.kind == "message" {
            String::new()
        } else {
            format!(" &middot; {}", escape(&event.kind))
        }
    );
    if event.custom("unsigned_source").is_some() {
        html.push_str("<div class=\"note unsigned\">UNSIGNED SOURCE: from a file no signed manifest entry lists (--unsigned-source); nothing proves it complete or unaltered</div>\n");
    } else if event.custom("unsigned_change").is_some() {
        html.push_str("<div class=\"note unsigned\">UNSIGNED CHANGE: an edit, reaction or delete below is from a file no signed manifest entry lists (--unsigned-source)</div>\n");
    }
    html
}

/// An event's attachments: linked (an image also shown) when the export holds the file, else
/// named as not in it; kept apart so `event_html` stays short.
fn push_attachments(html: &mut String, event: &TimelineEvent, attachments: &Path) {
    for a in &event.attachments {
        let href = format!("../attachments/{}", url_part(&a.id));
        let exported = attachments.join(&a.id).is_file();
        let image = IMAGES
            .iter()
            .any(|x| a.display.to_lowercase().ends_with(&format!(".{x}")));
        match (exported, image) {
            (true, true) => {
                let _ = writeln!(
                    html,
                    "<div class=\"note\">attachment <a href=\"{0}\">{1}</a></div><img class=\"attachment\" src=\"{0}\" alt=\"{1}\">",
                    escape(&href),
                    escape(&a.display)
                );
            }
            // Not a picture: downloaded, never opened as a page of this transcript's origin.
            (true, false) => {
                let _ = writeln!(
                    html,
                    "<div class=\"note\">attachment <a href=\"{}\" download>{}</a></div>",
                    escape(&href),
                    escape(&a.display)
                );
            }
            (false, _) => {
                let _ = writeln!(
                    html,
                    "<div class=\"note\">attachment {} (not in this export)</div>",
                    escape(&a.display)
                );
            }
        }
    }
    if let Some(missing) = event.custom("attachment_not_exported") {
        let _ = writeln!(
            html,
            "<div class=\"note\">attachment {} (not in this export)</div>",
            escape(missing)
        );
    }
}

/// What happened to an event after it was sent: its edit history, reactions and deletion; kept
/// apart so `event_html` stays short.
fn push_changes(html: &mut String, event: &TimelineEvent) {
    if !event.edits.is_empty() {
        html.push_str("<ul class=\"edits\">\n");
        for e in &event.edits {
            let _ = writeln!(
                html,
                "<li>edited by {} at {}: <del>{}</del> &rarr; <ins>{}</ins></li>",
                escape(&e.participant),
                escape(&shown_time(&e.timestamp)),
                escape(&e.previous),
                escape(&e.new)
            );
        }
        html.push_str("</ul>\n");
    }
    if !event.reactions.is_empty() {
        let shown: Vec<String> = event
            .reactions
            .iter()
            .map(|r| {
                format!(
                    "{} &times;{} ({})",
                    escape(&r.value),
                    r.count,
                    escape(&r.participants.join(", "))
                )
            })
            .collect();
        let _ = writeln!(html, "<div class=\"reactions\">reactions: {}</div>", shown.join("; "));
    }
    if event.deleted {
        let _ = writeln!(
            html,
            "<div class=\"note\">deleted by {} at {}</div>",
            escape(event.custom("deleted_by").unwrap_or("?")),
            escape(&shown_time(event.custom("deleted_at").unwrap_or("?")))
        );
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let mut file = create_new(path)?;
    file.write_all(bytes).map_err(write_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::timeline::Attachment;

    #[test]
    fn everything_from_the_archive_is_escaped() {
        let event = TimelineEvent {
            id: "x\"><script>".into(),
            kind: "message".into(),
            conversation: "R".into(),
            participant: "<b>mallory</b>".into(),
            timestamp: "2026-03-01T09:00:00.000000Z".into(),
            body: Some("<script>alert(1)</script>\"><img src=x onerror=alert(2)>".into()),
            deleted: false,
            parent: None,
            attachments: vec![Attachment {
                id: "a\"><img onerror=x>.png".into(),
                display: "\"><img src=x onerror=alert(3)>.png".into(),
                size: None,
            }],
            edits: Vec::new(),
            reactions: Vec::new(),
            custom: Vec::new(),
        };
        let html = event_html(&event, Path::new("/nonexistent"));
        assert!(
            !html.contains("<script") && !html.contains("<img") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    }
}
