//! Reading a token out of a command's stdout: `text` and `json` formats.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use provider_config::TokenFormat;
use serde_json::Value;

use crate::error::CommandFailure;
use crate::token::{AuthToken, FreshToken, TokenShape};

const ACCEPTED_SHAPES: &str = "expected one JSON object of these shapes: an OAuth2 token response \
{\"access_token\": \"...\", \"expires_in\": 3600}, {\"token\": \"...\", \"expires_at\": \"RFC 3339 time\"}, \
or a Kubernetes ExecCredential {\"kind\": \"ExecCredential\", \"status\": {\"token\": \"...\", \"expirationTimestamp\": \"...\"}}";

/// Reads a token out of a command's stdout in `format`, as a run of the command would
/// (expiries relative to now). Errors never quote the output.
pub fn parse_token_output(stdout: &str, format: TokenFormat) -> Result<FreshToken, CommandFailure> {
    parse_output(stdout, format, SystemTime::now())
}

/// Parses a command's (UTF-8) stdout in the configured format. `now` is when it finished.
pub(crate) fn parse_output(
    stdout: &str,
    format: TokenFormat,
    now: SystemTime,
) -> Result<FreshToken, CommandFailure> {
    match format {
        TokenFormat::Json => parse_json(stdout, now),
        _ => parse_text(stdout),
    }
}

fn parse_text(stdout: &str) -> Result<FreshToken, CommandFailure> {
    let trimmed = stdout.trim();
    if trimmed.starts_with('{')
        && serde_json::from_str::<serde_json::Map<String, Value>>(trimmed).is_ok()
    {
        return Err(CommandFailure::InvalidToken {
            reason: "printed a JSON object, not a bare token; set `format = \"json\"` in its auth table to read it",
        });
    }
    if trimmed == "null" || trimmed == "undefined" {
        return Err(CommandFailure::InvalidToken {
            reason: "printed `null` or `undefined`, as `jq -r` or a script does for a missing field (did the token endpoint answer an error?), not a token",
        });
    }
    let token =
        AuthToken::parse(trimmed).map_err(|reason| CommandFailure::InvalidToken { reason })?;
    let expires_at = jwt_expiry(token.expose_secret());
    Ok(FreshToken {
        token,
        expires_at,
        obtained_at: None,
        headers: Vec::new(),
        shape: TokenShape::Text,
    })
}

fn parse_json(stdout: &str, now: SystemTime) -> Result<FreshToken, CommandFailure> {
    let bad = |reason: String| CommandFailure::BadJson { reason };
    let value: Value = serde_json::from_str(stdout.trim()).map_err(|e| {
        // Only the position: serde's messages can quote the input, which may hold the token.
        bad(format!(
            "not valid JSON (line {}, column {}); {ACCEPTED_SHAPES}",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(obj) = &value else {
        return Err(bad(format!("not a JSON object; {ACCEPTED_SHAPES}")));
    };
    let (token, expires_at, shape) = if let Some(t) = obj.get("access_token") {
        let expires_at = match obj.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                seconds(v)
                    .and_then(|s| now.checked_add(Duration::from_secs_f64(s)))
                    .ok_or_else(|| {
                        bad("`expires_in` is not a non-negative number of seconds".to_owned())
                    })?,
            ),
        };
        (
            string_field(t, "access_token")?,
            expires_at,
            TokenShape::OAuth2,
        )
    } else if obj.get("kind").and_then(Value::as_str) == Some("ExecCredential") {
        let status = obj
            .get("status")
            .and_then(Value::as_object)
            .ok_or_else(
                || bad("ExecCredential has no `status` object with a `token`".to_owned()),
            )?;
        let t = status.get("token").ok_or_else(|| {
            bad(
                "ExecCredential `status` has no `token` (client certificates are not supported)"
                    .to_owned(),
            )
        })?;
        let expires_at = match status.get("expirationTimestamp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(timestamp(v, "status.expirationTimestamp")?),
        };
        (
            string_field(t, "status.token")?,
            expires_at,
            TokenShape::ExecCredential,
        )
    } else if let Some(t) = obj.get("token") {
        let expires_at = match obj.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(v) => Some(timestamp(v, "expires_at")?),
        };
        (
            string_field(t, "token")?,
            expires_at,
            TokenShape::TokenObject,
        )
    } else {
        // Stdout is never quoted, not even a key name: name the shape problem only.
        let reason = if obj.contains_key("error") {
            format!(
                "an object with an `error` key and no token (the token endpoint refused the request; run the command by hand to see why); {ACCEPTED_SHAPES}"
            )
        } else {
            format!(
                "an object with {} key(s), none of `access_token`, `token` or `kind`; {ACCEPTED_SHAPES}",
                obj.len()
            )
        };
        return Err(bad(reason));
    };
    let token =
        AuthToken::parse(token).map_err(|reason| CommandFailure::InvalidToken { reason })?;
    let expires_at = expires_at.or_else(|| jwt_expiry(token.expose_secret()));
    let headers = match obj.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => helper_headers(v)?,
    };
    Ok(FreshToken {
        token,
        expires_at,
        obtained_at: None,
        headers,
        shape,
    })
}

/// Header names a helper may not set: they carry the token, frame the request or belong to
/// one hop, or describe the client's own body (through the proxy a helper header must never
/// replace the client's `Content-Type` or `Content-Encoding`).
pub(crate) const RESERVED_HELPER_HEADERS: [&str; 14] = [
    "host",
    "authorization",
    "proxy-authorization",
    "content-length",
    "content-type",
    "content-encoding",
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// `"headers": {"Name": "value"}`. Errors name the problem, never a name or a value.
fn helper_headers(v: &Value) -> Result<Vec<(http::HeaderName, AuthToken)>, CommandFailure> {
    let bad = |reason: &str| CommandFailure::BadJson {
        reason: reason.to_owned(),
    };
    let Value::Object(map) = v else {
        return Err(bad(
            "`headers` is not an object of header names to string values",
        ));
    };
    let mut headers = Vec::with_capacity(map.len());
    for (name, value) in map {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("`headers` has a name that is not a valid HTTP header name"))?;
        if RESERVED_HELPER_HEADERS.contains(&name.as_str()) {
            return Err(bad(
                "`headers` names a header a helper may not set (Host, Authorization, Proxy-Authorization, Content-Length, Content-Type, Content-Encoding, or a hop-by-hop header such as Connection, Transfer-Encoding, Upgrade or Expect)",
            ));
        }
        let Value::String(value) = value else {
            return Err(bad("a value in `headers` is not a string"));
        };
        if http::HeaderValue::from_str(value).is_err() {
            return Err(bad("a value in `headers` is not a valid HTTP header value"));
        }
        headers.push((name, AuthToken::new(value.clone())));
    }
    Ok(headers)
}

fn string_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, CommandFailure> {
    v.as_str().ok_or_else(|| CommandFailure::BadJson {
        reason: format!("`{name}` is not a string"),
    })
}

fn seconds(v: &Value) -> Option<f64> {
    let s = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (s.is_finite() && (0.0..1e12).contains(&s)).then_some(s)
}

/// A time as RFC 3339 in UTC, to the second (`2026-11-28T10:00:00Z`): the form helpers
/// print and the `ExecCredential` format uses.
pub fn format_rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn timestamp(v: &Value, name: &str) -> Result<SystemTime, CommandFailure> {
    let parsed = match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .and_then(|t| u64::try_from(t.timestamp()).ok()),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    parsed
        .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .ok_or_else(|| CommandFailure::BadJson {
            reason: format!("`{name}` is not an RFC 3339 time (e.g. 2026-11-28T10:00:00Z)"),
        })
}

/// The `exp` claim of a JWT, if `token` is one. Nothing else is read from it.
pub(crate) fn jwt_expiry(token: &str) -> Option<SystemTime> {
    jwt_time_claim(token, "exp")
}

/// The `nbf` (not before) claim of a JWT, if `token` is one: `check --live` reports a token
/// that is not valid yet (a clock that is off).
pub fn jwt_not_before(token: &str) -> Option<SystemTime> {
    jwt_time_claim(token, "nbf")
}

/// A time claim (seconds since the epoch) of a JWT's payload.
fn jwt_time_claim(token: &str, claim: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let secs = claims.get(claim)?.as_f64()?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e12) {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.{}",
            enc(r#"{"alg":"none"}"#),
            enc(&format!(r#"{{"sub":"x","exp":{exp}}}"#)),
            enc("sig")
        )
    }

    #[test]
    fn text_is_trimmed() {
        let t = parse_output("  abc.def\n\n", TokenFormat::Text, SystemTime::now()).unwrap();
        assert_eq!(t.token.expose_secret(), "abc.def");
        assert_eq!(t.expires_at, None);
    }

    #[test]
    fn text_rejects_interior_whitespace_and_empty() {
        for bad in ["a b", "a\nb", "", "  \n", "a\u{7}b"] {
            assert!(
                parse_output(bad, TokenFormat::Text, SystemTime::now()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_null_of_a_missing_field_is_not_a_token() {
        for missing in ["null\n", "undefined"] {
            let err = parse_output(missing, TokenFormat::Text, SystemTime::now())
                .unwrap_err()
                .to_string();
            assert!(err.contains("missing field"), "{err}");
        }
        // A longer token that merely contains the word is a token.
        assert!(parse_output("nullable-token", TokenFormat::Text, SystemTime::now()).is_ok());
    }

    #[test]
    fn json_in_text_format_suggests_the_json_format() {
        let err = parse_output(
            r#"{"access_token":"s3cr3t","expires_in":60}"#,
            TokenFormat::Text,
            SystemTime::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("format = \"json\""), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn jwt_exp_is_an_expiry_hint() {
        let t = parse_output(&jwt(2_000_000_000), TokenFormat::Text, SystemTime::now()).unwrap();
        assert_eq!(
            t.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
    }

    #[test]
    fn oauth_expires_in_is_relative_to_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let t = parse_output(
            r#"{"access_token":"tok","token_type":"Bearer","expires_in":3599}"#,
            TokenFormat::Json,
            now,
        )
        .unwrap();
        assert_eq!(t.token.expose_secret(), "tok");
        assert_eq!(t.expires_at, Some(now + Duration::from_secs(3599)));
    }

    #[test]
    fn token_and_expires_at() {
        let t = parse_output(
            r#"{"token":"tok","expires_at":"2026-11-28T10:00:00Z"}"#,
            TokenFormat::Json,
            SystemTime::now(),
        )
        .unwrap();
        let want = chrono::DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z").unwrap();
        assert_eq!(
            t.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(want.timestamp() as u64))
        );
    }

    #[test]
    fn exec_credential() {
        let t = parse_output(
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"k8s","expirationTimestamp":"2030-01-01T00:00:00+01:00"}}"#,
            TokenFormat::Json,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(t.token.expose_secret(), "k8s");
        assert!(t.expires_at.is_some());
    }

    #[test]
    fn other_json_lists_the_accepted_shapes_without_the_output() {
        let err = parse_output(
            r#"{"error":"invalid_client","error_description":"bad secret","secretish":"s3cr3t"}"#,
            TokenFormat::Json,
            SystemTime::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`error` key") && err.contains("ExecCredential"),
            "{err}"
        );
        for quoted in ["invalid_client", "bad secret", "secretish", "s3cr3t"] {
            assert!(!err.contains(quoted), "{quoted} quoted in {err}");
        }
        let err = parse_output(
            r#"{"tok3n_field":"v"}"#,
            TokenFormat::Json,
            SystemTime::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("1 key(s)") && !err.contains("tok3n"), "{err}");
        let err = parse_output("s3cr3t-not-json", TokenFormat::Json, SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("s3cr3t") && err.contains("not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn helper_headers_are_read_and_reserved_names_refused_without_quoting() {
        let t = parse_output(
            r#"{"token":"t","headers":{"X-Tenant":"tenant-1","X-Org":"org a"}}"#,
            TokenFormat::Json,
            SystemTime::now(),
        )
        .unwrap();
        let names: Vec<&str> = t.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-org", "x-tenant"]);
        assert_eq!(t.headers[1].1.expose_secret(), "tenant-1");
        for (stdout, says) in [
            (
                r#"{"token":"t","headers":{"Host":"evil.example"}}"#,
                "may not set",
            ),
            (
                r#"{"token":"t","headers":{"AUTHORIZATION":"Bearer s3cr3t"}}"#,
                "may not set",
            ),
            // Hardening round 3: hop-by-hop, framing and the client's content headers.
            (
                r#"{"token":"t","headers":{"Upgrade":"h2c"}}"#,
                "may not set",
            ),
            (
                r#"{"token":"t","headers":{"Keep-Alive":"1"}}"#,
                "may not set",
            ),
            (
                r#"{"token":"t","headers":{"TE":"trailers"}}"#,
                "may not set",
            ),
            (
                r#"{"token":"t","headers":{"Expect":"100-continue"}}"#,
                "may not set",
            ),
            (
                r#"{"token":"t","headers":{"Proxy-Authorization":"x"}}"#,
                "may not set",
            ),
            (r#"{"token":"t","headers":{"Trailer":"x"}}"#, "may not set"),
            (
                r#"{"token":"t","headers":{"Content-Type":"text/plain"}}"#,
                "may not set",
            ),
            (
                r#"{"token":"t","headers":{"Content-Encoding":"gzip"}}"#,
                "may not set",
            ),
            (
                r#"{"token":"t","headers":{"bad name":"v"}}"#,
                "not a valid HTTP header name",
            ),
            (
                r#"{"token":"t","headers":{"X-A":"bell\u0007 s3cr3t"}}"#,
                "not a valid HTTP header value",
            ),
            (r#"{"token":"t","headers":{"X-A":7}}"#, "not a string"),
            (r#"{"token":"t","headers":["X-A"]}"#, "not an object"),
        ] {
            let err = parse_output(stdout, TokenFormat::Json, SystemTime::now())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{stdout}: {err}");
            for quoted in ["evil", "s3cr3t", "bad name", "X-A"] {
                assert!(!err.contains(quoted), "{quoted} quoted: {err}");
            }
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A value that must never be quoted in an error: 12 to 20 letters and digits.
        fn secretish() -> impl Strategy<Value = String> {
            "[A-Za-z0-9]{12,20}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_output_is_an_answer_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let text = String::from_utf8_lossy(&bytes);
                for format in [TokenFormat::Text, TokenFormat::Json] {
                    let _ = parse_output(&text, format, SystemTime::now());
                }
            }

            #[test]
            fn errors_about_json_quote_no_key_and_no_value(
                fields in prop::collection::btree_map(secretish(), secretish(), 0..6),
                with_error in any::<bool>(),
                numeric_token in any::<bool>(),
            ) {
                let mut obj = serde_json::Map::new();
                for (k, v) in &fields {
                    obj.insert(k.clone(), Value::String(v.clone()));
                }
                if with_error {
                    obj.insert("error".to_owned(), Value::String("invalid_grant".to_owned()));
                }
                if numeric_token {
                    obj.insert("access_token".to_owned(), Value::from(12_345_678_901_234_u64));
                }
                let stdout = Value::Object(obj).to_string();
                if let Err(e) = parse_output(&stdout, TokenFormat::Json, SystemTime::now()) {
                    let shown = e.to_string();
                    for (k, v) in &fields {
                        prop_assert!(!shown.contains(k.as_str()), "key {k} quoted: {shown}");
                        prop_assert!(!shown.contains(v.as_str()), "value {v} quoted: {shown}");
                    }
                    prop_assert!(!shown.contains("invalid_grant"), "{shown}");
                    prop_assert!(!shown.contains("12345678901234"), "{shown}");
                }
            }

            #[test]
            fn a_text_token_is_its_trimmed_output(token in "[!-~]{1,64}", pad in "[ \t\r\n]{0,4}") {
                prop_assume!(!token.starts_with('{'));
                let parsed = parse_output(&format!("{pad}{token}{pad}"), TokenFormat::Text, SystemTime::now()).unwrap();
                prop_assert_eq!(parsed.token.expose_secret(), token.as_str());
            }
        }
    }
}
