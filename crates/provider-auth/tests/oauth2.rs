//! `auth.oauth2` against real OAuth2 servers on loopback (oauth2-mock-server and
//! oidc-provider from npm, started by the test) and hostile token endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use provider_auth::{
    AuthError, CachePolicy, ExternalAuthRefresher, OAuth2Failure, OAuth2Refresher, RefreshReason,
    TokenCache,
};
use provider_config::{ClientAuthMethod, ModelProviderAuthInfo, OAuth2Grant, OAuth2Info};
use test_support::{
    HostileServer, OAUTH2_CLIENT_ID, OAUTH2_CLIENT_SECRET, OAuth2Servers, leaked_forms,
};

/// An unsigned JWT naming `sub`: what a projected service-account token looks like to
/// oauth2-mock-server, which reads its claims.
fn subject_jwt(sub: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"{sub}","aud":"gateway","exp":4102444800}}"#
        ))
    )
}

/// Replaces `path` the way the kubelet does: a new file renamed into place.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn secret_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("client-secret");
    std::fs::write(&path, format!("{OAUTH2_CLIENT_SECRET}\n")).unwrap();
    path
}

fn auth(oauth2: OAuth2Info) -> ModelProviderAuthInfo {
    ModelProviderAuthInfo::with_oauth2(oauth2)
}

fn client_credentials(token_url: String, dir: &Path) -> OAuth2Info {
    let mut o = OAuth2Info::new(OAuth2Grant::ClientCredentials, token_url);
    o.client_id = Some(OAUTH2_CLIENT_ID.to_owned());
    o.client_secret_file = Some(secret_file(dir));
    o.scope = Some("models.read".to_owned());
    o
}

fn refresher(oauth2: OAuth2Info) -> OAuth2Refresher {
    OAuth2Refresher::new("corp", auth(oauth2)).unwrap()
}

fn grants(seen: &[serde_json::Value]) -> Vec<String> {
    seen.iter()
        .map(|r| r["grant_type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn client_credentials_by_basic_and_by_post_and_a_wrong_secret_is_named() {
    let Some(servers) = OAuth2Servers::start(3600) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token_url = format!("{}/token", servers.mock_issuer());
    let basic = client_credentials(token_url.clone(), dir.path());
    let fresh = refresher(basic.clone())
        .refresh(RefreshReason::Initial)
        .await
        .unwrap();
    assert_eq!(fresh.token.expose_secret().split('.').count(), 3, "a JWT");
    let left = fresh
        .expires_at
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));

    let mut post = basic.clone();
    post.client_auth = ClientAuthMethod::Post;
    refresher(post)
        .refresh(RefreshReason::Initial)
        .await
        .unwrap();
    let seen = servers.token_requests();
    assert_eq!(grants(&seen), ["client_credentials", "client_credentials"]);
    assert_eq!(seen[0]["client_auth"], "basic");
    assert_eq!(seen[1]["client_auth"], "post");
    assert_eq!(seen[0]["scope"], "models.read");

    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret-4471").unwrap();
    let mut bad = basic;
    bad.client_secret_file = Some(wrong);
    let err = refresher(bad)
        .refresh(RefreshReason::Initial)
        .await
        .unwrap_err();
    let host = servers
        .mock_issuer()
        .trim_start_matches("http://")
        .to_owned();
    assert_eq!(
        err.to_string(),
        format!(
            "provider `corp`: oauth2 `client_credentials`: token endpoint {host} refused the request (HTTP 401): `invalid_client` (check client_id and the client secret); it says: client authentication failed"
        )
    );
}

#[tokio::test]
async fn a_missing_secret_file_says_which_and_sends_nothing() {
    let Some(servers) = OAuth2Servers::start(3600) else {
        return;
    };
    let mut o = OAuth2Info::new(
        OAuth2Grant::ClientCredentials,
        format!("{}/token", servers.mock_issuer()),
    );
    o.client_id = Some(OAUTH2_CLIENT_ID.to_owned());
    o.client_secret_file = Some("/nonexistent/client-secret".into());
    let err = refresher(o)
        .refresh(RefreshReason::Initial)
        .await
        .unwrap_err();
    assert!(
        err.to_string().ends_with(
            "was not asked: client secret: file /nonexistent/client-secret cannot be read: no such file"
        ),
        "{err}"
    );
    assert!(servers.token_requests().is_empty());
}

#[tokio::test]
async fn token_exchange_by_discovery_at_oidc_provider() {
    let Some(servers) = OAuth2Servers::start(3600) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("sa-token");
    std::fs::write(&subject, subject_jwt("system:serviceaccount:ai:agent")).unwrap();
    let mut o = OAuth2Info::new(OAuth2Grant::TokenExchange, "unused");
    o.token_url = None;
    o.issuer = Some(servers.oidc_issuer());
    o.client_id = Some(OAUTH2_CLIENT_ID.to_owned());
    o.client_secret_file = Some(secret_file(dir.path()));
    o.subject_token_file = Some(subject);
    o.audience = Some("gateway".to_owned());
    let r = refresher(o);
    let fresh = r.refresh(RefreshReason::Initial).await.unwrap();
    assert!(fresh.token.len() >= 20, "an opaque access token");
    assert!(fresh.expires_at.is_some());
    let seen = servers.token_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["server"], "oidc");
    assert_eq!(seen[0]["sub"], "system:serviceaccount:ai:agent");
    assert_eq!(
        seen[0]["subject_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(seen[0]["audience"], "gateway");
    let report = r.last_exchange().unwrap();
    assert_eq!(report.grant, OAuth2Grant::TokenExchange);
    assert!(report.subject_age.unwrap() < Duration::from_secs(60));
}

#[tokio::test]
async fn a_rotated_refresh_token_replaces_the_kept_one_atomically() {
    let Some(servers) = OAuth2Servers::start(3600) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    std::fs::write(&seed, "first-refresh-token-0001\n").unwrap();
    let kept = dir.path().join("kept.refresh");
    let mut o = OAuth2Info::new(
        OAuth2Grant::RefreshToken,
        format!("{}/token", servers.mock_issuer()),
    );
    o.client_id = Some(OAUTH2_CLIENT_ID.to_owned());
    o.client_secret_file = Some(secret_file(dir.path()));
    o.refresh_token_file = Some(seed);
    let r = refresher(o.clone()).with_refresh_token_file(kept.clone());
    r.refresh(RefreshReason::Initial).await.unwrap();
    let second = std::fs::read_to_string(&kept).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A new process (a new refresher) uses the kept token, not the seed.
    let again = refresher(o).with_refresh_token_file(kept.clone());
    again.refresh(RefreshReason::Initial).await.unwrap();
    let seen = servers.token_requests();
    assert_eq!(grants(&seen), ["refresh_token", "refresh_token"]);
    assert_eq!(seen[0]["refresh_token"], "first-refresh-token-0001");
    assert_eq!(seen[1]["refresh_token"], second.as_str());
    assert_ne!(
        std::fs::read_to_string(&kept).unwrap(),
        second,
        "rotated again"
    );
    // Nothing but the kept file is left in the folder (no temporary file).
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// SPEC §14: the subject file is read afresh for every exchange. It is replaced every
/// second while 1,000 requests flow; tokens live 1 s, so exchanges keep happening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projected_token_rotating_every_second_is_used_fresh_by_every_exchange() {
    let Some(servers) = OAuth2Servers::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("sa-token");
    replace_file(&subject, &subject_jwt("gen-0"));
    let mut o = OAuth2Info::new(
        OAuth2Grant::JwtBearer,
        format!("{}/token", servers.mock_issuer()),
    );
    o.subject_token_file = Some(subject.clone());
    let cache = TokenCache::new(Arc::new(refresher(o)), CachePolicy::new(None));

    let generation = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let rotator = {
        let (generation, done, subject) = (generation.clone(), done.clone(), subject.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !done.load(Ordering::SeqCst) {
                tick.tick().await;
                let next = generation.load(Ordering::SeqCst) + 1;
                replace_file(&subject, &subject_jwt(&format!("gen-{next}")));
                generation.store(next, Ordering::SeqCst);
            }
        })
    };
    let mut failures = 0;
    let started = Instant::now();
    for _ in 0..1000 {
        if cache.credential().await.is_err() {
            failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    done.store(true, Ordering::SeqCst);
    rotator.await.unwrap();
    assert_eq!(failures, 0);
    let last_generation = generation.load(Ordering::SeqCst);
    assert!(
        last_generation >= 3,
        "{last_generation} rotations in {:?}",
        started.elapsed()
    );

    let seen = servers.token_requests();
    let subs: Vec<usize> = seen
        .iter()
        .map(|r| {
            r["sub"]
                .as_str()
                .unwrap()
                .trim_start_matches("gen-")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(seen.len() >= 3, "{} exchanges", seen.len());
    // Every exchange used the file as it was then: the generations only go up, each
    // rotation is seen by an exchange after it, and the last exchange used one of the
    // last two files.
    assert!(subs.windows(2).all(|w| w[0] <= w[1]), "{subs:?}");
    assert!(
        subs.last().copied().unwrap() + 1 >= last_generation,
        "{subs:?} after {last_generation} rotations"
    );
    let distinct: std::collections::BTreeSet<_> = subs.iter().collect();
    assert!(distinct.len() + 1 >= last_generation, "{subs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_callers_share_one_exchange() {
    let Some(servers) = OAuth2Servers::start(3600) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = client_credentials(format!("{}/token", servers.mock_issuer()), dir.path());
    let cache = TokenCache::new(Arc::new(refresher(o)), CachePolicy::new(None));
    support::cold_callers_share_the_first_generation(&cache, 1000).await;
    assert_eq!(servers.token_requests().len(), 1);
    assert_eq!(cache.stats().command_runs, 1);
}

/// An endpoint that keeps answering `invalid_grant` is asked at most once per backoff
/// step (1 s, then 2 s), however often callers ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_refusing_the_grant_is_asked_once_per_backoff_step() {
    let Some(servers) = OAuth2Servers::start(3600) else {
        return;
    };
    servers.set_fault("invalid_grant");
    let dir = tempfile::tempdir().unwrap();
    let o = client_credentials(format!("{}/token", servers.mock_issuer()), dir.path());
    let cache = TokenCache::new(Arc::new(refresher(o)), CachePolicy::new(None));
    let started = Instant::now();
    let mut answers = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        let err = cache.credential().await.unwrap_err();
        assert!(err.to_string().contains("`invalid_grant`"), "{err}");
        answers += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exchanges = servers.token_requests().len();
    assert!(answers > 300, "{answers} answers");
    // At 0 s, after the 1 s step, after the 2 s step (3 s): never more.
    assert!((2..=3).contains(&exchanges), "{exchanges} exchanges");
}

/// A token endpoint that quotes the whole request in `error_description`: the error keeps
/// the code and a scrubbed excerpt; no secret of the exchange, in any form.
#[tokio::test]
async fn an_endpoint_echoing_the_request_leaks_no_secret() {
    let Some(servers) = OAuth2Servers::start(3600) else {
        return;
    };
    servers.set_fault("echo");
    let dir = tempfile::tempdir().unwrap();
    let subject_value = subject_jwt("echo-subject-5521");
    let subject = dir.path().join("sa-token");
    std::fs::write(&subject, &subject_value).unwrap();
    for client_auth in [ClientAuthMethod::Basic, ClientAuthMethod::Post] {
        let mut o = OAuth2Info::new(
            OAuth2Grant::JwtBearer,
            format!("{}/token", servers.mock_issuer()),
        );
        o.client_id = Some(OAUTH2_CLIENT_ID.to_owned());
        o.client_secret_file = Some(secret_file(dir.path()));
        o.client_auth = client_auth;
        o.subject_token_file = Some(subject.clone());
        let err = refresher(o)
            .refresh(RefreshReason::Initial)
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains("`invalid_grant`"), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
        for secret in [OAUTH2_CLIENT_SECRET, subject_value.as_str()] {
            assert_eq!(leaked_forms(&text, secret), Vec::<String>::new(), "{text}");
        }
    }
}

fn failure(err: &AuthError) -> &OAuth2Failure {
    match err {
        AuthError::OAuth2 { failure, .. } => failure,
        other => panic!("not an OAuth2 error: {other}"),
    }
}

/// Hostile token endpoints: the drip, the never-ending body, the redirect. Each is bounded
/// and none gets the secret twice.
#[tokio::test]
async fn hostile_token_endpoints_are_bounded() {
    let hostile = HostileServer::start();
    let other = HostileServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("drip200", "did not answer within 1500 ms (auth.timeout_ms)"),
        (
            "huge",
            "answered more than 64 KiB; the answer was discarded",
        ),
        ("silent", "did not answer within 1500 ms (auth.timeout_ms)"),
    ];
    for (fault, expected) in cases {
        let mut a = auth(client_credentials(
            format!("{}/token", hostile.base_url(fault)),
            dir.path(),
        ));
        a.timeout_ms = 1500;
        let started = Instant::now();
        let err = OAuth2Refresher::new("corp", a)
            .unwrap()
            .refresh(RefreshReason::Initial)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{fault}");
        assert!(err.to_string().ends_with(expected), "{fault}: {err}");
        assert!(leaked_forms(&err.to_string(), OAUTH2_CLIENT_SECRET).is_empty());
    }
    let redirect = format!(
        "{}/token",
        hostile.base_url(&format!("redirect-{}", other.addr().port()))
    );
    let err = refresher(client_credentials(redirect, dir.path()))
        .refresh(RefreshReason::Initial)
        .await
        .unwrap_err();
    assert_eq!(failure(&err), &OAuth2Failure::Redirect { status: 307 });
    assert!(other.seen().is_empty(), "the redirect was followed");
}

/// The device flow's polling (RFC 8628 §3.5), against a wiremock endpoint that answers
/// `slow_down` once: the next poll waits the interval plus 5 s; the prompt carries what
/// the endpoint said; the device code never reaches an error.
#[tokio::test]
async fn device_flow_polling_honours_slow_down() {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/device"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "device_code": "device-code-secret-77410",
            "user_code": "WDJB-MJHT",
            "verification_uri": "https://idp.example.com/device",
            "interval": 1,
            "expires_in": 60,
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("device_code=device-code-secret-77410"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({"error": "slow_down", "error_description": "for device-code-secret-77410"}),
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "device-access-token-0001",
            "refresh_token": "device-refresh-token-0001",
            "expires_in": 600,
        })))
        .with_priority(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.refresh");
    let mut o = OAuth2Info::new(OAuth2Grant::DeviceCode, format!("{}/token", server.uri()));
    o.client_id = Some("cli".to_owned());
    o.device_authorization_url = Some(format!("{}/device", server.uri()));
    let r = refresher(o).with_refresh_token_file(kept.clone());
    let mut prompts = Vec::new();
    let started = Instant::now();
    let fresh = r
        .device_login(&mut |p| prompts.push(p.clone()))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(fresh.token.expose_secret(), "device-access-token-0001");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "device-refresh-token-0001"
    );
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].user_code, "WDJB-MJHT");
    assert_eq!(
        prompts[0].verification_uri,
        "https://idp.example.com/device"
    );
    assert_eq!(prompts[0].expires_in, Duration::from_secs(60));
    // 1 s, then (after slow_down) 1 + 5 s.
    assert!(took >= Duration::from_secs(7), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let polls = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/token")
        .count();
    assert_eq!(polls, 2);
}
