//! The Secrets Manager secret (`AWS_SECRET_NAME`). The original keeps its whole configuration in one
//! JSON secret whose keys stand in for environment variables; so does this bot.
//!
//! Precedence: an environment variable that is set (non-empty) wins over the secret's key, as it does
//! for the password (`WICKRIO_BOT_PASSWORD` before the secret's `password`). A variable on the
//! `docker run` line is the more specific, local choice; a warning names every key it overrides.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use zeroize::Zeroizing;

use super::aws_names::check_region;
use super::{ConfigError, Secret};
use crate::aws::{Aws, AwsFailure};

/// The secret's keys and the environment variables they stand in for.
pub const KEYS: &[(&str, &str)] = &[
    ("password", "WICKRIO_BOT_PASSWORD"),
    ("s3_bucket_name", "WICKRIO_S3_BUCKET_NAME"),
    ("s3_region", "WICKRIO_S3_REGION"),
    ("s3_folder_name", "WICKRIO_S3_FOLDER_NAME"),
    ("kms_master_key_arn", "WICKRIO_KMS_MSTRKEY_ARN"),
    ("kms_region", "WICKRIO_KMS_REGION"),
    ("s3_object_lock_mode", "WICKRIO_S3_OBJECT_LOCK_MODE"),
    ("s3_retention_days", "WICKRIO_S3_RETENTION_DAYS"),
    ("verify_every_hours", "WICKRIO_VERIFY_EVERY_HOURS"),
    ("sns_topic_arn", "WICKRIO_SNS_TOPIC_ARN"),
    ("sqs_queue_url", "WICKRIO_SQS_QUEUE_URL"),
];

/// Which secret, in which region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretLocation {
    pub name: String,
    pub region: String,
}

impl SecretLocation {
    /// `AWS_SECRET_NAME`, in `AWS_SECRET_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let get = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let Some(name) = get("AWS_SECRET_NAME") else {
            return Ok(None);
        };
        let (var, region) = match (get("AWS_SECRET_REGION"), get("AWS_DEFAULT_REGION")) {
            (Some(r), _) => ("AWS_SECRET_REGION", r),
            (None, Some(r)) => ("AWS_DEFAULT_REGION", r),
            (None, None) => ("AWS_SECRET_REGION", "us-east-1".to_owned()),
        };
        check_region(var, &region)?;
        Ok(Some(Self { name, region }))
    }
}

/// Why the secret could not be used. Every message names the secret, never a value in it.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret {name:?} was not found in region {region}: check AWS_SECRET_NAME and AWS_SECRET_REGION (or AWS_DEFAULT_REGION)"
    )]
    NotFound { name: String, region: String },
    #[error(
        "access to secret {name:?} was denied; the bot's role needs secretsmanager:{action} on it (and kms:Decrypt if it is encrypted with a customer managed key)"
    )]
    Denied {
        name: String,
        action: &'static str,
        #[source]
        cause: AwsFailure,
    },
    #[error(transparent)]
    Unreachable(AwsFailure),
    #[error("secret {name:?} has no string value (it holds binary data); store the settings as a JSON object")]
    Binary { name: String },
    #[error(
        "secret {name:?} is not JSON; it must be a JSON object such as {{\"password\": \"...\", \"s3_bucket_name\": \"...\"}}"
    )]
    NotJson {
        name: String,
        #[source]
        cause: serde_json::Error,
    },
    #[error("secret {name:?} is JSON but not an object; it must be a JSON object of string values")]
    NotObject { name: String },
    #[error("secret {name:?}: key {key:?} is {found}; it must be a string")]
    WrongType {
        name: String,
        key: String,
        found: &'static str,
    },
}

/// The secret's settings. Values are held as [`Secret`]s: wiped on drop, never printed.
#[derive(Debug, Default)]
pub struct SecretValues {
    name: String,
    values: BTreeMap<&'static str, Secret>,
}

impl SecretValues {
    /// Parses the secret's JSON text. Unknown keys are warned about and ignored.
    pub fn parse(name: &str, text: &str) -> Result<Self, SecretError> {
        let map = parse_object(name, text)?;
        let mut values = BTreeMap::new();
        for (key, value) in map {
            let Some(&(known, _)) = KEYS.iter().find(|(k, _)| *k == key) else {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                tracing::warn!(secret = name, key, known = ?known, "unknown key in the secret is ignored");
                continue;
            };
            match value {
                serde_json::Value::String(s) if s.trim().is_empty() => {}
                serde_json::Value::String(s) => {
                    values.insert(known, Secret::new(s));
                }
                serde_json::Value::Null => {}
                other => {
                    return Err(SecretError::WrongType {
                        name: name.to_owned(),
                        key,
                        found: json_type(&other),
                    });
                }
            }
        }
        Ok(Self {
            name: name.to_owned(),
            values,
        })
    }

    /// The secret's `password` key: the password source after `WICKRIO_BOT_PASSWORD`.
    pub fn password(&self) -> Option<Secret> {
        self.values.get("password").cloned()
    }

    /// The secret's value standing in for environment variable `var` (never the password, which
    /// login takes separately so it can tell the sources apart).
    fn for_var(&self, var: &str) -> Option<String> {
        let (key, _) = KEYS.iter().find(|(k, v)| *v == var && *k != "password")?;
        self.values.get(key).map(|s| s.expose().to_owned())
    }

    /// Logs where each setting the secret could give came from, and every key the environment
    /// overrides. Never a value.
    pub fn log_sources(&self, env: impl Fn(&str) -> Option<String>) {
        for &(key, var) in KEYS {
            let in_env = env(var).is_some_and(|v| !v.trim().is_empty());
            match (in_env, self.values.contains_key(key)) {
                (true, true) => tracing::warn!(
                    setting = var,
                    secret = %self.name,
                    key,
                    "set both in the environment and in the secret: the environment's value is used"
                ),
                (false, true) => {
                    tracing::info!(setting = var, secret = %self.name, key, "setting taken from the secret")
                }
                (true, false) => tracing::info!(setting = var, "setting taken from the environment"),
                (false, false) => {}
            }
        }
    }
}

/// The settings lookup: the environment first, then the secret.
pub fn layered<'a>(
    env: impl Fn(&str) -> Option<String> + 'a,
    secret: Option<&'a SecretValues>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |var| {
        env(var)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| secret?.for_var(var))
    }
}

/// Reads the secret with credentials from the SDK's default chain.
pub async fn fetch(location: &SecretLocation, aws: &Aws) -> Result<SecretValues, SecretError> {
    let text = read_string(&client(location, aws).await, location).await?;
    SecretValues::parse(&location.name, &text)
}

/// Writes `password` into the secret's `password` key, keeping every other key. The secret is read
/// again first, so keys an admin changed since start-up are kept too.
pub async fn store_password(location: &SecretLocation, password: &Secret, aws: &Aws) -> Result<(), SecretError> {
    let client = client(location, aws).await;
    let text = read_string(&client, location).await?;
    let mut map = parse_object(&location.name, &text)?;
    wipe_password(&mut map);
    map.insert(
        "password".to_owned(),
        serde_json::Value::String(password.expose().to_owned()),
    );
    let mut secret = serde_json::Value::Object(map);
    let updated = Zeroizing::new(secret.to_string());
    if let serde_json::Value::Object(map) = &mut secret {
        wipe_password(map);
    }
    client
        .put_secret_value()
        .secret_id(&location.name)
        .secret_string(updated.as_str())
        .send()
        .await
        .map_err(|e| sdk_error(location, "PutSecretValue", e))?;
    Ok(())
}

/// serde_json does not wipe the strings it drops: the password's copy is wiped by hand.
fn wipe_password(map: &mut serde_json::Map<String, serde_json::Value>) {
    if let Some(serde_json::Value::String(p)) = map.get_mut("password") {
        zeroize::Zeroize::zeroize(p);
    }
}

async fn client(location: &SecretLocation, aws: &Aws) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&aws.sdk_config(&location.region).await)
}

async fn read_string(
    client: &aws_sdk_secretsmanager::Client,
    location: &SecretLocation,
) -> Result<Zeroizing<String>, SecretError> {
    let out = client
        .get_secret_value()
        .secret_id(&location.name)
        .send()
        .await
        .map_err(|e| sdk_error(location, "GetSecretValue", e))?;
    out.secret_string
        .map(Zeroizing::new)
        .ok_or_else(|| SecretError::Binary {
            name: location.name.clone(),
        })
}

fn parse_object(name: &str, text: &str) -> Result<serde_json::Map<String, serde_json::Value>, SecretError> {
    // serde_json's messages give a line and column, never the text itself.
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(SecretError::NotObject { name: name.to_owned() }),
        Err(cause) => Err(SecretError::NotJson {
            name: name.to_owned(),
            cause,
        }),
    }
}

fn sdk_error<E>(
    location: &SecretLocation,
    action: &'static str,
    e: aws_sdk_secretsmanager::error::SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>,
) -> SecretError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let name = location.name.clone();
    let verb = if action == "GetSecretValue" { "read" } else { "update" };
    let failure = crate::aws::failure(&format!("{verb} secret {name:?}"), e);
    match failure.code.as_deref() {
        Some("ResourceNotFoundException") => SecretError::NotFound {
            name,
            region: location.region.clone(),
        },
        Some("AccessDeniedException" | "UnrecognizedClientException" | "InvalidSignatureException") => {
            SecretError::Denied {
                name,
                action,
                cause: failure,
            }
        }
        _ => SecretError::Unreachable(failure),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stand_in_for_unset_variables_only() {
        let secret = SecretValues::parse(
            "s",
            r#"{"password":"pw-from-secret","s3_bucket_name":"from-secret","s3_region":"eu-west-1","extra":1}"#,
        )
        .unwrap();
        let env = |k: &str| (k == "WICKRIO_S3_REGION").then(|| "us-west-2".to_owned());
        let get = layered(env, Some(&secret));
        assert_eq!(get("WICKRIO_S3_BUCKET_NAME").as_deref(), Some("from-secret"));
        assert_eq!(get("WICKRIO_S3_REGION").as_deref(), Some("us-west-2"));
        assert_eq!(
            get("WICKRIO_BOT_PASSWORD"),
            None,
            "the password goes to login, not the lookup"
        );
        assert_eq!(secret.password().unwrap().expose(), "pw-from-secret");
        assert!(!format!("{secret:?}").contains("pw-from-secret"));
    }

    #[test]
    fn bad_secrets_say_what_is_wrong() {
        let e = SecretValues::parse("s", "password=x").unwrap_err();
        assert!(matches!(e, SecretError::NotJson { .. }), "{e}");
        assert!(!e.to_string().contains("password=x"));
        let e = SecretValues::parse("s", r#"["a"]"#).unwrap_err();
        assert!(matches!(e, SecretError::NotObject { .. }), "{e}");
        let e = SecretValues::parse("s", r#"{"s3_region": 5}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret \"s\": key \"s3_region\" is a number; it must be a string"
        );
    }

    #[test]
    fn region_falls_back_to_the_default_region() {
        let loc = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            SecretLocation::from_env(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        };
        assert_eq!(loc(&[]).unwrap(), None);
        let region = |pairs: &[(&str, &str)]| loc(pairs).unwrap().unwrap().region;
        assert_eq!(region(&[("AWS_SECRET_NAME", "s")]), "us-east-1");
        assert_eq!(
            region(&[("AWS_SECRET_NAME", "s"), ("AWS_DEFAULT_REGION", "eu-west-1")]),
            "eu-west-1"
        );
        assert_eq!(
            region(&[
                ("AWS_SECRET_NAME", "s"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_SECRET_REGION", "ap-south-1")
            ]),
            "ap-south-1"
        );
        assert_eq!(
            loc(&[("AWS_SECRET_NAME", "s"), ("AWS_SECRET_REGION", "Nowhere")])
                .unwrap_err()
                .var,
            "AWS_SECRET_REGION"
        );
    }
}
