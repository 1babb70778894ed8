//! The container files, checked against the binaries' own settings: `docker-compose.yml`,
//! `Dockerfile`, `.env.example` and `.dockerignore`.
//!
//! No Docker engine is needed. Each service's `command` is mapped to the binary's clap
//! command, whose arguments name the environment variables the binary reads; a typo in a
//! variable, a setting that is required but not set, a binary the image does not ship, or a
//! default the binary would refuse fails here instead of in a deployment.

// Test code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_norway::Value;

/// The one image every threatmon service runs.
const SHARED_IMAGE: &str = "threatmon:local";
/// Read by every service's logging (`common::telemetry`), not through clap.
const LOGGING_VARS: [&str; 2] = ["RUST_LOG", "LOG_FORMAT"];
/// The binaries the compose file must run, each in some service.
const SERVICE_BINARIES: [&str; 3] = ["ingestor", "alerter", "api"];
/// Settings without a clap default that a binary cannot start without (checked at start, not by
/// clap): the compose file must set them, from the environment, and refuse to start otherwise.
const REQUIRED_AT_START: [(&str, &str); 1] = [("api", "SECRET_KEY")];
/// Variables `.env.example` may document although no service binary reads them and the
/// compose file does not use them (e.g. read by another tool). Empty for now.
const EXTRA_DOCUMENTED: [&str; 0] = [];
/// Stands in for a `${VAR:?…}` variable when checking that the binary accepts the values.
const SAMPLE_REQUIRED_VALUE: &str = "sample-value-sample-value-sample-value-sample-value-64b";

/// `api::settings::Settings` is `clap::Args`; this gives it a `Command`.
#[derive(clap::Parser)]
#[command(name = "api")]
struct ApiSettings {
    #[command(flatten)]
    _settings: api::settings::Settings,
}

/// The clap command of a binary that a compose service may run.
fn settings_command(binary: &str) -> Option<clap::Command> {
    match binary {
        "ingestor" => Some(<ingestor::Settings as CommandFactory>::command()),
        "alerter" => Some(<alerter::Settings as CommandFactory>::command()),
        "api" => Some(<ApiSettings as CommandFactory>::command()),
        _ => None,
    }
}

/// One setting a binary reads from the environment.
#[derive(Debug, Clone)]
struct Setting {
    env: String,
    long: Option<String>,
    has_default: bool,
    clap_required: bool,
    secret: bool,
    takes_value: bool,
}

/// A clap error on one line, without its usage and help hints.
fn one_line(err: &clap::Error) -> String {
    err.to_string()
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned()
}

fn settings_of(command: &clap::Command) -> BTreeMap<String, Setting> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            let setting = Setting {
                env: env.clone(),
                long: arg.get_long().map(str::to_owned),
                has_default: !arg.get_default_values().is_empty(),
                clap_required: arg.is_required_set(),
                secret: arg.is_hide_env_values_set(),
                takes_value: arg.get_action().takes_values(),
            };
            Some((env, setting))
        })
        .collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn read(name: &str) -> String {
    let path = root().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------
// The workspace's binaries, from the crates' Cargo.toml files.

/// Every binary of a workspace member: its name and the manifest that declares it.
fn workspace_binaries() -> BTreeMap<String, String> {
    let manifest: toml::Table = read("Cargo.toml").parse().expect("root Cargo.toml parses");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("[workspace] members is a list");
    let mut binaries = BTreeMap::new();
    for member in members {
        let member = member.as_str().expect("a member is a path");
        for dir in expand_member(member) {
            let manifest_path = format!("{dir}/Cargo.toml");
            let Ok(text) = std::fs::read_to_string(root().join(&manifest_path)) else {
                continue; // a member being created, without a manifest yet
            };
            let crate_manifest: toml::Table = text
                .parse()
                .unwrap_or_else(|e| panic!("{manifest_path} does not parse: {e}"));
            let package = crate_manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or_else(|| panic!("{manifest_path} has no package.name"))
                .to_owned();
            let explicit = crate_manifest
                .get("bin")
                .and_then(|b| b.as_array())
                .cloned()
                .unwrap_or_default();
            let mut claims_main = false;
            for bin in &explicit {
                let name = bin
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or_else(|| panic!("a [[bin]] in {manifest_path} has no name"));
                let path = bin.get("path").and_then(|p| p.as_str());
                claims_main |= path == Some("src/main.rs") || (path.is_none() && name == package);
                binaries.insert(name.to_owned(), manifest_path.clone());
            }
            let autobins = crate_manifest
                .get("package")
                .and_then(|p| p.get("autobins"))
                .and_then(|a| a.as_bool())
                .unwrap_or(true);
            if autobins && !claims_main && root().join(&dir).join("src/main.rs").exists() {
                binaries.insert(package, manifest_path.clone());
            }
        }
    }
    binaries
}

/// A `members` entry: a directory, or `dir/*`.
fn expand_member(member: &str) -> Vec<String> {
    match member.strip_suffix("/*") {
        Some(parent) => std::fs::read_dir(root().join(parent))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().join("Cargo.toml").exists())
                    .map(|e| format!("{parent}/{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default(),
        None => vec![member.to_owned()],
    }
}

// ------------------------------------------------------------------------------------------
// docker-compose.yml

fn compose() -> Value {
    let mut value: Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    value
        .apply_merge()
        .expect("docker-compose.yml: `<<` merge keys are well formed");
    value
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose
        .get("services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has a `services:` mapping")
        .iter()
        .map(|(name, service)| {
            let name = name.as_str().expect("service names are strings").to_owned();
            (name, service.clone())
        })
        .collect()
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A service's `command` as words (the list form, or the string split on whitespace).
fn command_words(service_name: &str, service: &Value) -> Vec<String> {
    let command = service
        .get("command")
        .unwrap_or_else(|| panic!("service `{service_name}` has no `command:` naming its binary"));
    let words: Vec<String> = match command {
        Value::Sequence(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other)
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    assert!(
        !words.is_empty(),
        "service `{service_name}`: `command:` is empty; it must name a binary"
    );
    words
}

/// A service's `environment:`, as a map (`None`: passed through from the environment of
/// `docker compose`, unset in the container when unset there).
fn environment(service_name: &str, service: &Value) -> BTreeMap<String, Option<String>> {
    match service.get("environment") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(k, v)| {
                let key = scalar(k).unwrap_or_else(|| {
                    panic!("service `{service_name}`: an environment key is not a string")
                });
                (key, scalar(v))
            })
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                let item = scalar(item).unwrap_or_else(|| {
                    panic!("service `{service_name}`: an environment entry is not a string")
                });
                match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (item, None),
                }
            })
            .collect(),
        Some(_) => panic!("service `{service_name}`: `environment:` is neither a map nor a list"),
    }
}

/// How a `${…}` reference supplies its value.
#[derive(Debug, Clone, PartialEq)]
enum Supply {
    /// `${VAR}` or `$VAR`.
    Plain,
    /// `${VAR:-default}` or `${VAR-default}`.
    Default(String),
    /// `${VAR:?message}` or `${VAR?message}`: compose refuses to start when unset.
    Required,
    /// `${VAR:+alternative}` or `${VAR+alternative}`.
    Alternative,
}

/// A value with its `${…}` references resolved as `docker compose` would with none of them
/// set (a required one gets [`SAMPLE_REQUIRED_VALUE`]), and the references it makes.
fn interpolate(value: &str) -> (String, Vec<(String, Supply)>) {
    let mut out = String::new();
    let mut references = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some(body_and_more) = after.strip_prefix('{') {
            // The matching brace, allowing nested `${…}` in a default.
            let mut depth = 1;
            let mut end = None;
            for (i, c) in body_and_more.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unclosed `${{` in `{value}`"));
            let body = &body_and_more[..end];
            let name_len = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            let (name, operator) = body.split_at(name_len);
            let supply = if operator.is_empty() {
                Supply::Plain
            } else if let Some(d) = operator.strip_prefix(":-").or(operator.strip_prefix('-')) {
                Supply::Default(d.to_owned())
            } else if operator.starts_with(":?") || operator.starts_with('?') {
                Supply::Required
            } else if operator.starts_with(":+") || operator.starts_with('+') {
                Supply::Alternative
            } else {
                panic!("unknown interpolation `${{{body}}}` in `{value}`")
            };
            match &supply {
                Supply::Default(d) => {
                    let (resolved, nested) = interpolate(d);
                    out.push_str(&resolved);
                    references.extend(nested);
                }
                Supply::Required => out.push_str(SAMPLE_REQUIRED_VALUE),
                Supply::Plain | Supply::Alternative => {}
            }
            references.push((name.to_owned(), supply));
            rest = &body_and_more[end + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
            } else {
                references.push((after[..name_len].to_owned(), Supply::Plain));
            }
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    (out, references)
}

/// Every variable the compose file interpolates, anywhere in it.
fn interpolated_variables(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => into.extend(interpolate(s).1.into_iter().map(|(name, _)| name)),
        Value::Sequence(items) => items.iter().for_each(|v| interpolated_variables(v, into)),
        Value::Mapping(map) => map.iter().for_each(|(k, v)| {
            interpolated_variables(k, into);
            interpolated_variables(v, into);
        }),
        Value::Tagged(tagged) => interpolated_variables(&tagged.value, into),
        _ => {}
    }
}

/// The services that run a threatmon binary: built from the Dockerfile or using its image.
fn app_services(services: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    services
        .iter()
        .filter(|(_, s)| {
            s.get("build").is_some() || s.get("image").and_then(Value::as_str) == Some(SHARED_IMAGE)
        })
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect()
}

// ------------------------------------------------------------------------------------------
// Dockerfile

/// One instruction: keyword in upper case, and its arguments with continuations joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue; // comments (also inside continuations) and blank lines
        }
        match trimmed.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.split_whitespace().collect::<Vec<_>>().join(" "),
                });
                current.clear();
            }
        }
    }
    instructions
}

/// The instructions of each stage, in order.
fn stages(instructions: &[Instruction]) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction.clone());
        }
    }
    stages
}

/// The binaries the final stage copies into /usr/local/bin from another stage.
fn installed_binaries(final_stage: &[Instruction]) -> BTreeSet<String> {
    let mut installed = BTreeSet::new();
    for copy in final_stage.iter().filter(|i| i.keyword == "COPY") {
        let words: Vec<&str> = copy.args.split_whitespace().collect();
        if !words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let Some((destination, sources)) = paths.split_last() else {
            continue;
        };
        if destination.trim_end_matches('/') != "/usr/local/bin" {
            continue;
        }
        for source in sources {
            if let Some(name) = source.rsplit('/').next() {
                installed.insert(name.to_owned());
            }
        }
    }
    installed
}

// ------------------------------------------------------------------------------------------
// .env.example

/// The variables `.env.example` documents (`NAME=…`, or commented out `# NAME=…`), with the
/// value of those that are set.
fn env_example() -> BTreeMap<String, Option<String>> {
    let mut documented = BTreeMap::new();
    for line in read(".env.example").lines() {
        let line = line.trim();
        let (commented, assignment) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        let Some((name, value)) = assignment.split_once('=') else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        let value = (!commented).then(|| value.trim().to_owned());
        // A set line wins over a commented example of the same name.
        if !commented || !documented.contains_key(name) {
            documented.insert(name.to_owned(), value);
        }
    }
    documented
}

// ------------------------------------------------------------------------------------------
// The checks

#[test]
fn every_service_environment_matches_its_binary_settings() {
    let compose = compose();
    let services = services(&compose);
    let apps = app_services(&services);
    let mut problems = Vec::new();

    for (name, service) in &apps {
        let words = command_words(name, service);
        let binary = &words[0];
        let Some(command) = settings_command(binary) else {
            problems.push(format!(
                "service `{name}` runs `{binary}`, which is not a service binary (ingestor, \
                 alerter, api); if it is a new one, add it to settings_command() in \
                 tests/tests/compose.rs"
            ));
            continue;
        };
        let settings = settings_of(&command);
        let env = environment(name, service);

        for key in env.keys() {
            if !settings.contains_key(key) && !LOGGING_VARS.contains(&key.as_str()) {
                problems.push(format!(
                    "service `{name}`: environment `{key}` is not a setting `{binary}` reads \
                     (it reads: {}; plus {})",
                    settings.keys().cloned().collect::<Vec<_>>().join(", "),
                    LOGGING_VARS.join(", ")
                ));
            }
        }

        for (service_binary, var) in REQUIRED_AT_START {
            if service_binary == binary.as_str() && !settings.contains_key(var) {
                problems.push(format!(
                    "REQUIRED_AT_START names {var} for `{binary}`, which no longer reads it: \
                     update the list in tests/tests/compose.rs"
                ));
            }
        }
        for setting in settings.values() {
            let required = (setting.clap_required && !setting.has_default)
                || REQUIRED_AT_START.contains(&(binary.as_str(), setting.env.as_str()));
            let value = env.get(&setting.env);
            if required {
                match value {
                    None => problems.push(format!(
                        "service `{name}`: `{binary}` requires {var}, which `environment:` does \
                         not set; add `{var}: ${{{var}:?set {var}}}`",
                        var = setting.env
                    )),
                    Some(None) => problems.push(format!(
                        "service `{name}`: {var} is required but only passed through (empty \
                         key); use `{var}: ${{{var}:?set {var}}}` so compose refuses to start \
                         without it",
                        var = setting.env
                    )),
                    Some(Some(_)) => {}
                }
            }
            if setting.secret
                && let Some(Some(value)) = value
            {
                let (_, references) = interpolate(value);
                let from_environment = value.starts_with("${")
                    && value.ends_with('}')
                    && references.len() == 1
                    && matches!(references[0].1, Supply::Required | Supply::Plain);
                if !from_environment {
                    problems.push(format!(
                        "service `{name}`: {var} is a secret and must come from the environment \
                         (`${{{var}:?…}}` or an empty key), not be written in docker-compose.yml \
                         nor defaulted; it is `{value}`",
                        var = setting.env
                    ));
                }
                if required && !references.iter().any(|(_, s)| *s == Supply::Required) {
                    problems.push(format!(
                        "service `{name}`: {var} is required, so its value must be \
                         `${{{var}:?…}}` (compose then refuses to start without it); it is \
                         `{value}`",
                        var = setting.env
                    ));
                }
            }
        }

        // The values as the container would get them with nothing set: the binary must
        // accept them, as its flags.
        let mut argv = vec![binary.clone()];
        for (key, value) in &env {
            let (Some(setting), Some(value)) = (settings.get(key), value) else {
                continue;
            };
            let (Some(long), true) = (&setting.long, setting.takes_value) else {
                continue;
            };
            argv.push(format!("--{long}={}", interpolate(value).0));
        }
        argv.extend(words[1..].iter().cloned());
        if let Err(err) = command.clone().try_get_matches_from(&argv) {
            problems.push(format!(
                "service `{name}`: `{binary}` refuses the values docker-compose.yml gives it by \
                 default: {}",
                one_line(&err)
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "docker-compose.yml:\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn services_share_one_image_run_existing_binaries_and_reach_nats() {
    let compose = compose();
    let services = services(&compose);
    let apps = app_services(&services);
    let binaries = workspace_binaries();
    let mut problems = Vec::new();

    let nats_services: Vec<&String> = services
        .iter()
        .filter(|(_, s)| {
            s.get("image")
                .and_then(Value::as_str)
                .is_some_and(|i| i.starts_with("nats:") || i.contains("/nats:"))
        })
        .map(|(n, _)| n)
        .collect();
    match services.get("nats") {
        None => problems.push("there is no `nats` service".to_owned()),
        Some(nats) => {
            let image = nats
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !image.starts_with("nats:2.9") {
                problems.push(format!(
                    "service `nats`: image `{image}` is not nats-server 2.9.x (threatmon must stay \
                     compatible with 2.9): use nats:2.9-alpine"
                ));
            }
            let command = command_words("nats", nats).join(" ");
            if !command
                .split_whitespace()
                .any(|w| w == "-js" || w == "--jetstream")
            {
                problems.push(format!(
                    "service `nats`: command `{command}` does not enable JetStream (`-js`)"
                ));
            }
            if nats.get("healthcheck").is_none() {
                problems.push(
                    "service `nats` has no healthcheck, so `service_healthy` never holds"
                        .to_owned(),
                );
            }
        }
    }

    let mut run = BTreeSet::new();
    let mut shared_build: Option<(&String, &Value)> = None;
    for (name, service) in &apps {
        let image = service.get("image").and_then(Value::as_str);
        if image != Some(SHARED_IMAGE) {
            problems.push(format!(
                "service `{name}`: image is `{}`, not the shared `{SHARED_IMAGE}`",
                image.unwrap_or("(none)")
            ));
        }
        match (service.get("build"), shared_build) {
            (None, _) => problems.push(format!(
                "service `{name}` has no `build:`; use the shared one (`<<: *threatmon`)"
            )),
            (Some(build), None) => {
                shared_build = Some((name, build));
                let (context, dockerfile) = match build {
                    Value::Mapping(_) => (
                        build.get("context").and_then(Value::as_str).unwrap_or("."),
                        build
                            .get("dockerfile")
                            .and_then(Value::as_str)
                            .unwrap_or("Dockerfile"),
                    ),
                    other => (other.as_str().unwrap_or("."), "Dockerfile"),
                };
                let path = root().join(context).join(dockerfile);
                if path.canonicalize().ok() != root().join("Dockerfile").canonicalize().ok() {
                    problems.push(format!(
                        "service `{name}`: builds from {}, not the workspace's Dockerfile",
                        path.display()
                    ));
                }
            }
            (Some(build), Some((first, first_build))) => {
                if build != first_build {
                    problems.push(format!(
                        "service `{name}`: `build:` differs from service `{first}`'s; all \
                         threatmon services share one build"
                    ));
                }
            }
        }

        let binary = command_words(name, service).remove(0);
        if !binaries.contains_key(&binary) {
            problems.push(format!(
                "service `{name}`: command runs `{binary}`, which is no [[bin]] of a workspace \
                 crate (there are: {})",
                binaries.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        run.insert(binary);

        let env = environment(name, service);
        match env.get("NATS_URL") {
            Some(Some(url)) => {
                let url = interpolate(url).0;
                let host = url
                    .strip_prefix("nats://")
                    .map(|rest| rest.rsplit('@').next().unwrap_or(rest))
                    .and_then(|rest| rest.split([':', '/']).next())
                    .unwrap_or_default();
                if !nats_services.iter().any(|n| n.as_str() == host) {
                    problems.push(format!(
                        "service `{name}`: NATS_URL `{url}` does not point at the compose \
                         service `nats` (want nats://nats:4222)"
                    ));
                }
            }
            _ => problems.push(format!(
                "service `{name}`: NATS_URL is not set; the default, 127.0.0.1, is the container \
                 itself (want nats://nats:4222)"
            )),
        }
        let healthy = service
            .get("depends_on")
            .and_then(|d| d.get("nats"))
            .and_then(|n| n.get("condition"))
            .and_then(Value::as_str);
        if healthy != Some("service_healthy") {
            problems.push(format!(
                "service `{name}`: must depend on `nats` with `condition: service_healthy`"
            ));
        }

        // SQLite by default: the file must live on the volume mounted at /data.
        if let Some(Some(url)) = env.get("DATABASE_URL") {
            let url = interpolate(url).0;
            let mounts_data = service
                .get("volumes")
                .and_then(Value::as_sequence)
                .is_some_and(|vs| {
                    vs.iter()
                        .filter_map(Value::as_str)
                        .any(|v| v.split(':').nth(1) == Some("/data"))
                });
            if url.starts_with("sqlite:") && !(url.starts_with("sqlite:///data/") && mounts_data) {
                problems.push(format!(
                    "service `{name}`: the default DATABASE_URL `{url}` must be a SQLite file \
                     under /data with a volume mounted on /data, or the data dies with the \
                     container"
                ));
            }
        }
    }
    for binary in SERVICE_BINARIES {
        if !run.contains(binary) {
            problems.push(format!("no service runs `{binary}`"));
        }
    }

    // The api must listen on every interface of its container, on the published port.
    if let Some(api) = apps
        .iter()
        .find_map(|(n, s)| (command_words(n, s)[0] == "api").then_some((n, s)))
    {
        let (name, service) = api;
        let env = environment(name, service);
        let addr = env
            .get("API_ADDR")
            .cloned()
            .flatten()
            .map(|a| interpolate(&a).0)
            .unwrap_or_default();
        let port = addr.strip_prefix("0.0.0.0:").unwrap_or_default();
        if port.is_empty() {
            problems.push(format!(
                "service `{name}`: API_ADDR is `{addr}`; in a container it must be \
                 0.0.0.0:<port>, or the published port reaches nothing"
            ));
        }
        let published = service
            .get("ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(scalar)
            .any(|p| interpolate(&p).0.rsplit(':').next() == Some(port));
        if !port.is_empty() && !published {
            problems.push(format!(
                "service `{name}`: no `ports:` entry publishes container port {port} (API_ADDR)"
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "docker-compose.yml:\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn dockerfile_builds_locked_and_ships_every_binary() {
    let instructions = dockerfile();
    let stages = stages(&instructions);
    let final_stage = stages.last().expect("the Dockerfile has a FROM");
    let mut problems = Vec::new();

    let builds: Vec<&Instruction> = instructions
        .iter()
        .filter(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .collect();
    if builds.is_empty() {
        problems.push("no `RUN cargo build …`".to_owned());
    }
    for build in &builds {
        if !build.args.contains("--locked") {
            problems.push(format!("`RUN {}` builds without --locked", build.args));
        }
        if !build.args.contains("--release") {
            problems.push(format!("`RUN {}` builds without --release", build.args));
        }
    }

    let installed = installed_binaries(final_stage);
    let compose = compose();
    let services = services(&compose);
    for (name, service) in app_services(&services) {
        let binary = command_words(&name, &service).remove(0);
        if !installed.contains(&binary) {
            problems.push(format!(
                "service `{name}` runs `{binary}`, but the runtime stage does not copy it into \
                 /usr/local/bin (it copies: {})",
                installed.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    // The benchmark runs from a checkout (scripts/bench), beside a nats-server it starts:
    // it has no place in the service image.
    const NOT_SHIPPED: [&str; 1] = ["threatmon-bench"];
    for (binary, manifest) in workspace_binaries() {
        if !installed.contains(&binary) && !NOT_SHIPPED.contains(&binary.as_str()) {
            problems.push(format!(
                "`{binary}` ({manifest}) is not in the image: add \
                 /src/target/release/{binary} to the runtime stage's COPY --from=builder … \
                 /usr/local/bin/"
            ));
        }
    }

    let user = final_stage
        .iter()
        .rfind(|i| i.keyword == "USER")
        .map(|i| i.args.clone());
    match user.as_deref() {
        None => problems.push("the runtime stage has no USER: it would run as root".to_owned()),
        Some(u) if ["root", "0"].contains(&u.split(':').next().unwrap_or(u)) => {
            problems.push(format!(
                "the runtime stage runs as `{u}`; use the unprivileged user"
            ));
        }
        Some(_) => {}
    }
    if !final_stage
        .iter()
        .any(|i| i.keyword == "VOLUME" && i.args.contains("/data"))
    {
        problems.push("the runtime stage declares no VOLUME /data".to_owned());
    }
    if !final_stage
        .iter()
        .any(|i| i.keyword == "EXPOSE" && i.args.split_whitespace().any(|p| p == "8000"))
    {
        problems.push("the runtime stage does not EXPOSE 8000".to_owned());
    }

    // No secret is baked into the image.
    let secrets: BTreeSet<String> = SERVICE_BINARIES
        .iter()
        .filter_map(|b| settings_command(b))
        .flat_map(|c| settings_of(&c).into_values())
        .filter(|s| s.secret)
        .map(|s| s.env)
        .collect();
    for instruction in &instructions {
        if ["ENV", "ARG", "CMD", "ENTRYPOINT"].contains(&instruction.keyword.as_str()) {
            for secret in &secrets {
                if instruction.args.contains(secret.as_str()) {
                    problems.push(format!(
                        "`{} {}` puts the secret {secret} in the image",
                        instruction.keyword, instruction.args
                    ));
                }
            }
        }
    }

    let ignored: BTreeSet<String> = read(".dockerignore")
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    for needed in ["target", ".env", ".git", "data"] {
        if !ignored.contains(needed) {
            problems.push(format!(
                ".dockerignore does not exclude `{needed}` from the build context"
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "Dockerfile:\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn env_example_documents_every_setting_and_holds_no_secret() {
    let documented = env_example();
    let mut read_by_binaries: BTreeMap<String, Setting> = BTreeMap::new();
    for binary in SERVICE_BINARIES {
        let command = settings_command(binary).expect("a service binary");
        read_by_binaries.extend(settings_of(&command));
    }
    let mut used_by_compose = BTreeSet::new();
    interpolated_variables(&compose(), &mut used_by_compose);
    let mut problems = Vec::new();

    let mut expected: BTreeSet<String> = read_by_binaries.keys().cloned().collect();
    expected.extend(LOGGING_VARS.iter().map(|s| (*s).to_owned()));
    for name in &expected {
        if !documented.contains_key(name) {
            problems.push(format!(
                "{name} (read by the services) is missing; add it with a comment, commented out \
                 with its default (`# {name}=…`) unless it must be set"
            ));
        }
    }
    for name in &used_by_compose {
        if !documented.contains_key(name) {
            problems.push(format!(
                "{name} (used in docker-compose.yml) is missing; add it with a comment"
            ));
        }
    }
    for name in documented.keys() {
        if !expected.contains(name)
            && !used_by_compose.contains(name)
            && !EXTRA_DOCUMENTED.contains(&name.as_str())
        {
            problems.push(format!(
                "{name} is read by no service and used nowhere in docker-compose.yml: a typo? \
                 (if another tool reads it, add it to EXTRA_DOCUMENTED in tests/tests/compose.rs)"
            ));
        }
    }
    for setting in read_by_binaries.values().filter(|s| s.secret) {
        if let Some(Some(value)) = documented.get(&setting.env)
            && !value.is_empty()
        {
            problems.push(format!(
                "{} is a secret but has a value; leave it empty (`{}=`) or commented out",
                setting.env, setting.env
            ));
        }
    }

    assert!(
        problems.is_empty(),
        ".env.example:\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn interpolation_is_read_as_compose_reads_it() {
    assert_eq!(
        interpolate("${A:-x}/${B-y}$$z"),
        (
            "x/y$z".to_owned(),
            vec![
                ("A".to_owned(), Supply::Default("x".to_owned())),
                ("B".to_owned(), Supply::Default("y".to_owned()))
            ]
        )
    );
    let (value, refs) = interpolate("${SECRET_KEY:?set SECRET_KEY (32+ bytes)}");
    assert_eq!(value, SAMPLE_REQUIRED_VALUE);
    assert_eq!(refs, vec![("SECRET_KEY".to_owned(), Supply::Required)]);
    assert_eq!(
        interpolate("$HOME/${NESTED:-${INNER:-d}}").1,
        vec![
            ("HOME".to_owned(), Supply::Plain),
            ("INNER".to_owned(), Supply::Default("d".to_owned())),
            (
                "NESTED".to_owned(),
                Supply::Default("${INNER:-d}".to_owned())
            )
        ]
    );
}
