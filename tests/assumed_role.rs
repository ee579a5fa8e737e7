//! `WICKRIO_ROLE_ARN` against moto through a recording proxy: the bot asks STS for the role's
//! credentials with its own (the default chain's), and every S3 and KMS request it then makes is
//! signed with the role's access key, not its own; `decrypt` with the same setting reads the bucket
//! the same way. A malformed role ARN stops the daemon and the tools with exit status 2. And the
//! standard proxy variables (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`) route every AWS request.

use crate::common;

use std::process::Command;

use common::Bot;
use common::aws::{Moto, RecordingProxy};

const BUCKET: &str = "other-account-1";
const ROLE: &str = "arn:aws:iam::123456789012:role/retention-writer";

/// The access key id and the service a request was signed for (`Credential=<id>/<date>/<region>/<service>/aws4_request`).
fn signer(request: &common::aws::RecordedRequest) -> Option<(String, String)> {
    let auth = String::from_utf8_lossy(request.header("authorization")?).into_owned();
    let credential = auth.split("Credential=").nth(1)?.split(',').next()?;
    let parts: Vec<&str> = credential.split('/').collect();
    Some((parts.first()?.to_string(), parts.get(3)?.to_string()))
}

/// A bot with `env` takes one message, uploads it to `bucket` and stops.
async fn one_message_up(moto: &Moto, env: &[(String, String)], bucket: &str) -> Bot {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut bot = Bot::start(&refs).await;
    assert_eq!(
        bot.post("application/json", common::text_message(1)).await.status(),
        202
    );
    assert!(bot.stop().await.success(), "{}", bot.log_text());
    assert!(!moto.keys(bucket).await.is_empty(), "the files went up");
    bot
}

#[tokio::test(flavor = "multi_thread")]
async fn every_s3_and_kms_request_carries_the_assumed_roles_credentials() {
    let moto = Moto::start().await;
    moto.s3().await.create_bucket().bucket(BUCKET).send().await.unwrap();
    let key_arn = moto.create_key().await;
    let proxy = RecordingProxy::start(moto.port).await;
    let mut env = Moto::env_via(&proxy.endpoint());
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", BUCKET),
        ("WICKRIO_KMS_MSTRKEY_ARN", key_arn.as_str()),
        ("WICKRIO_ROLE_ARN", ROLE),
        ("WICKRIO_ROLE_EXTERNAL_ID", "tenant-42"),
        ("WICKRIO_ROLE_SESSION_NAME", "retention-bot-test"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let bot = one_message_up(&moto, &env, BUCKET).await;

    let signed: Vec<(String, String)> = proxy.requests().iter().filter_map(signer).collect();
    let own = "test";
    assert!(
        signed.iter().any(|(id, service)| id == own && service == "sts"),
        "STS is asked with the bot's own credentials: {signed:?}"
    );
    // What STS was asked: the role, the session name and the external ID.
    let asked: Vec<String> = proxy
        .requests()
        .iter()
        .filter_map(|r| r.form.clone())
        .filter(|f| f.contains("Action=AssumeRole"))
        .collect();
    assert!(!asked.is_empty(), "an AssumeRole request: {signed:?}");
    for form in &asked {
        assert!(
            form.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fretention-writer")
                && form.contains("RoleSessionName=retention-bot-test")
                && form.contains("ExternalId=tenant-42"),
            "{form}"
        );
    }
    let order: Vec<String> = proxy
        .requests()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, signer(r).map(|s| s.1).unwrap_or_default()))
        .collect();
    assert_eq!(asked.len(), 1, "one role session, shared by every client: {order:#?}");
    let data: Vec<&(String, String)> = signed.iter().filter(|(_, s)| s == "s3" || s == "kms").collect();
    assert!(
        data.iter().any(|(_, s)| s == "s3") && data.iter().any(|(_, s)| s == "kms"),
        "{signed:?}"
    );
    assert!(
        data.iter().all(|(id, _)| id != own && !id.is_empty()),
        "every S3 and KMS request is signed with the role's key, none with the bot's own: {signed:?}"
    );

    // The tools take the same setting: decrypt reads the bucket as the role.
    let before = proxy.requests().len();
    let dest = bot.root.join("restored");
    let (code, text) = common::run_to_end(
        Command::new(common::BIN)
            .args(["decrypt", "--bucket", BUCKET, "--dest"])
            .arg(&dest)
            .env_clear()
            .envs(Moto::env_via(&proxy.endpoint()))
            .env("WICKRIO_ROLE_ARN", ROLE),
    );
    assert_eq!(code, Some(0), "{text}");
    let reads: Vec<(String, String)> = proxy.requests()[before..].iter().filter_map(signer).collect();
    let data_reads: Vec<&(String, String)> = reads.iter().filter(|(_, s)| s == "s3" || s == "kms").collect();
    assert!(
        data_reads.iter().any(|(_, s)| s == "s3") && data_reads.iter().any(|(_, s)| s == "kms"),
        "decrypt listed, read and unwrapped: {reads:?}"
    );
    assert!(data_reads.iter().all(|(id, _)| id != own), "{reads:?}");

    // A malformed role stops everything before any request.
    for command in [
        vec!["run"],
        vec!["decrypt", "--bucket", BUCKET, "--dest", "/nonexistent"],
    ] {
        let mut cmd = bot.command();
        cmd.args(&command).env("WICKRIO_ROLE_ARN", "retention-writer");
        let (code, text) = common::run_to_end(&mut cmd);
        assert_eq!(code, Some(2), "{command:?}: {text}");
        assert!(
            text.contains("WICKRIO_ROLE_ARN") && text.contains("is not an IAM role ARN"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_variables_route_every_aws_request_through_the_proxy() {
    let moto = Moto::start().await;
    moto.s3()
        .await
        .create_bucket()
        .bucket("proxied-1")
        .send()
        .await
        .unwrap();
    let key_arn = moto.create_key().await;
    // The endpoint is moto itself; only HTTP_PROXY sends the requests through the recording proxy
    // (as a forward proxy: it gets each request in absolute form and passes it on).
    let proxy = RecordingProxy::start(moto.port).await;
    let mut env = Moto::env_via(&moto.endpoint());
    for (k, v) in [
        ("WICKRIO_S3_BUCKET_NAME", "proxied-1"),
        ("WICKRIO_KMS_MSTRKEY_ARN", key_arn.as_str()),
        ("HTTP_PROXY", proxy.endpoint().as_str()),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    one_message_up(&moto, &env, "proxied-1").await;
    let services: Vec<String> = proxy.requests().iter().filter_map(signer).map(|(_, s)| s).collect();
    assert!(
        services.iter().any(|s| s == "s3") && services.iter().any(|s| s == "kms"),
        "S3 and KMS requests went through the proxy: {services:?}"
    );
}
