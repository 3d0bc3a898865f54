//! The HTTP side of the InfluxDB sink: one POST of a (gzipped) line protocol body to the
//! v2 or v1 write endpoint, the answer sorted into what the sink should do with the
//! batch, and the start-up health check. Uses reqwest, the project's one HTTP client.
//!
//! Secrets (token, password) are read from the environment variables the config names,
//! held in [`Secret`] (whose `Debug` prints `***`), and only ever sent in headers.

use std::fmt;
use std::io::Write;

use flate2::write::GzEncoder;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use crate::config::{InfluxApi, InfluxConfig};

/// A token or password. Never printed.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The secrets a config needs, read from where it says.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub token: Option<Secret>,
    pub password: Option<Secret>,
}

impl Secrets {
    /// Reads `token_env` (v2) or `password_env` (v1 with a username). A missing variable
    /// is `None` here; [`health_check`] turns it into a clear error.
    pub fn from_env(cfg: &InfluxConfig) -> Self {
        let read = |var: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret)
        };
        match cfg.api {
            InfluxApi::V2 => Secrets {
                token: read(&cfg.token_env),
                password: None,
            },
            InfluxApi::V1 => Secrets {
                token: None,
                password: cfg.username.as_ref().and_then(|_| read(&cfg.password_env)),
            },
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("InfluxDB url {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// What became of one write request, from the sink's point of view.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Connection refused, reset, timed out: try again later, keep the data.
    #[error("InfluxDB at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// 5xx or 429: the server is there but cannot take it now; keep the data.
    #[error("InfluxDB at {url} answered {status}: {body}")]
    Unavailable {
        url: String,
        status: u16,
        body: String,
    },
    /// 401, 403, 404: the configuration is wrong (token, bucket, database). The data is
    /// fine, so it is kept until someone fixes the configuration.
    #[error("InfluxDB at {url} refused the write ({status}): {body} — check the token, org, bucket or database")]
    Config {
        url: String,
        status: u16,
        body: String,
    },
    /// Other 4xx (400 bad line, 413 too large, 422): this data will never be accepted.
    #[error("InfluxDB at {url} rejected the data ({status}): {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
}

impl WriteError {
    /// Whether the same body may succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, WriteError::Rejected { .. })
    }
}

/// Sorts a non-success status into a [`WriteError`].
pub fn classify_write(url: &str, status: u16, body: String) -> WriteError {
    let url = url.to_string();
    match status {
        429 | 500..=599 => WriteError::Unavailable { url, status, body },
        401 | 403 | 404 => WriteError::Config { url, status, body },
        _ => WriteError::Rejected { url, status, body },
    }
}

/// Compresses a line protocol body for `Content-Encoding: gzip`.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    // Fast compression: line protocol shrinks ~10× even so, and a Pi has CPU to spare for
    // little else. Writing into a Vec cannot fail.
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 6 + 64),
        flate2::Compression::fast(),
    );
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// Undoes [`gzip`]; `None` when `gz` is not gzip.
pub fn gunzip(gz: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(gz.len() * 8);
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// A configured writer to one InfluxDB.
#[derive(Debug, Clone)]
pub struct InfluxClient {
    http: reqwest::Client,
    /// The write URL with its query (`org`, `bucket` / `db`, `rp`, `precision=ms`).
    write_url: reqwest::Url,
    /// The base URL, for messages and the health check.
    base: String,
    api: InfluxApi,
    username: Option<String>,
    secrets: Secrets,
    gzip: bool,
}

impl InfluxClient {
    /// Builds the client for `cfg` with secrets from the environment.
    pub fn from_env(cfg: &InfluxConfig) -> Result<Self, ClientError> {
        Self::new(cfg, Secrets::from_env(cfg))
    }

    pub fn new(cfg: &InfluxConfig, secrets: Secrets) -> Result<Self, ClientError> {
        let base = cfg.url.trim().trim_end_matches('/').to_string();
        let bad = |reason: String| ClientError::BadUrl {
            url: cfg.url.clone(),
            reason,
        };
        let (path, params): (&str, Vec<(&str, &str)>) = match cfg.api {
            InfluxApi::V2 => (
                "/api/v2/write",
                vec![
                    ("org", cfg.org.as_str()),
                    ("bucket", cfg.bucket.as_str()),
                    ("precision", "ms"),
                ],
            ),
            InfluxApi::V1 => {
                let mut p = vec![("db", cfg.database.as_str())];
                if let Some(rp) = cfg.retention_policy.as_deref().filter(|r| !r.is_empty()) {
                    p.push(("rp", rp));
                }
                p.push(("precision", "ms"));
                ("/write", p)
            }
        };
        let write_url = reqwest::Url::parse_with_params(&format!("{base}{path}"), &params)
            .map_err(|e| bad(e.to_string()))?;
        if !matches!(write_url.scheme(), "http" | "https") {
            return Err(bad("only http:// and https:// are supported".into()));
        }
        let timeout = cfg.timeout.std();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(Self {
            http,
            write_url,
            base,
            api: cfg.api,
            username: cfg.username.clone(),
            secrets,
            gzip: cfg.gzip,
        })
    }

    /// The server's base URL, as configured.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether bodies are sent gzipped (and so whether [`write`](Self::write) expects them so).
    pub fn gzips(&self) -> bool {
        self.gzip
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.api {
            InfluxApi::V2 => match &self.secrets.token {
                Some(t) => req.header(AUTHORIZATION, format!("Token {}", t.expose())),
                None => req,
            },
            InfluxApi::V1 => match &self.username {
                Some(u) => req.basic_auth(u, self.secrets.password.as_ref().map(Secret::expose)),
                None => req,
            },
        }
    }

    /// POSTs one body: gzip-compressed when the client gzips, plain line protocol otherwise.
    pub async fn write(&self, body: Vec<u8>) -> Result<(), WriteError> {
        let mut req = self
            .http
            .post(self.write_url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp =
            self.authorize(req)
                .body(body)
                .send()
                .await
                .map_err(|e| WriteError::Unreachable {
                    url: self.base.clone(),
                    reason: describe(&e),
                })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(classify_write(&self.base, status.as_u16(), short(text)))
    }
}

/// The error chain of a reqwest error, which alone says only "error sending request".
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// The first 300 characters of a server answer, on one line.
fn short(text: String) -> String {
    let one: String = text.trim().replace(['\n', '\r'], " ");
    match one.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

/// What the start-up check found wrong, in words a person can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HealthError {
    #[error("InfluxDB url {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the InfluxDB {what} is not set: export ${var} (it is read from the environment, never from the config file)")]
    MissingSecret { what: &'static str, var: String },
    #[error("InfluxDB at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("InfluxDB at {url} refused the credentials ({status}): {detail} — check {hint}")]
    BadCredentials {
        url: String,
        status: u16,
        detail: String,
        hint: String,
    },
    #[error("bucket {bucket:?} (org {org:?}) not found at {url}: {detail} — create it or fix storage.influxdb.bucket/org")]
    MissingBucket {
        url: String,
        org: String,
        bucket: String,
        detail: String,
    },
    #[error("database {database:?} not found at {url}: {detail} — create it (CREATE DATABASE \"{database}\") or fix storage.influxdb.database")]
    MissingDatabase {
        url: String,
        database: String,
        detail: String,
    },
    #[error("{url} does not serve the v2 write API (/api/v2/write answered 404) — an InfluxDB 1.x? set api = \"v1\" and database")]
    NoV2Api { url: String },
    #[error("InfluxDB at {url} answered the test write with {status}: {detail}")]
    Unexpected {
        url: String,
        status: u16,
        detail: String,
    },
}

/// Sorts the answer to the empty test write into health. Pure, so each server's
/// wording is pinned by a unit test.
pub fn classify_health(cfg: &InfluxConfig, status: u16, body: &str) -> Result<(), HealthError> {
    let url = cfg.url.trim().trim_end_matches('/').to_string();
    let detail = short(body.to_string());
    match status {
        200..=299 => Ok(()),
        // An empty body is "no points" to some servers: the target and the credentials
        // were accepted before the body was looked at.
        400 if body.contains("points") || body.contains("empty") => Ok(()),
        401 | 403 => {
            let hint = match cfg.api {
                InfluxApi::V2 => format!(
                    "the token in ${} and its write permission on the bucket",
                    cfg.token_env
                ),
                InfluxApi::V1 => format!(
                    "username {:?} and the password in ${}",
                    cfg.username.as_deref().unwrap_or(""),
                    cfg.password_env
                ),
            };
            Err(HealthError::BadCredentials {
                url,
                status,
                detail,
                hint,
            })
        }
        404 => match cfg.api {
            InfluxApi::V1 => Err(HealthError::MissingDatabase {
                url,
                database: cfg.database.clone(),
                detail,
            }),
            InfluxApi::V2 if body.contains("bucket") || body.contains("org") => {
                Err(HealthError::MissingBucket {
                    url,
                    org: cfg.org.clone(),
                    bucket: cfg.bucket.clone(),
                    detail,
                })
            }
            InfluxApi::V2 => Err(HealthError::NoV2Api { url }),
        },
        _ => Err(HealthError::Unexpected {
            url,
            status,
            detail,
        }),
    }
}

/// Checks, with secrets from the environment, that InfluxDB is reachable and takes
/// writes to the configured bucket or database: an empty write exercises the address,
/// the credentials and the target without storing anything.
pub async fn health_check(cfg: &InfluxConfig) -> Result<(), HealthError> {
    health_check_with(cfg, Secrets::from_env(cfg)).await
}

/// [`health_check`] with the secrets given.
pub async fn health_check_with(cfg: &InfluxConfig, secrets: Secrets) -> Result<(), HealthError> {
    match cfg.api {
        InfluxApi::V2 if secrets.token.is_none() => {
            return Err(HealthError::MissingSecret {
                what: "token",
                var: cfg.token_env.clone(),
            })
        }
        InfluxApi::V1 if cfg.username.is_some() && secrets.password.is_none() => {
            return Err(HealthError::MissingSecret {
                what: "password",
                var: cfg.password_env.clone(),
            })
        }
        _ => {}
    }
    let client = InfluxClient::new(
        &InfluxConfig {
            gzip: false,
            ..cfg.clone()
        },
        secrets,
    )
    .map_err(|e| match e {
        ClientError::BadUrl { url, reason } => HealthError::BadUrl { url, reason },
        ClientError::Http(e) => HealthError::Unreachable {
            url: cfg.url.clone(),
            reason: describe(&e),
        },
    })?;
    let resp = client
        .authorize(client.http.post(client.write_url.clone()))
        .body(Vec::new())
        .send()
        .await
        .map_err(|e| HealthError::Unreachable {
            url: client.base.clone(),
            reason: describe(&e),
        })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    classify_health(cfg, status.as_u16(), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> InfluxConfig {
        InfluxConfig {
            org: "home".into(),
            bucket: "sensors".into(),
            ..InfluxConfig::default()
        }
    }

    #[test]
    fn write_answers_are_sorted() {
        assert!(classify_write("u", 503, String::new()).is_retryable());
        assert!(classify_write("u", 429, String::new()).is_retryable());
        assert!(matches!(
            classify_write("u", 401, String::new()),
            WriteError::Config { .. }
        ));
        assert!(matches!(
            classify_write("u", 404, String::new()),
            WriteError::Config { .. }
        ));
        assert!(!classify_write("u", 400, "bad line".into()).is_retryable());
        assert!(!classify_write("u", 413, String::new()).is_retryable());
    }

    #[test]
    fn influxdb2_answers_make_clear_health_errors() {
        // Wording of InfluxDB 2.x.
        let e = classify_health(
            &v2(),
            401,
            r#"{"code":"unauthorized","message":"unauthorized access"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("$CENTINELA_INFLUX_TOKEN"), "{e}");
        let e = classify_health(
            &v2(),
            404,
            r#"{"code":"not found","message":"bucket \"sensors\" not found"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, HealthError::MissingBucket { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("bucket \"sensors\" (org \"home\") not found"),
            "{e}"
        );
        let e = classify_health(&v2(), 404, "404 page not found").unwrap_err();
        assert!(matches!(e, HealthError::NoV2Api { .. }), "{e}");
        assert!(classify_health(&v2(), 204, "").is_ok());
        assert!(classify_health(
            &v2(),
            400,
            r#"{"code":"invalid","message":"writing requires points"}"#
        )
        .is_ok());
        assert!(classify_health(&v2(), 400, "unable to parse").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secrets {
            token: Some(Secret::new("hunter2")),
            password: Some(Secret::new("pw")),
        };
        let c = InfluxClient::new(&v2(), s).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("pw\""), "{dbg}");
    }

    #[test]
    fn write_urls_carry_the_target() {
        let c = InfluxClient::new(&v2(), Secrets::default()).unwrap();
        assert_eq!(
            c.write_url.as_str(),
            "http://127.0.0.1:8086/api/v2/write?org=home&bucket=sensors&precision=ms"
        );
        let v1 = InfluxConfig {
            api: InfluxApi::V1,
            url: "https://h/influx/".into(),
            database: "my db".into(),
            retention_policy: Some("autogen".into()),
            ..InfluxConfig::default()
        };
        let c = InfluxClient::new(&v1, Secrets::default()).unwrap();
        assert_eq!(
            c.write_url.as_str(),
            "https://h/influx/write?db=my+db&rp=autogen&precision=ms"
        );
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"m,series=a value=1 1\n".repeat(100);
        let gz = gzip(&body);
        assert!(gz.len() < body.len() / 5);
        assert_eq!(gunzip(&gz).unwrap(), body);
    }
}
