//! `NOTIFY_ROUTES_FILE`: notification routes kept in git, loaded at the alerter's start.
//!
//! ```toml
//! [[route]]
//! name = "soc-webhook"
//! kind = "webhook"
//! url = "https://hooks.example.com/threatmon"
//! secret_file = "/run/secrets/soc-webhook"   # whsec_…; or `secret`, kept out of git
//! min_severity = "HIGH"
//! on = ["created", "severity_raised", "reopened"]
//! repeat_every_secs = 3600                  # remind of alerts still OPEN, hourly
//! ```
//!
//! Every table is read as the api reads a new route (`RouteSpec::parse`), so the same
//! problems are refused with the same messages; a file with any problem stops the alerter at
//! start, naming the route and the field. Each route replaces the stored route of its name.

use std::path::Path;

use chrono::Utc;
use common::domain::RouteSpec;
use common::storage::{Storage, StorageError};
use serde_json::Value;

/// Why a routes file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not `[[route]]` tables.
    #[error("{path} is not a routes file: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A route is invalid.
    #[error("{path}: route {index} ({name}): {errors}")]
    Invalid {
        /// The file.
        path: String,
        /// Its place in the file, from 1.
        index: usize,
        /// Its name, if it has one.
        name: String,
        /// The problems, by field, as the api reports them.
        errors: String,
    },
    /// The routes could not be stored.
    #[error("storing the routes")]
    Storage(#[from] StorageError),
}

/// Reads the routes of `path` (without storing them).
pub fn read(path: &Path) -> Result<Vec<RouteSpec>, RoutesFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RoutesFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let syntax = |reason: String| RoutesFileError::Syntax {
        path: shown.clone(),
        reason,
    };
    let document: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| syntax(e.message().to_owned()))?;
    let tables = match document.get("route") {
        None => return Ok(Vec::new()),
        Some(toml::Value::Array(tables)) => tables,
        Some(_) => return Err(syntax("`route` must be `[[route]]` tables".to_owned())),
    };
    let mut specs = Vec::with_capacity(tables.len());
    for (i, table) in tables.iter().enumerate() {
        let mut json = serde_json::to_value(table).map_err(|e| syntax(e.to_string()))?;
        let Some(object) = json.as_object_mut() else {
            return Err(syntax(format!("route {} is not a table", i + 1)));
        };
        let name = object
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("unnamed")
            .to_owned();
        let invalid = |errors: String| RoutesFileError::Invalid {
            path: shown.clone(),
            index: i + 1,
            name: name.clone(),
            errors,
        };
        if let Some(secret_file) = object.remove("secret_file") {
            let Some(secret_path) = secret_file.as_str() else {
                return Err(invalid("secret_file: not a path".to_owned()));
            };
            // The error names the file, never its content.
            let secret = std::fs::read_to_string(secret_path)
                .map_err(|e| invalid(format!("secret_file {secret_path}: {e}")))?;
            object.insert("secret".to_owned(), Value::String(secret.trim().to_owned()));
        }
        let spec = RouteSpec::parse(object, None).map_err(|errors| invalid(errors.to_string()))?;
        if spec.kind == common::domain::RouteKind::Webhook && spec.secret.is_none() {
            return Err(invalid(
                "secret: a webhook route in a file needs `secret` or `secret_file`".to_owned(),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Reads `path` and stores its routes.
pub async fn load(storage: &Storage, path: &Path) -> Result<usize, RoutesFileError> {
    let specs = read(path)?;
    storage.load_file_routes(&specs, Utc::now()).await?;
    tracing::info!(routes = specs.len(), file = %path.display(), "notification routes loaded");
    Ok(specs.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use common::domain::{RouteKind, Severity, new_secret};

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn routes_are_read_with_secrets_from_their_files() {
        let secret = new_secret().unwrap();
        let secret_file = file(&format!("{secret}\n"));
        let routes = file(&format!(
            "[[route]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://h.example.com/x\"\n\
             secret_file = \"{}\"\nmin_severity = \"HIGH\"\n\n\
             [[route]]\nname = \"mail\"\nkind = \"email\"\nto = [\"soc@example.com\"]\n",
            secret_file.path().display()
        ));
        let specs = read(routes.path()).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].kind, RouteKind::Webhook);
        assert_eq!(specs[0].secret.as_deref(), Some(secret.as_str()));
        assert_eq!(specs[0].min_severity, Severity::High);
        assert_eq!(specs[1].to, ["soc@example.com"]);
        assert!(read(file("").path()).unwrap().is_empty());
    }

    #[test]
    fn a_bad_route_names_itself_and_its_field_but_never_its_secret() {
        let bad_secret = "whsec_tooshort";
        let routes = file(&format!(
            "[[route]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://h.example.com/x\"\n\
             secret = \"{bad_secret}\"\n"
        ));
        let err = read(routes.path()).unwrap_err().to_string();
        assert!(
            err.contains("route 1 (hook)") && err.contains("secret"),
            "{err}"
        );
        assert!(!err.contains(bad_secret), "{err}");
        let unsigned =
            file("[[route]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"https://h.example.com/\"\n");
        assert!(
            read(unsigned.path())
                .unwrap_err()
                .to_string()
                .contains("secret_file")
        );
        assert!(matches!(
            read(file("route = 3").path()),
            Err(RoutesFileError::Syntax { .. })
        ));
        assert!(matches!(
            read(file("[[route").path()),
            Err(RoutesFileError::Syntax { .. })
        ));
    }
}
