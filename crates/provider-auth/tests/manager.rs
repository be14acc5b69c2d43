//! Building managers from provider config, process-wide sharing, and the one-retry rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use provider_auth::{
    AuthError, AuthManager, AuthRetry, AuthToken, Recovery, RequestAuth, StaticAuthManager,
    auth_manager_for_provider,
};
use provider_config::ModelProviderInfo;
use support::Script;

fn provider_with(script: &Script) -> ModelProviderInfo {
    let mut info = ModelProviderInfo::new("Corp", "http://127.0.0.1:9/v1");
    info.auth = Some(script.auth_with_refresh(300_000));
    info
}

#[tokio::test]
async fn ten_managers_for_one_provider_run_the_command_once() {
    let script = Script::new("echo tok-$N");
    let info = provider_with(&script);
    for _ in 0..10 {
        let manager = auth_manager_for_provider("corp", &info, None).unwrap();
        let credential = manager.credential().await.unwrap().unwrap();
        assert_eq!(credential.token.expose_secret(), "tok-1");
    }
    assert_eq!(script.runs(), 1);
}

#[tokio::test]
async fn two_providers_with_the_same_auth_never_share_a_token_and_errors_name_each() {
    // The command learns the provider (MODELAUTH_PROVIDER) and may mint per audience.
    let script = Script::new("echo tok-$MODELAUTH_PROVIDER-$N");
    let info = provider_with(&script);
    let mut other_gateway = info.clone();
    other_gateway.base_url = "http://127.0.0.1:10/v1".to_owned();
    let a = auth_manager_for_provider("alpha", &info, None).unwrap();
    let b = auth_manager_for_provider("beta", &info, None).unwrap();
    let a2 = auth_manager_for_provider("alpha", &other_gateway, None).unwrap();
    let token = |m: std::sync::Arc<dyn provider_auth::AuthManager>| async move {
        m.credential()
            .await
            .unwrap()
            .unwrap()
            .token
            .expose_secret()
            .to_owned()
    };
    assert_eq!(token(a).await, "tok-alpha-1");
    assert_eq!(token(b).await, "tok-beta-2");
    assert_eq!(
        token(a2).await,
        "tok-alpha-3",
        "another base_url is another cache"
    );
    assert_eq!(script.runs(), 3);
}

#[tokio::test]
async fn errors_name_the_provider_that_asked() {
    let script = Script::new("echo broken >&2\nexit 2");
    let info = provider_with(&script);
    let a = auth_manager_for_provider("alpha", &info, None).unwrap();
    let b = auth_manager_for_provider("beta", &info, None).unwrap();
    let err_a = a.credential().await.unwrap_err().to_string();
    let err_b = b.credential().await.unwrap_err().to_string();
    assert!(
        err_a.starts_with("provider `alpha`: token command"),
        "{err_a}"
    );
    assert!(
        err_b.starts_with("provider `beta`: token command"),
        "{err_b}"
    );
    assert_eq!(script.runs(), 2, "one cache per provider");
}

#[tokio::test]
async fn request_auth_allows_one_recovery_per_logical_request() {
    let script = Script::new("echo tok-$N");
    let manager = auth_manager_for_provider("corp", &provider_with(&script), None).unwrap();
    let mut request = RequestAuth::new(manager.clone());
    let (name, first) = request.credential_headers().await.unwrap().remove(0);
    assert_eq!(name, http::header::AUTHORIZATION);
    assert!(first.is_sensitive());
    assert_eq!(first.to_str().unwrap(), "Bearer tok-1");
    assert_eq!(request.on_unauthorized().await.unwrap(), AuthRetry::Retry);
    let (_, second) = request.credential_headers().await.unwrap().remove(0);
    assert_eq!(second.to_str().unwrap(), "Bearer tok-2");
    assert_eq!(
        request.on_unauthorized().await.unwrap(),
        AuthRetry::GiveUp {
            after_fresh_token: true
        }
    );
    assert_eq!(script.runs(), 2);
    assert_eq!(manager.stats().unwrap().refreshes_after_401, 1);
}

#[tokio::test]
async fn static_token_401_is_not_recoverable() {
    let manager: Arc<dyn AuthManager> = Arc::new(StaticAuthManager::new(
        "corp",
        AuthToken::new("k".to_owned()),
    ));
    let sent = manager.credential().await.unwrap().unwrap();
    assert_eq!(
        manager.unauthorized(&sent).await.unwrap(),
        Recovery::NotRecoverable
    );
    let mut request = RequestAuth::new(manager);
    request.credential_headers().await.unwrap();
    assert_eq!(
        request.on_unauthorized().await.unwrap(),
        AuthRetry::GiveUp {
            after_fresh_token: false
        }
    );
}

#[tokio::test]
async fn env_key_is_read_and_a_missing_one_names_the_variable() {
    let mut info = ModelProviderInfo::new("Env", "http://127.0.0.1:9/v1");
    info.env_key = Some("MODELAUTH_TEST_KEY_THAT_IS_NOT_SET".to_owned());
    info.env_key_instructions = Some("Ask the platform team.".to_owned());
    let err = auth_manager_for_provider("envp", &info, None).unwrap_err();
    assert!(matches!(err, AuthError::MissingEnvKey { .. }));
    assert_eq!(
        err.to_string(),
        "provider `envp`: environment variable `MODELAUTH_TEST_KEY_THAT_IS_NOT_SET` is not set or empty. Ask the platform team."
    );
    info.env_key = Some("PATH".to_owned());
    // PATH holds ':' and '/' but no whitespace: it is accepted as a token.
    let manager = auth_manager_for_provider("envp", &info, None).unwrap();
    assert!(manager.credential().await.unwrap().is_some());
}

#[tokio::test]
async fn bearer_token_and_no_auth_providers() {
    let mut info = ModelProviderInfo::new("Static", "http://127.0.0.1:9/v1");
    info.experimental_bearer_token = Some("sk-static".to_owned());
    let manager = auth_manager_for_provider("s", &info, None).unwrap();
    let credential = manager.credential().await.unwrap().unwrap();
    assert_eq!(credential.token.expose_secret(), "sk-static");

    let none = ModelProviderInfo::new("Local", "http://127.0.0.1:9/v1");
    let manager = auth_manager_for_provider("local", &none, None).unwrap();
    assert!(manager.credential().await.unwrap().is_none());
}

#[tokio::test]
async fn base_session_is_borrowed_but_never_invalidated() {
    let mut info = ModelProviderInfo::new("Proxy", "http://127.0.0.1:9/v1");
    info.requires_openai_auth = true;
    assert!(matches!(
        auth_manager_for_provider("proxy", &info, None).unwrap_err(),
        AuthError::NoBaseSession { .. }
    ));
    let base: Arc<dyn AuthManager> = Arc::new(StaticAuthManager::new(
        "base",
        AuthToken::new("sk-base".to_owned()),
    ));
    let manager = auth_manager_for_provider("proxy", &info, Some(base)).unwrap();
    assert_eq!(manager.provider_id(), "proxy");
    let sent = manager.credential().await.unwrap().unwrap();
    assert_eq!(sent.token.expose_secret(), "sk-base");
    assert_eq!(
        manager.unauthorized(&sent).await.unwrap(),
        Recovery::NotRecoverable
    );
}

#[tokio::test]
async fn debug_output_never_shows_the_token() {
    let script = Script::new("echo tok-VISIBLE-NOWHERE");
    let manager = auth_manager_for_provider("corp", &provider_with(&script), None).unwrap();
    let credential = manager.credential().await.unwrap().unwrap();
    let shown = format!(
        "{credential:?} {:?} {manager:?} {:?}",
        credential.token,
        credential.header_value()
    );
    assert!(!shown.contains("VISIBLE"), "{shown}");
}

#[tokio::test]
async fn a_token_that_cannot_be_a_header_fails_closed() {
    let manager: Arc<dyn AuthManager> = Arc::new(StaticAuthManager::new(
        "corp",
        AuthToken::new("bad\ntoken".to_owned()),
    ));
    let mut request = RequestAuth::new(manager);
    let err = request.credential_headers().await.unwrap_err();
    assert!(
        err.to_string().contains("cannot be sent as an HTTP header"),
        "{err}"
    );
    assert!(!err.to_string().contains("bad"), "{err}");
}

#[tokio::test]
async fn a_bare_key_goes_in_the_configured_header() {
    let script = Script::new("echo key-$N");
    let mut info = provider_with(&script);
    if let Some(auth) = info.auth.as_mut() {
        auth.header = "api-key".to_owned();
        auth.scheme = String::new();
    }
    let manager = auth_manager_for_provider("azure", &info, None).unwrap();
    let (name, value) = RequestAuth::new(manager)
        .credential_headers()
        .await
        .unwrap()
        .remove(0);
    assert_eq!(name.as_str(), "api-key");
    assert_eq!(value.to_str().unwrap(), "key-1");
    assert!(value.is_sensitive());
}
