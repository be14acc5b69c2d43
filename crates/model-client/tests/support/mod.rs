//! Token scripts (real processes) and provider configs for the client tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use model_client::ModelClient;
use provider_auth::{AuthManager, auth_manager_for_provider};
use provider_config::{ModelProviderAuthInfo, ModelProviderInfo};

/// A token script in a temp dir that prints `tok-<run number>` and counts its runs.
pub struct TokenScript {
    pub dir: tempfile::TempDir,
}

impl TokenScript {
    pub fn new() -> Self {
        Self::with_body("echo tok-$N")
    }

    pub fn with_body(body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.sh");
        std::fs::write(
            &path,
            format!("#!/bin/sh\nD=\"$(dirname \"$0\")\"\necho run >> \"$D/runs\"\nN=$(wc -l < \"$D/runs\" | tr -d ' ')\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    pub fn auth(&self) -> ModelProviderAuthInfo {
        let mut auth =
            ModelProviderAuthInfo::new(self.dir.path().join("token.sh").to_str().unwrap());
        auth.cwd = self.dir.path().to_path_buf();
        auth
    }

    pub fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

/// A provider at `base_url` using `script` for tokens.
pub fn command_provider(base_url: &str, script: &TokenScript) -> ModelProviderInfo {
    let mut info = ModelProviderInfo::new("Test", base_url);
    info.auth = Some(script.auth());
    info
}

pub fn client(info: &ModelProviderInfo) -> (ModelClient, Arc<dyn AuthManager>) {
    let auth = auth_manager_for_provider("corp", info, None).unwrap();
    (
        ModelClient::new("corp", info.clone(), auth.clone()).unwrap(),
        auth,
    )
}
