//! An axum service that calls a model gateway for its own clients: a `ModelClient` held in
//! the app's state, and, for a raw hyper client, `AuthLayer` (tower) adding the credential
//! and retrying once after a 401. Both share the provider's one token cache.
//!
//! `cargo run --example axum_app` (it serves on 127.0.0.1, calls itself twice and exits).

mod common;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use model_client::ModelClient;
use provider_auth::{AuthLayer, AuthService, Provider};
use tower::{Service as _, ServiceExt as _};

/// A hyper client under `AuthLayer` (the request body must be `Clone` to be replayed).
type Gateway = AuthService<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

#[derive(Clone)]
struct AppState {
    models: Arc<ModelClient>,
    raw: Gateway,
    base_url: String,
}

/// `GET /models`: the gateway's model ids, through `ModelClient`.
async fn models(State(state): State<AppState>) -> Result<Json<Vec<String>>, String> {
    let list = state
        .models
        .list_models()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Json(list.data.into_iter().map(|m| m.id).collect()))
}

/// `GET /raw`: the same request through the tower stack, the body passed on as it came.
async fn raw(State(mut state): State<AppState>) -> Result<String, String> {
    let request = http::Request::get(format!("{}/models", state.base_url))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let service = state.raw.ready().await.map_err(|e| e.to_string())?;
    let response = service.call(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(format!("HTTP {status}, {} bytes", body.len()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_as_token_command_if_asked().await;
    let (gateway, info) = common::gateway_and_provider().await?;

    // One provider handle for both clients: one token cache, one rule.
    let provider = Provider::from_config("dev", info.clone(), None)?;
    let hyper_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
    let state = AppState {
        models: Arc::new(ModelClient::for_provider(provider.clone())?),
        raw: tower::ServiceBuilder::new()
            .layer(AuthLayer::for_provider(&provider))
            .service(hyper_client),
        base_url: info.base_url.clone(),
    };
    let app = Router::new()
        .route("/models", get(models))
        .route("/raw", get(raw))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let ids: Vec<String> = reqwest::get(format!("http://{addr}/models"))
        .await?
        .json()
        .await?;
    println!("app /models: {}", ids.join(", "));
    // The gateway revokes every token; the layer gets a new one and retries once.
    gateway.rotate();
    let raw = reqwest::get(format!("http://{addr}/raw"))
        .await?
        .text()
        .await?;
    println!("app /raw after a rotation: {raw}");
    let runs = provider.manager().stats().map_or(0, |s| s.command_runs);
    println!("token command runs: {runs} (shared by both clients)");
    Ok(())
}
