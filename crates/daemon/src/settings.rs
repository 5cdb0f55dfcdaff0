//! Settings (limits) and the TOML configuration file.
//!
//! Precedence, highest first: command-line flags, environment variables,
//! settings saved through the API (`<data-dir>/daemon/settings.json`), the
//! configuration file, defaults. The binary merges flags and environment into
//! a [`SettingsPatch`] given as [`crate::DaemonConfig::pinned`]; the daemon
//! applies the saved settings over [`crate::DaemonConfig::settings`] and the
//! pinned values over both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use shoal_core::parse_size;
use utoipa::ToSchema;

/// Default most established connections (matches `shoal_net`'s default).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// Default most peers per transfer (matches `shoal_node::NodeConfig`).
pub const DEFAULT_MAX_PEERS_PER_TRANSFER: u32 = 50;
/// Largest rate limit accepted, bytes per second (1 TiB/s): anything larger is
/// a mistake, not a limit.
pub const MAX_RATE: u64 = 1 << 40;
/// Largest value accepted for `max_connections` and `max_peers_per_transfer`.
pub const MAX_COUNT: u32 = 100_000;
/// Largest seeding ratio limit accepted.
pub const MAX_SEED_RATIO: f64 = 10_000.0;
/// Longest seeding time limit accepted, seconds (10 years).
pub const MAX_SEED_TIME: u64 = 10 * 365 * 24 * 3600;

/// What can be wrong with a configuration file or a size.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {}: {source}; check the path given to --config", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key has a wrong value.
    #[error("invalid configuration file {}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

/// Live settings of a daemon (limits in bytes per second; `None` = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    /// Upload limit over all peers, bytes per second; null = unlimited.
    pub upload_limit: Option<u64>,
    /// Download limit over all transfers, bytes per second; null = unlimited.
    pub download_limit: Option<u64>,
    /// Most established connections (new connections are checked at once).
    pub max_connections: u32,
    /// Most peers per transfer (running transfers too).
    pub max_peers_per_transfer: u32,
    /// A completed download stops seeding once it has sent this many times
    /// its size; null = no limit.
    pub seed_ratio_limit: Option<f64>,
    /// A completed download stops seeding after seeding this many seconds
    /// (over restarts); null = no limit.
    pub seed_time_limit: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            upload_limit: None,
            download_limit: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_peers_per_transfer: DEFAULT_MAX_PEERS_PER_TRANSFER,
            seed_ratio_limit: None,
            seed_time_limit: None,
        }
    }
}

/// Any subset of [`Settings`]: the body of `PATCH /api/v1/settings`, and the
/// values pinned by flags and environment variables. For the limits, an absent
/// field leaves the value alone and `null` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Upload limit, bytes per second; null = unlimited.
    #[serde(
        default,
        deserialize_with = "some_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub upload_limit: Option<Option<u64>>,
    /// Download limit, bytes per second; null = unlimited.
    #[serde(
        default,
        deserialize_with = "some_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub download_limit: Option<Option<u64>>,
    /// Most established connections (1..=100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most peers per transfer (1..=100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_peers_per_transfer: Option<u32>,
    /// Stop seeding a completed download at this ratio (above 0, at most
    /// 10000); null = no limit.
    #[serde(
        default,
        deserialize_with = "some_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f64>)]
    pub seed_ratio_limit: Option<Option<f64>>,
    /// Stop seeding a completed download after this many seconds (1 to 10
    /// years); null = no limit.
    #[serde(
        default,
        deserialize_with = "some_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub seed_time_limit: Option<Option<u64>>,
}

/// Distinguishes `"field": null` (Some(None)) from an absent field (None).
fn some_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl SettingsPatch {
    /// The patched settings, or the name of the field with an invalid value
    /// and why.
    pub fn apply(&self, s: Settings) -> Result<Settings, (&'static str, String)> {
        let mut out = s;
        for (field, v) in [
            ("upload_limit", self.upload_limit),
            ("download_limit", self.download_limit),
        ] {
            if let Some(Some(r)) = v {
                if r > MAX_RATE {
                    return Err((
                        field,
                        format!(
                            "{field} must be at most {MAX_RATE} bytes per second (1 TiB/s), not {r}; null or 0 means no limit"
                        ),
                    ));
                }
            }
        }
        if let Some(v) = self.upload_limit {
            out.upload_limit = v.filter(|r| *r > 0);
        }
        if let Some(v) = self.download_limit {
            out.download_limit = v.filter(|r| *r > 0);
        }
        if let Some(v) = self.max_connections {
            if v == 0 || v > MAX_COUNT {
                return Err((
                    "max_connections",
                    format!("max_connections must be between 1 and {MAX_COUNT}, not {v}"),
                ));
            }
            out.max_connections = v;
        }
        if let Some(v) = self.max_peers_per_transfer {
            if v == 0 || v > MAX_COUNT {
                return Err((
                    "max_peers_per_transfer",
                    format!("max_peers_per_transfer must be between 1 and {MAX_COUNT}, not {v}"),
                ));
            }
            out.max_peers_per_transfer = v;
        }
        if let Some(v) = self.seed_ratio_limit {
            if let Some(r) = v {
                if !(r > 0.0 && r <= MAX_SEED_RATIO) {
                    return Err((
                        "seed_ratio_limit",
                        format!("seed_ratio_limit must be above 0 and at most {MAX_SEED_RATIO}, not {r}; null means no limit"),
                    ));
                }
            }
            out.seed_ratio_limit = v;
        }
        if let Some(v) = self.seed_time_limit {
            if let Some(t) = v {
                if t == 0 || t > MAX_SEED_TIME {
                    return Err((
                        "seed_time_limit",
                        format!("seed_time_limit must be between 1 and {MAX_SEED_TIME} seconds (10 years), not {t}; null means no limit"),
                    ));
                }
            }
            out.seed_time_limit = v;
        }
        Ok(out)
    }

    /// Whether the patch sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What the configuration file says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    /// The `[limits]` section as a patch over the defaults.
    pub limits: SettingsPatch,
    /// `[api] listen`.
    pub api_listen: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    api: RawApi,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    upload: Option<SizeValue>,
    download: Option<SizeValue>,
    max_connections: Option<u32>,
    max_peers_per_transfer: Option<u32>,
    /// Stop seeding at this ratio.
    seed_ratio: Option<f64>,
    /// Stop seeding after this long ("24h", "3d", or seconds).
    seed_time: Option<SizeValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl FileConfig {
    /// Reads `path`. With `required` false, a missing file is an empty
    /// configuration (the default path); otherwise it is an error.
    pub fn load(path: &Path, required: bool) -> Result<FileConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FileConfig::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(path, &text)
    }

    /// Parses the text of a configuration file; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        let invalid = |line: Option<usize>, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            invalid(
                line_of(e.span()),
                e.message().replace('\n', " ").trim().to_owned(),
            )
        })?;
        let line_of_key = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map(|i| i + 1)
        };
        let size =
            |key: &'static str, v: Option<SizeValue>| -> Result<Option<Option<u64>>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(SizeValue::Bytes(n)) => Ok(Some(Some(n).filter(|n| *n > 0))),
                    Some(SizeValue::Text(t)) => parse_size(&t)
                        .map(|n| Some(Some(n).filter(|n| *n > 0)))
                        .map_err(|m| invalid(line_of_key(key), format!("key limits.{key}: {m}"))),
                }
            };
        let seed_time = match raw.limits.seed_time {
            None => None,
            Some(SizeValue::Bytes(n)) => Some(Some(n)),
            Some(SizeValue::Text(t)) => Some(Some(
                shoal_core::parse_duration(&t)
                    .map_err(|m| {
                        invalid(
                            line_of_key("seed_time"),
                            format!("key limits.seed_time: {m}"),
                        )
                    })?
                    .as_secs(),
            )),
        };
        let limits = SettingsPatch {
            upload_limit: size("upload", raw.limits.upload)?,
            download_limit: size("download", raw.limits.download)?,
            max_connections: raw.limits.max_connections,
            max_peers_per_transfer: raw.limits.max_peers_per_transfer,
            seed_ratio_limit: raw.limits.seed_ratio.map(Some),
            seed_time_limit: seed_time,
        };
        limits.apply(Settings::default()).map_err(|(field, m)| {
            let key = match field {
                "max_connections" => "max_connections",
                "seed_ratio_limit" => "seed_ratio",
                "seed_time_limit" => "seed_time",
                _ => "max_peers_per_transfer",
            };
            invalid(line_of_key(key), format!("key limits.{key}: {m}"))
        })?;
        let api_listen = match raw.api.listen {
            None => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    line_of_key("listen"),
                    format!(
                        "key api.listen: {s:?} is not an address; use IP:PORT, like 127.0.0.1:7777"
                    ),
                )
            })?),
        };
        Ok(FileConfig { limits, api_listen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_with_units_parses_to_a_patch() {
        let text = "[limits]\nupload = \"10MiB\"\ndownload = 52428800\nmax_connections = 200\n\
                    max_peers_per_transfer = 50\n[api]\nlisten = \"127.0.0.1:7777\"\n";
        let c = FileConfig::parse(Path::new("c.toml"), text).unwrap();
        assert_eq!(c.limits.upload_limit, Some(Some(10 << 20)));
        assert_eq!(c.limits.download_limit, Some(Some(50 << 20)));
        assert_eq!(c.limits.max_connections, Some(200));
        assert_eq!(c.api_listen, Some("127.0.0.1:7777".parse().unwrap()));
    }

    #[test]
    fn seed_limits_come_from_the_config_file_with_units() {
        let c = FileConfig::parse(
            Path::new("c.toml"),
            "[limits]\nseed_ratio = 2.5\nseed_time = \"3d\"\n",
        )
        .unwrap();
        assert_eq!(c.limits.seed_ratio_limit, Some(Some(2.5)));
        assert_eq!(c.limits.seed_time_limit, Some(Some(3 * 24 * 3600)));
        let e = FileConfig::parse(Path::new("c.toml"), "[limits]\nseed_ratio = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("limits.seed_ratio") && e.contains("line 2"),
            "{e}"
        );
        let e = FileConfig::parse(Path::new("c.toml"), "[limits]\nseed_time = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.seed_time"), "{e}");
    }

    #[test]
    fn config_errors_name_file_line_and_key() {
        let e = FileConfig::parse(
            Path::new("/x/c.toml"),
            "[limits]\nupload = \"10 parsecs\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/x/c.toml") && e.contains("line 2") && e.contains("limits.upload"),
            "{e}"
        );
        let e = FileConfig::parse(Path::new("c.toml"), "[limits]\nuplod = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("uplod"), "{e}");
        let e = FileConfig::parse(Path::new("c.toml"), "[limits]\nmax_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.max_connections"), "{e}");
        let e = FileConfig::parse(Path::new("c.toml"), "[api]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.listen") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn missing_default_config_is_empty_but_missing_given_one_is_an_error() {
        let p = Path::new("/nonexistent/shoal/config.toml");
        assert_eq!(FileConfig::load(p, false).unwrap(), FileConfig::default());
        assert!(FileConfig::load(p, true).is_err());
    }

    #[test]
    fn patch_distinguishes_null_from_absent() {
        let base = Settings {
            upload_limit: Some(5),
            ..Settings::default()
        };
        let p: SettingsPatch = serde_json::from_str(r#"{"download_limit": 7}"#).unwrap();
        assert_eq!(p.apply(base).unwrap().upload_limit, Some(5));
        let p: SettingsPatch = serde_json::from_str(r#"{"upload_limit": null}"#).unwrap();
        assert_eq!(p.apply(base).unwrap().upload_limit, None);
    }
}
