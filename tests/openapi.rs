//! docs/openapi.yaml, kept true: every route the bot serves is described there and every route
//! described there is served, and schemathesis (property-based requests generated from the
//! description, run against the live bot) finds no server error and no answer the description does
//! not allow (status, content type, body).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Bot;
use common::aws::venv_bin;

fn spec_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml")
}

/// The description, read with PyYAML from the test virtualenv.
fn spec() -> serde_json::Value {
    let out = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(spec_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn every_route_served_is_described_and_every_described_route_is_served() {
    let spec = spec();
    let bot = Bot::start(&[]).await;
    let client = reqwest::Client::new();
    let paths = spec["paths"].as_object().unwrap();
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let status = client
                .request(method.clone(), bot.url(path))
                .send()
                .await
                .unwrap()
                .status();
            assert!(
                status != 404 && status != 405,
                "{method} {path} is described but not served ({status})"
            );
        }
    }
    // What the bot answers on paths and methods the description does not have.
    for (method, path) in [
        ("GET", "/v1/messages"),
        ("POST", "/v1/other"),
        ("GET", "/admin"),
        ("DELETE", "/healthz"),
    ] {
        let described = paths.get(path).and_then(|p| p.get(method.to_lowercase())).is_some();
        assert!(!described);
        let status = client
            .request(method.parse().unwrap(), bot.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            status == 404 || status == 405,
            "{method} {path} is served ({status}) but not described"
        );
    }
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_description() {
    let bot = Bot::start(&[]).await;
    let out = tokio::task::spawn_blocking({
        let (url, workdir) = (bot.url(""), bot.root.clone());
        move || {
            Command::new(venv_bin("st"))
                // Its cache (and replay of earlier failures) stays out of the repository.
                .current_dir(workdir)
                .arg("run")
                .arg(spec_path())
                .args(["--url", &url])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
                ])
                .args(["--phases", "examples,coverage,fuzzing"])
                .args(["--max-examples", "200", "--no-color"])
                .env("SCHEMATHESIS_HOOKS", "")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        bot.log_text()
    );
    eprintln!(
        "{}",
        report
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
