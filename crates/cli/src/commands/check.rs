//! `modelauth check [--json] [--live [--models]] [-p ID]` and `modelauth schema`.

use std::time::Instant;

use model_client::ModelClient;
use provider_config::{AuthKind, Config, ModelProviderInfo};

use crate::commands::token::{Obtained, obtain};
use crate::error::CliError;
use crate::output::print;

/// `modelauth check`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this provider.
    #[arg(short, long = "provider", value_name = "ID")]
    pub provider: Option<String>,
    /// Obtain each provider's credential once: runs its token command and says how long
    /// it took, what it printed (shape, expiry) and how long the token is used.
    #[arg(long)]
    pub live: bool,
    /// With --live: also GET /models with that credential.
    #[arg(long, requires = "live")]
    pub models: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `modelauth check`: the config, the store and each provider, as lines or one JSON object;
/// with `--live`, each credential obtained once (exit 1 when one fails).
pub fn run(args: Args, ctx: &crate::context::Context) -> Result<(), CliError> {
    let loaded = ctx.config()?;
    let settings = Settings {
        live: args.live,
        models: args.models,
        provider: args.provider,
    };
    let report = crate::block_on(check(&loaded, ctx.source.describe(), &settings))?;
    if args.json {
        print(&format!("{}\n", report.json(&loaded)))?;
    } else {
        eprintln!("{}", report.config_note);
        for line in report.store.lines() {
            eprintln!("{line}");
        }
        for warning in &report.warnings {
            eprintln!("{warning}");
        }
        print(&report.lines(&loaded))?;
    }
    // The JSON says which failed (`ok: false`, `error`): nothing on stderr then.
    report
        .live_result()
        .map_err(|e| if args.json { CliError::Reported } else { e })
}

/// What `check` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Obtain each provider's credential once (running its token command).
    pub live: bool,
    /// With `live`: also `GET /models` with it.
    pub models: bool,
    /// Only this provider (for `live`, and for the listing).
    pub provider: Option<String>,
}

/// What `check` found; printed as lines or as JSON.
pub struct Report {
    /// Which file was read, in words.
    pub config_note: String,
    /// Provider ids in listing order.
    pub ids: Vec<String>,
    /// Warnings, one line each.
    pub warnings: Vec<String>,
    /// Live results, in `ids` order.
    pub live: Vec<Live>,
    /// Where the shared token store is and why, or why there is none.
    pub store: StoreNote,
}

/// Where the shared token store is (SPEC §9), for `check`.
pub struct StoreNote {
    /// The folder and what named it, or why there is no store.
    pub store: Result<(String, String), String>,
    /// Folders passed over, and why.
    pub passed_over: Vec<String>,
}

impl StoreNote {
    /// The store the environment gives this user.
    pub fn from_env() -> Self {
        let location = provider_auth::SharedStore::from_env();
        Self {
            store: location
                .store
                .map(|s| (s.dir().display().to_string(), s.origin().to_owned()))
                .map_err(|e| crate::error::with_causes(&e)),
            passed_over: location
                .passed_over
                .iter()
                .map(|e| crate::error::with_causes(e))
                .collect(),
        }
    }

    /// One line for stderr, then a warning per folder passed over.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![match &self.store {
            Ok((dir, origin)) => format!("shared token store: {dir} ({origin})"),
            Err(why) => format!(
                "warning: no shared token store: {why}; every helper call runs the token command"
            ),
        }];
        out.extend(
            self.passed_over
                .iter()
                .map(|why| format!("warning: shared token store: passed over {why}")),
        );
        out
    }

    fn json(&self) -> serde_json::Value {
        match &self.store {
            Ok((dir, origin)) => {
                serde_json::json!({"dir": dir, "origin": origin, "passed_over": self.passed_over})
            }
            Err(why) => {
                serde_json::json!({"dir": null, "error": why, "passed_over": self.passed_over})
            }
        }
    }
}

/// One provider's live check.
pub struct Live {
    id: String,
    credential: Result<Option<Obtained>, CliError>,
    /// Shape of the command's output and whether the token stated its expiry.
    output: Option<(provider_auth::TokenShape, bool)>,
    models: Option<Result<(usize, u128), CliError>>,
}

impl Live {
    fn ok(&self) -> bool {
        self.credential.is_ok() && !matches!(self.models, Some(Err(_)))
    }
}

/// The providers `check` lists: `-p ID`, or every one (the file's own first).
fn listed<'a>(config: &'a Config, only: Option<&'a str>) -> Result<Vec<&'a str>, CliError> {
    if let Some(id) = only {
        let (id, _) = crate::config_file::provider(config, Some(id))?;
        return Ok(vec![id]);
    }
    let mut ids: Vec<&str> = config.providers().keys().map(String::as_str).collect();
    ids.sort_by_key(|id| (!config.is_defined_in_file(id), *id));
    Ok(ids)
}

/// The providers `--live` obtains a credential for: `-p ID`, else the file's own, else the
/// default provider.
fn live_ids<'a>(config: &'a Config, only: Option<&'a str>) -> Vec<&'a str> {
    if let Some(id) = only {
        return vec![id];
    }
    let mut ids: Vec<&str> = config
        .toml()
        .model_providers
        .keys()
        .map(String::as_str)
        .collect();
    if ids.is_empty() {
        ids.push(config.default_provider_id());
    }
    ids
}

/// Runs `check`: validates (the config is already loaded), warns, and with `live` obtains
/// each credential once.
pub async fn check(
    config: &Config,
    config_note: String,
    settings: &Settings,
) -> Result<Report, CliError> {
    let ids: Vec<String> = listed(config, settings.provider.as_deref())?
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut live = Vec::new();
    let mut checked_live = Vec::new();
    if settings.live {
        for id in live_ids(config, settings.provider.as_deref()) {
            if let Some(info) = config.provider(id) {
                live.push(live_check(id, info, settings.models).await);
                checked_live.push(id);
            }
        }
    }
    // A token command that cannot be found is said once: by the live line when its
    // provider was checked live, else by a warning.
    let warnings = warnings(config)
        .into_iter()
        .filter(|w| {
            !checked_live
                .iter()
                .any(|id| w.starts_with(&format!("warning: provider `{id}`: token command `")))
        })
        .collect();
    Ok(Report {
        config_note,
        ids,
        warnings,
        live,
        store: StoreNote::from_env(),
    })
}

async fn live_check(id: &str, info: &ModelProviderInfo, models: bool) -> Live {
    let manager = match crate::auth::manager_for(id, info) {
        Ok(m) => m,
        Err(e) => {
            return Live {
                id: id.to_owned(),
                credential: Err(e),
                output: None,
                models: None,
            };
        }
    };
    let credential = obtain(info, manager.as_ref())
        .await
        .and_then(|obtained| match obtained {
            Some(obtained) => valid_now(&obtained).map(|()| Some(obtained)),
            None => Ok(None),
        });
    let output = manager.token_status().map(|s| (s.shape, s.states_expiry));
    let models = match (&credential, models) {
        (Ok(_), true) => Some(list_models(id, info, manager).await),
        _ => None,
    };
    Live {
        id: id.to_owned(),
        credential,
        output,
        models,
    }
}

/// A token whose stated expiry is past, or that is not valid yet (a JWT's `nbf`), fails
/// the live check with the reason: the gateway would reject it.
fn valid_now(obtained: &Obtained) -> Result<(), CliError> {
    let now = std::time::SystemTime::now();
    if let Some(expiry) = obtained.status.and_then(|s| s.stated_expiry)
        && let Ok(ago) = now.duration_since(expiry)
    {
        return Err(CliError::runtime(format!(
            "the token's stated expiry, {}, is already past ({} ago): the helper printed an expired token (a stale cache of its own?) or this machine's clock is off",
            provider_auth::format_rfc3339(expiry),
            crate::commands::token::human(ago)
        )));
    }
    if let Some(not_before) = provider_auth::jwt_not_before(obtained.token.expose_secret())
        && let Ok(ahead) = not_before.duration_since(now)
    {
        return Err(CliError::runtime(format!(
            "the token is not valid before {} (its JWT `nbf`, {} from now): this machine's clock or the issuer's is off",
            provider_auth::format_rfc3339(not_before),
            crate::commands::token::human(ahead)
        )));
    }
    Ok(())
}

async fn list_models(
    id: &str,
    info: &ModelProviderInfo,
    manager: std::sync::Arc<dyn provider_auth::AuthManager>,
) -> Result<(usize, u128), CliError> {
    let client = ModelClient::new(id, info.clone(), manager)
        .map_err(|e| CliError::from_error("could not build the client", &e))?;
    let started = Instant::now();
    let list = client
        .list_models()
        .await
        .map_err(|e| CliError::from_error("GET /models failed", &e))?;
    Ok((list.data.len(), started.elapsed().as_millis()))
}

/// An error on a line that starts with its provider's id: the provider is not named twice.
fn without_provider(e: &CliError, id: &str) -> String {
    e.render_plain()
        .replacen(&format!("provider `{id}`: "), "", 1)
}

impl Report {
    /// An error naming the providers whose live check failed, if any did.
    pub fn live_result(&self) -> Result<(), CliError> {
        let failed: Vec<&str> = self
            .live
            .iter()
            .filter(|l| !l.ok())
            .map(|l| l.id.as_str())
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(CliError::runtime(format!(
            "{} of {} live checks failed: {}",
            failed.len(),
            self.live.len(),
            failed.join(", ")
        )))
    }

    /// The listing (stdout): one line per provider (id, auth kind, base_url), then one line
    /// per live result.
    pub fn lines(&self, config: &Config) -> String {
        let width = self.ids.iter().map(String::len).max().unwrap_or(0);
        let mut out = String::new();
        for id in &self.ids {
            if let Some(info) = config.provider(id) {
                let kind = info.auth_kind().to_string();
                out.push_str(&format!(
                    "{id:<width$}  {kind:<12}  {}\n",
                    info.display_base_url()
                ));
            }
        }
        for live in &self.live {
            out.push_str(&live.lines());
        }
        out
    }

    /// The whole report as one JSON object (`--json`).
    pub fn json(&self, config: &Config) -> serde_json::Value {
        let providers: Vec<serde_json::Value> = self
            .ids
            .iter()
            .filter_map(|id| {
                let info = config.provider(id)?;
                Some(serde_json::json!({
                    "id": id,
                    "name": info.name,
                    "auth": info.auth_kind().to_string(),
                    "base_url": info.display_base_url(),
                    "defined_in_file": config.is_defined_in_file(id),
                }))
            })
            .collect();
        let mut object = serde_json::json!({
            "config": config.path().map(|p| p.display().to_string()),
            "config_note": self.config_note,
            "default_provider": config.default_provider_id(),
            "providers": providers,
            "warnings": self.warnings,
            "shared_store": self.store.json(),
        });
        if !self.live.is_empty() {
            object["live"] = self.live.iter().map(Live::json).collect();
        }
        object
    }
}

impl Live {
    fn lines(&self) -> String {
        let id = &self.id;
        let mut out = match &self.credential {
            Ok(Some(obtained)) => {
                let mut line = obtained.summary(id);
                match self.output {
                    // A token endpoint's answer has one shape: only whether it said when
                    // the token expires.
                    Some((_, false)) if obtained.source == "oauth2" => {
                        line.push_str("; the answer had no expires_in");
                    }
                    Some(_) if obtained.source == "oauth2" => {}
                    Some((shape, states_expiry)) => {
                        line.push_str(&format!("; output: {shape}"));
                        if states_expiry {
                            line.push_str(", states its expiry");
                        }
                    }
                    None => {}
                }
                if !obtained.header_names.is_empty() {
                    line.push_str(&format!(
                        "; helper headers: {}",
                        obtained.header_names.join(", ")
                    ));
                }
                format!("{line}\n")
            }
            Ok(None) => format!("{id}: this provider sends no credentials\n"),
            Err(e) => format!("{id}: {}\n", without_provider(e, id)),
        };
        match &self.models {
            Some(Ok((count, ms))) => out.push_str(&format!(
                "{id}: GET /models: {count} model{} in {ms} ms\n",
                if *count == 1 { "" } else { "s" }
            )),
            Some(Err(e)) => out.push_str(&format!("{id}: {}\n", without_provider(e, id))),
            None => {}
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let mut object = serde_json::json!({ "provider": self.id, "ok": self.ok() });
        match &self.credential {
            Ok(Some(obtained)) => {
                object["source"] = obtained.source.into();
                object["elapsed_ms"] = (obtained.elapsed.as_millis() as u64).into();
                object["token_chars"] = obtained.token.len().into();
                object["token_kind"] = obtained.kind().into();
                object["used_for_s"] = obtained
                    .status
                    .and_then(|s| s.expires_in)
                    .map(|d| d.as_secs())
                    .into();
                object["helper_headers"] = obtained.header_names.clone().into();
                if let Some(runs) = obtained.command_runs {
                    let key = if obtained.source == "oauth2" {
                        "exchanges"
                    } else {
                        "command_runs"
                    };
                    object[key] = runs.into();
                }
                if let Some((shape, states_expiry)) = self.output {
                    object["output"] = shape.to_string().into();
                    object["states_expiry"] = states_expiry.into();
                }
            }
            Ok(None) => object["source"] = "none".into(),
            Err(e) => object["error"] = e.render_plain().into(),
        }
        match &self.models {
            Some(Ok((count, ms))) => {
                object["models"] =
                    serde_json::json!({"ok": true, "count": count, "elapsed_ms": *ms as u64});
            }
            Some(Err(e)) => {
                object["models"] = serde_json::json!({"ok": false, "error": e.render_plain()});
            }
            None => {}
        }
        object
    }
}

/// Warnings about the config, one line each: credentials that would travel unencrypted,
/// a token command that is not on `PATH` or whose `cwd` does not exist, timeouts of 0 (a
/// Codex config may have them).
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (id, info) in config.providers() {
        if !config.is_defined_in_file(id) {
            continue;
        }
        if let Some(w) = info.cleartext_warning() {
            out.push(format!("warning: provider `{id}`: {w}"));
        }
        if let (AuthKind::Command, Some(auth)) = (info.auth_kind(), &info.auth)
            && let Err(failure) = provider_auth::locate_token_command(auth)
        {
            out.push(format!(
                "warning: provider `{id}`: token command `{}` {failure}",
                auth.command
            ));
        }
        for (key, value) in [
            ("stream_idle_timeout_ms", info.stream_idle_timeout_ms),
            (
                "websocket_connect_timeout_ms",
                info.websocket_connect_timeout_ms,
            ),
        ] {
            if value == 0 {
                out.push(format!(
                    "warning: provider `{id}`: {key} = 0: every wait it bounds ends at once"
                ));
            }
        }
    }
    out
}

/// The JSON schema, byte for byte the committed `schema/config.schema.json`.
#[cfg(feature = "schema")]
pub fn schema() -> String {
    provider_config::config_schema_json()
}
