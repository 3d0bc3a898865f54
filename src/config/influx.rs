//! `[storage.influxdb]`: where the optional InfluxDB sink writes, how it batches and how
//! much it keeps while InfluxDB is away. The sink itself is `store::influx`.
//!
//! Secrets are not part of the file: `token_env` and `password_env` name the environment
//! variables that hold them, so this struct is safe to print with `{:?}`.

use serde::Deserialize;

use super::{key, Duration, Invalid, PathPart};

/// Which HTTP write API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// `/api/v2/write?org=&bucket=` with `Authorization: Token …` (InfluxDB 2.x, 3.x).
    #[default]
    V2,
    /// `/write?db=&rp=` with optional user and password (InfluxDB 1.x).
    V1,
}

impl InfluxApi {
    pub fn as_str(self) -> &'static str {
        match self {
            InfluxApi::V2 => "v2",
            InfluxApi::V1 => "v1",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Base URL of the server, `http://host:8086` (a path prefix behind a proxy is kept).
    pub url: String,
    pub api: InfluxApi,
    /// v2: organisation and bucket.
    pub org: String,
    pub bucket: String,
    /// v2: name of the environment variable that holds the API token.
    pub token_env: String,
    /// v1: database and, optionally, retention policy.
    pub database: String,
    pub retention_policy: Option<String>,
    /// v1: user, when the server has authentication enabled.
    pub username: Option<String>,
    /// v1: name of the environment variable that holds the password.
    pub password_env: String,
    /// Points per HTTP request: larger batches cost fewer requests.
    pub batch_size: usize,
    /// A partial batch is sent after this long, so quiet setups still see fresh data.
    pub flush_interval: Duration,
    /// Points kept on disk while InfluxDB is unreachable. Past this the oldest are
    /// dropped, and counted; 0 keeps nothing.
    pub backlog_max: u64,
    /// Per HTTP request, connecting included.
    pub timeout: Duration,
    /// Compress request bodies (InfluxDB accepts `Content-Encoding: gzip`).
    pub gzip: bool,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8086".into(),
            api: InfluxApi::V2,
            org: String::new(),
            bucket: String::new(),
            token_env: "CENTINELA_INFLUX_TOKEN".into(),
            database: String::new(),
            retention_policy: None,
            username: None,
            password_env: "CENTINELA_INFLUX_PASSWORD".into(),
            batch_size: 5_000,
            flush_interval: Duration::from_secs(1),
            backlog_max: 5_000_000,
            timeout: Duration::from_secs(10),
            gzip: true,
        }
    }
}

impl InfluxConfig {
    /// Problems with the section at `at` (normally `storage.influxdb`).
    pub fn validate(&self, at: &[PathPart]) -> Vec<Invalid> {
        let mut out = Vec::new();
        let field = |name: &str| {
            let mut p = at.to_vec();
            p.push(key(name));
            p
        };
        let mut bad = |name: &str, msg: &str| out.push(Invalid::new(&field(name), msg));
        let url = self.url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            None => bad(
                "url",
                "must be an http:// or https:// address, e.g. \"http://127.0.0.1:8086\"",
            ),
            Some(r) if r.is_empty() || r.starts_with('/') => bad("url", "has no host"),
            Some(_) => {}
        }
        match self.api {
            InfluxApi::V2 => {
                if self.org.trim().is_empty() {
                    bad("org", "api = \"v2\" needs the organisation (org = \"…\")");
                }
                if self.bucket.trim().is_empty() {
                    bad("bucket", "api = \"v2\" needs the bucket (bucket = \"…\")");
                }
                if self.token_env.trim().is_empty() {
                    bad(
                        "token_env",
                        "names the environment variable that holds the token",
                    );
                }
            }
            InfluxApi::V1 => {
                if self.database.trim().is_empty() {
                    bad(
                        "database",
                        "api = \"v1\" needs the database (database = \"…\")",
                    );
                }
                if self.username.is_some() && self.password_env.trim().is_empty() {
                    bad(
                        "password_env",
                        "names the environment variable that holds the password",
                    );
                }
            }
        }
        if self.batch_size == 0 {
            bad("batch_size", "must be at least 1 point");
        }
        if self.flush_interval.is_zero() {
            bad("flush_interval", "must be longer than zero");
        }
        if self.timeout.is_zero() {
            bad("timeout", "must be longer than zero");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn v2_section_parses_with_defaults() {
        let text = "[storage.influxdb]\nurl = \"http://10.0.0.5:8086\"\norg = \"home\"\nbucket = \"sensors\"\n";
        let cfg = Config::parse(text, "c.toml").unwrap();
        let i = cfg.storage.influxdb.unwrap();
        assert_eq!(i.api, super::InfluxApi::V2);
        assert_eq!(i.token_env, "CENTINELA_INFLUX_TOKEN");
        assert_eq!(i.batch_size, 5_000);
        assert!(Config::parse("", "c.toml")
            .unwrap()
            .storage
            .influxdb
            .is_none());
    }

    #[test]
    fn v2_without_bucket_names_the_field() {
        let text = "[storage.influxdb]\norg = \"home\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("storage.influxdb.bucket"), "{e}");
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn v1_needs_a_database() {
        let text = "[storage.influxdb]\napi = \"v1\"\nbucket = \"x\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("storage.influxdb.database"), "{e}");
        let ok = "[storage.influxdb]\napi = \"v1\"\ndatabase = \"sensors\"\nusername = \"c\"\n";
        assert!(Config::parse(ok, "c.toml").is_ok());
    }

    #[test]
    fn bad_url_and_zero_batch_are_placed() {
        let text = "[storage.influxdb]\norg = \"o\"\nbucket = \"b\"\nurl = \"localhost:8086\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("storage.influxdb.url"));
        assert_eq!(e.line, Some(4), "{e}");
        let text = "[storage.influxdb]\norg = \"o\"\nbucket = \"b\"\nbatch_size = 0\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("storage.influxdb.batch_size"));
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = "[storage.influxdb]\norg = \"o\"\nbucket = \"b\"\ntoken = \"secret\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("token"), "{e}");
    }
}
