//! `modelauth check` and `modelauth schema`.

use provider_config::Config;

/// One line per provider (the file's own first, then the built-ins): id, auth kind, base_url.
pub fn check(config: &Config) -> String {
    let providers = config.providers();
    let width = providers.keys().map(String::len).max().unwrap_or(0);
    let mut ids: Vec<&String> = providers.keys().collect();
    ids.sort_by_key(|id| (!config.is_defined_in_file(id), id.as_str()));
    let mut out = String::new();
    for id in ids {
        if let Some(info) = providers.get(id) {
            let kind = info.auth_kind().to_string();
            out.push_str(&format!("{id:<width$}  {kind:<12}  {}\n", info.base_url));
        }
    }
    out
}

/// Warnings about the config, one line each (for stderr): credentials that would travel
/// unencrypted.
pub fn warnings(config: &Config) -> Vec<String> {
    config
        .providers()
        .iter()
        .filter(|(id, _)| config.is_defined_in_file(id))
        .filter_map(|(id, info)| {
            info.cleartext_warning()
                .map(|w| format!("warning: provider `{id}`: {w}"))
        })
        .collect()
}

/// The JSON schema, byte for byte the committed `schema/config.schema.json`.
pub fn schema() -> String {
    provider_config::config_schema_json()
}
