//! Pure builders of what each channel type receives, from a [`Notification`]:
//!
//! - [`slack`]: a Slack incoming-webhook message — Block Kit `blocks` plus a plain `text`
//!   fallback (notifications and screen readers). Links are mrkdwn links. With ChatOps on
//!   (`Notification::actions`), an `actions` block of buttons (`approve`, `abort`,
//!   `rollback`; `value` = `ACTION:ROLLOUT`, abort and rollback behind a confirmation):
//!   they work when the webhook belongs to a Slack app whose Interactivity Request URL is
//!   the server's `/api/v1/hooks/slack` (see `crate::chatops`).
//! - [`teams`]: a Teams workflow-webhook message ("Post to a channel when a webhook request
//!   is received"): `{"type":"message","attachments":[{"contentType":
//!   "application/vnd.microsoft.card.adaptive","content":<AdaptiveCard 1.4>}]}`; with
//!   ChatOps on, `Action.Execute` buttons (`verb` = action, `data.rollout`) for a bot that
//!   relays them to `/api/v1/hooks/teams`, and the reply an outgoing webhook understands
//!   (`@edgecd approve ROLLOUT`).
//! - [`webhook`]: the generic JSON body (`version` 1, see below) and [`signature`].
//!
//! Generic webhook contract (also in the README): the POST carries
//! `Content-Type: application/json`, `X-Edgecd-Event: <event>`, `X-Edgecd-Delivery: <id>`
//! (the same on every retry of one notification: deduplicate on it), `X-Edgecd-Timestamp:
//! <unix seconds of this attempt>` and `X-Edgecd-Signature-256: sha256=<hex>`, the
//! HMAC-SHA256 with the channel's secret of the bytes `"{timestamp}.{body}"`. A receiver
//! recomputes it over the raw body, compares in constant time, and rejects timestamps more
//! than a few minutes from its clock (replays).
use super::{GateSummary, Notification, event_name};
use edgecd_rollout::RolloutEvent;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// The message's headline, e.g. `Rollout held: app@1.2.0`.
pub fn title(n: &Notification) -> String {
    let rel = &n.rollout.release;
    match &n.event {
        RolloutEvent::Started { .. } => format!("Rollout started: {rel}"),
        RolloutEvent::StepPromoted { .. } => format!(
            "Rollout promoted to step {}/{}: {rel}",
            n.rollout.step, n.rollout.steps
        ),
        RolloutEvent::Held { .. } => format!("Rollout held: {rel}"),
        RolloutEvent::Escalated { .. } => format!("INCIDENT: rollout held too long: {rel}"),
        RolloutEvent::GroupExcluded { group, .. } => {
            format!("Rollout of {rel}: group {group} excluded")
        }
        RolloutEvent::ApprovalNeeded { .. } => format!("Rollout needs approval: {rel}"),
        RolloutEvent::Aborted { .. } => format!("Rollout aborted: {rel}"),
        RolloutEvent::RolledBack { devices, release } => {
            format!("Rollout of {rel} rolled back: {devices} devices back on {release}")
        }
        RolloutEvent::Completed => format!("Rollout completed: {rel}"),
    }
}

/// `2/5: analyze 1h every 5m`.
pub fn step_text(n: &Notification) -> String {
    match &n.rollout.step_description {
        Some(d) => format!("{}/{}: {d}", n.rollout.step, n.rollout.steps),
        None => format!("{}/{}", n.rollout.step, n.rollout.steps),
    }
}

/// A number as people read it: integers without a fraction, others with up to 4 decimals.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `max 300`, `min 0.9`, `max 1.2x baseline` (joined with `, `); empty without thresholds.
pub fn threshold(g: &GateSummary) -> String {
    let mut parts = vec![];
    if let Some(v) = g.max {
        parts.push(format!("max {}", num(v)));
    }
    if let Some(v) = g.min {
        parts.push(format!("min {}", num(v)));
    }
    if let Some(v) = g.max_ratio {
        parts.push(format!("max {}x baseline", num(v)));
    }
    parts.join(", ")
}

/// `212.3 (max 300; baseline 180; 540 samples): pass` or `—: inconclusive (0 samples < …)`.
pub fn gate_result(g: &GateSummary) -> String {
    let mut value = g.value.map_or("no value".to_string(), num);
    if let Some([lo, hi]) = g.interval
        && hi > lo
    {
        value = format!("{value} [{}, {}]", num(lo), num(hi));
    }
    let mut details = vec![];
    let t = threshold(g);
    if !t.is_empty() {
        details.push(t);
    }
    if let Some(b) = g.baseline {
        details.push(format!("baseline {}", num(b)));
    }
    details.push(format!("{} samples", g.samples));
    let verdict = match &g.why {
        Some(w) => format!("{} ({w})", g.verdict),
        None => g.verdict.clone(),
    };
    format!("{value} ({}): {verdict}", details.join("; "))
}

/// A one-line plain-text summary (Slack's `text` fallback).
pub fn summary(n: &Notification) -> String {
    let mut s = format!(
        "{} — rollout {}, step {}, phase {}, cohort {} devices",
        title(n),
        n.rollout.id,
        step_text(n),
        n.rollout.phase,
        n.rollout.cohort
    );
    if let Some(r) = &n.rollout.reason {
        s.push_str(&format!(", reason: {r}"));
    }
    s
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Slack mrkdwn escaping (`&`, `<`, `>`).
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A URL inside a mrkdwn `<url|label>` link.
fn mrkdwn_url(u: &str) -> String {
    u.replace('|', "%7C")
        .replace('<', "%3C")
        .replace('>', "%3E")
}

fn verdict_emoji(verdict: &str) -> &'static str {
    match verdict {
        "pass" => ":white_check_mark:",
        "fail" => ":x:",
        "inconclusive" => ":hourglass_flowing_sand:",
        _ => ":warning:",
    }
}

/// The chat buttons a rollout in `phase` offers: approve (and abort) while it waits for
/// approval, abort while it runs, rollback once completed, none once aborted.
pub fn offered_actions(phase: &str) -> &'static [&'static str] {
    match phase {
        "awaiting_approval" => &["approve", "abort"],
        "progressing" | "paused" => &["abort"],
        "completed" => &["rollback"],
        _ => &[],
    }
}

/// What pressing `action` does, for a confirmation dialog.
fn action_effect(action: &str, n: &Notification) -> String {
    let base = n.rollout.baseline.as_deref().unwrap_or("its baseline");
    match action {
        "abort" => format!(
            "Stops rollout {} and sends its devices back to {base}.",
            n.rollout.id
        ),
        "rollback" => format!(
            "Sends every device that got {} back to {base}.",
            n.rollout.release
        ),
        _ => format!("Lets rollout {} go on to its next step.", n.rollout.id),
    }
}

fn action_title(action: &str) -> &'static str {
    match action {
        "approve" => "Approve",
        "abort" => "Abort",
        "rollback" => "Rollback",
        _ => "?",
    }
}

/// The Slack `actions` block of `n.actions` (`None` without actions).
pub fn slack_actions(n: &Notification) -> Option<Value> {
    if n.actions.is_empty() {
        return None;
    }
    let elements: Vec<Value> = n
        .actions
        .iter()
        .map(|a| {
            let mut b = json!({
                "type": "button",
                "action_id": format!("edgecd_{a}"),
                "text": {"type": "plain_text", "text": action_title(a)},
                "value": format!("{a}:{}", n.rollout.id),
            });
            if a == "approve" {
                b["style"] = json!("primary");
            } else {
                b["style"] = json!("danger");
                b["confirm"] = json!({
                    "title": {"type": "plain_text", "text": format!("{} rollout?", action_title(a))},
                    "text": {"type": "plain_text", "text": truncate(&action_effect(a, n), 300)},
                    "confirm": {"type": "plain_text", "text": action_title(a)},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                    "style": "danger"
                });
            }
            b
        })
        .collect();
    Some(json!({"type": "actions", "block_id": "edgecd_actions", "elements": elements}))
}

/// The Slack incoming-webhook body (Block Kit; text limits respected).
pub fn slack(n: &Notification) -> Value {
    let r = &n.rollout;
    let field = |k: &str, v: &str| json!({"type": "mrkdwn", "text": truncate(&format!("*{k}*\n{}", mrkdwn(v)), 2000)});
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(&title(n), 150), "emoji": true}
    })];
    if let Some(reason) = &r.reason {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&format!("*Reason:* {}", mrkdwn(reason)), 3000)}
        }));
    }
    blocks.push(json!({
        "type": "section",
        "fields": [
            field("Rollout", &r.id),
            field("Release", &r.release),
            field("Baseline", r.baseline.as_deref().unwrap_or("none")),
            field("Step", &step_text(n)),
            field("Phase", &r.phase),
            field("Cohort", &format!("{} devices", r.cohort)),
        ]
    }));
    if !n.gates.is_empty() {
        let lines: Vec<String> = n
            .gates
            .iter()
            .map(|g| {
                format!(
                    "{} `{}` {}",
                    verdict_emoji(&g.verdict),
                    mrkdwn(&g.gate),
                    mrkdwn(&gate_result(g))
                )
            })
            .collect();
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&format!("*Gates (latest evaluation)*\n{}", lines.join("\n")), 3000)}
        }));
    }
    let mut links = vec![format!(
        "<{}|Open rollout {}>",
        mrkdwn_url(&n.link),
        mrkdwn(&r.id)
    )];
    if let Some(rb) = &n.runbook_url {
        links.push(format!("<{}|Runbook>", mrkdwn_url(rb)));
    }
    blocks.push(json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": links.join("  ·  ")}
    }));
    if let Some(a) = slack_actions(n) {
        blocks.push(a);
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("edgecd · {} · {}", event_name(&n.event), rfc3339(n.at))}]
    }));
    json!({"text": truncate(&summary(n), 3000), "blocks": blocks})
}

fn rfc3339(at: i64) -> String {
    edgecd_bundle::release::rfc3339_utc(at.max(0) as u64)
}

/// The Teams workflow-webhook body: an Adaptive Card 1.4 in a `message` envelope.
pub fn teams(n: &Notification) -> Value {
    let r = &n.rollout;
    let color = match &n.event {
        RolloutEvent::Started { .. } | RolloutEvent::StepPromoted { .. } => "Accent",
        RolloutEvent::Completed => "Good",
        RolloutEvent::Held { .. } | RolloutEvent::ApprovalNeeded { .. } => "Warning",
        RolloutEvent::Aborted { .. }
        | RolloutEvent::RolledBack { .. }
        | RolloutEvent::Escalated { .. }
        | RolloutEvent::GroupExcluded { .. } => "Attention",
    };
    let fact = |k: &str, v: &str| json!({"title": k, "value": v});
    let mut facts = vec![
        fact("Rollout", &r.id),
        fact("Release", &r.release),
        fact("Baseline", r.baseline.as_deref().unwrap_or("none")),
        fact("Step", &step_text(n)),
        fact("Phase", &r.phase),
        fact("Cohort", &format!("{} devices", r.cohort)),
    ];
    if let Some(reason) = &r.reason {
        facts.push(fact("Reason", reason));
    }
    let mut body = vec![
        json!({"type": "TextBlock", "text": title(n), "size": "Medium", "weight": "Bolder", "color": color, "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if !n.gates.is_empty() {
        body.push(json!({"type": "TextBlock", "text": "Gates (latest evaluation)", "weight": "Bolder", "wrap": true, "spacing": "Medium"}));
        body.push(json!({
            "type": "FactSet",
            "facts": n.gates.iter().map(|g| fact(&g.gate, &gate_result(g))).collect::<Vec<_>>()
        }));
    }
    body.push(json!({"type": "TextBlock", "text": format!("edgecd · {} · {}", event_name(&n.event), rfc3339(n.at)), "size": "Small", "isSubtle": true, "wrap": true}));
    let mut actions =
        vec![json!({"type": "Action.OpenUrl", "title": "Open rollout", "url": n.link})];
    if let Some(rb) = &n.runbook_url {
        actions.push(json!({"type": "Action.OpenUrl", "title": "Runbook", "url": rb}));
    }
    for a in &n.actions {
        actions.push(json!({
            "type": "Action.Execute",
            "title": action_title(a),
            "verb": a,
            "data": {"rollout": r.id, "action": a},
            "style": if a == "approve" { "positive" } else { "destructive" },
        }));
    }
    if !n.actions.is_empty() {
        body.push(json!({
            "type": "TextBlock",
            "text": format!("Or reply: @edgecd {} {}", n.actions.join("|"), r.id),
            "size": "Small",
            "isSubtle": true,
            "wrap": true
        }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": body,
                "actions": actions
            }
        }]
    })
}

/// The generic webhook body (`version` 1): `event`, `rollout`, `gates`, `runbookUrl`,
/// `link`, `at` (RFC 3339) and `detail` (the engine's event with its own fields).
pub fn webhook(n: &Notification) -> Value {
    json!({
        "version": 1,
        "event": event_name(&n.event),
        "rollout": n.rollout,
        "gates": n.gates,
        "runbookUrl": n.runbook_url,
        "link": n.link,
        "at": rfc3339(n.at),
        "detail": n.event,
    })
}

/// `sha256=<hex HMAC-SHA256(key, "{timestamp}.{body}")>`: the `X-Edgecd-Signature-256` value.
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sample notifications for this module's and `deliver`'s tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::notify::{GateSummary, Notification, RolloutSummary};
    use edgecd_rollout::RolloutEvent;

    pub fn gate(verdict: &str, why: Option<&str>) -> GateSummary {
        GateSummary {
            gate: "latency_p95_ms <= 300".into(),
            value: Some(312.25),
            baseline: Some(180.0),
            samples: 540,
            max: Some(300.0),
            min: None,
            max_ratio: None,
            verdict: verdict.into(),
            why: why.map(str::to_string),
            interval: None,
        }
    }

    pub fn notification() -> Notification {
        Notification {
            channel: "ops".into(),
            event: RolloutEvent::Held {
                reason: "gate failing: latency_p95_ms <= 300: 312.2500 > max 300".into(),
            },
            rollout: RolloutSummary {
                id: "app-1a2b3c4d".into(),
                release: "app@1.2.0".into(),
                baseline: Some("app@1.1.0".into()),
                phase: "progressing".into(),
                step: 2,
                steps: 5,
                step_description: Some("analyze 1h every 5m".into()),
                cohort: 4,
                reason: Some("gate failing: latency_p95_ms <= 300: 312.2500 > max 300".into()),
            },
            gates: vec![
                gate("fail", Some("312.2500 > max 300")),
                GateSummary {
                    gate: "error_rate <= 0.03".into(),
                    value: Some(0.0125),
                    baseline: None,
                    samples: 540,
                    max: Some(0.03),
                    min: None,
                    max_ratio: None,
                    verdict: "pass".into(),
                    why: None,
                    interval: None,
                },
            ],
            runbook_url: Some("https://wiki.example/runbooks/app".into()),
            link: "https://edgecd.example.com/api/v1/admin/rollouts/app-1a2b3c4d".into(),
            at: 1_767_225_600,
            actions: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{gate, notification as held};
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(300.0), "300");
        assert_eq!(num(312.25), "312.25");
        assert_eq!(num(0.012_345_6), "0.0123");
        assert_eq!(num(-2.5), "-2.5");
        assert_eq!(
            gate_result(&gate("fail", Some("312.2500 > max 300"))),
            "312.25 (max 300; baseline 180; 540 samples): fail (312.2500 > max 300)"
        );
        let mut g = gate("inconclusive", Some("0 samples < min_samples 200"));
        g.value = None;
        g.baseline = None;
        g.max = None;
        g.max_ratio = Some(1.2);
        g.samples = 0;
        assert_eq!(
            gate_result(&g),
            "no value (max 1.2x baseline; 0 samples): inconclusive (0 samples < min_samples 200)"
        );
    }

    #[test]
    fn slack_message_carries_the_numbers() {
        let n = held();
        let v = slack(&n);
        let blocks = v["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "Rollout held: app@1.2.0");
        assert_eq!(
            blocks[1]["text"]["text"],
            "*Reason:* gate failing: latency_p95_ms &lt;= 300: 312.2500 &gt; max 300"
        );
        let fields: Vec<&str> = blocks[2]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["text"].as_str().expect("text"))
            .collect();
        assert_eq!(
            fields,
            [
                "*Rollout*\napp-1a2b3c4d",
                "*Release*\napp@1.2.0",
                "*Baseline*\napp@1.1.0",
                "*Step*\n2/5: analyze 1h every 5m",
                "*Phase*\nprogressing",
                "*Cohort*\n4 devices"
            ]
        );
        assert_eq!(
            blocks[3]["text"]["text"],
            "*Gates (latest evaluation)*\n:x: `latency_p95_ms &lt;= 300` 312.25 (max 300; baseline 180; 540 samples): fail (312.2500 &gt; max 300)\n:white_check_mark: `error_rate &lt;= 0.03` 0.0125 (max 0.03; 540 samples): pass"
        );
        assert_eq!(
            blocks[4]["text"]["text"],
            "<https://edgecd.example.com/api/v1/admin/rollouts/app-1a2b3c4d|Open rollout app-1a2b3c4d>  ·  <https://wiki.example/runbooks/app|Runbook>"
        );
        assert_eq!(
            blocks[5]["elements"][0]["text"],
            "edgecd · held · 2026-01-01T00:00:00Z"
        );
        assert_eq!(
            v["text"],
            "Rollout held: app@1.2.0 — rollout app-1a2b3c4d, step 2/5: analyze 1h every 5m, phase progressing, cohort 4 devices, reason: gate failing: latency_p95_ms <= 300: 312.2500 > max 300"
        );
        // Without reason, gates and runbook those blocks are left out.
        let mut n = held();
        n.event = RolloutEvent::Completed;
        n.rollout.reason = None;
        n.gates.clear();
        n.runbook_url = None;
        let v = slack(&n);
        let types: Vec<&str> = v["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .map(|b| b["type"].as_str().expect("type"))
            .collect();
        assert_eq!(types, ["header", "section", "section", "context"]);
        assert_eq!(
            v["blocks"][2]["text"]["text"],
            "<https://edgecd.example.com/api/v1/admin/rollouts/app-1a2b3c4d|Open rollout app-1a2b3c4d>"
        );
    }

    #[test]
    fn slack_limits_are_respected() {
        let mut n = held();
        n.rollout.release = "x".repeat(500);
        n.rollout.reason = Some("r".repeat(5000));
        n.gates = (0..200).map(|_| gate("pass", None)).collect();
        let v = slack(&n);
        let b = v["blocks"].as_array().expect("blocks");
        assert_eq!(
            b[0]["text"]["text"].as_str().expect("s").chars().count(),
            150
        );
        assert_eq!(
            b[1]["text"]["text"].as_str().expect("s").chars().count(),
            3000
        );
        assert!(b[3]["text"]["text"].as_str().expect("s").chars().count() <= 3000);
        for f in b[2]["fields"].as_array().expect("fields") {
            assert!(f["text"].as_str().expect("s").chars().count() <= 2000);
        }
    }

    #[test]
    fn teams_card_carries_the_numbers() {
        let v = teams(&held());
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        let c = &a["content"];
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], "1.4");
        assert_eq!(c["body"][0]["text"], "Rollout held: app@1.2.0");
        assert_eq!(c["body"][0]["color"], "Warning");
        let facts: Vec<(String, String)> = c["body"][1]["facts"]
            .as_array()
            .expect("facts")
            .iter()
            .map(|f| {
                (
                    f["title"].as_str().expect("t").into(),
                    f["value"].as_str().expect("v").into(),
                )
            })
            .collect();
        let want = [
            ("Rollout", "app-1a2b3c4d"),
            ("Release", "app@1.2.0"),
            ("Baseline", "app@1.1.0"),
            ("Step", "2/5: analyze 1h every 5m"),
            ("Phase", "progressing"),
            ("Cohort", "4 devices"),
            (
                "Reason",
                "gate failing: latency_p95_ms <= 300: 312.2500 > max 300",
            ),
        ];
        assert_eq!(
            facts,
            want.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        );
        assert_eq!(c["body"][2]["text"], "Gates (latest evaluation)");
        assert_eq!(c["body"][3]["facts"][0]["title"], "latency_p95_ms <= 300");
        assert_eq!(
            c["body"][3]["facts"][0]["value"],
            "312.25 (max 300; baseline 180; 540 samples): fail (312.2500 > max 300)"
        );
        assert_eq!(c["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(
            c["actions"][0]["url"],
            "https://edgecd.example.com/api/v1/admin/rollouts/app-1a2b3c4d"
        );
        assert_eq!(c["actions"][1]["url"], "https://wiki.example/runbooks/app");
        let mut n = held();
        n.event = RolloutEvent::RolledBack {
            devices: 4,
            release: "app@1.1.0".into(),
        };
        n.runbook_url = None;
        let v = teams(&n);
        let c = &v["attachments"][0]["content"];
        assert_eq!(
            c["body"][0]["text"],
            "Rollout of app@1.2.0 rolled back: 4 devices back on app@1.1.0"
        );
        assert_eq!(c["body"][0]["color"], "Attention");
        assert_eq!(c["actions"].as_array().expect("actions").len(), 1);
    }

    #[test]
    fn chat_buttons_carry_rollout_and_action() {
        assert_eq!(offered_actions("awaiting_approval"), ["approve", "abort"]);
        assert_eq!(offered_actions("progressing"), ["abort"]);
        assert_eq!(offered_actions("completed"), ["rollback"]);
        assert!(offered_actions("aborted").is_empty());
        let mut n = held();
        assert!(
            slack_actions(&n).is_none(),
            "no buttons unless ChatOps is on"
        );
        n.actions = vec!["approve".into(), "abort".into()];
        let v = slack(&n);
        let blocks = v["blocks"].as_array().expect("blocks");
        let a = &blocks[blocks.len() - 2];
        assert_eq!(a["type"], "actions");
        assert_eq!(a["elements"][0]["value"], "approve:app-1a2b3c4d");
        assert_eq!(a["elements"][0]["style"], "primary");
        assert_eq!(a["elements"][1]["value"], "abort:app-1a2b3c4d");
        assert_eq!(a["elements"][1]["style"], "danger");
        assert_eq!(
            a["elements"][1]["confirm"]["text"]["text"],
            "Stops rollout app-1a2b3c4d and sends its devices back to app@1.1.0."
        );
        let t = teams(&n);
        let actions = t["attachments"][0]["content"]["actions"]
            .as_array()
            .expect("actions");
        let exec: Vec<&Value> = actions
            .iter()
            .filter(|a| a["type"] == "Action.Execute")
            .collect();
        assert_eq!(exec.len(), 2);
        assert_eq!(exec[0]["verb"], "approve");
        assert_eq!(exec[0]["data"]["rollout"], "app-1a2b3c4d");
        assert_eq!(exec[1]["verb"], "abort");
        assert_eq!(exec[1]["style"], "destructive");
    }

    #[test]
    fn webhook_body_is_versioned_json() {
        let v = webhook(&held());
        assert_eq!(v["version"], 1);
        assert_eq!(v["event"], "held");
        assert_eq!(v["rollout"]["id"], "app-1a2b3c4d");
        assert_eq!(v["rollout"]["step"], 2);
        assert_eq!(v["rollout"]["steps"], 5);
        assert_eq!(v["rollout"]["stepDescription"], "analyze 1h every 5m");
        assert_eq!(v["rollout"]["cohort"], 4);
        assert_eq!(v["rollout"]["baseline"], "app@1.1.0");
        assert_eq!(v["gates"][0]["value"], 312.25);
        assert_eq!(v["gates"][0]["max"], 300.0);
        assert_eq!(v["gates"][0]["verdict"], "fail");
        assert_eq!(v["gates"][1]["verdict"], "pass");
        assert_eq!(v["runbookUrl"], "https://wiki.example/runbooks/app");
        assert_eq!(v["at"], "2026-01-01T00:00:00Z");
        assert_eq!(v["detail"]["event"], "held");
        assert!(
            v["detail"]["reason"]
                .as_str()
                .expect("reason")
                .starts_with("gate failing")
        );
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"Jefe", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, br#"{"a":1}"#),
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
        let s = signature(b"Jefe", 42, b"x");
        assert_ne!(signature(b"Jefe", 43, b"x"), s);
        assert_ne!(signature(b"Jefe", 42, b"y"), s);
        assert_ne!(signature(b"Jeff", 42, b"x"), s);
    }
}
