//! Every setting the bot reads, with its default and meaning: the one table that `--help` prints and
//! the README's configuration table follows.

/// A setting's name, default and meaning: the one table that `--help` and the README follow.
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "WICKRIO_BOT_NAME",
        default: "(required)",
        meaning: "the bot's name; default paths live under /tmp/<botname>",
    },
    Setting {
        name: "WICKRIO_NETWORK",
        default: "http",
        meaning: "where messages come from: http (producers POST them), matrix (the bot is a user on a homeserver) or sqs (the bot drains an SQS queue, beside any number of others)",
    },
    Setting {
        name: "WICKRIO_MATRIX_HOMESERVER",
        default: "(required with matrix)",
        meaning: "the homeserver's client URL; WICKRIO_BOT_NAME is then the bot's user (localpart or @user:server)",
    },
    Setting {
        name: "WICKRIO_SQS_QUEUE_URL",
        default: "(required with sqs)",
        meaning: "the queue's URL (standard or FIFO); also the secret's sqs_queue_url",
    },
    Setting {
        name: "WICKRIO_SQS_REGION",
        default: "the queue URL's region",
        meaning: "the queue's region (else AWS_DEFAULT_REGION for a URL that names none)",
    },
    Setting {
        name: "WICKRIO_SQS_RECEIVERS",
        default: "4",
        meaning: "long-polling receivers (20 s waits, 10 messages a call), 1 to 64",
    },
    Setting {
        name: "WICKRIO_SQS_PAYLOAD_BUCKETS",
        default: "(none)",
        meaning: "buckets (comma-separated) the bot reads Extended Client bodies and file.s3 attachments from; any other is refused",
    },
    Setting {
        name: "WICKRIO_SQS_DELETE_PAYLOADS",
        default: "false",
        meaning: "true: delete a body the SQS Extended Client put in S3 once its message is archived",
    },
    Setting {
        name: "WICKRIO_BOT_PASSWORD",
        default: "(none)",
        meaning: "the password: the initial one on first run, the generated one after (else the terminal prompt)",
    },
    Setting {
        name: "WICKRIO_ROTATE_PASSWORD",
        default: "(none)",
        meaning: "at start-up, change the password to this one (at least 12 characters)",
    },
    Setting {
        name: "WICKRIO_STATE_DIR",
        default: "/tmp/<botname>/state",
        meaning: "the bot's sealed identity, public key and manifest chain head; keep it (mount it) across restarts",
    },
    Setting {
        name: "WICKRIO_COMP_MESGDEST",
        default: "/tmp/<botname>/compliance/messages",
        meaning: "directory of the message files",
    },
    Setting {
        name: "WICKRIO_COMP_FILEDEST",
        default: "/tmp/<botname>/compliance/attachments",
        meaning: "directory of the attachments",
    },
    Setting {
        name: "WICKRIO_COMP_BASENAME",
        default: "receivedMessages",
        meaning: "first part of every message file's name",
    },
    Setting {
        name: "WICKRIO_COMP_FILESIZE",
        default: "1000000000 (1048576 = 1 GiB with S3)",
        meaning: "rotate a message file at this size, KiB",
    },
    Setting {
        name: "WICKRIO_COMP_TIMEROTATE",
        default: "0 (off; 10 with S3)",
        meaning: "rotate a message file this many minutes after it was opened (decimals allowed: 0.5 = 30 s)",
    },
    Setting {
        name: "WICKRIO_COMP_MIN_FREE_MB",
        default: "512",
        meaning: "refuse new data (507) while either destination's disk has less free space, MiB",
    },
    Setting {
        name: "WICKRIO_INGEST_ADDR",
        default: "127.0.0.1:8080",
        meaning: "address of the HTTP source",
    },
    Setting {
        name: "WICKRIO_INGEST_TOKEN",
        default: "(none)",
        meaning: "bearer token required on /v1/*; mandatory on a non-loopback address",
    },
    Setting {
        name: "WICKRIO_INGEST_MAX_BODY",
        default: "16MiB",
        meaning: "largest JSON/NDJSON body or multipart `message` part (bytes, or with KiB/MiB/GiB)",
    },
    Setting {
        name: "WICKRIO_INGEST_MAX_BUFFER",
        default: "256MiB",
        meaning: "request bodies held in memory at once across all requests, reserved as bytes arrive; a request that cannot get its share within 10 s gets 503",
    },
    Setting {
        name: "WICKRIO_INGEST_IDLE_SECS",
        default: "30",
        meaning: "a request whose headers take longer, or whose body sends nothing for this long, is cut off (408) and its memory released",
    },
    Setting {
        name: "WICKRIO_INGEST_MAX_CONNECTIONS",
        default: "512",
        meaning: "connections served at once; more are answered 503 and closed",
    },
    Setting {
        name: "WICKRIO_INGEST_MAX_FILE",
        default: "60GiB",
        meaning: "largest attachment (bytes, or with KiB/MiB/GiB)",
    },
    Setting {
        name: "WICKRIO_SHUTDOWN_GRACE_SECS",
        default: "8",
        meaning: "on SIGTERM, how long in-flight requests may take before they are cut off unacknowledged (and, with S3, how long queued uploads may take before they are left for the next start)",
    },
    Setting {
        name: "WICKRIO_S3_BUCKET_NAME",
        default: "(none: keep files locally)",
        meaning: "upload every closed file to this bucket, then delete the local copy",
    },
    Setting {
        name: "WICKRIO_S3_REGION",
        default: "us-east-1",
        meaning: "the bucket's region",
    },
    Setting {
        name: "WICKRIO_S3_FOLDER_NAME",
        default: "(none)",
        meaning: "key prefix for uploaded objects (<folder>/<file name>), at most 512 bytes",
    },
    Setting {
        name: "WICKRIO_S3_OBJECT_LOCK_MODE",
        default: "(none: no lock)",
        meaning: "GOVERNANCE or COMPLIANCE: write every object under S3 Object Lock retention (the bucket must have Object Lock enabled)",
    },
    Setting {
        name: "WICKRIO_S3_RETENTION_DAYS",
        default: "(required with a lock mode)",
        meaning: "days each object is retained after its file was closed, 1 to 36500",
    },
    Setting {
        name: "WICKRIO_VERIFY_EVERY_HOURS",
        default: "(none: no scheduled check)",
        meaning: "check the bucket as `verify s3://` does this often (hours, decimals allowed), the result as an event and the Archive_Problems gauge",
    },
    Setting {
        name: "WICKRIO_KMS_MSTRKEY_ARN",
        default: "(none: upload plain)",
        meaning: "encrypt every object client-side (the S3 Encryption Client's V2 or V3 format, WICKRIO_S3_ENCRYPTION_FORMAT) under a data key of this KMS key: a key or alias ARN, or alias/<name> (in WICKRIO_KMS_REGION, else the bucket's region); an alias template (...:alias/retention-{yyyy}-{mm}, alias/retention-{yyyy}-{mm} or -{yyyy}) gives each month or year its own key, which `shred` can destroy",
    },
    Setting {
        name: "WICKRIO_KMS_CREATE_PERIOD_KEYS",
        default: "(false; set only with a period template)",
        meaning: "with a period template: create the coming period's KMS key and alias a day ahead when they do not exist (iam/period-keys-create.json)",
    },
    Setting {
        name: "WICKRIO_KMS_REGION",
        default: "(the key ARN's region)",
        meaning: "region of the KMS key",
    },
    Setting {
        name: "WICKRIO_S3_ENCRYPTION_FORMAT",
        default: "(v2; set only with WICKRIO_KMS_MSTRKEY_ARN)",
        meaning: "v2 (the original's S3 Encryption Client format) or v3 (key commitment, ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY, what current official clients read by default); decrypt, verify and export read both",
    },
    Setting {
        name: "WICKRIO_KMS_DATAKEY_MAX_OBJECTS",
        default: "(off: a data key per object; 1000 when only the age is set)",
        meaning: "reuse a data key for up to this many objects (1 to 1048576), each with a fresh random IV, then drop and wipe it",
    },
    Setting {
        name: "WICKRIO_KMS_DATAKEY_MAX_AGE_SECS",
        default: "(off; 300 when only the object count is set)",
        meaning: "drop a reused data key after this many seconds (1 to 86400); it is replaced at least every 60 s whatever this says, so that a key scheduled for deletion stops being used within that bound",
    },
    Setting {
        name: "WICKRIO_ROLE_ARN",
        default: "(none: the default credential chain)",
        meaning: "an IAM role every AWS client assumes (STS AssumeRole on top of the default chain, renewed before expiry), e.g. to write to another account's bucket",
    },
    Setting {
        name: "WICKRIO_ROLE_EXTERNAL_ID",
        default: "(none)",
        meaning: "the external ID the role's trust policy requires (sts:ExternalId)",
    },
    Setting {
        name: "WICKRIO_ROLE_SESSION_NAME",
        default: "retention-bot",
        meaning: "the role session's name, as the other account's CloudTrail shows it",
    },
    Setting {
        name: "AWS_SECRET_NAME",
        default: "(none)",
        meaning: "Secrets Manager secret (JSON) whose keys stand in for unset variables: password, s3_bucket_name, s3_region, s3_folder_name, s3_object_lock_mode, s3_retention_days, verify_every_hours, kms_master_key_arn, kms_region, sns_topic_arn",
    },
    Setting {
        name: "AWS_SECRET_REGION",
        default: "(AWS_DEFAULT_REGION)",
        meaning: "the secret's region",
    },
    Setting {
        name: "WICKRIO_SECRET_UPDATE",
        default: "false",
        meaning: "true: write the generated or rotated password into the secret's password key (needs secretsmanager:PutSecretValue)",
    },
    Setting {
        name: "AWS_DEFAULT_REGION",
        default: "us-east-1",
        meaning: "region of the secret (unless AWS_SECRET_REGION) and of CloudWatch",
    },
    Setting {
        name: "WICKRIO_SNS_TOPIC_ARN",
        default: "(none)",
        meaning: "publish start, stop and error events to this SNS topic (its region is the ARN's)",
    },
    Setting {
        name: "WICKRIO_EVENT_REPEAT_SECS",
        default: "300",
        meaning: "repeats of one kind of event within this many seconds are sent once, then as one event with a count",
    },
    Setting {
        name: "WICKRIO_METRICS_TYPE",
        default: "(none)",
        meaning: "cloudwatch: publish the counters to CloudWatch namespace WickrIO, dimension BotName",
    },
    Setting {
        name: "WICKRIO_METRICS_INTERVAL_SECS",
        default: "60",
        meaning: "seconds between CloudWatch publications",
    },
    Setting {
        name: "WICKRIO_WATCHDOG_SECS",
        default: "120",
        meaning: "pending work without progress this long is a watchdog warning; five times as long, a failure",
    },
    Setting {
        name: "AWS_ENDPOINT_URL",
        default: "(AWS)",
        meaning: "send AWS calls to another endpoint (an S3-compatible store, a test server); S3 then uses path-style addressing",
    },
    Setting {
        name: "WICKRIO_RUN_AS",
        default: "(none; 10001:10001 in the image)",
        meaning: "started as root: give the bot's directories to this <uid>:<gid> and run as it (for root-owned volume mounts)",
    },
    Setting {
        name: "WICKRIO_LOG_FORMAT",
        default: "text",
        meaning: "log format: text or json (levels from RUST_LOG, default info)",
    },
    Setting {
        name: "WICKRIO_UMASK",
        default: "027",
        meaning: "file mode creation mask (octal): with 027 the bot's files are 0640 and its directories 0750; the identity is 0600 whatever it says",
    },
];

/// `WICKRIO_*` variables in `names` that are no setting, each with the setting it is closest to (a
/// likely misspelling), if one is close. A misspelt variable is otherwise silently ignored.
pub fn unknown_settings(names: impl IntoIterator<Item = String>) -> Vec<(String, Option<&'static str>)> {
    let mut unknown: Vec<_> = names
        .into_iter()
        .filter(|n| n.starts_with("WICKRIO_") && !SETTINGS.iter().any(|s| s.name == n))
        .map(|n| {
            let closest = SETTINGS
                .iter()
                .map(|s| (strsim::levenshtein(&n, s.name), s.name))
                .min()
                .filter(|(distance, _)| *distance <= 3)
                .map(|(_, name)| name);
            (n, closest)
        })
        .collect();
    unknown.sort();
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_setting_is_named_with_the_one_meant() {
        let found = unknown_settings(
            ["WICKRIO_COMP_FILESIZ", "WICKRIO_BOT_NAME", "WICKRIO_FROBNICATE", "PATH"].map(String::from),
        );
        assert_eq!(
            found,
            vec![
                ("WICKRIO_COMP_FILESIZ".to_owned(), Some("WICKRIO_COMP_FILESIZE")),
                ("WICKRIO_FROBNICATE".to_owned(), None),
            ]
        );
    }
}
