//! Every kind of bad input gets its status (or exit code) and writes nothing.

use crate::common;

use common::{Bot, attachment_form, file_message, file_names, text_message};

const TOKEN: &str = "s3cret-t0ken-for-tests-0123";

/// Nothing at all in either destination (message files are opened lazily, on the first good line).
fn assert_nothing_written(bot: &Bot) {
    assert_eq!(
        file_names(&bot.messages_dir()),
        Vec::<String>::new(),
        "message files written"
    );
    assert_eq!(
        file_names(&bot.attachments_dir()),
        Vec::<String>::new(),
        "attachments written"
    );
}

fn file_form(message: &str, file_name: &str) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(b"attachment bytes".to_vec()).file_name(file_name.to_owned());
    attachment_form(message, part)
}

async fn error_body(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

#[tokio::test]
async fn malformed_wrong_typed_and_non_utf8_messages_get_400_naming_line_and_field() {
    let mut bot = Bot::start(&[]).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("application/json", b"{\"msgtype\":1000,".to_vec(), "line 1"),
        ("application/json", b"[1,2,3]".to_vec(), "must be a JSON object"),
        (
            "application/json",
            br#"{"msgtype":"1000","message_id":"x","msg_ts":"1","sender":"a"}"#.to_vec(),
            "`msgtype`",
        ),
        (
            "application/json",
            br#"{"msgtype":1000,"message_id":5,"msg_ts":"1","sender":"a"}"#.to_vec(),
            "`message_id`",
        ),
        (
            "application/json",
            br#"{"msgtype":6000,"message_id":"x","msg_ts":"1","sender":"a","file":"f"}"#.to_vec(),
            "`file`",
        ),
        (
            "application/x-ndjson",
            format!(
                "{}\n{}\n{{\"msgtype\":1000,\"message_id\":\"x\",\"sender\":\"a\"}}\n",
                text_message(1),
                text_message(2)
            )
            .into_bytes(),
            "line 3: field `msg_ts`",
        ),
        (
            "application/json",
            [
                &br#"{"msgtype":1000,"message_id":"x","msg_ts":"1","sender":""#[..],
                &[0xff, 0xfe],
                b"\"}",
            ]
            .concat(),
            "line 1",
        ),
    ];
    for (ctype, body, expected) in cases {
        let r = bot.post(ctype, body.clone()).await;
        assert_eq!(r.status(), 400, "{}", String::from_utf8_lossy(&body));
        let text = error_body(r).await;
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
    let r = bot.post("text/plain", text_message(1)).await;
    assert_eq!(r.status(), 415);
    assert_nothing_written(&bot);
    assert!(bot.stop().await.success());
    assert_nothing_written(&bot);
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let mut bot = Bot::start(&[("WICKRIO_INGEST_MAX_BODY", "1KiB")]).await;
    let body: Vec<String> = (0..10).map(text_message).collect();
    let r = bot.post("application/x-ndjson", body.join("\n")).await;
    assert_eq!(r.status(), 413);
    assert!(error_body(r).await.contains("WICKRIO_INGEST_MAX_BODY"));
    assert!(bot.stop().await.success());
    assert_nothing_written(&bot);
}

#[tokio::test]
async fn path_tricks_in_file_names_get_400() {
    let mut bot = Bot::start(&[]).await;
    let with_name = file_message;
    for name in ["../../etc/passwd", "..", "a/../../b", "evil\0.txt", "..\\windows\\x"] {
        let r = bot.post_form(file_form(&with_name(name), "x.bin")).await;
        assert_eq!(r.status(), 400, "{name:?}");
        assert!(error_body(r).await.contains("file.filename"), "{name:?}");
    }
    // The name may also come from the part itself when the message has none.
    let no_name = r#"{"msgtype":6000,"message_id":"f","msg_ts":"1","sender":"a","file":{"guid":"g"}}"#;
    let r = bot.post_form(file_form(no_name, "../up.bin")).await;
    assert_eq!(r.status(), 400);
    // A message that is not a file message, or parts in the wrong order.
    let r = bot.post_form(file_form(&text_message(1), "a.bin")).await;
    assert_eq!(r.status(), 400);
    let wrong_order = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a.bin"),
        )
        .text("message", with_name("a.bin"));
    let r = bot.post_form(wrong_order).await;
    assert_eq!(r.status(), 400);
    assert!(bot.stop().await.success());
    assert_nothing_written(&bot);
}

#[tokio::test]
async fn attachment_over_the_limit_gets_413_and_leaves_no_partial_file() {
    let mut bot = Bot::start(&[("WICKRIO_INGEST_MAX_FILE", "4KiB")]).await;
    let message = &file_message("big.bin");
    let form = attachment_form(
        message,
        reqwest::multipart::Part::bytes(vec![7u8; 64 * 1024]).file_name("big.bin"),
    );
    let r = bot.post_form(form).await;
    assert_eq!(r.status(), 413);
    assert!(error_body(r).await.contains("WICKRIO_INGEST_MAX_FILE"));
    // The partial file is removed in the background as the request is dropped.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_nothing_written(&bot);
    assert!(bot.stop().await.success());
}

#[tokio::test]
async fn missing_or_wrong_token_gets_401() {
    let mut bot = Bot::start(&[("WICKRIO_INGEST_TOKEN", TOKEN)]).await;
    let client = reqwest::Client::new();
    let send = |auth: Option<String>| {
        let mut req = client
            .post(bot.url("/v1/messages"))
            .header("content-type", "application/json")
            .body(text_message(1));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789".to_owned()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {TOKEN}x")),
    ] {
        let r = send(auth.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    assert_nothing_written(&bot);
    assert_eq!(send(Some(format!("Bearer {TOKEN}"))).await.unwrap().status(), 202);
    assert!(bot.stop().await.success());
}

/// Runs the binary with `extra` settings and returns (exit code, stderr) without waiting for health.
fn run_expecting_exit(extra: &[(&str, &str)]) -> (Option<i32>, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let bot = Bot::prepare(tmp.path(), extra);
    let out = bot.command().output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        tmp,
    )
}

#[test]
fn non_loopback_bind_without_token_refuses_to_start() {
    let (code, stderr, tmp) = run_expecting_exit(&[("WICKRIO_INGEST_ADDR", "0.0.0.0:0")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("WICKRIO_INGEST_TOKEN") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
    assert_eq!(file_names(&tmp.path().join("messages")), Vec::<String>::new());
}

#[test]
fn bad_settings_stop_start_up_with_status_2_naming_the_variable() {
    for (var, value, says) in [
        ("WICKRIO_COMP_FILESIZE", "lots", "not a whole number"),
        ("WICKRIO_COMP_FILESIZE", "0", "at least 1"),
        ("WICKRIO_COMP_TIMEROTATE", "-1", "out of range"),
        ("WICKRIO_COMP_MESGDEST", "/dev/null/messages", "cannot create directory"),
        ("WICKRIO_INGEST_ADDR", "localhost:80", "not an IP address"),
        ("WICKRIO_INGEST_MAX_BODY", "big", "not a size"),
        ("WICKRIO_LOG_FORMAT", "xml", "text, json"),
    ] {
        let (code, stderr, _tmp) = run_expecting_exit(&[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var) && stderr.contains(says), "{var}={value}: {stderr}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Bot::prepare(tmp.path(), &[]).command();
    cmd.env_remove("WICKRIO_BOT_NAME");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WICKRIO_BOT_NAME"));
}

#[test]
fn new_limits_and_the_mask_are_checked_like_every_setting() {
    for (var, value, says) in [
        ("WICKRIO_INGEST_IDLE_SECS", "0", "out of range"),
        ("WICKRIO_INGEST_MAX_CONNECTIONS", "0", "out of range"),
        ("WICKRIO_UMASK", "0777", "leaves the owner read and write"),
        (
            "WICKRIO_S3_OBJECT_LOCK_MODE",
            "GOVERNANCE",
            "WICKRIO_S3_BUCKET_NAME is not",
        ),
    ] {
        let (code, stderr, _tmp) = run_expecting_exit(&[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var) && stderr.contains(says), "{var}={value}: {stderr}");
    }
}

#[test]
fn a_spool_directory_others_may_write_to_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("messages");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bot = Bot::prepare(tmp.path(), &[]);
    let out = bot.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("WICKRIO_COMP_MESGDEST") && stderr.contains("chmod go-w"),
        "{stderr}"
    );
    assert!(!tmp.path().join("state/identity.json").exists(), "nothing was set up");
}

#[test]
fn files_and_directories_are_not_for_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("bot");
    let mut bot = Bot::prepare(&root, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        bot.spawn().await;
        assert_eq!(bot.post("application/json", text_message(1)).await.status(), 202);
        assert!(bot.stop().await.success());
    });
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for dir in ["messages", "attachments", "state"] {
        assert_eq!(mode(&root.join(dir)), 0o750, "{dir}");
    }
    for name in common::closed_message_files(&root.join("messages")) {
        assert_eq!(mode(&root.join("messages").join(&name)), 0o640, "{name}");
    }
    assert_eq!(mode(&root.join("state/identity.json")), 0o600);
}

#[test]
fn a_misspelt_variable_is_named_with_the_one_meant() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bot = Bot::prepare(tmp.path(), &[("WICKRIO_COMP_FILESIZ", "10")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        bot.spawn().await;
        assert!(bot.stop().await.success());
    });
    let log = bot.log_text();
    assert!(
        log.contains("WICKRIO_COMP_FILESIZ is not a setting and is ignored; did you mean WICKRIO_COMP_FILESIZE?"),
        "{log}"
    );
}
