//! What a producer (or anyone whose messages are archived) writes ends up in pages a reviewer opens:
//! markup in a message, a file name, a sender, a room id, a room title, an edit or a reaction must
//! render as text, and no element of a page may come from it. Checked in headless Chromium: the DOM
//! it builds holds only the exporter's own elements, none with an event handler, and the hostile
//! strings are in the text a reader sees. The same archive's RSMF files must still be well formed.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;

use super::archive::Exporter;
use super::browser;
use super::rsmf_check;
use crate::common;
use common::{Bot, attachment_form};

const ROOM: &str = "S\"><script>alert('room')</script>";
const MALLORY: &str = "<b onmouseover=alert(1)>mallory</b>@example";
const TITLE: &str = "<img src=x onerror=alert('title')>";
const TEXT: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";
const FILE_NAME: &str = "\"><img src=x onerror=alert(3)>.png";
const EDIT: &str = "</li></ul><iframe src=javascript:alert(4)></iframe>";
const REACTION: &str = "<svg onload=alert(5)>";

/// The elements the transcript's pages are made of: anything else came from the archive.
const OWN_ELEMENTS: &[&str] = &[
    "html", "head", "meta", "title", "style", "body", "h1", "p", "a", "div", "span", "time", "ul", "li", "del", "ins",
    "img", "table", "thead", "tbody", "tr", "th", "td", "bdi",
];

/// A 48x48 PNG of pure red: easy to find in a screenshot.
fn red_png() -> Vec<u8> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, 48, 48);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[255, 0, 0].repeat(48 * 48)).unwrap();
    writer.finish().unwrap();
    png
}

/// How many pure red pixels a PNG screenshot shows.
fn red_pixels(path: &Path) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p[0] == 255 && p[1] == 0 && p[2] == 0)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn markup_in_the_archive_renders_as_text_and_never_as_an_element_in_a_browser() {
    let bot = Bot::start(&[]).await;
    let line = |id: &str, ts: u32, msgtype: u32, extra: serde_json::Value| {
        let mut v = json!({
            "message_id": id, "msg_ts": format!("1772323{ts:03}.5"), "msgtype": msgtype,
            "sender": MALLORY, "vgroupid": ROOM, "message": "",
        });
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v.to_string()
    };
    for body in [
        line(
            "c1",
            300,
            4001,
            json!({"control": {"msgtype": 4001, "members": [MALLORY, "bob@example"], "title": TITLE}}),
        ),
        line("m1", 400, 1000, json!({"message": TEXT})),
        line(
            "e1",
            500,
            9000,
            json!({"edit": {"type": "text", "message_id": "m1", "message": EDIT}}),
        ),
        line(
            "r1",
            600,
            9100,
            json!({"sender": "bob@example", "edit": {"type": "reaction", "message_id": "m1", "reaction": REACTION}}),
        ),
    ] {
        let r = bot.post("application/json", body).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    let file = line("f1", 700, 6000, json!({"file": {"filename": FILE_NAME, "guid": "g"}}));
    let part = reqwest::multipart::Part::bytes(red_png()).file_name(FILE_NAME);
    let r = bot.post_form(attachment_form(&file, part)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let mut bot = bot;
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    let exporter = Exporter::of_dir(&bot);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (code, text) = exporter.run(&["--format", "html,rsmf", "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");

    let dir = out.join("transcript");
    let pages: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(pages.len(), 2, "the index and the room's page: {pages:?}");
    for page in &pages {
        let dom = browser::dom(page);
        let elements = browser::elements(&dom);
        let tags: BTreeSet<&str> = elements.iter().map(|e| e.tag.as_str()).collect();
        let foreign: Vec<&&str> = tags.iter().filter(|t| !OWN_ELEMENTS.contains(t)).collect();
        assert!(
            foreign.is_empty(),
            "{}: elements from the archive: {foreign:?}",
            page.display()
        );
        for e in &elements {
            let handlers: Vec<_> = e.attributes.iter().filter(|(n, _)| n.starts_with("on")).collect();
            assert!(handlers.is_empty(), "{}: {e:?}", page.display());
            if e.tag == "img" {
                assert_eq!(e.get("class"), Some("attachment"), "{e:?}");
                assert!(e.get("src").unwrap().starts_with("../attachments/"), "{e:?}");
            }
            if let Some(href) = e.get("href") {
                assert!(!href.contains(':'), "{}: only relative links: {e:?}", page.display());
            }
        }
        let shown = browser::body_text(&dom);
        let wanted: &[&str] = if page.ends_with("index.html") {
            &[TITLE, MALLORY]
        } else {
            &[TITLE, MALLORY, ROOM, TEXT, EDIT, REACTION, FILE_NAME]
        };
        for s in wanted {
            assert!(shown.contains(s), "{}: {s:?} shown as text in {shown}", page.display());
        }
    }
    // The picture is shown inline (the page's policy lets its own files in, nothing else).
    let page = pages.iter().find(|p| !p.ends_with("index.html")).unwrap();
    let shot = browser::screenshot(page, "transcript-hostile.png");
    assert!(red_pixels(&shot) >= 48 * 48 / 2, "the attached picture is shown");

    let files = rsmf_check::read_all(&out.join("rsmf"));
    assert_eq!(files.len(), 1);
    let event = |id: &str| files[0].events().iter().find(|e| e["id"] == id).unwrap().clone();
    assert_eq!(event("m1")["body"], TEXT);
    assert_eq!(event("m1")["edits"][0]["new"], EDIT);
    assert_eq!(event("m1")["reactions"][0]["value"], REACTION);
    assert_eq!(event("f1")["attachments"][0]["display"], FILE_NAME);
    assert_eq!(files[0].conversation()["display"], TITLE);
}
