//! GitOps: fleets as files in a git repo, applied by the controller. `edgecd gitops --repo URL
//! --branch B --path DIR` registers the source (stored in the database, so whichever replica
//! leads sees it); the leader fetches the branch every `poll_secs` and whenever a webhook
//! signed with the shared secret asks (`POST /api/v1/gitops/webhook`, GitHub's
//! `X-Hub-Signature-256`; the webhook carries no state, it only wakes the fetch).
//!
//! **A commit is applied whole or not at all.** Every fleet file under DIR is parsed and
//! validated, releases must be published (and match their `digest:` pin), rollout policies'
//! gates and channels must exist here, and, with trusted signers, the head commit must carry a
//! verifying SSH signature — before anything changes ([`check`] is the pure half). A bad
//! commit is refused with the commit, the file and what is wrong (status, API, server log)
//! and the previous good commit stays in force. A good one stores each fleet with origin
//! `gitops` (through [`crate::fleets`], unchanged fleets untouched: applying a commit again
//! changes nothing) and deletes the git fleets no longer in the repo. The fleets' reconciler
//! does the rest: a changed release with a rollout policy starts a rollout (promotion is a
//! commit); a revert while it runs aborts it (rollback is `git revert`).
//!
//! **Fleets from git refuse CLI changes** (`fleet apply|delete`, `rollout start --fleet`, a
//! `deploy` over their devices) with a 409 naming the repo and branch; `edgecd gitops
//! disconnect` makes them CLI-managed again.
//!
//! **Status written back**: after each apply or refusal the controller commits
//! `status.json` and `commits/COMMIT.json` on the status branch (`edgecd-status`) and pushes
//! it; a failed push is logged and shown in the status, never blocks applying. Git I/O is in
//! [`git`].

pub mod check;
pub mod git;

use crate::controller::Fence;
use crate::fleets::{self, Origin, Standing};
use crate::util::json_col;
use crate::{ApiError, AppState};
use axum::http::StatusCode;
use check::{GitFleet, Refusal, TrustedSigners};
use edgecd_api::protocol::ReleaseInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The status branch's default name.
pub const DEFAULT_STATUS_BRANCH: &str = "edgecd-status";

/// `POST /api/v1/admin/gitops`: the source to reconcile (replaces a registered one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitopsSource {
    /// `file:///…`, a local path, or `git://host/…`.
    pub repo: String,
    pub branch: String,
    /// The directory of fleet files in the repo (`.` for the top).
    pub path: String,
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
    /// OpenSSH `allowed_signers` text: only commits signed by one of its keys are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_signers: Option<String>,
    /// The webhook's HMAC secret (absent: no webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    #[serde(default = "default_status_branch")]
    pub status_branch: String,
}

fn default_poll() -> u64 {
    60
}

fn default_status_branch() -> String {
    DEFAULT_STATUS_BRANCH.into()
}

impl GitopsSource {
    /// What decides how a commit is judged (not the poll interval, not the webhook secret).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            self.repo.as_str(),
            self.branch.as_str(),
            self.path.as_str(),
            self.trusted_signers.as_deref().unwrap_or_default(),
            self.status_branch.as_str(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..8])
    }

    /// Checks what can be wrong without fetching.
    pub fn validate(&self) -> Result<(), String> {
        if self.repo.trim().is_empty() || self.repo.len() > 2048 {
            return Err("--repo: give the repo's URL (file:///PATH or git://HOST/PATH)".into());
        }
        if self.repo.starts_with("http://")
            || self.repo.starts_with("https://")
            || self.repo.starts_with("ssh://")
            || self.repo.contains('@')
        {
            return Err(format!(
                "--repo {}: this server fetches over file:// and git:// only (no credentials are stored); mirror the repo to one of those",
                self.repo
            ));
        }
        for (flag, b) in [
            ("--branch", &self.branch),
            ("--status-branch", &self.status_branch),
        ] {
            if !git2::Reference::is_valid_name(&format!("refs/heads/{b}")) {
                return Err(format!("{flag} {b:?} is not a valid branch name"));
            }
        }
        if self.branch == self.status_branch {
            return Err(format!(
                "--status-branch {}: must differ from --branch (the server pushes status there)",
                self.status_branch
            ));
        }
        if self.path.split('/').any(|c| c == "..") || self.path.len() > 1024 {
            return Err(format!(
                "--path {:?}: a directory inside the repo, e.g. fleets (. for the top)",
                self.path
            ));
        }
        if !(1..=86_400).contains(&self.poll_secs) {
            return Err(format!("--poll-secs {}: 1 to 86400", self.poll_secs));
        }
        if let Some(t) = &self.trusted_signers {
            TrustedSigners::parse(t).map_err(|e| format!("--trusted-signers: {e}"))?;
        }
        if let Some(s) = &self.webhook_secret
            && s.len() < 16
        {
            return Err("--webhook-secret-file: use a secret of at least 16 characters".into());
        }
        Ok(())
    }
}

/// What the controller keeps between passes (the `status` column).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitopsState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Refusal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<i64>,
    /// What the last applied commit changed (`creates fleet cams`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// The signer of the last applied commit (with trusted signers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_ms: Option<i64>,
    /// The commit last judged (applied or refused): not judged again until it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated: Option<String>,
    /// The source settings it was judged under ([`GitopsSource::fingerprint`]): other settings
    /// (a new path, new trusted signers) judge the head again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_under: Option<String>,
    /// The webhook wake-up last acted on.
    #[serde(default)]
    pub handled_wake_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
}

/// One git fleet in `gitops status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitFleetStatus {
    pub name: String,
    /// `app@version` placed, per app, with ` (rollout ID)` while one runs.
    pub apps: Vec<String>,
    pub counts: BTreeMap<Standing, usize>,
}

/// `GET /api/v1/admin/gitops` (`edgecd gitops status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitopsStatus {
    pub repo: String,
    pub branch: String,
    pub path: String,
    pub poll_secs: u64,
    pub status_branch: String,
    /// Keys in the trusted signers (0: signatures not required).
    pub trusted_signers: usize,
    pub webhook: bool,
    /// When a correctly signed webhook last asked for a fetch (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_webhook_ms: Option<i64>,
    #[serde(flatten)]
    pub state: GitopsState,
    pub fleets: Vec<GitFleetStatus>,
}

fn conflict(msg: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, msg)
}

async fn load(st: &AppState) -> Result<Option<(GitopsSource, GitopsState, i64)>, ApiError> {
    let Some(row) = st.store.gitops().await? else {
        return Ok(None);
    };
    Ok(Some((
        json_col(&row.source)?,
        json_col(&row.status)?,
        row.wake_ms,
    )))
}

/// A fleet's CLI change is refused while the fleet comes from git: 409 naming the repo.
pub async fn refuse_cli_change(st: &AppState, fleet: &str) -> Result<(), ApiError> {
    let Some(row) = st.store.fleet(fleet).await? else {
        return Ok(());
    };
    if row.origin != Origin::Gitops.as_str() {
        return Ok(());
    }
    Err(conflict(
        managed_message(st, &format!("fleet {fleet} is")).await?,
    ))
}

async fn managed_message(st: &AppState, what: &str) -> Result<String, ApiError> {
    let from = match load(st).await? {
        Some((s, _, _)) => format!("repo {} branch {} (path {})", s.repo, s.branch, s.path),
        None => "a GitOps repo".into(),
    };
    Ok(format!(
        "{what} managed from git ({from}): change the repo instead (commit and push), or `edgecd gitops disconnect` to manage fleets with the CLI again"
    ))
}

/// `deploy`, and a rollout with a bare selector, refuse to write over devices of a fleet
/// managed from git that places `app` (a device holds one assignment per app: git fleets of
/// other apps are not concerned).
pub async fn refuse_change_over(
    st: &AppState,
    app: &str,
    selector: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let git: Vec<fleets::Fleet> = fleets::load_all(st)
        .await?
        .into_iter()
        .filter(|f| f.origin == Origin::Gitops && f.spec.apps.contains_key(app))
        .collect();
    if git.is_empty() {
        return Ok(());
    }
    for d in crate::rollouts::fleet(st, "").await? {
        if !fleets::matches(selector, &d.labels) {
            continue;
        }
        if let Some(f) = git.iter().find(|f| f.state.members.contains(&d.id)) {
            return Err(conflict(
                managed_message(
                    st,
                    &format!("device {} belongs to fleet {}, which is", d.id, f.spec.name),
                )
                .await?,
            ));
        }
    }
    Ok(())
}

/// `edgecd gitops --repo …`: registers the source; the next controller pass fetches it.
pub async fn connect(st: &AppState, source: GitopsSource) -> Result<GitopsStatus, ApiError> {
    source.validate().map_err(ApiError::unprocessable)?;
    // Keep what was seen and applied; judge the head again at once (registering the same
    // source again is how an operator asks for a sync).
    let mut state = match load(st).await? {
        Some((_, s, _)) => s,
        None => GitopsState::default(),
    };
    state.evaluated = None;
    state.last_fetch_ms = None;
    st.store
        .put_gitops(
            &serde_json::to_string(&source).map_err(ApiError::internal)?,
            &serde_json::to_string(&state).map_err(ApiError::internal)?,
        )
        .await?;
    tracing::info!(repo = %source.repo, branch = %source.branch, path = %source.path, "GitOps source registered");
    status(st).await
}

/// `edgecd gitops disconnect`: the source goes; its fleets become CLI-managed (`apply`).
pub async fn disconnect(st: &AppState) -> Result<GitopsStatus, ApiError> {
    let _serialized = fleets::lock(st).await?;
    let status = status(st).await?;
    for mut r in st.store.fleets().await? {
        if r.origin == Origin::Gitops.as_str() {
            r.origin = Origin::Apply.as_str().into();
            st.store.put_fleet(&r).await?;
        }
    }
    st.store.delete_gitops().await?;
    tracing::info!(repo = %status.repo, "GitOps source disconnected: its fleets are CLI-managed now");
    Ok(status)
}

/// `GET /api/v1/admin/gitops`.
pub async fn status(st: &AppState) -> Result<GitopsStatus, ApiError> {
    let Some((src, state, wake_ms)) = load(st).await? else {
        return Err(ApiError::not_found(
            "no GitOps source: register one with edgecd gitops --repo URL --branch B --path DIR",
        ));
    };
    let fleets = fleets::list(st)
        .await?
        .into_iter()
        .filter(|f| f.origin == Origin::Gitops)
        .map(|f| GitFleetStatus {
            name: f.name,
            apps: f
                .apps
                .iter()
                .map(|a| match &a.rollout {
                    Some(r) => format!("{} (rollout {r})", a.placed),
                    None => a.placed.clone(),
                })
                .collect(),
            counts: f.counts,
        })
        .collect();
    Ok(GitopsStatus {
        trusted_signers: src
            .trusted_signers
            .as_deref()
            .and_then(|t| TrustedSigners::parse(t).ok())
            .map_or(0, |t| t.len()),
        webhook: src.webhook_secret.is_some(),
        last_webhook_ms: (wake_ms > 0).then_some(wake_ms),
        repo: src.repo,
        branch: src.branch,
        path: src.path,
        poll_secs: src.poll_secs,
        status_branch: src.status_branch,
        state,
        fleets,
    })
}

/// `POST /api/v1/gitops/webhook`: a correctly signed request wakes the next fetch; nothing
/// else (the body is not read for state). `false`: refused (401).
pub async fn webhook(st: &AppState, body: &[u8], signature: Option<&str>) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m.to_string());
    let Some((src, _, _)) = load(st).await? else {
        return Err(unauthorized("no GitOps source is registered"));
    };
    let Some(secret) = src.webhook_secret else {
        return Err(unauthorized(
            "the GitOps source has no webhook secret: register it with --webhook-secret-file",
        ));
    };
    if !check::webhook_signature_ok(secret.as_bytes(), body, signature) {
        tracing::warn!("GitOps webhook refused: wrong or missing X-Hub-Signature-256");
        return Err(unauthorized(
            "X-Hub-Signature-256 is missing or wrong (sha256=HMAC-SHA256 of the body with the webhook secret)",
        ));
    }
    st.store.gitops_wake(st.clock.now_ms()).await?;
    Ok(())
}

/// One controller pass (leader only): fetch when due (poll interval or webhook), judge a new
/// head, apply or refuse it, write the status back.
pub async fn pass(st: &AppState, fence: Option<&Fence>) -> Result<(), ApiError> {
    let Some((src, mut state, wake_ms)) = load(st).await? else {
        return Ok(());
    };
    let now = st.clock.now_ms();
    let fingerprint = src.fingerprint();
    let due = state
        .last_fetch_ms
        .is_none_or(|t| now.saturating_sub(t) >= (src.poll_secs as i64) * 1000 || now < t)
        || wake_ms > state.handled_wake_ms
        || state.evaluated_under.as_deref() != Some(fingerprint.as_str());
    if !due {
        return Ok(());
    }
    state.handled_wake_ms = wake_ms;
    state.last_fetch_ms = Some(now);
    let dir = repo_dir(st);
    let (url, branch, path) = (src.repo.clone(), src.branch.clone(), src.path.clone());
    let fetched = tokio::task::spawn_blocking(move || git::fetch(&dir, &url, &branch, &path))
        .await
        .map_err(ApiError::internal)?;
    let snap = match fetched {
        Ok(s) => s,
        Err(e) => {
            let r = Refusal::general(e);
            if state.last_error.as_ref() != Some(&r) {
                tracing::warn!(repo = %src.repo, error = %r.message, "GitOps fetch failed; retrying at the next poll");
            }
            state.last_error = Some(r);
            state.last_error_ms = Some(now);
            save(st, fence, &state).await?;
            return Ok(());
        }
    };
    state.last_seen = Some(snap.commit.clone());
    state.last_seen_summary = Some(snap.summary.clone());
    if state.evaluated.as_deref() == Some(snap.commit.as_str())
        && state.evaluated_under.as_deref() == Some(fingerprint.as_str())
    {
        save(st, fence, &state).await?;
        return Ok(());
    }
    let outcome = match judge(st, &src, &snap).await? {
        Ok((fleets, signer)) => Ok((apply_commit(st, fence, &fleets).await?, signer)),
        Err(r) => Err(r),
    };
    let commit = snap.commit.clone();
    let doc = match outcome {
        Ok((changes, signer)) => {
            tracing::info!(commit = %commit, changes = changes.len(), "GitOps commit applied");
            state.last_applied = Some(commit.clone());
            state.last_error = None;
            state.last_error_ms = None;
            state.changes = changes.clone();
            state.signed_by = signer;
            serde_json::json!({
                "commit": commit, "result": "applied", "changes": changes,
                "signedBy": state.signed_by, "atMs": now, "server": st.replica_id,
            })
        }
        Err(mut r) => {
            r.commit = Some(commit.clone());
            tracing::warn!(commit = %commit, file = r.file.as_deref().unwrap_or("-"), reason = %r.message, "GitOps commit refused: nothing changed");
            let doc = serde_json::json!({
                "commit": commit, "result": "refused", "file": r.file, "error": r.message,
                "inForce": state.last_applied, "atMs": now, "server": st.replica_id,
            });
            state.last_error = Some(r);
            state.last_error_ms = Some(now);
            doc
        }
    };
    state.evaluated = Some(commit.clone());
    state.evaluated_under = Some(fingerprint);
    // The status goes back to the repo; a failed push is shown, never blocks applying.
    let bytes = serde_json::to_vec_pretty(&doc).map_err(ApiError::internal)?;
    let message = format!(
        "edgecd: {} {}",
        doc["result"].as_str().unwrap_or_default(),
        check::short(&commit)
    );
    let (dir, url, sb, c) = (
        repo_dir(st),
        src.repo.clone(),
        src.status_branch.clone(),
        commit.clone(),
    );
    let pushed = tokio::task::spawn_blocking(move || {
        git::push_status(&dir, &url, &sb, &c, &bytes, &message)
    })
    .await
    .map_err(ApiError::internal)?;
    match pushed {
        Ok(()) => {
            state.push_error = None;
            state.pushed = Some(commit);
        }
        Err(e) => {
            tracing::warn!(repo = %src.repo, error = %e, "GitOps status not pushed (applying is not affected)");
            state.push_error = Some(e);
        }
    }
    save(st, fence, &state).await
}

fn repo_dir(st: &AppState) -> std::path::PathBuf {
    st.config.data_dir.join("gitops").join("repo.git")
}

/// Saves the status, fenced by the controller lease when the pass runs under one.
async fn save(st: &AppState, fence: Option<&Fence>, state: &GitopsState) -> Result<(), ApiError> {
    let saved = st
        .store
        .set_gitops_status(
            &serde_json::to_string(state).map_err(ApiError::internal)?,
            fence,
        )
        .await?;
    if !saved && fence.is_some() {
        tracing::info!(
            "GitOps status not saved: the source was disconnected or the controller lease moved on"
        );
    }
    Ok(())
}

/// Everything a commit must pass before anything changes; the fleets and who signed it.
async fn judge(
    st: &AppState,
    src: &GitopsSource,
    snap: &git::Snapshot,
) -> Result<Result<(Vec<GitFleet>, Option<String>), Refusal>, ApiError> {
    let mut signer = None;
    if let Some(t) = &src.trusted_signers {
        let trusted = match TrustedSigners::parse(t) {
            Ok(t) => t,
            Err(e) => return Ok(Err(Refusal::general(format!("trusted signers: {e}")))),
        };
        let (sig, data) = match &snap.signature {
            Some((s, d)) => (Some(s.as_slice()), d.as_slice()),
            None => (None, &[][..]),
        };
        match trusted.verify_commit(sig, data) {
            Ok(who) => signer = Some(who),
            Err(e) => return Ok(Err(Refusal::general(e))),
        }
    }
    if !snap.dir_found {
        return Ok(Err(Refusal::general(format!(
            "directory {} is not in the commit: fleet files go there",
            src.path
        ))));
    }
    let fleets = match check::parse_commit(&snap.files) {
        Ok(f) => f,
        Err(r) => return Ok(Err(r)),
    };
    for f in &fleets {
        if let Err(e) = fleets::check_on_server(st, &f.spec).await {
            if e.status.is_server_error() {
                return Err(e);
            }
            return Ok(Err(Refusal::in_file(&f.file, e.message)));
        }
        for (app, pinned) in &f.digests {
            let Some(p) = f.spec.apps.get(app) else {
                continue;
            };
            let Ok(v) = p.version(app) else { continue };
            let Some(row) = st.store.release(app, v).await? else {
                continue;
            };
            let info: ReleaseInfo = json_col(&row)?;
            if let Err(r) = check::check_digest(
                &f.file,
                &format!("{app}@{v}"),
                pinned,
                &info.release.bundle_digest,
            ) {
                return Ok(Err(r));
            }
        }
    }
    Ok(Ok((fleets, signer)))
}

/// Applies a judged commit: stores its fleets (unchanged ones untouched), deletes the git
/// fleets it no longer has. Returns what changed. An error (database, lease lost) leaves the
/// commit to be judged again at the next pass.
async fn apply_commit(
    st: &AppState,
    fence: Option<&Fence>,
    commit: &[GitFleet],
) -> Result<Vec<String>, ApiError> {
    let _serialized = fleets::lock(st).await?;
    if let Some(f) = fence {
        let held = st.store.lease(crate::controller::LEASE).await?;
        if held.as_ref().map(|(h, e, _)| (h, *e)) != Some((&f.holder, f.epoch)) {
            return Err(conflict(
                "the controller lease moved on: the GitOps commit is applied by the new controller"
                    .into(),
            ));
        }
    }
    let existing: BTreeMap<String, String> = st
        .store
        .fleets()
        .await?
        .into_iter()
        .map(|r| (r.name, r.origin))
        .collect();
    let mut changes = vec![];
    for f in commit {
        let name = f.spec.name.clone();
        if let Some(notes) = fleets::put_from_git(st, f.spec.clone()).await? {
            changes.push(match existing.get(&name).map(String::as_str) {
                None => format!("creates fleet {name} ({})", f.file),
                Some("gitops") => format!("updates fleet {name} ({})", f.file),
                Some(o) => format!("takes over fleet {name} (was {o}) ({})", f.file),
            });
            changes.extend(notes.into_iter().map(|n| format!("fleet {name}: {n}")));
        }
    }
    for (name, origin) in &existing {
        if origin == Origin::Gitops.as_str() && !commit.iter().any(|f| &f.spec.name == name) {
            st.store.delete_fleet(name).await?;
            tracing::info!(fleet = %name, "fleet deleted: no longer in the GitOps repo");
            changes.push(format!("deletes fleet {name} (no longer in the repo)"));
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> GitopsSource {
        serde_json::from_value(serde_json::json!({
            "repo": "file:///srv/fleets.git", "branch": "main", "path": "fleets",
        }))
        .unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let s = src();
        assert_eq!(
            (s.poll_secs, s.status_branch.as_str()),
            (60, DEFAULT_STATUS_BRANCH)
        );
        assert_eq!(s.validate(), Ok(()));
        for (tweak, want) in [
            (serde_json::json!({"path": "../etc"}), "--path"),
            (serde_json::json!({"statusBranch": "main"}), "must differ"),
            (
                serde_json::json!({"repo": "ssh://git@host/x"}),
                "file:// and git://",
            ),
            (serde_json::json!({"repo": " "}), "--repo"),
        ] {
            let mut v = serde_json::to_value(src()).unwrap();
            for (k, x) in tweak.as_object().unwrap() {
                v[k] = x.clone();
            }
            let s: GitopsSource = serde_json::from_value(v).unwrap();
            let e = s.validate().unwrap_err();
            assert!(e.contains(want), "{tweak}: {e}");
        }
    }

    #[test]
    fn the_fingerprint_changes_with_what_decides_a_judgement_only() {
        let a = src();
        let mut b = src();
        b.poll_secs = 5;
        b.webhook_secret = Some("x".repeat(20));
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.path = "other".into();
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = src();
        c.trusted_signers = Some("k".into());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
