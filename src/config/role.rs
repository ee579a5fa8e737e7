//! `WICKRIO_ROLE_ARN`: an IAM role every AWS client assumes (STS AssumeRole on top of the default
//! credential chain), for writing to another account's bucket. Read before anything talks to AWS,
//! for the daemon and for the tools alike.

use super::ConfigError;
use crate::aws::AssumeRole;

const ARN: &str = "WICKRIO_ROLE_ARN";
const EXTERNAL_ID: &str = "WICKRIO_ROLE_EXTERNAL_ID";
const SESSION_NAME: &str = "WICKRIO_ROLE_SESSION_NAME";

/// The characters STS accepts in a session name or an external ID (`[\w+=,.@-]`; an external ID
/// also `:/`).
fn sts_chars(text: &str, extra: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) || extra.contains(c))
}

/// The role settings; `None` when `WICKRIO_ROLE_ARN` is unset.
pub fn assume_role(get: &impl Fn(&str) -> Option<String>) -> Result<Option<AssumeRole>, ConfigError> {
    let Some(arn) = get(ARN) else {
        for var in [EXTERNAL_ID, SESSION_NAME] {
            if get(var).is_some() {
                return Err(ConfigError::new(
                    var,
                    "is set, but WICKRIO_ROLE_ARN is not: there is no role to assume",
                    format!("set WICKRIO_ROLE_ARN too, or unset {var}"),
                ));
            }
        }
        return Ok(None);
    };
    // arn:<partition>:iam::<12-digit account>:role/<path and name>
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if !partition.is_empty()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty()));
    if !ok {
        return Err(ConfigError::new(
            ARN,
            format!("{arn:?} is not an IAM role ARN"),
            "arn:aws:iam::<12-digit account>:role/<name>",
        ));
    }
    let session_name = get(SESSION_NAME).unwrap_or_else(|| "retention-bot".to_owned());
    if !(2..=64).contains(&session_name.len()) || !sts_chars(&session_name, "") {
        return Err(ConfigError::new(
            SESSION_NAME,
            format!("{session_name:?} is not a session name STS accepts"),
            "2 to 64 letters, digits or _+=,.@-",
        ));
    }
    let external_id = get(EXTERNAL_ID);
    if let Some(id) = &external_id
        && (!(2..=1224).contains(&id.len()) || !sts_chars(id, ":/"))
    {
        // The value is not echoed: an external ID is not a secret, but it is not for logs either.
        return Err(ConfigError::new(
            EXTERNAL_ID,
            format!("is not an external ID STS accepts ({} characters)", id.len()),
            "2 to 1224 letters, digits or _+=,.@:/-",
        ));
    }
    Ok(Some(AssumeRole {
        arn,
        session_name,
        external_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<AssumeRole>, ConfigError> {
        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        assume_role(&get)
    }

    #[test]
    fn a_role_arn_with_its_options_or_a_clear_refusal() {
        assert_eq!(parse(&[]).unwrap(), None);
        let role = parse(&[(ARN, "arn:aws:iam::123456789012:role/ops/retention-writer")])
            .unwrap()
            .unwrap();
        assert_eq!((role.session_name.as_str(), role.external_id), ("retention-bot", None));
        let role = parse(&[
            (ARN, "arn:aws-us-gov:iam::123456789012:role/w"),
            (SESSION_NAME, "bot-1@eu"),
            (EXTERNAL_ID, "tenant:42"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(role.external_id.as_deref(), Some("tenant:42"));
        for bad in [
            "arn:aws:iam::123:role/x",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:s3:::bucket",
            "retention-writer",
        ] {
            assert_eq!(parse(&[(ARN, bad)]).unwrap_err().var, ARN, "{bad}");
        }
        let arn = (ARN, "arn:aws:iam::123456789012:role/w");
        assert_eq!(
            parse(&[arn, (SESSION_NAME, "has space")]).unwrap_err().var,
            SESSION_NAME
        );
        assert_eq!(parse(&[arn, (EXTERNAL_ID, "x")]).unwrap_err().var, EXTERNAL_ID);
        assert!(
            !parse(&[arn, (EXTERNAL_ID, "se cret")])
                .unwrap_err()
                .problem
                .contains("se cret")
        );
        assert_eq!(parse(&[(EXTERNAL_ID, "abc")]).unwrap_err().var, EXTERNAL_ID);
    }
}
