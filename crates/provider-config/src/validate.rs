//! Value-level rules, each written once and used by the deserializer; the matching
//! JSON-schema fragments sit next to them so the two stay in step.

use std::collections::BTreeMap;

#[cfg(feature = "schema")]
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, de::Error as _};

/// Pattern for strings that must contain a non-whitespace character.
#[cfg(feature = "schema")]
pub(crate) const NON_BLANK_PATTERN: &str = r"\S";
/// Pattern for `base_url`: an http(s) URL with a host, no userinfo, no query, no fragment.
#[cfg(feature = "schema")]
pub(crate) const BASE_URL_PATTERN: &str = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$";
/// Pattern for an HTTP header name (RFC 9110 token).
#[cfg(feature = "schema")]
pub(crate) const HEADER_NAME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// Pattern for an HTTP header value: no control characters but tab.
#[cfg(feature = "schema")]
pub(crate) const HEADER_VALUE_PATTERN: &str = r"^[^\u0000-\u0008\u000A-\u001F\u007F]*$";
/// Pattern for `auth.header`: a header name, but none of those that frame the request.
#[cfg(feature = "schema")]
pub(crate) const CREDENTIAL_HEADER_PATTERN: &str = "^(?!(?:[Hh][Oo][Ss][Tt]|[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]|[Cc][Oo][Nn][Nn][Ee][Cc][Tt][Ii][Oo][Nn]|[Tt][Rr][Aa][Nn][Ss][Ff][Ee][Rr]-[Ee][Nn][Cc][Oo][Dd][Ii][Nn][Gg])$)[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// Pattern for `auth.scheme`: empty, or an RFC 9110 token.
#[cfg(feature = "schema")]
pub(crate) const AUTH_SCHEME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]*$";
/// Header names that frame a request: never set from config or a helper.
pub(crate) const RESERVED_HEADERS: [&str; 4] =
    ["host", "content-length", "connection", "transfer-encoding"];
/// Pattern for an OAuth2 endpoint: an http(s) URL with a host, no userinfo, no fragment.
#[cfg(feature = "schema")]
pub(crate) const ENDPOINT_URL_PATTERN: &str = r"^https?://[^\s/?#@]+([/?][^\s#]*)?$";
/// Pattern for an environment variable name.
#[cfg(feature = "schema")]
pub(crate) const ENV_NAME_PATTERN: &str = r"^[^=\u0000]+$";
/// Pattern for an environment variable value.
#[cfg(feature = "schema")]
pub(crate) const ENV_VALUE_PATTERN: &str = r"^[^\u0000]*$";
/// Pattern for a static bearer token: visible ASCII, no spaces.
#[cfg(feature = "schema")]
pub(crate) const BEARER_TOKEN_PATTERN: &str = r"^[!-~]+$";

pub(crate) fn is_non_blank(s: &str) -> bool {
    !s.trim().is_empty()
}

pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
}

pub(crate) fn is_header_value(s: &str) -> bool {
    s.chars()
        .all(|c| c == '\t' || !(c < '\u{20}' || c == '\u{7f}'))
}

pub(crate) fn is_env_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['=', '\0'])
}

pub(crate) fn is_env_value(s: &str) -> bool {
    !s.contains('\0')
}

pub(crate) fn is_bearer_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// `base_url` rules: http(s), a host, no userinfo (a password would be printed and sent),
/// no query (it would be glued before the endpoint path: use `query_params`), no fragment.
/// Messages never repeat a userinfo part.
pub(crate) fn check_base_url(s: &str) -> Result<(), String> {
    let shown = redact_userinfo(s);
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    let Some(rest) = rest.filter(|_| !s.chars().any(char::is_whitespace)) else {
        return Err(format!(
            "`{shown}` is not an http:// or https:// URL without spaces"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "`{shown}` has a user name or password in it; put credentials in `auth`, `env_key` or `http_headers`"
        ));
    }
    if authority.is_empty() {
        return Err(format!("`{shown}` has no host"));
    }
    if s.contains('#') {
        return Err(format!("`{shown}` has a fragment (`#...`)"));
    }
    if s.contains('?') {
        return Err(format!(
            "`{shown}` has a query string; put query parameters in `query_params`"
        ));
    }
    match url::Url::parse(s) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err(format!("`{shown}` has no host")),
        Err(e) => Err(format!("`{shown}` is not a valid URL: {e}")),
    }
}

/// An OAuth2 endpoint (`token_url`, `issuer`, ...): like `base_url`, but a query is kept
/// (some identity providers select a policy with one).
pub(crate) fn check_endpoint_url(s: &str) -> Result<(), String> {
    let authority = s.split_once("://").map_or("", |(_, rest)| {
        rest.split(['/', '?', '#']).next().unwrap_or_default()
    });
    if authority.contains('@') {
        return Err(format!(
            "`{}` has a user name or password in it; give the client's with `client_id` and `client_secret_env` or `client_secret_file`",
            redact_userinfo(s)
        ));
    }
    match s.split_once('?') {
        Some((before, query)) if !query.contains('#') => check_base_url(before),
        _ => check_base_url(s),
    }
}

/// `s` with anything before an `@` in its authority replaced by `***`.
pub(crate) fn redact_userinfo(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => s.to_owned(),
    }
}

// ---- deserializers -------------------------------------------------------------------

pub(crate) fn non_blank<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if is_non_blank(&s) {
        Ok(s)
    } else {
        Err(D::Error::custom("must not be empty or blank"))
    }
}

pub(crate) fn base_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_base_url(&s).map_err(D::Error::custom)?;
    Ok(s)
}

pub(crate) fn endpoint_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_endpoint_url(&s).map_err(D::Error::custom)?;
    Ok(Some(s))
}

pub(crate) fn non_blank_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    non_blank(d).map(Some)
}

/// An inline secret in the config: always refused, never echoed.
pub(crate) fn inline_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    let _ = serde::de::IgnoredAny::deserialize(d)?;
    Err(D::Error::custom(
        "a secret is never written in the config: use `client_secret_env` or `client_secret_file`",
    ))
}

pub(crate) fn env_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if is_env_name(&s) {
        Ok(Some(s))
    } else {
        Err(D::Error::custom(
            "must be an environment variable name (not empty, no `=`)",
        ))
    }
}

pub(crate) fn bearer_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if is_bearer_token(&s) {
        Ok(Some(s))
    } else {
        // The value itself is a secret: never echo it.
        Err(D::Error::custom(
            "must be a non-empty token of visible ASCII characters without spaces",
        ))
    }
}

pub(crate) fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ranged(d, 1, crate::MAX_TIMEOUT_MS)
}

pub(crate) fn retries<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ranged(d, 0, crate::MAX_RETRIES)
}

pub(crate) fn positive_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ranged(d, 1, u64::MAX)
}

fn ranged<'de, D: Deserializer<'de>>(d: D, min: u64, max: u64) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if (min..=max).contains(&v) {
        Ok(v)
    } else if max == u64::MAX {
        Err(D::Error::custom(format!("must be at least {min}, got {v}")))
    } else {
        Err(D::Error::custom(format!(
            "must be between {min} and {max}, got {v}"
        )))
    }
}

pub(crate) fn header_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (name, value) in &map {
        if !is_header_name(name) {
            return Err(D::Error::custom(format!(
                "`{name}` is not a valid HTTP header name"
            )));
        }
        if !is_header_value(value) {
            return Err(D::Error::custom(format!(
                "the value of header `{name}` contains control characters"
            )));
        }
    }
    Ok(map)
}

pub(crate) fn env_header_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (name, var) in &map {
        if !is_header_name(name) {
            return Err(D::Error::custom(format!(
                "`{name}` is not a valid HTTP header name"
            )));
        }
        if !is_env_name(var) {
            return Err(D::Error::custom(format!(
                "header `{name}` must name an environment variable (not empty, no `=`)"
            )));
        }
    }
    Ok(map)
}

pub(crate) fn env_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (name, value) in &map {
        if !is_env_name(name) {
            return Err(D::Error::custom(format!(
                "`{name}` is not a valid environment variable name (empty or contains `=`)"
            )));
        }
        if !is_env_value(value) {
            return Err(D::Error::custom(format!(
                "the value of `{name}` contains a NUL character"
            )));
        }
    }
    Ok(map)
}

/// `auth.header`: a header name that is not reserved.
pub(crate) fn credential_header<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if !is_header_name(&name) {
        return Err(D::Error::custom(format!(
            "`{name}` is not a valid HTTP header name"
        )));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(D::Error::custom(format!(
            "`{name}` frames the request and cannot carry the token"
        )));
    }
    Ok(name)
}

/// `auth.scheme`: empty or a token (no spaces).
pub(crate) fn auth_scheme<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let scheme = String::deserialize(d)?;
    if scheme.is_empty() || is_header_name(&scheme) {
        Ok(scheme)
    } else {
        Err(D::Error::custom(
            "must be a word such as `Bearer` or `Token` (no spaces), or \"\" to send the token bare",
        ))
    }
}

/// `auth.reauth_on`: 401, optionally with 403, each once.
pub(crate) fn reauth_on<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let statuses = Vec::<u16>::deserialize(d)?;
    let known = statuses.iter().all(|s| matches!(s, 401 | 403));
    let unique = statuses.len()
        == statuses
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
    if known && unique && statuses.contains(&401) {
        Ok(statuses)
    } else {
        Err(D::Error::custom(
            "must be [401] or [401, 403]: 401 always, 403 for gateways that answer it to an expired token, nothing else",
        ))
    }
}

// ---- schema fragments -----------------------------------------------------------------

#[cfg(feature = "schema")]
pub(crate) fn reauth_on_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "enum": [401, 403] },
        "uniqueItems": true,
        "contains": { "const": 401 },
        "default": [401]
    })
}

#[cfg(feature = "schema")]
pub(crate) fn header_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": HEADER_NAME_PATTERN },
        "additionalProperties": { "type": "string", "pattern": HEADER_VALUE_PATTERN },
        "default": {}
    })
}

#[cfg(feature = "schema")]
pub(crate) fn env_header_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": HEADER_NAME_PATTERN },
        "additionalProperties": { "type": "string", "pattern": ENV_NAME_PATTERN },
        "default": {}
    })
}

pub(crate) fn env_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    match names.iter().find(|n| !is_env_name(n)) {
        Some(bad) => Err(D::Error::custom(format!(
            "`{bad}` is not a valid environment variable name (empty or contains `=`)"
        ))),
        None => Ok(names),
    }
}

#[cfg(feature = "schema")]
pub(crate) fn env_names_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "pattern": ENV_NAME_PATTERN },
        "default": []
    })
}

#[cfg(feature = "schema")]
pub(crate) fn env_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": ENV_NAME_PATTERN },
        "additionalProperties": { "type": "string", "pattern": ENV_VALUE_PATTERN },
        "default": {}
    })
}
