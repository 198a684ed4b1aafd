//! The Alertmanager receiver, `POST /api/v1/hooks/alertmanager`: accepts Alertmanager's
//! webhook payload (version 4), authenticated by a bearer token (`webhook_configs.http_config
//! .authorization`) or an HMAC-SHA256 signature of the body (`X-Edgecd-Signature-256:
//! sha256=<hex>`, for relays that sign). Each firing alert whose labels name a running
//! rollout — `edgecd_rollout: <id>`, or `app` plus `release` (`APP@VERSION` or `VERSION`) —
//! stops it with the alert as the reason, per the rollout's `on_failure`; resolved alerts
//! change nothing. Matching is a pure function ([`matches`]); errors answer 5xx so
//! Alertmanager retries and no alert is lost.
use crate::{ApiError, AppState, rollouts, util};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use edgecd_rollout::engine::Rollout;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;

/// Alertmanager's webhook body (the fields edgecd reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// What the receiver did with each alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Handled {
    pub alert: String,
    pub status: String,
    /// Rollouts stopped by this alert.
    pub stopped: Vec<String>,
    /// Rollouts it matched that were already stopped, with why nothing changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<(String, String)>,
}

/// Whether `alert` names rollout `r`.
pub fn matches(alert: &Alert, r: &Rollout) -> bool {
    if let Some(id) = alert.labels.get("edgecd_rollout") {
        return *id == r.id;
    }
    let (Some(app), Some(release)) = (alert.labels.get("app"), alert.labels.get("release")) else {
        return false;
    };
    let Some((r_app, r_version)) = r.spec.release.split_once('@') else {
        return false;
    };
    app == r_app && (*release == r.spec.release || release == r_version)
}

/// The reason recorded for a stop: alert name, summary, where it came from.
pub fn reason(alert: &Alert) -> String {
    let name = alert
        .labels
        .get("alertname")
        .map_or("(unnamed)", String::as_str);
    let mut s = format!("alert {name} firing");
    if let Some(sev) = alert.labels.get("severity") {
        s.push_str(&format!(" (severity {sev})"));
    }
    if let Some(sum) = alert
        .annotations
        .get("summary")
        .or(alert.annotations.get("description"))
    {
        s.push_str(&format!(": {sum}"));
    }
    if !alert.generator_url.is_empty() {
        s.push_str(&format!(" [{}]", alert.generator_url));
    }
    s
}

fn authenticate(st: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let cfg = &st.config;
    if cfg.alert_hook_token.is_none() && cfg.alert_hook_hmac_key.is_none() {
        return Err(ApiError::not_found(
            "the Alertmanager receiver is off: start the server with --alert-hook-token-file \
             or --alert-hook-hmac-key-file",
        ));
    }
    if let Some(token) = &cfg.alert_hook_token
        && let Some(t) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    {
        return if util::ct_eq(t.trim(), token.expose()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("invalid alert hook token"))
        };
    }
    if let Some(key) = &cfg.alert_hook_hmac_key
        && let Some(sig) = headers
            .get("x-edgecd-signature-256")
            .and_then(|v| v.to_str().ok())
    {
        let given = sig
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| {
                ApiError::unauthorized("malformed X-Edgecd-Signature-256: expected sha256=<hex>")
            })?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).map_err(ApiError::internal)?;
        mac.update(body);
        return mac
            .verify_slice(&given)
            .map_err(|_| ApiError::unauthorized("X-Edgecd-Signature-256 does not match the body"));
    }
    Err(ApiError::unauthorized(
        "missing credentials: send Authorization: Bearer <token> or X-Edgecd-Signature-256",
    ))
}

/// `POST /api/v1/hooks/alertmanager`.
pub async fn receive(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Vec<Handled>>, ApiError> {
    authenticate(&st, &headers, &body)?;
    let payload: Payload = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not an Alertmanager webhook payload: {e}")))?;
    if payload.version != "4" {
        return Err(ApiError::bad_request(format!(
            "Alertmanager webhook payload version {:?}: only version 4 is understood",
            payload.version
        )));
    }
    let mut out = vec![];
    for alert in &payload.alerts {
        out.push(handle(&st, alert).await?);
    }
    Ok(Json(out))
}

/// Stops every active rollout a firing `alert` matches (resolved alerts change nothing).
async fn handle(st: &AppState, alert: &Alert) -> Result<Handled, ApiError> {
    let name = alert.labels.get("alertname").cloned().unwrap_or_default();
    let mut h = Handled {
        alert: name.clone(),
        status: alert.status.clone(),
        stopped: vec![],
        unchanged: vec![],
    };
    if alert.status == "firing" {
        for r in rollouts::active(st).await? {
            if !matches(alert, &r) {
                continue;
            }
            let why = reason(alert);
            match rollouts::fail(st, &r.id, why.clone()).await? {
                Ok(_) => {
                    tracing::warn!(rollout = %r.id, alert = %name, reason = %why, "rollout stopped by an alert");
                    let detail = format!("rollout {} stopped: {why}", r.id);
                    st.store
                        .event(None, st.now() as i64, "alert", &detail)
                        .await?;
                    h.stopped.push(r.id.clone());
                }
                Err(e) => h.unchanged.push((r.id.clone(), e)),
            }
        }
    }
    tracing::info!(alert = %name, status = %alert.status, stopped = ?h.stopped, "alert received");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecd_api::profile::{HardwareProfile, RuntimePin};
    use edgecd_rollout::cohort::Requirements;

    fn rollout() -> Rollout {
        let spec = serde_yaml_spec();
        Rollout::start(
            "clf-ab12",
            spec,
            Requirements {
                hardware: HardwareProfile {
                    board: "rpi5".into(),
                    accelerator: None,
                    min_ram_mb: None,
                },
                runtime: RuntimePin {
                    name: "edgecd-infer".into(),
                    version: "0.1.0".into(),
                },
            },
            Some("clf@1.0.0".into()),
            0,
        )
        .expect("starts")
        .0
    }

    fn serde_yaml_spec() -> edgecd_rollout::spec::RolloutSpec {
        serde_json::from_value(serde_json::json!({
            "release": "clf@2.0.0",
            "steps": [{"canary": {"devices": 1}}],
        }))
        .expect("spec")
    }

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            status: "firing".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), "p95 over 300 ms".to_string())].into(),
            starts_at: String::new(),
            generator_url: "http://prom/graph".into(),
            fingerprint: String::new(),
        }
    }

    #[test]
    fn matching_by_rollout_id_or_app_and_release() {
        let r = rollout();
        assert!(matches(&alert(&[("edgecd_rollout", "clf-ab12")]), &r));
        assert!(!matches(&alert(&[("edgecd_rollout", "clf-other")]), &r));
        // A rollout label decides alone, even when app/release would match.
        assert!(!matches(
            &alert(&[
                ("edgecd_rollout", "x"),
                ("app", "clf"),
                ("release", "2.0.0")
            ]),
            &r
        ));
        assert!(matches(&alert(&[("app", "clf"), ("release", "2.0.0")]), &r));
        assert!(matches(
            &alert(&[("app", "clf"), ("release", "clf@2.0.0")]),
            &r
        ));
        assert!(!matches(
            &alert(&[("app", "clf"), ("release", "1.0.0")]),
            &r
        ));
        assert!(
            !matches(&alert(&[("app", "clf")]), &r),
            "app alone is too broad"
        );
        assert!(!matches(&alert(&[("alertname", "X")]), &r));
    }

    #[test]
    fn parses_alertmanager_v4_payload() {
        let p: Payload = serde_json::from_str(
            r#"{"receiver":"edgecd","status":"firing","alerts":[{"status":"firing",
            "labels":{"alertname":"A","edgecd_rollout":"r1"},"annotations":{"summary":"s"},
            "startsAt":"2026-11-27T10:00:00Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://prom/graph?g0.expr=up","fingerprint":"f1"}],
            "groupLabels":{},"commonLabels":{},"commonAnnotations":{},
            "externalURL":"http://am:9093","version":"4","groupKey":"{}:{}","truncatedAlerts":0}"#,
        )
        .expect("parses");
        assert_eq!(p.external_url, "http://am:9093");
        assert_eq!(p.alerts[0].generator_url, "http://prom/graph?g0.expr=up");
        assert_eq!(p.alerts[0].labels["edgecd_rollout"], "r1");
    }

    #[test]
    fn reason_names_the_alert() {
        let a = alert(&[("alertname", "EdgeP95High"), ("severity", "critical")]);
        assert_eq!(
            reason(&a),
            "alert EdgeP95High firing (severity critical): p95 over 300 ms [http://prom/graph]"
        );
    }
}
