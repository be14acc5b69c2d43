//! `[model_providers.ID.auth.oauth2]`: a token minted by an OAuth2 token endpoint instead of
//! a command (SPEC §14). The values are checked here; which fields each grant needs is a
//! cross-field rule ([`OAuth2Info::missing_for_grant`]), checked at load.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate;

/// The grant type used at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OAuth2Grant {
    /// `client_credentials` (RFC 6749 §4.4): the client's own identity.
    ClientCredentials,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523): a JWT (the subject token)
    /// is the grant.
    JwtBearer,
    /// `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): the subject token is
    /// exchanged for an access token.
    TokenExchange,
    /// `refresh_token` (RFC 6749 §6): a long-lived refresh token, kept and rotated in the
    /// shared store.
    RefreshToken,
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628): a person approves once
    /// on another device (`modelauth login`); then the refresh token it gave is used.
    DeviceCode,
}

impl OAuth2Grant {
    /// The name used in the config (`client_credentials`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OAuth2Grant::ClientCredentials => "client_credentials",
            OAuth2Grant::JwtBearer => "jwt_bearer",
            OAuth2Grant::TokenExchange => "token_exchange",
            OAuth2Grant::RefreshToken => "refresh_token",
            OAuth2Grant::DeviceCode => "device_code",
        }
    }

    /// The `grant_type` value sent to the token endpoint.
    pub fn grant_type(self) -> &'static str {
        match self {
            OAuth2Grant::ClientCredentials => "client_credentials",
            OAuth2Grant::JwtBearer => "urn:ietf:params:oauth:grant-type:jwt-bearer",
            OAuth2Grant::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            OAuth2Grant::RefreshToken => "refresh_token",
            OAuth2Grant::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
        }
    }

    /// Whether the grant sends a subject token (`jwt_bearer`, `token_exchange`).
    pub fn needs_subject(self) -> bool {
        matches!(self, OAuth2Grant::JwtBearer | OAuth2Grant::TokenExchange)
    }
}

impl fmt::Display for OAuth2Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the subject token of `jwt_bearer` and `token_exchange` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SubjectSource {
    /// `subject_token_file`, read afresh for every exchange (a projected Kubernetes
    /// service-account token rotates under the process). The default when that key is set.
    File,
    /// The GitHub Actions OIDC token: `GET $ACTIONS_ID_TOKEN_REQUEST_URL` with
    /// `$ACTIONS_ID_TOKEN_REQUEST_TOKEN`, for `subject_audience`.
    GithubActions,
    /// The trimmed output of `subject_command` (program and arguments, no shell).
    Command,
}

impl SubjectSource {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectSource::File => "file",
            SubjectSource::GithubActions => "github_actions",
            SubjectSource::Command => "command",
        }
    }
}

/// How the client authenticates at the token endpoint when it has a secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret (`client_secret_basic`, the default).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Post,
}

/// The default `subject_token_type`: a JWT.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// `auth.oauth2`: how to obtain the token from an OAuth2 token endpoint. Secrets (the client
/// secret, a refresh token) come from the environment or a file, never from the config.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(extend(
    "oneOf" = [{"required": ["token_url"]}, {"required": ["issuer"]}],
    "allOf" = [
        {
            "if": {"properties": {"grant": {"enum": ["client_credentials", "refresh_token", "device_code"]}}},
            "then": {"required": ["client_id"]}
        },
        {
            "if": {"properties": {"grant": {"enum": ["jwt_bearer", "token_exchange"]}}},
            "then": {"anyOf": [{"required": ["subject_token_file"]}, {"required": ["subject"]}]}
        },
        {
            "if": {"properties": {"grant": {"const": "refresh_token"}}},
            "then": {"anyOf": [{"required": ["refresh_token_env"]}, {"required": ["refresh_token_file"]}]}
        },
        {
            "if": {"required": ["subject"], "properties": {"subject": {"const": "github_actions"}}},
            "then": {"required": ["subject_audience"]}
        },
        {
            "if": {"required": ["subject"], "properties": {"subject": {"const": "command"}}},
            "then": {"required": ["subject_command"]}
        },
        {
            "if": {"required": ["subject"], "properties": {"subject": {"const": "file"}}},
            "then": {"required": ["subject_token_file"]}
        },
        {"not": {"required": ["client_secret_env", "client_secret_file"]}}
    ]
)))]
#[non_exhaustive]
pub struct OAuth2Info {
    /// The token endpoint, e.g. `https://idp.example.com/oauth2/token`. Either this or
    /// `issuer`.
    #[serde(default, deserialize_with = "validate::endpoint_url")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::ENDPOINT_URL_PATTERN)))]
    pub token_url: Option<String>,
    /// The issuer, whose `/.well-known/openid-configuration` names the token endpoint (and
    /// the device authorization endpoint). Either this or `token_url`.
    #[serde(default, deserialize_with = "validate::endpoint_url")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::ENDPOINT_URL_PATTERN)))]
    pub issuer: Option<String>,
    /// `device_code`: the device authorization endpoint, when there is no `issuer`.
    #[serde(default, deserialize_with = "validate::endpoint_url")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::ENDPOINT_URL_PATTERN)))]
    pub device_authorization_url: Option<String>,
    /// The grant.
    pub grant: OAuth2Grant,
    /// The client id (required by `client_credentials`, `refresh_token` and `device_code`).
    #[serde(default, deserialize_with = "validate::non_blank_opt")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub client_id: Option<String>,
    /// The environment variable holding the client secret.
    #[serde(default, deserialize_with = "validate::env_name")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::ENV_NAME_PATTERN)))]
    pub client_secret_env: Option<String>,
    /// A file holding the client secret (trimmed); relative to the config file's folder.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// How the client secret is sent: `basic` (default) or `post`.
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// The `scope` parameter.
    #[serde(default, deserialize_with = "validate::non_blank_opt")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub scope: Option<String>,
    /// The `audience` parameter.
    #[serde(default, deserialize_with = "validate::non_blank_opt")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub audience: Option<String>,
    /// The `resource` parameter (RFC 8707).
    #[serde(default, deserialize_with = "validate::non_blank_opt")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub resource: Option<String>,
    /// Where the subject token comes from (`jwt_bearer`, `token_exchange`): `file` (the
    /// default with `subject_token_file`), `github_actions` or `command`.
    #[serde(default)]
    pub subject: Option<SubjectSource>,
    /// The subject token's file, read afresh for every exchange; relative to the config
    /// file's folder.
    #[serde(default)]
    pub subject_token_file: Option<PathBuf>,
    /// `subject = "command"`: the program and its arguments (no shell); its trimmed output
    /// is the subject token.
    #[serde(default)]
    pub subject_command: Vec<String>,
    /// `subject = "github_actions"`: the audience the OIDC token is asked for.
    #[serde(default, deserialize_with = "validate::non_blank_opt")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub subject_audience: Option<String>,
    /// `token_exchange`: the subject token's type (default
    /// `urn:ietf:params:oauth:token-type:jwt`).
    #[serde(default, deserialize_with = "validate::non_blank_opt")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub subject_token_type: Option<String>,
    /// `token_exchange`: the `requested_token_type`, when the endpoint needs one.
    #[serde(default, deserialize_with = "validate::non_blank_opt")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub requested_token_type: Option<String>,
    /// `refresh_token`: the environment variable holding the first refresh token (used
    /// until the store holds a newer one).
    #[serde(default, deserialize_with = "validate::env_name")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::ENV_NAME_PATTERN)))]
    pub refresh_token_env: Option<String>,
    /// `refresh_token`: a file holding the first refresh token; relative to the config
    /// file's folder.
    #[serde(default)]
    pub refresh_token_file: Option<PathBuf>,
    // Refused with a clear message: a secret is never written in the config.
    #[serde(
        default,
        deserialize_with = "validate::inline_secret",
        skip_serializing
    )]
    #[cfg_attr(feature = "schema", schemars(skip))]
    client_secret: Option<()>,
}

impl OAuth2Info {
    /// An `oauth2` table for `grant` at `token_url`, every other field unset.
    pub fn new(grant: OAuth2Grant, token_url: impl Into<String>) -> Self {
        Self {
            token_url: Some(token_url.into()),
            issuer: None,
            device_authorization_url: None,
            grant,
            client_id: None,
            client_secret_env: None,
            client_secret_file: None,
            client_auth: ClientAuthMethod::default(),
            scope: None,
            audience: None,
            resource: None,
            subject: None,
            subject_token_file: None,
            subject_command: Vec::new(),
            subject_audience: None,
            subject_token_type: None,
            requested_token_type: None,
            refresh_token_env: None,
            refresh_token_file: None,
            client_secret: None,
        }
    }

    /// The host (and port, when given) of `token_url`, else of `issuer`: what messages show
    /// of the endpoint.
    pub fn endpoint_host(&self) -> String {
        self.token_url
            .as_deref()
            .or(self.issuer.as_deref())
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                _ => String::new(),
            })
            .unwrap_or_default()
    }

    /// `oauth2 \`GRANT\` at HOST`: how a token is minted, for messages.
    pub fn describe(&self) -> String {
        format!("oauth2 `{}` at {}", self.grant, self.endpoint_host())
    }

    /// Where the subject token comes from: `subject`, else `file` when
    /// `subject_token_file` is set.
    pub fn subject_source(&self) -> Option<SubjectSource> {
        self.subject.or(self
            .subject_token_file
            .as_ref()
            .map(|_| SubjectSource::File))
    }

    /// The first cross-field rule this table breaks: `(key, message)`, the key relative to
    /// the `oauth2` table.
    pub fn missing_for_grant(&self) -> Option<(&'static str, String)> {
        let grant = self.grant;
        match (&self.token_url, &self.issuer) {
            (Some(_), Some(_)) => {
                return Some((
                    "issuer",
                    "cannot be combined with token_url; give one of them".to_owned(),
                ));
            }
            (None, None) => {
                return Some((
                    "token_url",
                    "is required (or `issuer`, whose discovery document names it)".to_owned(),
                ));
            }
            _ => {}
        }
        if self.client_secret_env.is_some() && self.client_secret_file.is_some() {
            return Some((
                "client_secret_file",
                "cannot be combined with client_secret_env; give one of them".to_owned(),
            ));
        }
        if (self.client_secret_env.is_some() || self.client_secret_file.is_some())
            && self.client_id.is_none()
        {
            return Some(("client_id", "is required with a client secret".to_owned()));
        }
        if matches!(
            grant,
            OAuth2Grant::ClientCredentials | OAuth2Grant::RefreshToken | OAuth2Grant::DeviceCode
        ) && self.client_id.is_none()
        {
            return Some(("client_id", format!("is required by grant `{grant}`")));
        }
        let subject_key = [
            ("subject", self.subject.is_some()),
            ("subject_token_file", self.subject_token_file.is_some()),
            ("subject_command", !self.subject_command.is_empty()),
            ("subject_audience", self.subject_audience.is_some()),
        ]
        .into_iter()
        .find_map(|(key, set)| set.then_some(key));
        if grant.needs_subject() {
            match self.subject_source() {
                None => {
                    return Some((
                        "subject_token_file",
                        format!(
                            "is required by grant `{grant}` (or `subject = \"github_actions\"` or `\"command\"`)"
                        ),
                    ));
                }
                Some(SubjectSource::File) if self.subject_token_file.is_none() => {
                    return Some((
                        "subject_token_file",
                        "is required with `subject = \"file\"`".to_owned(),
                    ));
                }
                Some(SubjectSource::Command)
                    if self
                        .subject_command
                        .first()
                        .is_none_or(|p| p.trim().is_empty()) =>
                {
                    return Some((
                        "subject_command",
                        "is required with `subject = \"command\"`: the program and its arguments"
                            .to_owned(),
                    ));
                }
                Some(SubjectSource::GithubActions) if self.subject_audience.is_none() => {
                    return Some((
                        "subject_audience",
                        "is required with `subject = \"github_actions\"`".to_owned(),
                    ));
                }
                _ => {}
            }
            let source = self.subject_source();
            if self.subject_token_file.is_some() && source != Some(SubjectSource::File) {
                return Some(("subject_token_file", one_source_message(source)));
            }
            if !self.subject_command.is_empty() && source != Some(SubjectSource::Command) {
                return Some(("subject_command", one_source_message(source)));
            }
        } else if let Some(key) = subject_key {
            return Some((
                key,
                format!("is only used by grants `jwt_bearer` and `token_exchange`, not `{grant}`"),
            ));
        }
        let seed = self.refresh_token_env.is_some() || self.refresh_token_file.is_some();
        if self.refresh_token_env.is_some() && self.refresh_token_file.is_some() {
            return Some((
                "refresh_token_file",
                "cannot be combined with refresh_token_env; give one of them".to_owned(),
            ));
        }
        if grant == OAuth2Grant::RefreshToken && !seed {
            return Some((
                "refresh_token_env",
                "is required by grant `refresh_token` (or `refresh_token_file`): the first refresh token"
                    .to_owned(),
            ));
        }
        if seed && grant != OAuth2Grant::RefreshToken {
            return Some((
                if self.refresh_token_env.is_some() {
                    "refresh_token_env"
                } else {
                    "refresh_token_file"
                },
                format!("is only used by grant `refresh_token`, not `{grant}`"),
            ));
        }
        if grant == OAuth2Grant::DeviceCode
            && self.issuer.is_none()
            && self.device_authorization_url.is_none()
        {
            return Some((
                "device_authorization_url",
                "is required by grant `device_code` (or `issuer`, whose discovery document names it)"
                    .to_owned(),
            ));
        }
        if grant != OAuth2Grant::DeviceCode && self.device_authorization_url.is_some() {
            return Some((
                "device_authorization_url",
                format!("is only used by grant `device_code`, not `{grant}`"),
            ));
        }
        None
    }

    /// Makes the relative paths (secret, subject and refresh-token files) relative to
    /// `base`, the config file's folder.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        for path in [
            &mut self.client_secret_file,
            &mut self.subject_token_file,
            &mut self.refresh_token_file,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = crate::without_dot_components(&base.join(&*path));
            }
        }
    }
}

fn one_source_message(source: Option<SubjectSource>) -> String {
    format!(
        "is not used with `subject = \"{}\"`; give one subject source",
        source.map_or("none", SubjectSource::as_str)
    )
}

/// Only names and paths are printed, never a value read from them.
impl fmt::Debug for OAuth2Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Info")
            .field("token_url", &self.token_url)
            .field("issuer", &self.issuer)
            .field("grant", &self.grant)
            .field("client_id", &self.client_id)
            .field("client_secret_env", &self.client_secret_env)
            .field("client_secret_file", &self.client_secret_file)
            .field("subject", &self.subject_source())
            .field("subject_token_file", &self.subject_token_file)
            .finish_non_exhaustive()
    }
}
