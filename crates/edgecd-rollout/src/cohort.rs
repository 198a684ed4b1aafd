//! Cohort selection: deterministic and stable (same fleet + same rollout → same devices;
//! later steps are supersets), spread across a label's values, and never picking a device
//! whose hardware or runtime does not match the release's profile.
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// What the engine knows about one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub board: Option<String>,
    #[serde(default)]
    pub accelerator: Option<String>,
    /// Installed inference runtimes: name → version.
    #[serde(default)]
    pub runtimes: BTreeMap<String, String>,
    #[serde(default)]
    pub ram_mb: Option<u64>,
    /// The release (`app@version`) the device reports it actually runs.
    #[serde(default)]
    pub running: Option<String>,
    /// A release whose install failed on this device (last outcome).
    #[serde(default)]
    pub failed: Option<String>,
    /// Why the device cannot take this app at all, whatever its release (set by the server
    /// when the device already holds as many apps as its agent can; `None`: it can).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// What a release needs from a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    pub hardware: HardwareProfile,
    pub runtime: RuntimePin,
}

impl Requirements {
    /// `Ok` if the device can run the release, else why not.
    pub fn check(&self, d: &Device) -> Result<(), String> {
        if let Some(why) = &d.blocked {
            return Err(why.clone());
        }
        let h = &self.hardware;
        match &d.board {
            Some(b) if b.eq_ignore_ascii_case(&h.board) => {}
            Some(b) => return Err(format!("board {b} ≠ {}", h.board)),
            None => return Err(format!("board unknown, release needs {}", h.board)),
        }
        if let Some(acc) = &h.accelerator
            && d.accelerator
                .as_deref()
                .is_none_or(|a| !a.eq_ignore_ascii_case(acc))
        {
            return Err(format!(
                "accelerator {} ≠ {acc}",
                d.accelerator.as_deref().unwrap_or("none")
            ));
        }
        match d.runtimes.get(&self.runtime.name) {
            Some(v) if *v == self.runtime.version => {}
            Some(v) => {
                return Err(format!(
                    "runtime {}@{v} ≠ {}",
                    self.runtime.name, self.runtime
                ));
            }
            None => return Err(format!("runtime {} not installed", self.runtime)),
        }
        if let Some(min) = h.min_ram_mb {
            match d.ram_mb {
                Some(r) if r >= min => {}
                Some(r) => return Err(format!("{r} MB RAM < {min} MB")),
                None => return Err(format!("RAM unknown, release needs {min} MB")),
            }
        }
        Ok(())
    }
}

fn rank(seed: &str, tag: &str, id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(tag.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    h.finalize().into()
}

/// A deterministic order of `devices` for rollout `seed`: by hash rank, or with `spread_by`,
/// round-robin across the label's values (groups ordered by hash too), so any prefix covers
/// as many distinct values as it can. Prefixes of this order are the cohorts.
pub fn select_order(devices: &[&Device], seed: &str, spread_by: Option<&str>) -> Vec<String> {
    let Some(label) = spread_by else {
        let mut v: Vec<(&Device, [u8; 32])> = devices
            .iter()
            .map(|d| (*d, rank(seed, "d", &d.id)))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.id.cmp(&b.0.id)));
        return v.into_iter().map(|(d, _)| d.id.clone()).collect();
    };
    let groups = groups_in_order(devices, seed, label);
    let mut out = vec![];
    let longest = groups.iter().map(|(_, g)| g.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (_, g) in &groups {
            if let Some(id) = g.get(i) {
                out.push(id.clone());
            }
        }
    }
    out
}

/// Groups of device ids by `label` value, groups and members in hash order.
pub fn groups_in_order(devices: &[&Device], seed: &str, label: &str) -> Vec<(String, Vec<String>)> {
    let mut by: BTreeMap<String, Vec<&Device>> = BTreeMap::new();
    for d in devices {
        by.entry(d.labels.get(label).cloned().unwrap_or_default())
            .or_default()
            .push(d);
    }
    let mut groups: Vec<(String, Vec<String>)> = by
        .into_iter()
        .map(|(value, ds)| {
            let mut v: Vec<(&Device, [u8; 32])> = ds
                .into_iter()
                .map(|d| (d, rank(seed, "d", &d.id)))
                .collect();
            v.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.id.cmp(&b.0.id)));
            (value, v.into_iter().map(|(d, _)| d.id.clone()).collect())
        })
        .collect();
    groups.sort_by(|a, b| {
        rank(seed, "g", &a.0)
            .cmp(&rank(seed, "g", &b.0))
            .then_with(|| a.0.cmp(&b.0))
    });
    groups
}

/// The group a device belongs to for per-group analysis: its values of the `group_by`
/// attributes joined by `/` (`board`, `accelerator`, `runtime` read the inventory — the
/// runtime is the version of the release's runtime `runtime` — anything else is a label;
/// a missing value is `none`).
pub fn group_key(d: &Device, group_by: &[String], runtime: &str) -> String {
    group_by
        .iter()
        .map(|attr| {
            let v = match attr.as_str() {
                "board" => d.board.clone(),
                "accelerator" => d.accelerator.clone(),
                "runtime" => d.runtimes.get(runtime).map(|v| format!("{runtime}@{v}")),
                label => d.labels.get(label).cloned(),
            };
            v.unwrap_or_else(|| "none".into())
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The cohort for a canary step: `current` plus devices from `order` until `size` (never shrinks).
pub fn grow(current: &BTreeSet<String>, order: &[String], size: usize) -> BTreeSet<String> {
    let mut out = current.clone();
    for id in order {
        if out.len() >= size {
            break;
        }
        out.insert(id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, site: &str) -> Device {
        Device {
            blocked: Default::default(),
            id: id.into(),
            labels: [("site".to_string(), site.to_string())].into(),
            board: Some("rpi5".into()),
            accelerator: None,
            runtimes: [("edgecd-infer".to_string(), "0.1.0".to_string())].into(),
            ram_mb: Some(8192),
            running: None,
            failed: None,
        }
    }

    #[test]
    fn spread_covers_distinct_sites_first() {
        let ds: Vec<Device> = (0..40)
            .map(|i| dev(&format!("d{i}"), &format!("store-{}", i % 10)))
            .collect();
        let refs: Vec<&Device> = ds.iter().collect();
        let order = select_order(&refs, "r1", Some("site"));
        let first4: BTreeSet<String> = order[..4]
            .iter()
            .map(|id| ds.iter().find(|d| &d.id == id).unwrap().labels["site"].clone())
            .collect();
        assert_eq!(first4.len(), 4);
        assert_eq!(
            order,
            select_order(&refs, "r1", Some("site")),
            "deterministic"
        );
        assert_ne!(
            order,
            select_order(&refs, "r2", Some("site")),
            "another rollout picks others"
        );
    }

    #[test]
    fn requirements_explain_mismatches() {
        let req = Requirements {
            hardware: HardwareProfile {
                board: "rpi5".into(),
                accelerator: Some("hailo-10h".into()),
                min_ram_mb: Some(4096),
            },
            runtime: RuntimePin {
                name: "edgecd-infer".into(),
                version: "0.1.0".into(),
            },
        };
        let mut d = dev("a", "s");
        assert!(req.check(&d).unwrap_err().contains("accelerator"));
        d.accelerator = Some("hailo-10h".into());
        assert!(req.check(&d).is_ok());
        d.ram_mb = Some(2048);
        assert!(req.check(&d).unwrap_err().contains("RAM"));
        d.ram_mb = Some(8192);
        d.runtimes.insert("edgecd-infer".into(), "0.2.0".into());
        assert!(req.check(&d).unwrap_err().contains("runtime"));
        d.board = Some("rpi4".into());
        assert!(req.check(&d).unwrap_err().contains("board"));
    }
}
