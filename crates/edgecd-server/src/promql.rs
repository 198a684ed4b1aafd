//! The Prometheus gate provider: fills in a `provider: prometheus` gate's query template
//! (`{{release}}`, `{{baseline}}`, `{{cohort}}`, `{{app}}`, `{{rollout}}`), runs it as an instant
//! query against the server's `--prometheus-url`, and reduces the answer to the one value the
//! pure engine compares (`Ok(Some(v))`), no data (`Ok(None)`: inconclusive) or an error (the
//! engine holds, and aborts after `error_limit` consecutive errors).
//!
//! Template rendering and response parsing are pure functions; only [`Prometheus::query`]
//! does I/O (a blocking `ureq` call on the blocking pool, with a timeout).
use std::time::Duration;

/// What placeholders stand for in one rollout's queries.
#[derive(Debug, Clone)]
pub struct QueryContext<'a> {
    pub rollout: &'a str,
    /// `APP@VERSION` of the release being rolled out.
    pub release: &'a str,
    /// `APP@VERSION` the rollout falls back to, if it has one.
    pub baseline: Option<&'a str>,
    /// Device ids of the current canary cohort.
    pub cohort: &'a [String],
}

/// Escapes `s` for a double-quoted PromQL string.
fn promql_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// Escapes `s` as a literal inside an RE2 regular expression.
fn regex_literal(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// Fills in a query template. Values are escaped for use inside a double-quoted PromQL string
/// (`release="{{release}}"`); `{{cohort}}` is a regular expression matching exactly the cohort's
/// device ids, for `device=~"{{cohort}}"`.
pub fn render(template: &str, ctx: &QueryContext<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unclosed placeholder in query {template:?}"))?;
        let name = after[..close].trim();
        let value = match name {
            "release" => promql_string(ctx.release),
            "app" => promql_string(ctx.release.split('@').next().unwrap_or_default()),
            "rollout" => promql_string(ctx.rollout),
            "baseline" => promql_string(ctx.baseline.ok_or(
                "the query uses {{baseline}} but the rollout has no baseline release \
                 (start it with --baseline APP@VERSION)",
            )?),
            "cohort" => {
                if ctx.cohort.is_empty() {
                    return Err("the query uses {{cohort}} but the cohort is empty".into());
                }
                let alternatives: Vec<String> =
                    ctx.cohort.iter().map(|d| regex_literal(d)).collect();
                promql_string(&alternatives.join("|"))
            }
            other => {
                return Err(format!(
                    "unknown placeholder {{{{{other}}}}} in query: use {{{{release}}}}, \
                     {{{{baseline}}}}, {{{{cohort}}}}, {{{{app}}}} or {{{{rollout}}}}"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn sample_value(v: &serde_json::Value) -> Result<f64, String> {
    let s = v
        .get(1)
        .and_then(|x| x.as_str())
        .ok_or_else(|| format!("malformed sample {v}"))?;
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        s => s
            .parse()
            .map_err(|_| format!("sample value {s:?} is not a number")),
    }
}

/// Reduces a `/api/v1/query` response body to one value. A vector with more than one series
/// is an error: the gate compares one number, so the query must aggregate (`sum`, `max`, …).
pub fn parse_response(status: u16, body: &str) -> Result<Option<f64>, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|_| {
        let head: String = body.chars().take(200).collect();
        format!("HTTP {status} with a body that is not Prometheus JSON: {head:?}")
    })?;
    if v["status"] != "success" {
        return Err(format!(
            "HTTP {status}: {} {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("(no message)")
        ));
    }
    let data = &v["data"];
    match data["resultType"].as_str() {
        Some("scalar") => sample_value(&data["result"]).map(Some),
        Some("vector") => {
            let result = data["result"].as_array().ok_or("malformed vector result")?;
            match result.as_slice() {
                [] => Ok(None),
                [one] => sample_value(&one["value"]).map(Some),
                many => Err(format!(
                    "the query returned {} series; a gate needs one value: aggregate it \
                     (sum, max, histogram_quantile over sum by (le), …)",
                    many.len()
                )),
            }
        }
        Some(other) => Err(format!(
            "the query returned a {other}; a gate needs an instant vector or a scalar"
        )),
        None => Err("malformed response: no resultType".into()),
    }
}

/// A Prometheus HTTP API endpoint.
#[derive(Clone)]
pub struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("base", &self.base)
            .finish()
    }
}

impl Prometheus {
    /// `base` is the server's root URL (`http://prometheus:9090`, a path prefix is kept).
    pub fn new(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// Runs `query` as an instant query at the current time.
    pub async fn query(&self, query: &str) -> Result<Option<f64>, String> {
        let this = self.clone();
        let q = query.to_string();
        tokio::task::spawn_blocking(move || this.query_blocking(&q))
            .await
            .map_err(|e| format!("query task failed: {e}"))?
    }

    fn query_blocking(&self, query: &str) -> Result<Option<f64>, String> {
        let url = format!("{}/api/v1/query", self.base);
        // POST: a cohort regex can outgrow a URL.
        let mut resp = self
            .agent
            .post(&url)
            .send_form([("query", query)])
            .map_err(|e| format!("{url} unreachable: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()
            .map_err(|e| format!("reading the answer of {url}: {e}"))?;
        parse_response(status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(cohort: &'a [String], baseline: Option<&'a str>) -> QueryContext<'a> {
        QueryContext {
            rollout: "clf-1",
            release: "clf@2.0.0",
            baseline,
            cohort,
        }
    }

    #[test]
    fn renders_placeholders_escaped() {
        let cohort = vec!["pi-1".to_string(), "pi.2".to_string(), "a\"b".to_string()];
        let q = render(
            r#"sum(x{release="{{release}}", device=~"{{ cohort }}"}) / sum(x{release="{{baseline}}", app="{{app}}", r="{{rollout}}"})"#,
            &ctx(&cohort, Some("clf@1.0.0")),
        )
        .unwrap();
        assert_eq!(
            q,
            r#"sum(x{release="clf@2.0.0", device=~"pi-1|pi\\.2|a\"b"}) / sum(x{release="clf@1.0.0", app="clf", r="clf-1"})"#
        );
    }

    #[test]
    fn render_errors_say_what_to_fix() {
        let e = render("x{r=\"{{baseline}}\"}", &ctx(&[], None)).unwrap_err();
        assert!(e.contains("no baseline"), "{e}");
        let e = render("x{d=~\"{{cohort}}\"}", &ctx(&[], None)).unwrap_err();
        assert!(e.contains("cohort is empty"), "{e}");
        let e = render("x{a=\"{{nope}}\"}", &ctx(&[], None)).unwrap_err();
        assert!(e.contains("unknown placeholder {{nope}}"), "{e}");
        let e = render("x{{release", &ctx(&[], None)).unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
    }

    #[test]
    fn parses_answers() {
        let vec1 = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.25"]}]}}"#;
        assert_eq!(parse_response(200, vec1), Ok(Some(0.25)));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_response(200, empty), Ok(None));
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert_eq!(parse_response(200, scalar), Ok(Some(3.0)));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(parse_response(200, nan).unwrap().unwrap().is_nan());
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert!(parse_response(200, two).unwrap_err().contains("2 series"));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_response(200, matrix).unwrap_err().contains("matrix"));
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let e = parse_response(400, bad).unwrap_err();
        assert!(e.contains("bad_data") && e.contains("parse error"), "{e}");
        assert!(
            parse_response(502, "<html>bad gateway</html>")
                .unwrap_err()
                .contains("HTTP 502")
        );
    }
}
