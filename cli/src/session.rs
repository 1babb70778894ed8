//! Talking to the REST API: `threatctl login`, the token file, and authenticated calls that
//! refresh an expired access token once.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, chain, one_line};

/// Where the tokens of `threatctl login` are kept.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Session")]
pub struct TokenFileArgs {
    /// The token file [default: $XDG_CONFIG_HOME/threatmon/token.json, else
    /// ~/.config/threatmon/token.json].
    #[arg(long, env = "THREATCTL_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl TokenFileArgs {
    /// The token file's path: the flag or variable, else the default.
    pub fn path(&self) -> Result<PathBuf, Error> {
        if let Some(path) = &self.token_file {
            return Ok(path.clone());
        }
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let config = non_empty("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".config")))
            .ok_or_else(|| {
                Error::new(
                    "no place for the token file: set --token-file, THREATCTL_TOKEN_FILE, \
                     XDG_CONFIG_HOME or HOME",
                )
            })?;
        Ok(config.join("threatmon").join("token.json"))
    }
}

/// What the token file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// The API's base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// The access token (short-lived).
    pub access: String,
    /// The refresh token, to get a new access token.
    pub refresh: String,
}

impl Tokens {
    /// Reads the token file.
    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::new(format!(
                    "not logged in (no {}): run `threatctl login` first",
                    path.display()
                )));
            }
            Err(err) => return Err(Error::with_cause(path.display(), &err)),
        };
        serde_json::from_str(&text).map_err(|e| {
            Error::new(format!(
                "{} is not a threatctl token file ({e}): run `threatctl login` again",
                path.display()
            ))
        })
    }

    /// Writes the token file, readable by its owner only (0600), replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let fail =
            |err: std::io::Error| Error::with_cause(format!("saving {}", path.display()), &err);
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(fail)?;

        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "token.json".to_owned());
        let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let _ = fs::remove_file(&temporary);
        let written = (|| {
            let mut file = options.open(&temporary)?;
            let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&temporary, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        written.map_err(fail)
    }
}

/// An HTTP client for the API. TLS goes through rustls with the ring provider.
pub(crate) fn http_client() -> Result<reqwest::Client, Error> {
    // Fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("threatctl/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::with_cause("cannot set up HTTP", &e))
}

/// Checks and normalizes an API base URL: http(s), no trailing slash.
pub(crate) fn base_url(url: &str) -> Result<String, Error> {
    let url = url.trim().trim_end_matches('/');
    match Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
            Ok(url.to_owned())
        }
        _ => Err(Error::new(format!(
            "--url: \"{url}\" is not an http:// or https:// URL"
        ))),
    }
}

/// A DRF error body as one line: `{"detail": "…"}` gives the detail; field errors
/// `{"status": ["…"]}` give `status: …`; anything else its text.
pub fn describe_error_body(body: &str) -> String {
    fn messages(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Array(items) => items.iter().map(messages).collect::<Vec<_>>().join(" "),
            Value::Object(fields) => fields
                .iter()
                .map(|(field, value)| match field.as_str() {
                    "detail" | "non_field_errors" => messages(value),
                    _ => format!("{field}: {}", messages(value)),
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(fields)) if fields.contains_key("detail") => messages(&fields["detail"]),
        Ok(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter(|(_, item)| item.as_object().is_none_or(|o| !o.is_empty()))
            .map(|(i, item)| format!("item {}: {}", i + 1, messages(item)))
            .collect::<Vec<_>>()
            .join("; "),
        Ok(value) => messages(&value),
        Err(_) => one_line(body).chars().take(300).collect(),
    }
}

/// A failed response as an error: `what: <DRF message> (HTTP 404 Not Found)`.
async fn http_error(what: &str, response: reqwest::Response) -> Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let detail = describe_error_body(&body);
    let status = match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    if detail.is_empty() {
        Error::new(format!("{what}: {status}"))
    } else {
        Error::new(format!("{what}: {detail} ({status})"))
    }
}

fn unreachable_api(base: &str, err: &reqwest::Error) -> Error {
    Error::new(format!("cannot reach the API at {base}: {}", chain(err)))
}

/// The token file loaded, and a client to call the API with it.
pub(crate) struct Session {
    http: reqwest::Client,
    path: PathBuf,
    tokens: Tokens,
}

impl Session {
    /// Loads the token file.
    pub(crate) fn open(args: &TokenFileArgs) -> Result<Session, Error> {
        let path = args.path()?;
        let tokens = Tokens::load(&path)?;
        Ok(Session {
            http: http_client()?,
            path,
            tokens,
        })
    }

    /// Calls the API with the access token and returns the JSON answer. On a 401 the access
    /// token is refreshed once (and saved), and the call made again.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let base = self.tokens.url.trim_end_matches('/').to_owned();
        let mut url = Url::parse(&format!("{base}{path}")).map_err(|e| {
            Error::new(format!(
                "{} has a bad url {base:?}: {e}",
                self.path.display()
            ))
        })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        let what = format!("{method} {path}");
        let mut refreshed = false;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&self.tokens.access);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| unreachable_api(&base, &e))?;
            if response.status() == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                self.refresh(&base).await?;
                continue;
            }
            if !response.status().is_success() {
                return Err(http_error(&what, response).await);
            }
            return response
                .json::<Value>()
                .await
                .map_err(|e| Error::with_cause(format!("{what}: the answer is not JSON"), &e));
        }
    }

    /// Exchanges the refresh token for a new access token, and saves it.
    async fn refresh(&mut self, base: &str) -> Result<(), Error> {
        let response = self
            .http
            .post(format!("{base}/api/auth/refresh/"))
            .json(&json!({ "refresh": self.tokens.refresh }))
            .send()
            .await
            .map_err(|e| unreachable_api(base, &e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let err = http_error("session expired", response).await;
            return Err(Error::new(format!("{err}: run `threatctl login` again")));
        }
        if !response.status().is_success() {
            return Err(http_error("refreshing the access token", response).await);
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|e| Error::with_cause("refreshing the access token", &e))?;
        let Some(access) = answer.get("access").and_then(Value::as_str) else {
            return Err(Error::new(
                "refreshing the access token: the answer has no \"access\"",
            ));
        };
        self.tokens.access = access.to_owned();
        self.tokens.save(&self.path)
    }
}

/// Log in to the API and keep the tokens for the other commands.
///
/// The tokens go to the token file, readable by you only (mode 0600). Later commands renew
/// the access token with the refresh token when it expires.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// The API's base URL.
    #[arg(long, env = "THREATCTL_URL", default_value = "http://127.0.0.1:8000")]
    url: String,

    /// Your username.
    #[arg(long, env = "THREATCTL_USERNAME")]
    username: String,

    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    password_stdin: bool,

    #[command(flatten)]
    token_file: TokenFileArgs,
}

fn read_password(args: &LoginArgs, base: &str) -> Result<String, Error> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::with_cause("reading the password from stdin", &e))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {} at {base}: ", args.username))
            .map_err(|e| Error::with_cause("reading the password", &e))?
    } else {
        return Err(Error::new(
            "standard input is not a terminal: give the password with --password-stdin",
        ));
    };
    if password.is_empty() {
        return Err(Error::new("the password is empty"));
    }
    Ok(password)
}

/// Runs `threatctl login`.
pub async fn login(args: LoginArgs) -> Result<(), Error> {
    let base = base_url(&args.url)?;
    let path = args.token_file.path()?;
    let password = read_password(&args, &base)?;
    let http = http_client()?;
    let response = http
        .post(format!("{base}/api/auth/login/"))
        .json(&json!({ "username": args.username, "password": password }))
        .send()
        .await
        .map_err(|e| unreachable_api(&base, &e))?;
    if !response.status().is_success() {
        return Err(http_error("login failed", response).await);
    }
    let answer: Value = response
        .json()
        .await
        .map_err(|e| Error::with_cause("login: the answer is not JSON", &e))?;
    let token = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::new(format!("login: the answer has no \"{name}\" token")))
    };
    let tokens = Tokens {
        url: base.clone(),
        access: token("access")?,
        refresh: token("refresh")?,
    };
    tokens.save(&path)?;
    println!(
        "logged in to {base} as {}; tokens saved to {}",
        args.username,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drf_error_bodies_read_as_one_line() {
        assert_eq!(
            describe_error_body(r#"{"detail":"Not found."}"#),
            "Not found."
        );
        assert_eq!(
            describe_error_body(
                r#"{"detail":"Given token not valid for any token type","code":"token_not_valid"}"#
            ),
            "Given token not valid for any token type"
        );
        assert_eq!(
            describe_error_body(
                r#"{"status":["\"X\" is not a valid choice."],"note":["Too long.","Really."]}"#
            ),
            r#"note: Too long. Really.; status: "X" is not a valid choice."#
        );
        assert_eq!(
            describe_error_body(r#"{"non_field_errors":["Expected a list."]}"#),
            "Expected a list."
        );
        assert_eq!(
            describe_error_body(r#"[{}, {"severity":["Bad."]}]"#),
            "item 2: severity: Bad."
        );
        assert_eq!(
            describe_error_body("<h1>Bad\nGateway</h1>"),
            "<h1>Bad Gateway</h1>"
        );
    }

    #[test]
    fn base_urls_are_http_without_a_trailing_slash() {
        assert_eq!(
            base_url("http://127.0.0.1:8000/").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(
            base_url("https://soc.example/threatmon").unwrap(),
            "https://soc.example/threatmon"
        );
        assert!(base_url("127.0.0.1:8000").is_err());
        assert!(base_url("ftp://x").is_err());
    }

    #[test]
    fn the_token_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("token.json");
        let tokens = Tokens {
            url: "http://127.0.0.1:8000".into(),
            access: "a".into(),
            refresh: "r".into(),
        };
        tokens.save(&path).unwrap();
        assert_eq!(Tokens::load(&path).unwrap(), tokens);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Tokens {
            access: "b".into(),
            ..tokens
        };
        again.save(&path).unwrap();
        assert_eq!(Tokens::load(&path).unwrap(), again);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        let err = Tokens::load(&dir.path().join("none.json")).unwrap_err();
        assert!(err.to_string().contains("threatctl login"), "{err}");
    }

    #[test]
    fn the_default_token_file_is_under_the_config_directory() {
        let args = TokenFileArgs {
            token_file: Some(PathBuf::from("/tmp/t.json")),
        };
        assert_eq!(args.path().unwrap(), PathBuf::from("/tmp/t.json"));
    }
}
