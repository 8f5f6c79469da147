//! What went wrong talking to AWS RDS, in the user's terms: which
//! credentials, region, endpoint or IAM action is missing, which instance
//! was not found, and what AWS said when it refused a request.
//!
//! Every SDK failure goes through [`classify`], so an error reads the same
//! whichever call produced it. AWS's own message is quoted, never
//! paraphrased; nothing pgplan sent (such as the master password) is ever
//! part of an error.

use std::error::Error as StdError;

use aws_sdk_rds::config::http::HttpResponse;
use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What went wrong talking to RDS.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RdsError {
    #[error("no AWS credentials found: {detail}")]
    #[diagnostic(
        code(pgplan::aws::credentials),
        help("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE naming a profile in ~/.aws/config or ~/.aws/credentials (`aws sso login --profile NAME` for SSO); on EKS, ECS or EC2 give the workload an IAM role")
    )]
    MissingCredentials { detail: String },

    #[error("AWS credentials could not be loaded: {detail}")]
    #[diagnostic(
        code(pgplan::aws::credentials_failed),
        help("the credential source pgplan found is misconfigured or expired; `aws sts get-caller-identity` with the same environment shows the problem (an expired SSO session needs `aws sso login`)")
    )]
    CredentialsFailed { detail: String },

    #[error("AWS rejected the credentials ({code}): {message}")]
    #[diagnostic(
        code(pgplan::aws::credentials_rejected),
        help("the access key is unknown, its secret is wrong, or the session token expired; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or the profile in AWS_PROFILE")
    )]
    CredentialsRejected { code: String, message: String },

    #[error("no AWS region: neither the spec nor the environment names one")]
    #[diagnostic(
        code(pgplan::aws::region),
        help("set `target.rds.region` in the spec, or AWS_REGION (or AWS_DEFAULT_REGION), or `region` in the AWS profile")
    )]
    MissingRegion,

    #[error("the RDS endpoint {endpoint} is unreachable ({action}): {message}")]
    #[diagnostic(
        code(pgplan::aws::unreachable),
        help("check the network path (proxy, VPC endpoint, firewall) to {endpoint}; if AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_RDS is set, it chose this endpoint — unset it to talk to AWS itself")
    )]
    Unreachable {
        endpoint: String,
        action: String,
        message: String,
    },

    #[error("access denied: the caller may not call rds:{action} on {target}: {message}")]
    #[diagnostic(
        code(pgplan::aws::access_denied),
        help("allow `rds:{action}` to the identity pgplan runs as (docs/rds.md lists the minimal IAM policy); `aws sts get-caller-identity` shows which identity that is")
    )]
    AccessDenied {
        action: String,
        target: String,
        message: String,
    },

    #[error("{what} does not exist in {region}")]
    #[diagnostic(
        code(pgplan::aws::not_found),
        help("check the identifier and the region (and the AWS account the credentials belong to); plan again if it was deleted meanwhile")
    )]
    NotFound { what: String, region: String },

    #[error("{what} already exists in {region}")]
    #[diagnostic(
        code(pgplan::aws::already_exists),
        help("the live state changed since the plan was made; plan again (an instance pgplan did not create needs `adopt: true`)")
    )]
    AlreadyExists { what: String, region: String },

    #[error("DB instance `{identifier}` has deletion protection; pgplan will not delete it")]
    #[diagnostic(
        code(pgplan::aws::deletion_protected),
        help("deletion protection is kept on purpose; if the instance really must go, turn it off first (`aws rds modify-db-instance --db-instance-identifier {identifier} --no-deletion-protection --apply-immediately`)")
    )]
    DeletionProtected { identifier: String },

    #[error("DB instance `{identifier}` was not created by pgplan (no `managed-by: pgplan` tag); pgplan will not delete it")]
    #[diagnostic(
        code(pgplan::aws::not_managed),
        help("pgplan deletes only instances it created; if this one must go, delete it yourself")
    )]
    NotManaged { identifier: String },

    #[error("AWS rejected {action} for {target}: {code}: {message}")]
    #[diagnostic(code(pgplan::aws::rejected), help("{help}"))]
    Rejected {
        action: String,
        target: String,
        code: String,
        message: String,
        help: String,
    },

    #[error("{what} cannot change: {message}")]
    #[diagnostic(code(pgplan::aws::unsupported_change), help("{help}"))]
    UnsupportedChange {
        what: String,
        message: String,
        help: String,
    },

    #[error("{what} did not become {wanted} within {seconds} s; last status: {status}")]
    #[diagnostic(
        code(pgplan::aws::timeout),
        help("RDS may still be working on it: check the instance's events in the AWS console (or `aws rds describe-events`), then re-run apply with --resume")
    )]
    Timeout {
        what: String,
        wanted: String,
        seconds: u64,
        status: String,
    },

    #[error("{what} is `{status}` and will not become {wanted} by itself")]
    #[diagnostic(
        code(pgplan::aws::failed_state),
        help("RDS reports a terminal state; its events (`aws rds describe-events --source-identifier ...`) say why; fix it in AWS, then plan again")
    )]
    FailedState {
        what: String,
        wanted: String,
        status: String,
    },

    #[error("{message}")]
    #[diagnostic(code(pgplan::aws::invalid), help("{help}"))]
    Invalid { message: String, help: String },

    #[error("{action} failed: {message}")]
    #[diagnostic(
        code(pgplan::aws::api),
        help(
            "an unexpected answer from {endpoint}; if it is not AWS itself, check AWS_ENDPOINT_URL"
        )
    )]
    Api {
        action: String,
        endpoint: String,
        message: String,
    },
}

impl RdsError {
    /// The AWS error code when AWS answered with one.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            RdsError::Rejected { code, .. } | RdsError::CredentialsRejected { code, .. } => {
                Some(code)
            }
            _ => None,
        }
    }
}

/// Where a failed call went and what it was about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// The RDS API action, e.g. `CreateDBInstance` (also the IAM action name).
    pub action: &'a str,
    /// What the call was about, e.g. "DB instance `backstage-prod`".
    pub target: &'a str,
    pub region: &'a str,
    pub endpoint: &'a str,
}

/// Error codes meaning "this instance (or snapshot) does not exist". moto
/// answers `DBSnapshotNotFoundFault` where AWS answers `DBSnapshotNotFound`.
const NOT_FOUND: &[&str] = &[
    "DBInstanceNotFound",
    "DBInstanceNotFoundFault",
    "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault",
];

const ALREADY_EXISTS: &[&str] = &[
    "DBInstanceAlreadyExists",
    "DBInstanceAlreadyExistsFault",
    "DBSnapshotAlreadyExists",
    "DBSnapshotAlreadyExistsFault",
];

const CREDENTIALS_REJECTED: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "AuthFailure",
];

const ACCESS_DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "NotAuthorized",
];

/// The AWS error code of a failed call, when AWS answered.
pub(crate) fn code_of<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Option<String> {
    match e {
        SdkError::ServiceError(s) => s
            .err()
            .code()
            .map(str::to_string)
            .or_else(|| body_error(s.raw()).map(|(code, _)| code)),
        _ => None,
    }
}

/// Code and message from an error body the SDK could not read. moto
/// answers IAM refusals of query-protocol services in EC2's shape
/// (`<ErrorResponse><Errors><Error>…`), which the SDK's awsQuery parser
/// does not recognise; a proxy may answer with anything.
fn body_error(raw: &HttpResponse) -> Option<(String, String)> {
    let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
    let tag = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(xml_unescape(&body[start..end]))
    };
    let code = tag("Code")?;
    Some((code, tag("Message").unwrap_or_default()))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Whether an AWS error code says the thing does not exist.
pub(crate) fn is_not_found(code: Option<&str>) -> bool {
    code.is_some_and(|c| NOT_FOUND.contains(&c))
}

/// Whether an AWS error code says the thing exists already.
pub(crate) fn is_already_exists(code: Option<&str>) -> bool {
    code.is_some_and(|c| ALREADY_EXISTS.contains(&c))
}

/// Turn any SDK failure into an [`RdsError`]. Generic only as far as
/// extracting the parts; the decision is made in [`decide`].
pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>, call: Call<'_>) -> RdsError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let failure = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            match (e.code(), body_error(service.raw())) {
                (Some(code), _) => Failure::Service {
                    code: code.to_string(),
                    message: e
                        .message()
                        .map(str::to_string)
                        .unwrap_or_else(|| DisplayErrorContext(e).to_string()),
                },
                (None, Some((code, message))) => Failure::Service { code, message },
                (None, None) => Failure::Service {
                    code: format!("HTTP {}", service.raw().status().as_u16()),
                    message: DisplayErrorContext(e).to_string(),
                },
            }
        }
        SdkError::TimeoutError(_) => Failure::Transport(format!(
            "no answer before the operation timeout ({})",
            DisplayErrorContext(&err)
        )),
        SdkError::DispatchFailure(d) => {
            let chain = error_chain(&err);
            match credentials_failure(&err) {
                Some(f) => f,
                None if d.is_user() => Failure::Other(chain),
                None => Failure::Transport(chain),
            }
        }
        SdkError::ConstructionFailure(_) => match credentials_failure(&err) {
            Some(f) => f,
            None => Failure::Other(error_chain(&err)),
        },
        SdkError::ResponseError(_) => Failure::Other(format!(
            "the response could not be read: {}",
            error_chain(&err)
        )),
        _ => Failure::Other(error_chain(&err)),
    };
    decide(failure, call)
}

/// A failure with the SDK's types stripped off.
#[derive(Debug)]
pub(crate) enum Failure {
    /// AWS answered with an error code.
    Service {
        code: String,
        message: String,
    },
    /// No answer: connection refused, DNS, TLS, timeouts.
    Transport(String),
    /// The credential chain found nothing.
    NoCredentials(String),
    /// The credential chain failed.
    CredentialsFailed(String),
    Other(String),
}

pub(crate) fn decide(failure: Failure, call: Call<'_>) -> RdsError {
    match failure {
        Failure::Service { code, message } => service_error(code, message, call),
        Failure::Transport(message) => RdsError::Unreachable {
            endpoint: call.endpoint.to_string(),
            action: call.action.to_string(),
            message,
        },
        Failure::NoCredentials(detail) => RdsError::MissingCredentials { detail },
        Failure::CredentialsFailed(detail) => RdsError::CredentialsFailed { detail },
        Failure::Other(message) => RdsError::Api {
            action: call.action.to_string(),
            endpoint: call.endpoint.to_string(),
            message,
        },
    }
}

fn service_error(code: String, message: String, call: Call<'_>) -> RdsError {
    let c = code.as_str();
    if NOT_FOUND.contains(&c) {
        return RdsError::NotFound {
            what: call.target.to_string(),
            region: call.region.to_string(),
        };
    }
    if ALREADY_EXISTS.contains(&c) {
        return RdsError::AlreadyExists {
            what: call.target.to_string(),
            region: call.region.to_string(),
        };
    }
    if ACCESS_DENIED.contains(&c) {
        return RdsError::AccessDenied {
            action: call.action.to_string(),
            target: call.target.to_string(),
            message,
        };
    }
    if CREDENTIALS_REJECTED.contains(&c) {
        return RdsError::CredentialsRejected { code, message };
    }
    if call.action == "DeleteDBInstance"
        && c == "InvalidParameterCombination"
        && message.to_ascii_lowercase().contains("deletion protection")
    {
        return RdsError::DeletionProtected {
            identifier: call
                .target
                .trim_start_matches("DB instance ")
                .trim_matches('`')
                .to_string(),
        };
    }
    let help = match c {
        "InvalidParameterCombination" | "InvalidParameterValue" => {
            "AWS refused these settings together; its message names the parameter — change it in `target.rds` and plan again"
        }
        "InvalidDBInstanceState" | "InvalidDBInstanceStateFault" => {
            "the instance is busy (modifying, backing up, stopped…); wait until it is `available` and re-run apply with --resume"
        }
        "DBSubnetGroupNotFoundFault" | "DBSubnetGroupDoesNotCoverEnoughAZs" | "InvalidSubnet" | "InvalidVPCNetworkStateFault" => {
            "check `dbSubnetGroupName` and `vpcSecurityGroupIds` in `target.rds`: they must exist in this region and account"
        }
        "StorageQuotaExceeded" | "InstanceQuotaExceeded" | "SnapshotQuotaExceeded" | "DBSnapshotQuotaExceeded" => {
            "an account quota is exhausted; raise it in Service Quotas or remove unused instances or snapshots"
        }
        "InsufficientDBInstanceCapacity" => {
            "AWS has no capacity for this instance class here right now; try another class or retry later"
        }
        "KMSKeyNotAccessibleFault" => {
            "the KMS key of the encrypted storage is not usable by the caller; grant kms:CreateGrant and kms:DescribeKey on it"
        }
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
            "AWS throttled pgplan after its retries; re-run apply with --resume in a moment"
        }
        _ => "see AWS's message; `aws rds describe-events` may say more",
    };
    RdsError::Rejected {
        action: call.action.to_string(),
        target: call.target.to_string(),
        code,
        message,
        help: help.to_string(),
    }
}

/// A credentials problem somewhere in an error's source chain.
///
/// `CredentialsError` is not re-exported by aws-sdk-rds or aws-config, so
/// it cannot be matched by type without another direct dependency; its
/// `Display` texts are fixed strings in aws-credential-types, and
/// "was not enabled" is the one it uses for "no provider had credentials".
fn credentials_failure(e: &(dyn StdError + 'static)) -> Option<Failure> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.contains("the credential provider was not enabled") {
            return Some(Failure::NoCredentials(credentials_detail(err)));
        }
        // Instance metadata is the chain's last resort: when it fails
        // (off EC2, or an EC2 host without a role) nothing else had
        // credentials either, and that is what the user needs to hear.
        if text.contains("an error occurred while loading credentials")
            && error_chain(err).contains("IMDS")
        {
            return Some(Failure::NoCredentials(format!(
                "none in the environment, a profile, web identity or the container, and instance metadata (IMDS) failed: {}",
                credentials_detail(err)
            )));
        }
        if text.contains("credentials provider timed out")
            || text.contains("credentials provider was not properly configured")
            || text.contains("an error occurred while loading credentials")
            || text.contains("unexpected credentials error")
        {
            return Some(Failure::CredentialsFailed(error_chain(err)));
        }
        cur = err.source();
    }
    None
}

/// What the credential chain said, without the generic first line.
pub(crate) fn credentials_detail(e: &(dyn StdError + 'static)) -> String {
    match e.source() {
        Some(s) => error_chain(s),
        None => "the standard chain (environment, profile, web identity, container, instance metadata) found none".into(),
    }
}

/// An error and its sources, de-duplicated.
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        cur = s.source();
    }
    msg
}

/// Map a credentials error from loading (not from a call).
pub(crate) fn from_credentials_error(e: &(dyn StdError + 'static)) -> RdsError {
    match credentials_failure(e) {
        Some(Failure::NoCredentials(detail)) => RdsError::MissingCredentials { detail },
        _ => RdsError::CredentialsFailed {
            detail: error_chain(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call<'static> {
        Call {
            action: "DeleteDBInstance",
            target: "DB instance `backstage-prod`",
            region: "us-east-1",
            endpoint: "https://rds.us-east-1.amazonaws.com",
        }
    }

    fn service(code: &str, message: &str) -> Failure {
        Failure::Service {
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn aws_refusing_to_delete_a_protected_instance_is_deletion_protected() {
        let e = decide(
            service(
                "InvalidParameterCombination",
                "Cannot delete protected DB Instance, please disable deletion protection and try again.",
            ),
            call(),
        );
        match e {
            RdsError::DeletionProtected { identifier } => assert_eq!(identifier, "backstage-prod"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_parameter_combinations_quote_aws() {
        let e = decide(
            service(
                "InvalidParameterCombination",
                "Requesting a specific availability zone is not valid for Multi-AZ instances.",
            ),
            Call {
                action: "CreateDBInstance",
                ..call()
            },
        );
        assert_eq!(e.aws_code(), Some("InvalidParameterCombination"));
        assert_eq!(
            e.to_string(),
            "AWS rejected CreateDBInstance for DB instance `backstage-prod`: InvalidParameterCombination: Requesting a specific availability zone is not valid for Multi-AZ instances."
        );
    }

    #[test]
    fn codes_map_to_kinds() {
        assert!(matches!(
            decide(service("DBInstanceNotFound", "x"), call()),
            RdsError::NotFound { .. }
        ));
        assert!(matches!(
            decide(service("DBSnapshotNotFoundFault", "x"), call()),
            RdsError::NotFound { .. }
        ));
        assert!(matches!(
            decide(service("AccessDenied", "x"), call()),
            RdsError::AccessDenied { .. }
        ));
        assert!(matches!(
            decide(service("ExpiredToken", "x"), call()),
            RdsError::CredentialsRejected { .. }
        ));
        assert!(matches!(
            decide(Failure::Transport("refused".into()), call()),
            RdsError::Unreachable { .. }
        ));
    }
}
