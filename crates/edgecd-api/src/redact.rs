//! Secret redaction for log lines that leave a device (`edgecd device logs`): pure string
//! rewriting, applied by the agent before upload and again by the server on receipt.
//!
//! Redacted: the value after `Bearer `; edgecd credentials and tokens (`edc_…`, `edt_…`,
//! `eda_…`, `ede_…`); PEM private key material (the rest of a line from `-----BEGIN`);
//! and the value of any key that names a secret (`token`, `secret`, `password`, `passwd`,
//! `credential`, `apikey`/`api_key`, `private_key`, `authorization`) written as `key=value`,
//! `key: value` or JSON `"key":"value"` (also with escaped quotes inside a JSON log line).

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

const SECRET_KEYS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "apikey",
    "api_key",
    "api-key",
    "private_key",
    "authorization",
];

const TOKEN_PREFIXES: &[&str] = &["edc_", "edt_", "eda_", "ede_"];

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn value_end(b: &[u8], start: usize, quoted: bool) -> usize {
    let mut i = start;
    while i < b.len() {
        let c = b[i];
        let stop = if quoted {
            c == b'"' || c == b'\'' || c == b'\\'
        } else {
            c.is_ascii_whitespace()
                || matches!(c, b'"' | b'\'' | b'\\' | b',' | b';' | b'&' | b'}' | b')')
        };
        if stop {
            break;
        }
        i += 1;
    }
    i
}

/// `line` with secrets replaced by [`REDACTED`].
pub fn redact(line: &str) -> String {
    let mut s = line.to_string();
    if let Some(i) = s.find("-----BEGIN") {
        s.truncate(i);
        s.push_str(REDACTED);
    }
    s = redact_after(&s, "Bearer ");
    s = redact_after(&s, "bearer ");
    s = redact_after(&s, "HMAC ");
    for p in TOKEN_PREFIXES {
        s = redact_prefixed(&s, p);
    }
    redact_keys(&s)
}

/// Replaces the word following each `marker`.
fn redact_after(s: &str, marker: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(marker) {
        let start = i + marker.len();
        out.push_str(&rest[..start]);
        let end = start + value_end(&rest.as_bytes()[start..], 0, false);
        if end > start && !rest[start..end].starts_with(REDACTED) {
            out.push_str(REDACTED);
        } else {
            out.push_str(&rest[start..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Replaces whole words that begin with `prefix` (an edgecd token).
fn redact_prefixed(s: &str, prefix: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    while let Some(off) = s[i..].find(prefix) {
        let at = i + off;
        let word_start = at == 0 || !is_ident(b[at - 1]);
        let end = at + prefix.len() + value_end(&b[at + prefix.len()..], 0, false);
        if word_start && end > at + prefix.len() + 3 {
            out.push_str(&s[last..at]);
            out.push_str(REDACTED);
            last = end;
        }
        i = end.max(at + prefix.len());
    }
    out.push_str(&s[last..]);
    out
}

/// Replaces the values of keys naming secrets.
fn redact_keys(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let b = s.as_bytes();
    // (start, end) of values to replace, in order.
    let mut spans: Vec<(usize, usize)> = vec![];
    for k in SECRET_KEYS {
        let mut from = 0;
        while let Some(off) = lower[from..].find(k) {
            let at = from + off;
            from = at + k.len();
            // The rest of the key (`db_password_file`), closing quotes, the separator.
            let mut i = at + k.len();
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            while i < b.len() && matches!(b[i], b'"' | b'\'' | b'\\') {
                i += 1;
            }
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i >= b.len() || !matches!(b[i], b'=' | b':') {
                continue;
            }
            i += 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let mut quoted = false;
            while i < b.len() && matches!(b[i], b'"' | b'\'' | b'\\') {
                quoted = true;
                i += 1;
            }
            if lower[i..].starts_with("bearer ") || lower[i..].starts_with("hmac ") {
                continue; // the scheme stays, its credential was redacted above
            }
            let end = value_end(b, i, quoted);
            if end > i && !s[i..end].starts_with(REDACTED) {
                spans.push((i, end));
            }
        }
    }
    if spans.is_empty() {
        return s.to_string();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (a, e) in spans {
        if a < last {
            continue;
        }
        out.push_str(&s[last..a]);
        out.push_str(REDACTED);
        last = e;
    }
    out.push_str(&s[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let cases = [
            (
                "Authorization: Bearer abc.def-123 ok",
                "Authorization: Bearer [REDACTED] ok",
            ),
            ("password=hunter2 user=bob", "password=[REDACTED] user=bob"),
            ("DB_PASSWORD: s3cr3t", "DB_PASSWORD: [REDACTED]"),
            (
                r#"{"token":"abc","x":1}"#,
                r#"{"token":"[REDACTED]","x":1}"#,
            ),
            (
                r#"{"fields":{"message":"got \"api_key\":\"k-123\" fine"}}"#,
                r#"{"fields":{"message":"got \"api_key\":\"[REDACTED]\" fine"}}"#,
            ),
            ("url?secret=abc&x=1", "url?secret=[REDACTED]&x=1"),
            (
                "credential edc_dev1.s_AAAAAAAA in use",
                "credential [REDACTED] in use",
            ),
            ("key -----BEGIN EC PRIVATE KEY----- MHc", "key [REDACTED]"),
            (
                "nothing to see: tokens are fine",
                "nothing to see: tokens are fine",
            ),
            ("plain line", "plain line"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
        // Idempotent: the server redacts again what the agent redacted.
        for (input, _) in cases {
            let once = redact(input);
            assert_eq!(redact(&once), once);
        }
    }

    #[test]
    fn multibyte_text_is_safe() {
        assert_eq!(
            redact("température password=ünïcödé ok"),
            "température password=[REDACTED] ok"
        );
        assert_eq!(redact("ü token: ✓"), "ü token: [REDACTED]");
    }
}
