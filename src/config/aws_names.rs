//! AWS names in settings: regions and ARNs, checked by one set of rules.

use super::ConfigError;

/// Region names as AWS forms them (`us-east-1`, `eu-central-2`, `us-gov-west-1`).
pub(super) fn check_region(var: &'static str, region: &str) -> Result<(), ConfigError> {
    let ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        return Ok(());
    }
    Err(ConfigError::new(
        var,
        format!("{region:?} is not a region name"),
        "a region such as us-east-1",
    ))
}

/// The ARNs a setting may name: the service and the rule for the resource part.
pub(super) struct ArnKind {
    pub service: &'static str,
    pub resource_ok: fn(&str) -> bool,
    /// The accepted form, for the error message.
    pub accepted: &'static str,
}

/// A KMS key: `key/<id>` or `alias/<name>`.
pub(super) const KMS_KEY: ArnKind = ArnKind {
    service: "kms",
    resource_ok: |r| {
        r.strip_prefix("key/")
            .or_else(|| r.strip_prefix("alias/"))
            .is_some_and(|id| !id.is_empty())
    },
    accepted: "arn:aws:kms:<region>:<12-digit account>:key/<key id> (or alias/<name>)",
};

/// An SNS topic: a name without ':'.
pub(super) const SNS_TOPIC: ArnKind = ArnKind {
    service: "sns",
    resource_ok: |r| !r.is_empty() && !r.contains(':'),
    accepted: "arn:aws:sns:<region>:<12-digit account>:<topic name>",
};

/// `arn:<partition>:<service>:<region>:<12-digit account>:<resource>`; returns the region, checked.
pub(super) fn arn_region(var: &'static str, arn: &str, kind: &ArnKind) -> Result<String, ConfigError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, service, region, account, resource]
            if !partition.is_empty()
                && *service == kind.service
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && (kind.resource_ok)(resource) =>
        {
            check_region(var, region)?;
            Ok((*region).to_owned())
        }
        _ => Err(ConfigError::new(
            var,
            format!(
                "{arn:?} is not {}",
                if kind.service == "kms" {
                    "a KMS key ARN"
                } else {
                    "an SNS topic ARN"
                }
            ),
            kind.accepted,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_arns_follow_one_rule_for_partition_account_and_region() {
        let kms = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd";
        assert_eq!(arn_region("V", kms, &KMS_KEY).unwrap(), "eu-west-1");
        let alias = "arn:aws-us-gov:kms:us-gov-west-1:123456789012:alias/retention";
        assert_eq!(arn_region("V", alias, &KMS_KEY).unwrap(), "us-gov-west-1");
        let sns = "arn:aws:sns:us-east-1:123456789012:bot-events";
        assert_eq!(arn_region("V", sns, &SNS_TOPIC).unwrap(), "us-east-1");
        for bad in [
            "arn:aws:kms:eu-west-1:1234:key/1234abcd",         // account not 12 digits
            "arn::kms:eu-west-1:123456789012:key/1234abcd",    // no partition
            "arn:aws:kms:EU_WEST:123456789012:key/1234abcd",   // not a region
            "arn:aws:kms:eu-west-1:123456789012:key/",         // no key id
            "arn:aws:kms:eu-west-1:123456789012:secret/x",     // not a key
            "arn:aws:sns:eu-west-1:123456789012:key/1234abcd", // another service
        ] {
            let e = arn_region("WICKRIO_KMS_MSTRKEY_ARN", bad, &KMS_KEY).unwrap_err();
            assert_eq!(e.var, "WICKRIO_KMS_MSTRKEY_ARN", "{bad}");
        }
        for bad in [
            "arn:aws:sns:us-east-1:123456789012:",
            "arn:aws:sns:us-east-1:123456789012:a:b",
        ] {
            assert!(arn_region("V", bad, &SNS_TOPIC).is_err(), "{bad}");
        }
    }
}
