//! Git I/O for GitOps (libgit2 through `git2`, blocking: run on tokio's blocking pool). The
//! server keeps one bare repository under its data directory (`DATA/gitops/repo.git`), fetches
//! every branch of the source into `refs/remotes/origin/*`, reads the fleets directory of the
//! branch's head, and commits the status files on the status branch and pushes it.
//! Transports: `file://` (and local paths) and `git://`; no credentials.

use git2::{FetchOptions, FetchPrune, ObjectType, PushOptions, RemoteCallbacks, Repository};
use std::path::Path;

/// What the branch's head holds.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub commit: String,
    /// The commit's first line.
    pub summary: String,
    /// Files under the fleets directory: path in the repo, contents.
    pub files: Vec<(String, Vec<u8>)>,
    /// `false` when the directory is not in the commit.
    pub dir_found: bool,
    /// The commit's signature (`gpgsig`) and the bytes it signs, when signed.
    pub signature: Option<(Vec<u8>, Vec<u8>)>,
}

fn open(dir: &Path) -> Result<Repository, String> {
    match Repository::open_bare(dir) {
        Ok(r) => Ok(r),
        Err(_) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            Repository::init_bare(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
        }
    }
}

/// Fetches every branch of `url` and reads `branch`'s head: the files under `path`.
pub fn fetch(dir: &Path, url: &str, branch: &str, path: &str) -> Result<Snapshot, String> {
    let repo = open(dir)?;
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| format!("repo {url}: {}", e.message()))?;
    let mut fo = FetchOptions::new();
    fo.prune(FetchPrune::On);
    remote
        .fetch(
            &["+refs/heads/*:refs/remotes/origin/*"],
            Some(&mut fo),
            None,
        )
        .map_err(|e| format!("fetching {url}: {}", e.message()))?;
    let head = repo
        .find_reference(&format!("refs/remotes/origin/{branch}"))
        .map_err(|_| format!("branch {branch} not found in {url}"))?;
    let commit = head
        .peel_to_commit()
        .map_err(|e| format!("branch {branch}: {}", e.message()))?;
    let tree = commit.tree().map_err(|e| e.message().to_string())?;
    let dir_path = path.trim_matches('/');
    let sub = if dir_path.is_empty() || dir_path == "." {
        Some(tree)
    } else {
        match tree.get_path(Path::new(dir_path)) {
            Ok(e) if e.kind() == Some(ObjectType::Tree) => Some(
                repo.find_tree(e.id())
                    .map_err(|e| e.message().to_string())?,
            ),
            _ => None,
        }
    };
    let mut files = vec![];
    let dir_found = sub.is_some();
    if let Some(sub) = sub {
        let prefix = if dir_path.is_empty() || dir_path == "." {
            String::new()
        } else {
            format!("{dir_path}/")
        };
        let mut err = None;
        sub.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() != Some(ObjectType::Blob) {
                return git2::TreeWalkResult::Ok;
            }
            let name = format!("{prefix}{root}{}", entry.name().unwrap_or_default());
            match repo.find_blob(entry.id()) {
                Ok(b) => files.push((name, b.content().to_vec())),
                Err(e) => {
                    err = Some(format!("{name}: {}", e.message()));
                    return git2::TreeWalkResult::Abort;
                }
            }
            git2::TreeWalkResult::Ok
        })
        .ok();
        if let Some(e) = err {
            return Err(e);
        }
    }
    let signature = repo
        .extract_signature(&commit.id(), None)
        .ok()
        .map(|(s, d)| (s.to_vec(), d.to_vec()));
    Ok(Snapshot {
        commit: commit.id().to_string(),
        summary: String::from_utf8_lossy(commit.message_bytes())
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        files,
        dir_found,
        signature,
    })
}

/// Commits `status.json` (the newest) and `commits/COMMIT.json` on `status_branch` (on top
/// of the fetched one) and pushes it to `url`.
pub fn push_status(
    dir: &Path,
    url: &str,
    status_branch: &str,
    commit: &str,
    json: &[u8],
    message: &str,
) -> Result<(), String> {
    let repo = open(dir)?;
    let tracking = format!("refs/remotes/origin/{status_branch}");
    let parent = repo
        .find_reference(&tracking)
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let e = |e: git2::Error| e.message().to_string();
    let blob = repo.blob(json).map_err(e)?;
    let base = parent.as_ref().and_then(|p| p.tree().ok());
    let commits_tree = base
        .as_ref()
        .and_then(|t| t.get_name("commits").map(|x| x.id()))
        .and_then(|id| repo.find_tree(id).ok());
    let mut sub = repo.treebuilder(commits_tree.as_ref()).map_err(e)?;
    sub.insert(format!("{commit}.json"), blob, 0o100644)
        .map_err(e)?;
    let sub_id = sub.write().map_err(e)?;
    let mut root = repo.treebuilder(base.as_ref()).map_err(e)?;
    root.insert("status.json", blob, 0o100644).map_err(e)?;
    root.insert("commits", sub_id, 0o040000).map_err(e)?;
    let tree = repo.find_tree(root.write().map_err(e)?).map_err(e)?;
    let sig = git2::Signature::now("edgecd", "edgecd@localhost").map_err(e)?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = repo
        .commit(None, &sig, &sig, message, &tree, &parents)
        .map_err(e)?;
    let local = format!("refs/heads/{status_branch}");
    repo.reference(&local, oid, true, "edgecd status")
        .map_err(e)?;
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|x| format!("repo {url}: {}", x.message()))?;
    let mut refused: Option<String> = None;
    {
        let mut cb = RemoteCallbacks::new();
        cb.push_update_reference(|r, status| {
            if let Some(s) = status {
                refused = Some(format!("{r}: {s}"));
            }
            Ok(())
        });
        let mut po = PushOptions::new();
        po.remote_callbacks(cb);
        remote
            .push(&[format!("{local}:{local}")], Some(&mut po))
            .map_err(|x| format!("pushing {status_branch} to {url}: {}", x.message()))?;
    }
    if let Some(r) = refused {
        return Err(format!("pushing {status_branch} to {url}: refused ({r})"));
    }
    repo.reference(&tracking, oid, true, "edgecd status pushed")
        .map_err(e)?;
    Ok(())
}
