//! The README works verbatim: the shell blocks of "## Quickstart", "## Control plane and
//! device agent" and "## Fleets: desired state" marked `<!-- readme-test -->` run, in order,
//! as one `set -euo pipefail` bash script in a fresh empty directory, with the built `edgecd`
//! and `edgecd-agent` first on PATH and nothing else prepared. The script starts a real server
//! and real agents; the test checks that it exits 0 and that the device reported the release
//! as running and committed, and that the agent's `current` holds it — and so does the second
//! agent's, which enrolled after the README's fleet was applied and got no deploy. Every process the script starts is in its own
//! process group, which is killed at the end, also when the test fails or times out.
mod common;
use common::sibling;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MARK: &str = "<!-- readme-test -->";
const SECTIONS: [&str; 3] = [
    "## Quickstart",
    "## Control plane and device agent",
    "## Fleets: desired state",
];

fn readme() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// A fenced shell block: its first line number (1-based), whether the mark precedes it, body.
#[derive(Debug)]
struct Block {
    line: usize,
    marked: bool,
    section: String,
    body: String,
}

/// Every top-level ```sh / ```bash block of `text`, with the `##` section it is in.
fn shell_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = vec![];
    let mut section = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("## ") {
            section = l.trim().to_string();
        }
        if l.starts_with("```") {
            let lang = l.trim_start_matches('`').trim();
            let start = i;
            i += 1;
            let mut body = String::new();
            while i < lines.len() && !lines[i].starts_with("```") {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            if matches!(lang, "sh" | "bash") {
                let marked = lines[..start]
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.trim() == MARK);
                blocks.push(Block {
                    line: start + 1,
                    marked,
                    section: section.clone(),
                    body,
                });
            }
        }
        i += 1;
    }
    blocks
}

/// The marked blocks, checking that the Quickstart's blocks are all marked (except the one
/// that installs the binaries, which runs in a checkout, not in an empty directory) and that
/// the marks sit on those sections only.
fn quickstart_script(text: &str) -> String {
    let blocks = shell_blocks(text);
    for b in &blocks {
        let in_quickstart = SECTIONS.contains(&b.section.as_str());
        let installs = b.body.contains("cargo install");
        assert!(
            b.marked == (in_quickstart && !installs),
            "README.md line {}: the shell block in {:?} {} marked {MARK}; the Quickstart's \
             blocks (except the cargo install one) are run by this test, the others are not",
            b.line,
            b.section,
            if b.marked { "is" } else { "is not" }
        );
    }
    let run: Vec<&Block> = blocks.iter().filter(|b| b.marked).collect();
    let all: String = run.iter().map(|b| b.body.as_str()).collect();
    for needed in [
        "edgecd server",
        "edgecd-agent",
        "edgecd deploy",
        "edgecd release publish",
        "edgecd fleet apply",
    ] {
        assert!(
            all.contains(needed),
            "the marked README blocks no longer run `{needed}`"
        );
    }
    let mut script = String::from("set -euo pipefail\nset -x\n");
    for b in run {
        script.push_str(&format!("# README.md line {}\n", b.line));
        script.push_str(&b.body);
    }
    script
}

/// Kills the script's whole process group (server, agent, health checks) when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id();
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!("kill -KILL -- -{pgid} 2>/dev/null"))
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn show(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| format!("({e})"));
    let tail: Vec<&str> = text.lines().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("--- {name} (last 60 lines) ---\n{}\n", tail.join("\n"))
}

#[test]
fn readme_quickstart_runs_verbatim() {
    use std::os::unix::process::CommandExt as _;
    let script = quickstart_script(&readme());
    let edgecd = PathBuf::from(env!("CARGO_BIN_EXE_edgecd"));
    sibling("edgecd-agent");
    let bin_dir = edgecd.parent().expect("bin dir").to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");

    let scratch = tempfile::tempdir().expect("tempdir");
    let work = scratch.path().join("quickstart");
    std::fs::create_dir(&work).expect("mkdir");
    let script_path = scratch.path().join("quickstart.sh");
    std::fs::write(&script_path, &script).expect("write script");
    let log_path = scratch.path().join("output.log");
    let log = std::fs::File::create(&log_path).expect("log");

    let mut cmd = Command::new("bash");
    cmd.arg(&script_path)
        .current_dir(&work)
        .env("PATH", path)
        .env("EDGECD_PORT", edgecd_testkit::free_port().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0);
    // Nothing of the caller's edgecd configuration leaks in: a new user has none.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("EDGECD_") {
            cmd.env_remove(&k);
        }
    }
    let mut group = Group(cmd.spawn().expect("run bash"));

    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = group.0.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let context = || {
        format!(
            "--- the script (README blocks) ---\n{script}\n--- its output (set -x) ---\n{output}\n{}{}{}",
            show(&work, "server.log"),
            show(&work, "agent.log"),
            show(&work, "agent2.log")
        )
    };
    match status {
        None => panic!(
            "the README quickstart did not finish within 300 s\n{}",
            context()
        ),
        Some(s) if !s.success() => {
            panic!("the README quickstart failed ({s})\n{}", context())
        }
        Some(_) => {}
    }
    drop(group);

    // What the device reported, as the server listed it at the end: running 1.5.0, committed.
    let committed = output.lines().any(|l| {
        !l.starts_with('+')
            && l.contains("receipt-parser@1.5.0 (")
            && l.split_whitespace().any(|w| w == "committed")
    });
    assert!(
        committed,
        "no `edgecd device list` row shows the device running receipt-parser@1.5.0, committed\n{}",
        context()
    );
    // And the device itself: `current` holds the release.
    let profile = std::fs::read_to_string(work.join("agent-data/current/profile.json"))
        .unwrap_or_else(|e| panic!("the agent's current/profile.json: {e}\n{}", context()));
    let profile: serde_json::Value = serde_json::from_str(&profile).expect("profile json");
    assert_eq!(
        (profile["name"].as_str(), profile["version"].as_str()),
        (Some("receipt-parser"), Some("1.5.0")),
        "{}",
        context()
    );
    // The device that enrolled after the fleet was applied installed it by itself.
    let profile = std::fs::read_to_string(work.join("agent2-data/current/profile.json"))
        .unwrap_or_else(|e| {
            panic!(
                "the second agent's current/profile.json: {e}\n{}",
                context()
            )
        });
    let profile: serde_json::Value = serde_json::from_str(&profile).expect("profile json");
    assert_eq!(
        (profile["name"].as_str(), profile["version"].as_str()),
        (Some("receipt-parser"), Some("1.5.0")),
        "{}",
        context()
    );
}

#[test]
fn readme_block_extraction_finds_marked_blocks_only() {
    let text = "## Quickstart\n\n```sh\ncargo install x\n```\n\n<!-- readme-test -->\n```sh\necho one\n```\n\n## Other\n\n```sh\necho two\n```\n";
    let blocks = shell_blocks(text);
    assert_eq!(blocks.len(), 3);
    assert!(!blocks[0].marked && blocks[1].marked && !blocks[2].marked);
    assert_eq!(blocks[1].body, "echo one\n");
    assert_eq!(blocks[2].section, "## Other");
}
