//! The RDS emulator: moto's server (`moto[server]` from PyPI) on 127.0.0.1, and isolated AWS
//! accounts in it.
//!
//! Isolation: one moto serves the whole test process (or the whole suite, when `scripts/test`
//! exports `PGPLAN_TEST_MOTO_URL`), and every test gets its own account. moto picks the account
//! of a request from its access key (an IAM access key belongs to the account it was created in),
//! so [`Moto::account`] creates an IAM user and access key inside a fresh random 12-digit account
//! (addressed with moto's `x-moto-account-id` header) and hands back those credentials. Any
//! client using them — the test's SDK client or a `pgplan` subprocess given [`MotoAccount::env`]
//! — sees only that account's resources, with no custom header. This costs two IAM calls (a few
//! milliseconds) instead of a moto process per test (over a second each), and never calls
//! `/moto-api/reset`, which would wipe every test's state at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::pg::free_port;
use super::proc::{ChildGuard, SpawnOptions};

/// A moto server.
#[derive(Debug)]
pub struct Moto {
    url: String,
    _child: Option<ChildGuard>,
}

/// One raw HTTP/1.1 exchange with moto: status code and body.
fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = TcpStream::connect(&hostport)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Ok((code, body))
}

fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

/// The command that runs moto's server: the Python that has moto (so a pyenv shim does not stand
/// between us and the server process), else `moto_server` on PATH.
fn moto_command(port: u16) -> Command {
    let python = std::env::var("PGPLAN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let exe = Command::new(&python)
        .args(["-c", "import sys, moto.server; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let mut cmd = match exe {
        Some(exe) if !exe.is_empty() => {
            let mut c = Command::new(exe);
            c.args(["-m", "moto.server"]);
            c
        }
        _ => Command::new("moto_server"),
    };
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

impl Moto {
    /// The moto at `PGPLAN_TEST_MOTO_URL`, or one this process starts on a free port (it dies
    /// with the process).
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var("PGPLAN_TEST_MOTO_URL") {
            Ok(url) if !url.is_empty() => Moto {
                url: url.trim_end_matches('/').to_string(),
                _child: None,
            },
            _ => Moto::start_own().expect("start moto_server (pip install 'moto[server]')"),
        })
    }

    /// A private moto server, stopped on drop.
    pub fn start_own() -> std::io::Result<Moto> {
        let port = free_port()?;
        let child = ChildGuard::spawn(moto_command(port), SpawnOptions::AS_IS)?;
        let moto = Moto {
            url: format!("http://127.0.0.1:{port}"),
            _child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(&moto.url, "GET", "/moto-api/", &[], "") {
                return Ok(moto);
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "moto_server did not answer within 60 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A fresh, empty AWS account in this moto, with credentials that select it.
    pub fn account(&self) -> MotoAccount {
        let account_id = format!(
            "{:012}",
            rand::random_range(100_000_000_000u64..999_999_999_999)
        );
        let user = format!("pgplan-test-{}", rand::random_range(0..u32::MAX));
        let auth =
            "AWS4-HMAC-SHA256 Credential=AKIAPGPLANTESTSETUP/20260101/us-east-1/iam/aws4_request, \
                    SignedHeaders=host, Signature=0";
        let headers = [
            ("Authorization", auth),
            ("x-moto-account-id", account_id.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        let call = |body: String| {
            let (code, text) = http(&self.url, "POST", "/", &headers, &body)
                .unwrap_or_else(|e| panic!("moto at {} unreachable: {e}", self.url));
            assert_eq!(code, 200, "moto IAM call failed: {text}");
            text
        };
        call(format!(
            "Action=CreateUser&UserName={user}&Version=2010-05-08"
        ));
        let key = call(format!(
            "Action=CreateAccessKey&UserName={user}&Version=2010-05-08"
        ));
        MotoAccount {
            endpoint: self.url.clone(),
            account_id,
            access_key_id: xml_value(&key, "AccessKeyId").expect("moto returned an AccessKeyId"),
            secret_access_key: xml_value(&key, "SecretAccessKey")
                .expect("moto returned a SecretAccessKey"),
            region: "us-east-1".into(),
        }
    }
}

/// An isolated account in moto, with the credentials that select it.
#[derive(Debug, Clone)]
pub struct MotoAccount {
    pub endpoint: String,
    pub account_id: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl MotoAccount {
    /// Environment for a subprocess using the standard AWS credential chain (e.g. `pgplan`).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.secret_access_key.clone(),
            ),
            ("AWS_REGION".into(), self.region.clone()),
            ("AWS_DEFAULT_REGION".into(), self.region.clone()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// An RDS client for this account (endpoint override, static credentials).
    pub fn rds_client(&self) -> aws_sdk_rds::Client {
        use aws_sdk_rds::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_rds::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(
                &self.access_key_id,
                &self.secret_access_key,
                None,
                None,
                "pgplan-test",
            ))
            .build();
        aws_sdk_rds::Client::from_conf(conf)
    }
}
