//! The forms a secret may leak in, computed here independently of the scrubber under test.

use base64::Engine as _;

/// Any run of this many characters of a secret counts as a leak.
const PART: usize = 10;

/// Every way `secret` is found in `text`: the secret itself, any run of 10 of its
/// characters, its JSON-escaped, URL-encoded and base64 forms. Empty when nothing leaked.
pub fn leaked_forms(text: &str, secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut check = |name: &str, form: &str| {
        if form.len() >= PART && text.contains(form) {
            found.push(name.to_owned());
        }
    };
    check("raw", secret);
    check("json", &json_escaped(secret));
    check("url", &url_encoded(secret));
    check("url-lower", &url_encoded(secret).to_lowercase());
    check("base64", &base64_core(secret, false));
    check("base64url", &base64_core(secret, true));
    for (i, part) in secret.as_bytes().windows(PART).enumerate() {
        if text.as_bytes().windows(PART).any(|w| w == part) {
            found.push(format!("part at {i}"));
            break;
        }
    }
    found
}

/// A body that echoes each secret back in every way a careless gateway might: as it is,
/// JSON-escaped with `\/`, URL-encoded, base64, truncated, split by a control character,
/// with terminal escape codes around.
pub fn echo_in_every_encoding(secrets: &[String]) -> String {
    let mut body = String::from("\u{1b}[31m\u{1b}]0;owned\u{7}rejected credentials:\n");
    for s in secrets {
        let half = s.len() / 2;
        let cut = s.get(..half).unwrap_or(s);
        let rest = s.get(half..).unwrap_or_default();
        body.push_str(&format!(
            "raw={s}\njson=\"{}\"\nurl={}\nb64={}\nb64url={}\nbearer-b64={}\ntruncated={}...\nsplit={cut}\u{1}{rest}\nsplit-nl={cut}\n{rest}\n",
            json_escaped(s),
            url_encoded(s),
            base64::engine::general_purpose::STANDARD.encode(s),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s),
            base64::engine::general_purpose::STANDARD.encode(format!("Bearer {s}")),
            s.get(..s.len().min(24)).unwrap_or(s),
        ));
    }
    body.push_str("\u{1b}[0m");
    body
}

fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted.trim_matches('"').replace('/', "\\/")
}

fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The base64 of `s` without its last (padding-dependent) characters.
fn base64_core(s: &str, url_safe: bool) -> String {
    let encoded = if url_safe {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    } else {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(s)
    };
    let keep = encoded.len().saturating_sub(2);
    encoded.get(..keep).unwrap_or_default().to_owned()
}
