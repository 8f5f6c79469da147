//! The AWS RDS adapter: a client from the standard AWS configuration, the
//! reads observe needs (one instance and its snapshots), the instance
//! operations apply and rollback need (create, modify, snapshot, delete),
//! bounded waits, and errors a user can act on.
//!
//! Everything goes through aws-sdk-rds with aws-config's standard chains:
//! credentials (environment, profile, web identity, container, instance
//! metadata), region (the spec's, else AWS_REGION / profile) and endpoint
//! (`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_RDS`, honoured by aws-config
//! itself). Retries and timeouts are bounded so an unreachable endpoint
//! fails in seconds, not minutes.
//!
//! Files: `error.rs` (errors and SDK error classification), `observe.rs`
//! (describe and the mapping into `observed`), `instance.rs` (create,
//! modify, snapshot, delete), `wait.rs` (bounded waiters).

mod error;
mod instance;
mod observe;
mod wait;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_rds::config::http::HttpResponse;
use aws_sdk_rds::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_rds::config::{
    ConfigBag, Credentials, Intercept, ProvideCredentials, Region, RuntimeComponents,
};
use aws_sdk_rds::error::{BoxError, ProvideErrorMetadata, SdkError};

pub use error::RdsError;
pub use instance::Deletion;
pub use wait::{instance_status_is_terminal, snapshot_status_is_terminal};

/// How to reach RDS. [`Rds::connect`] uses the defaults: everything from
/// the standard AWS configuration of the environment.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The region; `None` takes the environment's (AWS_REGION,
    /// AWS_DEFAULT_REGION, the profile's `region`).
    pub region: Option<String>,
    /// An endpoint that overrides everything else (tests, VPC endpoints);
    /// `None` leaves it to `AWS_ENDPOINT_URL[_RDS]` and the profile.
    pub endpoint_url: Option<String>,
    /// Fixed credentials instead of the standard chain.
    pub credentials: Option<StaticCredentials>,
    /// Attempts per request, including the first (transient errors,
    /// throttling and refused connections are retried with backoff).
    pub max_attempts: u32,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time for one attempt of a request.
    pub attempt_timeout: Duration,
    /// Time for a request including its retries.
    pub operation_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            region: None,
            endpoint_url: None,
            credentials: None,
            max_attempts: 3,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(90),
        }
    }
}

/// An access key; the secret never appears in `Debug`.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish()
    }
}

/// A connected RDS client for one region. Cheap to clone; every method
/// takes `&self` and returns a `Send` future, so it can be shared across
/// tokio tasks.
#[derive(Clone, Debug)]
pub struct Rds {
    client: aws_sdk_rds::Client,
    region: String,
    endpoint: EndpointSeen,
}

impl Rds {
    /// Connect to RDS in `region` with the standard AWS configuration of
    /// the environment. An empty `region` takes the environment's.
    /// Credentials are resolved here, so a missing or broken credential
    /// source is reported before anything else happens; the endpoint is not
    /// contacted until the first request.
    pub async fn connect(region: &str) -> Result<Rds, RdsError> {
        Rds::connect_with(ConnectOptions {
            region: Some(region.to_string()).filter(|r| !r.is_empty()),
            ..ConnectOptions::default()
        })
        .await
    }

    /// Connect with explicit options (see [`ConnectOptions`]).
    pub async fn connect_with(options: ConnectOptions) -> Result<Rds, RdsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .operation_attempt_timeout(options.attempt_timeout)
                    .operation_timeout(options.operation_timeout)
                    .build(),
            );
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(c) = &options.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "pgplan",
            ));
        }
        let sdk = loader.load().await;
        let region = sdk
            .region()
            .map(|r| r.as_ref().to_string())
            .filter(|r| !r.is_empty())
            .ok_or(RdsError::MissingRegion)?;

        // Resolve credentials now: "no credentials" is the most common
        // first-run problem and deserves its own message before any request.
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| RdsError::MissingCredentials {
                detail: "no credential source is configured".into(),
            })?;
        match tokio::time::timeout(Duration::from_secs(30), provider.provide_credentials()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(error::from_credentials_error(&e)),
            Err(_) => {
                return Err(RdsError::CredentialsFailed {
                    detail: "the credential chain did not answer within 30 s".into(),
                })
            }
        }

        let endpoint = EndpointSeen::new(format!("https://rds.{region}.amazonaws.com"));
        let config = aws_sdk_rds::config::Builder::from(&sdk)
            .interceptor(endpoint.clone())
            .build();
        Ok(Rds {
            client: aws_sdk_rds::Client::from_conf(config),
            region,
            endpoint,
        })
    }

    /// The region this client talks to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The endpoint requests go to: the last one a request was sent to,
    /// else the regional AWS endpoint.
    pub fn endpoint(&self) -> String {
        self.endpoint.get()
    }

    /// The SDK client, for calls this adapter does not wrap.
    pub fn client(&self) -> &aws_sdk_rds::Client {
        &self.client
    }

    /// Turn an SDK error from a call on [`Rds::client`] into an
    /// [`RdsError`], as this adapter's own calls do. `action` is the RDS API
    /// action (e.g. `DeleteDBInstance`); `identifier` the instance.
    pub fn error_from_sdk<E>(
        &self,
        action: &str,
        identifier: &str,
        err: SdkError<E, HttpResponse>,
    ) -> RdsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let target = instance_target(identifier);
        self.classify(action, &target, err)
    }

    fn classify<E>(&self, action: &str, target: &str, err: SdkError<E, HttpResponse>) -> RdsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let endpoint = self.endpoint();
        error::classify(
            err,
            error::Call {
                action,
                target,
                region: &self.region,
                endpoint: &endpoint,
            },
        )
    }

    fn not_found(&self, what: String) -> RdsError {
        RdsError::NotFound {
            what,
            region: self.region.clone(),
        }
    }
}

/// How an instance is named in messages.
fn instance_target(identifier: &str) -> String {
    format!("DB instance `{identifier}`")
}

/// How a snapshot is named in messages.
fn snapshot_target(snapshot: &str) -> String {
    format!("DB snapshot `{snapshot}`")
}

/// Records where requests actually go (scheme and authority), so an
/// unreachable endpoint can be named even when it came from
/// `AWS_ENDPOINT_URL` or a profile rather than from pgplan.
#[derive(Clone, Debug)]
struct EndpointSeen(Arc<Mutex<String>>);

impl EndpointSeen {
    fn new(default: String) -> Self {
        EndpointSeen(Arc::new(Mutex::new(default)))
    }
    fn get(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Intercept for EndpointSeen {
    fn name(&self) -> &'static str {
        "pgplan::aws::EndpointSeen"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let uri = context.request().uri();
        // Keep scheme://authority only: the query string of an RDS request
        // carries its parameters.
        let base = match uri.find("://") {
            Some(i) => {
                let rest = &uri[i + 3..];
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                &uri[..i + 3 + end]
            }
            None => uri,
        };
        if let Ok(mut seen) = self.0.lock() {
            if *seen != base {
                *seen = base.to_string();
            }
        }
        Ok(())
    }
}
