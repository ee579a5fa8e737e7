//! Deployment as code: the CloudFormation templates pass `cfn-lint`, their IAM policies are the
//! repository's `iam/*.json` (one source of truth), the archive template keeps what it promises
//! (versioning, Object Lock, no public access, TLS only, `Retain`), the archive stack deploys on moto
//! and a real bot configured from its outputs uploads encrypted objects that `verify s3://` passes;
//! the Prometheus rules pass `promtool`'s checks and unit tests, and the Grafana dashboard and the
//! rules name only metrics a running bot exports.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::aws::{Moto, venv_bin};
use common::{Bot, run_to_end, text_message};
use serde_json::{Value, json};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

const TEMPLATES: [&str; 2] = [
    "deploy/cloudformation/archive.yaml",
    "deploy/cloudformation/service.yaml",
];

/// A template as JSON, read by cfn-lint's own decoder (so `!Sub` and friends are `Fn::Sub` objects).
fn template(path: &str) -> Value {
    let (code, out) = run_to_end(
        Command::new(venv_bin("python"))
            .arg(repo("tests/python/cloudformation.py"))
            .arg("decode")
            .arg(repo(path)),
    );
    assert_eq!(code, Some(0), "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn both_templates_pass_cfn_lint_with_no_error_or_warning() {
    let (code, out) = run_to_end(Command::new(venv_bin("cfn-lint")).args(TEMPLATES.map(repo)));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), "", "cfn-lint said something");

    // And it does fail a template that breaks a rule (an output named with '_').
    let broken = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
    let text = std::fs::read_to_string(repo(TEMPLATES[0])).unwrap();
    std::fs::write(
        broken.path(),
        text.replace("  BucketName:\n", "  WICKRIO_S3_BUCKET_NAME:\n"),
    )
    .unwrap();
    let (code, out) = run_to_end(Command::new(venv_bin("cfn-lint")).arg(broken.path()));
    assert_ne!(code, Some(0), "{out}");
}

/// What `iam/*.json` writes as placeholders, for each way a template names the same thing.
fn placeholder(name: &str) -> Option<&'static str> {
    Some(match name {
        "AWS::Partition" => "aws",
        "AWS::Region" => "us-east-1",
        "AWS::AccountId" => "111122223333",
        "ArchiveBucket" => "BUCKET_NAME",
        "FolderName" => "FOLDER_NAME",
        "SecretName" => "SECRET_NAME",
        "PeriodAliasPrefix" => "retention-",
        "EventTopic" => "arn:aws:sns:us-east-1:111122223333:TOPIC_NAME",
        "ArchiveKey.Arn" | "CurrentPeriodKey.Arn" => "arn:aws:kms:us-east-1:111122223333:key/KEY_ID",
        _ => return None,
    })
}

/// A policy document with its intrinsics replaced by the placeholders; an `Fn::If` must come out
/// the same on both branches (the policy is the same file whatever the parameters).
fn resolve(value: &Value) -> Value {
    let name = |n: &str| {
        placeholder(n)
            .unwrap_or_else(|| panic!("no placeholder for {n}"))
            .to_owned()
    };
    match value {
        Value::Object(map) if map.len() == 1 => {
            let (f, arg) = map.iter().next().unwrap();
            match f.as_str() {
                "Ref" => json!(name(arg.as_str().unwrap())),
                "Fn::GetAtt" => {
                    let parts: Vec<&str> = arg.as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
                    json!(name(&parts.join(".")))
                }
                "Fn::Sub" => {
                    let text = arg.as_str().expect("Fn::Sub with a string only in policies");
                    let mut out = String::new();
                    let mut rest = text;
                    while let Some(start) = rest.find("${") {
                        out.push_str(&rest[..start]);
                        let end = rest[start..].find('}').unwrap() + start;
                        out.push_str(&name(&rest[start + 2..end]));
                        rest = &rest[end + 1..];
                    }
                    out.push_str(rest);
                    json!(out)
                }
                "Fn::If" => {
                    let branches = arg.as_array().unwrap();
                    let (yes, no) = (resolve(&branches[1]), resolve(&branches[2]));
                    assert_eq!(yes, no, "the branches of {value} differ");
                    yes
                }
                _ => Value::Object(map.iter().map(|(k, v)| (k.clone(), resolve(v))).collect()),
            }
        }
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), resolve(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(resolve).collect()),
        other => other.clone(),
    }
}

#[test]
fn the_archive_templates_policies_are_the_iam_files() {
    let t = template(TEMPLATES[0]);
    let mut mirrored = BTreeSet::new();
    for (id, resource) in t["Resources"].as_object().unwrap() {
        if resource["Type"] != "AWS::IAM::ManagedPolicy" {
            continue;
        }
        let file = resource["Metadata"]["retention-bot-iam"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} names no iam/ file in its Metadata"));
        let expected: Value = serde_json::from_str(&std::fs::read_to_string(repo(file)).unwrap()).unwrap();
        let got = resolve(&resource["Properties"]["PolicyDocument"]);
        assert_eq!(got, expected, "{id} differs from {file}");
        mirrored.insert(file.to_owned());
    }
    let wanted = [
        "iam/s3.json",
        "iam/s3-object-lock.json",
        "iam/s3-kms.json",
        "iam/period-keys.json",
        "iam/period-keys-create.json",
        "iam/secrets-manager-write-back.json",
        "iam/sns.json",
        "iam/cloudwatch.json",
        "iam/reader.json",
        "iam/legal-hold.json",
        "iam/shred.json",
    ];
    assert_eq!(mirrored, wanted.iter().map(|f| f.to_string()).collect());

    // The comparison is not blind: a policy that drifts from its file is caught.
    let mut drifted = t["Resources"]["BotEventsPolicy"]["Properties"]["PolicyDocument"].clone();
    drifted["Statement"][0]["Action"] = json!("sns:*");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(repo("iam/sns.json")).unwrap()).unwrap();
    assert_ne!(resolve(&drifted), file);
}

#[test]
fn the_archive_template_keeps_the_records_safe_and_names_its_outputs_as_settings() {
    let t = template(TEMPLATES[0]);
    let r = &t["Resources"];
    let bucket = &r["ArchiveBucket"]["Properties"];
    assert_eq!(bucket["VersioningConfiguration"]["Status"], "Enabled");
    assert_eq!(bucket["ObjectLockEnabled"], true);
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(bucket["PublicAccessBlockConfiguration"][flag], true, "{flag}");
    }
    // Object Lock's mode and days are the parameters', none by default.
    assert_eq!(t["Parameters"]["ObjectLockMode"]["Default"], "NONE");
    let lock = bucket["ObjectLockConfiguration"]["Fn::If"].as_array().unwrap();
    assert_eq!(lock[0], "LockObjects");
    assert_eq!(
        lock[1]["Rule"]["DefaultRetention"]["Mode"],
        json!({"Ref": "ObjectLockMode"})
    );
    assert_eq!(lock[2], json!({"ObjectLockEnabled": "Enabled"}));
    // Non-current versions are kept for ever unless a number of days is given.
    assert_eq!(t["Parameters"]["NoncurrentVersionDays"]["Default"], 0);
    let rules = bucket["LifecycleConfiguration"]["Rules"].as_array().unwrap();
    let expire = rules.iter().find(|r| r["Id"] == "ExpireNoncurrentVersions").unwrap();
    assert_eq!(expire["Status"]["Fn::If"][0], "ExpireNoncurrent");

    // The bucket refuses requests without TLS.
    let deny = &r["ArchiveBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(deny["Effect"], "Deny");
    assert_eq!(deny["Action"], "s3:*");
    assert_eq!(deny["Condition"]["Bool"]["aws:SecureTransport"], "false");

    // Whatever holds or protects records outlives the stack.
    for id in [
        "ArchiveBucket",
        "ArchiveBucketPolicy",
        "ArchiveKey",
        "ArchiveKeyAlias",
        "CurrentPeriodKey",
        "CurrentPeriodKeyAlias",
        "NextPeriodKey",
        "NextPeriodKeyAlias",
        "EventTopic",
        "SettingsSecret",
    ] {
        assert_eq!(r[id]["DeletionPolicy"], "Retain", "{id}");
        assert_eq!(r[id]["UpdateReplacePolicy"], "Retain", "{id}");
    }
    let service = template(TEMPLATES[1]);
    for id in ["FileSystem", "LogGroup"] {
        assert_eq!(service["Resources"][id]["DeletionPolicy"], "Retain", "{id}");
    }
    // One task per state directory, ever; a task that cannot start rolls the deployment back.
    let deployment = &service["Resources"]["Service"]["Properties"]["DeploymentConfiguration"];
    assert_eq!(deployment["MaximumPercent"], 100);
    assert_eq!(
        deployment["DeploymentCircuitBreaker"],
        json!({"Enable": true, "Rollback": true})
    );
    // The secret holds only what names the archive: a setting an operator tunes (and changes) would
    // make CloudFormation generate the value again, over the password the bot wrote back.
    let generated = &r["SettingsSecret"]["Properties"]["GenerateSecretString"];
    let template = generated["SecretStringTemplate"]["Fn::Sub"][0].as_str().unwrap();
    let secret: serde_json::Map<String, Value> = serde_json::from_str(template).unwrap();
    let keys: BTreeSet<&str> = secret.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "s3_bucket_name",
            "s3_folder_name",
            "s3_region",
            "kms_master_key_arn",
            "sns_topic_arn"
        ])
    );
    assert_eq!(generated["GenerateStringKey"], "password");

    // Every setting output says which variable it is, and the bot knows that variable.
    let (_, help) = run_to_end(Command::new(common::BIN).arg("--help"));
    let settings = setting_outputs(&t);
    for variable in settings.values() {
        assert!(help.contains(variable.as_str()), "--help does not know {variable}");
    }
    let named: BTreeSet<&str> = settings.values().map(String::as_str).collect();
    for variable in [
        "WICKRIO_S3_BUCKET_NAME",
        "WICKRIO_S3_FOLDER_NAME",
        "WICKRIO_KMS_MSTRKEY_ARN",
        "WICKRIO_SNS_TOPIC_ARN",
        "AWS_SECRET_NAME",
    ] {
        assert!(named.contains(variable), "no output for {variable}: {named:?}");
    }
}

/// The outputs that stand for a setting: output name -> the variable its description starts with.
fn setting_outputs(template: &Value) -> std::collections::BTreeMap<String, String> {
    template["Outputs"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(name, output)| {
            let (variable, _) = output["Description"].as_str()?.split_once(": ")?;
            (variable.starts_with("WICKRIO_") || variable.starts_with("AWS_"))
                .then(|| (name.clone(), variable.to_owned()))
        })
        .collect()
}

/// moto's CloudFormation makes the bucket, the keys and their aliases, the topic and the policies;
/// it has no `AWS::SecretsManager::Secret` nor `AWS::S3::BucketPolicy` (skipped, with a warning), and
/// it ignores the bucket's versioning and Object Lock properties. So the bot takes its settings from
/// the outputs other than the secret's, and its password from the environment.
#[tokio::test(flavor = "multi_thread")]
async fn a_bot_configured_from_the_archive_stacks_outputs_archives_encrypted_and_verifies() {
    let (moto, outputs) = deploy_archive(&[]).await;
    let kms = archive_with(&moto, &outputs, &[]).await;
    assert!(kms.contains(":key/"), "one key by default: {kms}");
}

/// With `KeyMode=monthly`, the stack makes the two periods' keys and gives the alias template: a
/// bot whose clock is in the first period writes under that period's key.
#[tokio::test(flavor = "multi_thread")]
async fn with_period_keys_the_bot_writes_under_the_periods_key_the_stack_made() {
    let (moto, outputs) = deploy_archive(&["KeyMode=monthly", "CurrentPeriod=2025-03", "NextPeriod=2025-04"]).await;
    let template = archive_with(&moto, &outputs, &[("RETENTION_BOT_TEST_CLOCK", "2025-03-15T12:00:00Z")]).await;
    assert!(template.ends_with(":alias/retention-{yyyy}-{mm}"), "{template}");
    let aliases = moto.kms().await.list_aliases().send().await.unwrap();
    let names: Vec<&str> = aliases.aliases().iter().filter_map(|a| a.alias_name()).collect();
    assert!(
        names.contains(&"alias/retention-2025-03") && names.contains(&"alias/retention-2025-04"),
        "{names:?}"
    );
    let march = aliases
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some("alias/retention-2025-03"))
        .unwrap();
    let tags = moto
        .kms()
        .await
        .list_resource_tags()
        .key_id(march.target_key_id().unwrap())
        .send()
        .await
        .unwrap();
    let tagged = tags
        .tags()
        .iter()
        .any(|t| t.tag_key() == "retention-bot-period" && t.tag_value() == "2025-03");
    assert!(tagged, "{tags:?}");
}

/// The archive stack on a fresh moto server, with `parameters` (`Key=Value`): the server and the
/// stack's outputs.
async fn deploy_archive(parameters: &[&str]) -> (Moto, Value) {
    // The strict server: it resolves a KMS alias ARN as AWS does (the period keys' template).
    let moto = Moto::start_strict().await;
    let (code, out) = run_to_end(
        Command::new(venv_bin("python"))
            .arg(repo("tests/python/cloudformation.py"))
            .arg("deploy")
            .arg(moto.endpoint())
            .arg(repo(TEMPLATES[0]))
            .args(parameters),
    );
    assert_eq!(code, Some(0), "{out}");
    let outputs = serde_json::from_str(out.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {out}"));
    (moto, outputs)
}

/// Runs a bot configured from the stack's setting outputs (and `extra`), posts three messages,
/// checks every object it uploaded is client-side encrypted and that `verify s3://` passes. Returns
/// the `WICKRIO_KMS_MSTRKEY_ARN` the stack gave.
async fn archive_with(moto: &Moto, outputs: &Value, extra: &[(&str, &str)]) -> String {
    let mut env = moto.env();
    let archive = template(TEMPLATES[0]);
    for (name, variable) in setting_outputs(&archive) {
        // Object Lock's outputs exist only with a lock mode (none by default).
        let conditional = archive["Outputs"][&name].get("Condition").is_some();
        match outputs[&name].as_str() {
            _ if variable == "AWS_SECRET_NAME" => {}
            Some(value) => env.push((variable, value.to_owned())),
            None => assert!(conditional, "no output {name}: {outputs}"),
        }
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let get = |variable: &str| env.iter().find(|(k, _)| k == variable).map(|(_, v)| v.clone()).unwrap();
    let (bucket, folder, kms) = (
        get("WICKRIO_S3_BUCKET_NAME"),
        get("WICKRIO_S3_FOLDER_NAME"),
        get("WICKRIO_KMS_MSTRKEY_ARN"),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut bot = Bot::start(&env).await;
    for id in 1..=3 {
        assert_eq!(bot.post("application/json", text_message(id)).await.status(), 202);
    }
    assert!(bot.stop().await.success(), "{}", bot.log_text());

    let keys = moto.keys(&bucket).await;
    assert!(
        keys.iter().any(|k| k.contains("receivedMessages")),
        "{keys:?}\n{}",
        bot.log_text()
    );
    for key in &keys {
        assert!(key.starts_with(&format!("{folder}/")), "{key}");
        let (_, metadata) = moto.object(&bucket, key).await;
        assert_eq!(
            metadata.get("x-amz-wrap-alg").map(String::as_str),
            Some("kms+context"),
            "{key} is not client-side encrypted: {metadata:?}"
        );
    }
    let (code, out) = run_to_end(
        Command::new(common::BIN)
            .arg("verify")
            .arg(format!("s3://{bucket}/{folder}"))
            .arg("--public-key")
            .arg(bot.root.join("state/public_key.txt"))
            .env_clear()
            .envs(moto.env()),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(", 0 problem(s)"), "{out}");
    kms
}

fn promtool() -> Command {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.exists())
        .expect("promtool is missing: scripts/test installs it (Debian package prometheus)");
    let mut cmd = Command::new(found);
    cmd.current_dir(repo("deploy/prometheus"));
    cmd
}

#[test]
fn the_prometheus_rules_pass_promtools_check_and_their_unit_tests() {
    let (code, out) = run_to_end(promtool().args(["check", "rules", "alerts.yml"]));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SUCCESS: 9 rules found"), "{out}");
    let (code, out) = run_to_end(promtool().args(["test", "rules", "alerts.test.yml"]));
    assert_eq!(code, Some(0), "{out}");

    // The unit tests can fail: a threshold moved makes them.
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    std::fs::write(
        dir.path().join("alerts.yml"),
        rules.replace("Archive_Problems > 0", "Archive_Problems > 5"),
    )
    .unwrap();
    std::fs::copy(
        repo("deploy/prometheus/alerts.test.yml"),
        dir.path().join("alerts.test.yml"),
    )
    .unwrap();
    let (code, out) = run_to_end(
        promtool()
            .current_dir(dir.path())
            .args(["test", "rules", "alerts.test.yml"]),
    );
    assert_ne!(code, Some(0), "{out}");
}

/// The metric names a PromQL expression reads (a name is followed by its `{` selector in every
/// expression of the dashboard and the rules).
fn metrics_read(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    for (i, _) in expr.match_indices('{') {
        let start = expr[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |p| p + 1);
        if start < i && !bytes[start].is_ascii_digit() {
            names.push(expr[start..i].to_owned());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_the_rules_name_only_metrics_a_running_bot_exports() {
    let bot = Bot::start(&[]).await;
    let text = reqwest::get(bot.url("/metrics")).await.unwrap().text().await.unwrap();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    assert!(exported.contains("process_resident_memory_bytes"), "{text}");

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/retention-bot.json")).unwrap()).unwrap();
    let mut shown = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = metrics_read(expr);
            assert!(!names.is_empty(), "{expr} names no metric");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "the dashboard's {expr} reads {name}, which the bot does not export"
                );
                shown.insert(name);
            }
        }
    }
    // Every metric the bot exports is on the dashboard.
    let missing: Vec<&String> = exported.difference(&shown).collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");

    let rules = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let exprs: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).collect();
    assert_eq!(exprs.len(), 9);
    for expr in exprs {
        for name in metrics_read(expr) {
            // `up` is Prometheus' own: whether it could scrape the bot at all.
            assert!(name == "up" || exported.contains(&name), "the rule {expr} reads {name}");
        }
    }
    assert_eq!(
        metrics_read(r#"rate(Messages_Rx{bot_name=~"$bot"}[5m])"#),
        ["Messages_Rx"]
    );
}
