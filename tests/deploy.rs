//! The deployment files: every IAM policy is valid JSON and passes the `parliament` linter (from
//! `.venv`), the deployment doc's (docs/deployment.md) setting-to-actions map matches the policies, the
//! combined policy holds every feature policy, and the ECS task definition and compose file say what
//! the deployment doc says they do.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::aws::venv_bin;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn policies() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("iam"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn actions(policy: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for statement in policy["Statement"].as_array().unwrap() {
        match &statement["Action"] {
            Value::String(a) => out.push(a.clone()),
            Value::Array(list) => out.extend(list.iter().map(|a| a.as_str().unwrap().to_owned())),
            other => panic!("Action is {other}"),
        }
    }
    out
}

#[test]
fn every_iam_policy_is_valid_json_and_passes_parliament() {
    let files = policies();
    assert!(files.len() >= 9, "{files:?}");
    for file in files {
        let policy = json(&file);
        assert_eq!(policy["Version"], "2012-10-17", "{}", file.display());
        for statement in policy["Statement"].as_array().unwrap() {
            if statement["Resource"] == "*" && statement["Action"] == "kms:CreateKey" {
                // A key to be has no ARN yet: creation is held to symmetric single-region keys
                // carrying the period tag only.
                assert!(file.ends_with("iam/period-keys-create.json"), "{}", file.display());
                assert_eq!(
                    statement["Condition"]["StringEquals"]["kms:KeySpec"],
                    "SYMMETRIC_DEFAULT"
                );
                assert_eq!(
                    statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
                    serde_json::json!(["retention-bot-period"])
                );
            } else if statement["Resource"] == "*" {
                // Only CloudWatch has no resource to scope: it is held to the WickrIO namespace.
                assert_eq!(
                    statement["Action"],
                    "cloudwatch:PutMetricData",
                    "{}: unscoped",
                    file.display()
                );
                assert_eq!(
                    statement["Condition"]["StringEquals"]["cloudwatch:namespace"],
                    "WickrIO"
                );
            }
        }
        // parliament reads stdin when it is not a terminal, so the policy goes in as --string.
        let out = Command::new(venv_bin("parliament"))
            .args([
                "--minimum_severity",
                "INFO",
                "--include-community-auditors",
                "--json",
                "--string",
            ])
            .arg(std::fs::read_to_string(&file).unwrap())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let raw = String::from_utf8_lossy(&out.stdout);
        // Assuming a role is getting its credentials: the one finding that policy must have, and
        // only that one (on sts:AssumeRole, nothing else).
        // Creating period keys is creating a key (with its default key policy): that one finding,
        // on kms:CreateKey only, in that policy only.
        // kms:ResourceAliases (AWS KMS ABAC, "Use aliases to control access to KMS keys") applies to
        // every operation on a key resource; parliament's action table predates it, so it calls the
        // condition unknown. Only that condition key is let through.
        let expected = |f: &&str| {
            (file.ends_with("iam/assume-role.json")
                && f.contains("\"CREDENTIALS_EXPOSURE\"")
                && f.contains("\"actions\": [\"sts:assumerole\"]"))
                || (file.ends_with("iam/period-keys-create.json")
                    && f.contains("\"PERMISSIONS_MANAGEMENT_ACTIONS\"")
                    && f.contains("\"actions\": [\"kms:createkey\"]"))
                || (f.contains("\"UNKNOWN_CONDITION_FOR_ACTION\"")
                    && f.contains("\"detail\": \"Unknown condition kms:ResourceAliases for action kms:"))
        };
        let raw: Vec<&str> = raw.lines().filter(|f| !f.trim().is_empty()).collect();
        let findings = raw
            .iter()
            .filter(|f| !expected(f))
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
        // parliament exits 1 when it found anything, expected or not.
        let ran = out.status.success() || (out.status.code() == Some(1) && !raw.is_empty());
        assert!(
            ran && findings.trim().is_empty(),
            "{}: parliament found:\n{findings}{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// parliament lints identity policies only (it wants a Resource), so trust policies are checked here.
#[test]
fn trust_policies_let_only_their_service_assume_the_role() {
    for (file, service) in [
        ("iam/trust/ecs-task.json", "ecs-tasks.amazonaws.com"),
        ("iam/trust/ec2-instance.json", "ec2.amazonaws.com"),
    ] {
        let policy = json(&repo(file));
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1, "{file}");
        let s = &statements[0];
        assert_eq!(s["Effect"], "Allow");
        assert_eq!(s["Principal"], serde_json::json!({ "Service": service }), "{file}");
        assert_eq!(s["Action"], "sts:AssumeRole", "{file}");
        assert!(s.get("Resource").is_none(), "{file}");
    }
    // The other account's role trusts one role of the bot's account, with an external ID.
    let cross = json(&repo("iam/trust/cross-account.json"));
    let s = &cross["Statement"][0];
    assert_eq!(
        (s["Effect"].as_str(), s["Action"].as_str()),
        (Some("Allow"), Some("sts:AssumeRole"))
    );
    assert!(s["Principal"]["AWS"].as_str().unwrap().contains(":role/"));
    assert!(s["Condition"]["StringEquals"]["sts:ExternalId"].is_string());
}

#[test]
fn the_combined_policy_holds_every_feature_policy_of_the_bot() {
    let all = json(&repo("iam/all.json"));
    let combined = all["Statement"].as_array().unwrap();
    for part in [
        "s3-kms",
        "s3-object-lock",
        "secrets-manager-write-back",
        "sns",
        "sqs",
        "cloudwatch",
    ] {
        for statement in json(&repo(&format!("iam/{part}.json")))["Statement"]
            .as_array()
            .unwrap()
        {
            assert!(combined.contains(statement), "iam/all.json lacks {statement} of {part}");
        }
    }
    assert!(!actions(&all).iter().any(|a| a.ends_with(":*")), "no wildcard actions");
}

/// Every KMS statement's context condition lets both envelope formats through: a policy that
/// allowed only V2's would refuse every V3 data key on real AWS (moto does not enforce IAM).
#[test]
fn kms_statements_allow_both_encryption_formats() {
    let mut seen = 0;
    for file in policies() {
        for statement in json(&file)["Statement"].as_array().unwrap() {
            let condition = &statement["Condition"]["StringEquals"]["kms:EncryptionContext:aws:x-amz-cek-alg"];
            if condition.is_null() {
                continue;
            }
            seen += 1;
            let allowed: Vec<&str> = condition
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            assert!(
                allowed.contains(&"AES/GCM/NoPadding") && allowed.contains(&"115"),
                "{}: {allowed:?}",
                file.display()
            );
        }
    }
    assert!(seen >= 4, "the KMS statements: {seen}");
}

#[test]
fn the_deployment_doc_maps_each_aws_setting_to_actions_its_policy_grants() {
    let doc = std::fs::read_to_string(repo("docs/deployment.md")).unwrap();
    let table = doc
        .split("| Setting | Actions | Policy |")
        .nth(1)
        .expect("the deployment doc's IAM table");
    let rows: Vec<&str> = table.lines().skip(2).take_while(|l| l.starts_with('|')).collect();
    for setting in [
        "WICKRIO_S3_BUCKET_NAME",
        "WICKRIO_KMS_MSTRKEY_ARN",
        "WICKRIO_S3_OBJECT_LOCK_MODE",
        "AWS_SECRET_NAME",
        "WICKRIO_SECRET_UPDATE",
        "WICKRIO_SNS_TOPIC_ARN",
        "WICKRIO_SQS_QUEUE_URL",
        "WICKRIO_METRICS_TYPE",
        "WICKRIO_ROLE_ARN",
    ] {
        assert!(
            rows.iter().any(|r| r.contains(&format!("`{setting}`"))),
            "no row for {setting}"
        );
    }
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let policy_file = cells[3].trim_matches('`');
        let granted = actions(&json(&repo(policy_file)));
        // Every `service:Action` named in the row, except what the row says lives elsewhere.
        for action in cells[2].split('`').skip(1).step_by(2).filter(|a| a.contains(':')) {
            if action == "kms:Decrypt" && cells[2].contains("secret's key") {
                continue;
            }
            if action.starts_with("aws:") {
                continue;
            }
            assert!(
                granted.iter().any(|g| g == action),
                "{policy_file} does not grant {action}"
            );
        }
    }
}

#[test]
fn the_ecs_task_keeps_state_on_efs_injects_the_secret_and_has_time_to_flush() {
    let task = json(&repo("deploy/ecs-task-definition.json"));
    assert_eq!(task["requiresCompatibilities"], serde_json::json!(["FARGATE"]));
    let bot = &task["containerDefinitions"][0];
    let env = |name: &str| {
        bot["environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_owned())
    };
    let bot_name = env("WICKRIO_BOT_NAME").unwrap();
    let mount = &bot["mountPoints"][0];
    assert_eq!(mount["containerPath"], format!("/tmp/{bot_name}"));
    let volume = task["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["sourceVolume"])
        .unwrap();
    assert_eq!(volume["efsVolumeConfiguration"]["transitEncryption"], "ENABLED");
    assert!(env("AWS_SECRET_NAME").is_some());
    assert!(
        !bot["secrets"].as_array().unwrap().is_empty(),
        "a secret injected by ECS"
    );
    let grace: u64 = env("WICKRIO_SHUTDOWN_GRACE_SECS").unwrap().parse().unwrap();
    let stop = bot["stopTimeout"].as_u64().unwrap();
    assert!(stop <= 120 && stop >= grace + 10, "stopTimeout {stop} vs grace {grace}");
    assert_eq!(
        bot["healthCheck"]["command"],
        serde_json::json!(["CMD", "/usr/local/bin/retention-bot", "healthcheck"])
    );
    // The token is required on a non-loopback address: it must come with it.
    assert_eq!(env("WICKRIO_INGEST_ADDR").as_deref(), Some("0.0.0.0:8080"));
    assert!(
        bot["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "WICKRIO_INGEST_TOKEN")
    );
}

#[test]
fn the_compose_demo_runs_the_bot_with_encryption_against_local_stand_ins() {
    let script = r#"
import json, sys, yaml
print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
"#;
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(repo("docker-compose.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let compose: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bot = &compose["services"]["bot"];
    assert_eq!(bot["build"], ".");
    let env = &bot["environment"];
    assert_eq!(
        env["AWS_ENDPOINT_URL"], "http://aws:5000",
        "merged from the moto credentials"
    );
    assert!(
        env["WICKRIO_KMS_MSTRKEY_ARN"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:kms:")
    );
    assert_eq!(env["WICKRIO_S3_BUCKET_NAME"], "retention");
    assert_eq!(
        bot["depends_on"]["setup"]["condition"],
        "service_completed_successfully"
    );
    assert!(
        compose["services"]["setup"]["command"][0]
            .as_str()
            .unwrap()
            .contains("create-bucket --bucket retention")
    );
}
