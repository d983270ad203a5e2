//! Settings: every value comes from a flag or its environment variable, with the same
//! meaning everywhere. Values arrive as strings and are parsed here, so that a bad one
//! stops start-up with one line naming the variable and what it accepts (exit code 2).

use crate::http::Limits;
use crate::secret::Secret;
use crate::store::cassandra::CassandraOptions;
use crate::store::keys::KekSettings;
use crate::store::schema::validate_identifier;
use crate::store::sealing::Kek;
use crate::telemetry::LogFormat;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A setting that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable} (--{flag}) {value:?}: expected {accepts}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// The equivalent flag.
    pub flag: &'static str,
    /// What was given; a secret is never echoed, this holds a placeholder then.
    pub value: String,
    /// What would have been accepted.
    pub accepts: String,
}

impl ConfigError {
    fn new(
        variable: &'static str,
        flag: &'static str,
        value: &str,
        accepts: impl Into<String>,
    ) -> Self {
        Self {
            variable,
            flag,
            value: value.to_owned(),
            accepts: accepts.into(),
        }
    }

    fn secret(variable: &'static str, flag: &'static str, accepts: impl Into<String>) -> Self {
        Self::new(variable, flag, "<redacted>", accepts)
    }
}

/// Where the data lives: flags shared by every subcommand that opens the store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `embedded` (SQLite under --data-dir) or `cassandra`.
    #[arg(long = "store", env = "KILLRVIDEO_STORE", default_value = "embedded")]
    pub store: String,
    /// The data directory: the embedded store's database, and for either store the
    /// development key-encryption key when none is configured.
    #[arg(
        long = "data-dir",
        env = "KILLRVIDEO_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// When the embedded store acknowledges a write: `full` (on disk first) or
    /// `normal` (a power loss may drop the last acknowledged commits).
    #[arg(
        long = "embedded-sync",
        env = "KILLRVIDEO_EMBEDDED_SYNC",
        default_value = "full"
    )]
    pub embedded_sync: String,
    /// Comma-separated Cassandra contact points, `host:port`.
    #[arg(
        long = "cassandra-contact-points",
        env = "KILLRVIDEO_CASSANDRA_CONTACT_POINTS",
        default_value = "127.0.0.1:9042"
    )]
    pub contact_points: String,
    /// Cassandra keyspace.
    #[arg(
        long = "cassandra-keyspace",
        env = "KILLRVIDEO_CASSANDRA_KEYSPACE",
        default_value = "killrvideo"
    )]
    pub keyspace: String,
    /// Preferred Cassandra datacenter (optional).
    #[arg(long = "cassandra-local-dc", env = "KILLRVIDEO_CASSANDRA_LOCAL_DC")]
    pub local_dc: Option<String>,
    /// Replication `migrate` uses when it creates the keyspace:
    /// `SimpleStrategy:<rf>` or `NetworkTopologyStrategy:<dc>=<rf>[,<dc>=<rf>...]`.
    #[arg(
        long = "cassandra-replication",
        env = "KILLRVIDEO_CASSANDRA_REPLICATION",
        default_value = "SimpleStrategy:1"
    )]
    pub replication: String,
    /// Deadline for one Cassandra request, e.g. `2s` or `500ms`.
    #[arg(
        long = "cassandra-request-timeout",
        env = "KILLRVIDEO_CASSANDRA_REQUEST_TIMEOUT",
        default_value = "2s"
    )]
    pub request_timeout: String,
    /// How long an idempotent Cassandra statement waits for its coordinator before the
    /// driver sends it to the next replica as well (speculative execution, at most two
    /// more). Above the request timeout, it never fires.
    #[arg(
        long = "cassandra-speculative-delay",
        env = "KILLRVIDEO_CASSANDRA_SPECULATIVE_DELAY",
        default_value = "200ms"
    )]
    pub speculative_delay: String,
    /// The key-encryption key (KEK): 32 bytes in standard base64. It wraps every
    /// user's data key. Required in production; without it a random one is used, with
    /// a warning (kept in the data directory by the embedded store).
    #[arg(
        long = "key-encryption-key",
        env = "KILLRVIDEO_KEY_ENCRYPTION_KEY",
        hide_env_values = true
    )]
    pub key_encryption_key: Option<Secret<String>>,
    /// Previous KEKs, comma-separated, to open the data keys they wrapped before a
    /// rotation. New keys are wrapped by the current one only.
    #[arg(
        long = "old-key-encryption-keys",
        env = "KILLRVIDEO_OLD_KEY_ENCRYPTION_KEYS",
        hide_env_values = true
    )]
    pub old_key_encryption_keys: Option<Secret<String>>,
}

/// Which backend, with its settings.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// SQLite in this directory.
    Embedded {
        /// The data directory.
        data_dir: PathBuf,
        /// Durability of acknowledged writes.
        sync: crate::store::embedded::SyncMode,
        /// The key-encryption keys.
        kek: KekSettings,
    },
    /// A Cassandra cluster.
    Cassandra(CassandraOptions),
}

/// A duration as its flag takes it (`10s`, `500ms`): how a default held as a
/// `Duration` elsewhere is shown and parsed as a flag's default.
fn duration_text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn parse_duration(
    raw: &str,
    variable: &'static str,
    flag: &'static str,
) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(raw.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::new(
            variable,
            flag,
            raw,
            "a positive duration such as `30m`, `2s` or `500ms`",
        )),
    }
}

/// Renders `SimpleStrategy:1` or `NetworkTopologyStrategy:dc1=3,dc2=2` as a CQL map.
pub fn parse_replication(raw: &str) -> Result<String, ConfigError> {
    const ACCEPTS: &str =
        "`SimpleStrategy:<rf>` or `NetworkTopologyStrategy:<dc>=<rf>[,<dc>=<rf>...]`";
    let fail = || {
        ConfigError::new(
            "KILLRVIDEO_CASSANDRA_REPLICATION",
            "cassandra-replication",
            raw,
            ACCEPTS,
        )
    };
    let factor = |s: &str| s.trim().parse::<u16>().ok().filter(|rf| *rf >= 1);
    let (class, rest) = raw.trim().split_once(':').ok_or_else(fail)?;
    match class.trim() {
        "SimpleStrategy" => {
            let rf = factor(rest).ok_or_else(fail)?;
            Ok(format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
            ))
        }
        "NetworkTopologyStrategy" => {
            let mut entries = Vec::new();
            for pair in rest.split(',') {
                let (dc, rf) = pair.split_once('=').ok_or_else(fail)?;
                let dc = dc.trim();
                let dc_ok = !dc.is_empty()
                    && dc
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                let rf = factor(rf).filter(|_| dc_ok).ok_or_else(fail)?;
                entries.push(format!("'{dc}': {rf}"));
            }
            Ok(format!(
                "{{'class': 'NetworkTopologyStrategy', {}}}",
                entries.join(", ")
            ))
        }
        _ => Err(fail()),
    }
}

impl StoreArgs {
    /// The configured KEKs; a malformed one is named, never echoed.
    fn kek(&self) -> Result<KekSettings, ConfigError> {
        let parse = |raw: &str, variable, flag| {
            Kek::from_base64(raw)
                .map_err(|_| ConfigError::secret(variable, flag, "32 bytes in standard base64"))
        };
        let current = self
            .key_encryption_key
            .as_ref()
            .map(|raw| {
                parse(
                    raw.expose(),
                    "KILLRVIDEO_KEY_ENCRYPTION_KEY",
                    "key-encryption-key",
                )
            })
            .transpose()?;
        let old = self
            .old_key_encryption_keys
            .as_ref()
            .map_or("", |raw| raw.expose())
            .split(',')
            .map(str::trim)
            .filter(|raw| !raw.is_empty())
            .map(|raw| {
                parse(
                    raw,
                    "KILLRVIDEO_OLD_KEY_ENCRYPTION_KEYS",
                    "old-key-encryption-keys",
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KekSettings {
            current,
            old,
            development_dir: Some(self.data_dir.clone()),
        })
    }

    /// Validates the store settings.
    pub fn settings(&self) -> Result<StoreSettings, ConfigError> {
        let kek = self.kek()?;
        match self.store.trim() {
            "embedded" => Ok(StoreSettings::Embedded {
                kek,
                data_dir: self.data_dir.clone(),
                sync: match self.embedded_sync.trim() {
                    "full" => crate::store::embedded::SyncMode::Full,
                    "normal" => crate::store::embedded::SyncMode::Normal,
                    _ => {
                        return Err(ConfigError::new(
                            "KILLRVIDEO_EMBEDDED_SYNC",
                            "embedded-sync",
                            &self.embedded_sync,
                            "`full` (acknowledged writes are on disk) or `normal`",
                        ));
                    }
                },
            }),
            "cassandra" => {
                let contact_points: Vec<String> = self
                    .contact_points
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let valid_point = |p: &String| {
                    p.rsplit_once(':')
                        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                };
                if contact_points.is_empty() || !contact_points.iter().all(valid_point) {
                    return Err(ConfigError::new(
                        "KILLRVIDEO_CASSANDRA_CONTACT_POINTS",
                        "cassandra-contact-points",
                        &self.contact_points,
                        "comma-separated `host:port` pairs",
                    ));
                }
                validate_identifier(&self.keyspace).map_err(|accepts| {
                    ConfigError::new(
                        "KILLRVIDEO_CASSANDRA_KEYSPACE",
                        "cassandra-keyspace",
                        &self.keyspace,
                        accepts,
                    )
                })?;
                let local_dc = self
                    .local_dc
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty());
                Ok(StoreSettings::Cassandra(CassandraOptions {
                    contact_points,
                    keyspace: self.keyspace.clone(),
                    local_dc: local_dc.map(str::to_owned),
                    replication: parse_replication(&self.replication)?,
                    request_timeout: parse_duration(
                        &self.request_timeout,
                        "KILLRVIDEO_CASSANDRA_REQUEST_TIMEOUT",
                        "cassandra-request-timeout",
                    )?,
                    speculative_delay: parse_duration(
                        &self.speculative_delay,
                        "KILLRVIDEO_CASSANDRA_SPECULATIVE_DELAY",
                        "cassandra-speculative-delay",
                    )?,
                    kek,
                }))
            }
            other => Err(ConfigError::new(
                "KILLRVIDEO_STORE",
                "store",
                other,
                "`embedded` or `cassandra`",
            )),
        }
    }
}

/// Flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Listen address.
    #[arg(
        long = "listen",
        env = "KILLRVIDEO_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,
    /// HS256 secret for tokens. Required in production; without it a random one is
    /// generated (tokens then die with the process).
    #[arg(
        long = "jwt-secret",
        env = "KILLRVIDEO_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<Secret<String>>,
    /// Token lifetime.
    #[arg(long = "jwt-ttl", env = "KILLRVIDEO_JWT_TTL", default_value = "30m")]
    pub jwt_ttl: String,
    /// Requests served at once; more are shed with 503.
    #[arg(
        long = "max-in-flight",
        env = "KILLRVIDEO_MAX_IN_FLIGHT",
        default_value_t = Limits::DEFAULT.max_in_flight.to_string()
    )]
    pub max_in_flight: String,
    /// Longest a request may take before it is abandoned with 503.
    #[arg(
        long = "request-timeout",
        env = "KILLRVIDEO_REQUEST_TIMEOUT",
        default_value_t = duration_text(Limits::DEFAULT.request_timeout)
    )]
    pub http_request_timeout: String,
    /// Comma-separated exact browser origins allowed to call the API with
    /// credentials (CORS), e.g. `http://localhost:8080`; off when unset.
    #[arg(long = "cors-origins", env = "KILLRVIDEO_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Longest a connection may wait for, and take to send, a request head; idle
    /// keep-alive connections are closed after it too.
    #[arg(
        long = "header-read-timeout",
        env = "KILLRVIDEO_HEADER_READ_TIMEOUT",
        default_value_t = duration_text(Limits::DEFAULT.header_read_timeout)
    )]
    pub header_read_timeout: String,
    /// Connections open at once; more are answered 503 and closed. Never more than the
    /// process's open-file limit allows.
    #[arg(
        long = "max-connections",
        env = "KILLRVIDEO_MAX_CONNECTIONS",
        default_value_t = Limits::DEFAULT.max_connections.to_string()
    )]
    pub max_connections: String,
    /// Comma-separated addresses or CIDR blocks of proxies whose `X-Forwarded-For` is
    /// believed; the client is then the last address in it that is not a proxy.
    #[arg(long = "trusted-proxies", env = "KILLRVIDEO_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Where to serve Prometheus metrics (`/metrics`), e.g. `127.0.0.1:9100`; off when
    /// unset, and never on the public port.
    #[arg(long = "metrics-listen", env = "KILLRVIDEO_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// Validated `serve` settings.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Backend.
    pub store: StoreSettings,
    /// Listen address.
    pub listen: SocketAddr,
    /// The configured secret; `None` means "generate one and warn".
    pub jwt_secret: Option<Secret<Vec<u8>>>,
    /// Token lifetime.
    pub jwt_ttl: Duration,
    /// Overload limits.
    pub limits: Limits,
    /// Browser origins allowed by CORS.
    pub cors_origins: crate::http::CorsOrigins,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: crate::http::client::TrustedProxies,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// Shortest secret accepted: HS256 wants at least 256 bits of key.
const MIN_SECRET_BYTES: usize = 32;

impl ServeArgs {
    /// Validates every `serve` setting.
    pub fn settings(&self) -> Result<ServeSettings, ConfigError> {
        let listen = self.listen.trim().parse().map_err(|_| {
            ConfigError::new(
                "KILLRVIDEO_LISTEN",
                "listen",
                &self.listen,
                "an address such as `127.0.0.1:8080`",
            )
        })?;
        let jwt_secret = match self.jwt_secret.as_ref().map(Secret::expose) {
            None => None,
            Some(secret) if secret.len() >= MIN_SECRET_BYTES => {
                Some(Secret::new(secret.as_bytes().to_vec()))
            }
            Some(_) => {
                return Err(ConfigError::secret(
                    "KILLRVIDEO_JWT_SECRET",
                    "jwt-secret",
                    format!("at least {MIN_SECRET_BYTES} bytes"),
                ));
            }
        };
        let trusted_proxies = crate::http::client::TrustedProxies::parse(
            self.trusted_proxies.as_deref().unwrap_or_default(),
        )
        .map_err(|accepts| {
            ConfigError::new(
                "KILLRVIDEO_TRUSTED_PROXIES",
                "trusted-proxies",
                self.trusted_proxies.as_deref().unwrap_or_default(),
                accepts,
            )
        })?;
        let metrics_listen = self
            .metrics_listen
            .as_deref()
            .map(|raw| {
                raw.trim().parse().map_err(|_| {
                    ConfigError::new(
                        "KILLRVIDEO_METRICS_LISTEN",
                        "metrics-listen",
                        raw,
                        "an address such as `127.0.0.1:9100`",
                    )
                })
            })
            .transpose()?;
        if metrics_listen.is_some() && metrics_listen == Some(listen) {
            return Err(ConfigError::new(
                "KILLRVIDEO_METRICS_LISTEN",
                "metrics-listen",
                self.metrics_listen.as_deref().unwrap_or_default(),
                "an address other than KILLRVIDEO_LISTEN's",
            ));
        }
        let positive = |raw: &str, variable, flag| {
            raw.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ConfigError::new(variable, flag, raw, "a positive integer"))
        };
        Ok(ServeSettings {
            cors_origins: parse_cors_origins(self.cors_origins.as_deref().unwrap_or_default())?,
            trusted_proxies,
            metrics_listen,
            store: self.store.settings()?,
            listen,
            jwt_secret,
            jwt_ttl: parse_duration(&self.jwt_ttl, "KILLRVIDEO_JWT_TTL", "jwt-ttl")?,
            limits: Limits {
                max_in_flight: positive(
                    &self.max_in_flight,
                    "KILLRVIDEO_MAX_IN_FLIGHT",
                    "max-in-flight",
                )?,
                max_connections: positive(
                    &self.max_connections,
                    "KILLRVIDEO_MAX_CONNECTIONS",
                    "max-connections",
                )?,
                header_read_timeout: parse_duration(
                    &self.header_read_timeout,
                    "KILLRVIDEO_HEADER_READ_TIMEOUT",
                    "header-read-timeout",
                )?,
                request_timeout: parse_duration(
                    &self.http_request_timeout,
                    "KILLRVIDEO_REQUEST_TIMEOUT",
                    "request-timeout",
                )?,
            },
        })
    }
}

/// Parses `KILLRVIDEO_CORS_ORIGINS`: comma-separated origins, each `scheme://host` with
/// an optional port and nothing else. `*` is refused: the frontend sends credentials,
/// and a wildcard origin with credentials is what CORS exists to forbid.
pub fn parse_cors_origins(raw: &str) -> Result<crate::http::CorsOrigins, ConfigError> {
    let fail =
        |accepts: &str| ConfigError::new("KILLRVIDEO_CORS_ORIGINS", "cors-origins", raw, accepts);
    const ACCEPTS: &str =
        "comma-separated origins such as `http://localhost:8080` (scheme, host and port only)";
    let mut origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if origin == "*" {
            return Err(fail(
                "exact origins: `*` cannot be combined with credentials, which the frontend sends",
            ));
        }
        let (scheme, rest) = origin.split_once("://").ok_or_else(|| fail(ACCEPTS))?;
        let host_ok = !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !matches!(scheme, "http" | "https") || !host_ok {
            return Err(fail(ACCEPTS));
        }
        let value = axum::http::HeaderValue::from_str(origin).map_err(|_| fail(ACCEPTS))?;
        origins.push(value);
    }
    Ok(crate::http::CorsOrigins(origins))
}

/// Parses `KILLRVIDEO_LOG_FORMAT`.
pub fn parse_log_format(raw: &str) -> Result<LogFormat, ConfigError> {
    match raw.trim() {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        _ => Err(ConfigError::new(
            "KILLRVIDEO_LOG_FORMAT",
            "log-format",
            raw,
            "`json` or `pretty`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_forms() {
        assert_eq!(
            parse_replication("SimpleStrategy:1").unwrap(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        assert_eq!(
            parse_replication("NetworkTopologyStrategy:dc1=3,dc2=2").unwrap(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        for bad in [
            "",
            "SimpleStrategy",
            "SimpleStrategy:0",
            "Foo:1",
            "NetworkTopologyStrategy:dc'1=3",
        ] {
            let err = parse_replication(bad).unwrap_err();
            assert_eq!(err.variable, "KILLRVIDEO_CASSANDRA_REPLICATION");
        }
    }

    #[test]
    fn cors_origins_are_exact() {
        assert!(parse_cors_origins("").unwrap().0.is_empty());
        let origins = parse_cors_origins("http://localhost:8080, https://app.example.com").unwrap();
        assert_eq!(origins.0.len(), 2);
        for bad in [
            "*",
            "http://a.io,*",
            "localhost:8080",
            "ftp://x.io",
            "http://x.io/path",
        ] {
            let err = parse_cors_origins(bad).unwrap_err();
            assert_eq!(err.variable, "KILLRVIDEO_CORS_ORIGINS", "{bad}");
        }
    }

    #[test]
    fn errors_name_the_variable_and_never_echo_secrets() {
        let message =
            ConfigError::secret("KILLRVIDEO_JWT_SECRET", "jwt-secret", "at least 32 bytes")
                .to_string();
        assert!(message.contains("KILLRVIDEO_JWT_SECRET"));
        assert!(message.contains("<redacted>"));
    }

    #[test]
    fn serve_defaults_are_the_limits_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let settings = Serve::parse_from(["serve"]).args.settings().unwrap();
        let (parsed, default) = (settings.limits, Limits::default());
        assert_eq!(parsed.max_in_flight, default.max_in_flight);
        assert_eq!(parsed.max_connections, default.max_connections);
        assert_eq!(parsed.request_timeout, default.request_timeout);
        assert_eq!(parsed.header_read_timeout, default.header_read_timeout);
    }

    #[test]
    fn a_debug_print_of_the_settings_shows_no_secret() {
        use clap::Parser;
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let jwt_secret = "a-jwt-secret-of-at-least-32-bytes-long";
        let kek = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let old_kek = "HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
        let args = Serve::parse_from([
            "serve",
            "--jwt-secret",
            jwt_secret,
            "--key-encryption-key",
            kek,
            "--old-key-encryption-keys",
            old_kek,
        ])
        .args;
        let settings = args.settings().unwrap();
        assert_eq!(
            settings.jwt_secret.as_ref().map(|s| s.expose().as_slice()),
            Some(jwt_secret.as_bytes())
        );
        for printed in [format!("{args:?}"), format!("{settings:?}")] {
            assert!(printed.contains("[redacted]"), "{printed}");
            for secret in [jwt_secret, kek, old_kek] {
                assert!(!printed.contains(secret), "{printed}");
            }
            // Nor the bytes, as `Vec<u8>`'s Debug would list them.
            let bytes = format!("{:?}", jwt_secret.as_bytes());
            assert!(!printed.contains(&bytes[1..bytes.len() - 1]), "{printed}");
        }
    }
}
