//! Several apps on one device: whether one more fits. A device holds one assignment per
//! app, each app with its own A/B slots; before a second (third…) app is placed next to the
//! others, its agent must hold that many apps (`Inventory::max_apps`; agents of protocol
//! 1.1 hold one) and the apps together must fit the device's RAM (the releases'
//! `min_ram_mb`, summed) and storage (each app's two slots, about its bundle's size each,
//! plus room to download the largest release). Replacing an app's release is never refused
//! here: that is the compatibility check's job. [`fits`] is pure; [`check_device`] reads
//! the device and its other assignments.

use crate::util::json_col;
use crate::{ApiError, AppState};
use edgecd_api::protocol::{Assignment, Inventory, ReleaseRef};

/// What a device offers to the apps placed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_apps: u32,
    pub ram_mb: u64,
    pub storage_mb: Option<u64>,
    /// Its agent removes an app when told to (protocol 1.2; older agents cannot).
    pub removes: bool,
}

impl Budget {
    /// From the device's inventory (`None`: it never checked in: one app).
    pub fn of(inv: Option<&Inventory>) -> Self {
        Budget {
            max_apps: inv.and_then(|i| i.max_apps).unwrap_or(1).max(1),
            ram_mb: inv.map_or(0, |i| i.ram_mb),
            storage_mb: inv.and_then(|i| i.storage_mb),
            removes: inv.is_some_and(|i| i.max_apps.is_some()),
        }
    }
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Disk the apps take: two slots per app (a bundle unpacks to about its size) and room to
/// download the largest release's files.
fn storage_need_mb(apps: &[&ReleaseRef]) -> u64 {
    let slots: u64 = apps.iter().map(|r| 2 * r.bundle.size).sum();
    let staging = apps
        .iter()
        .map(|r| r.manifest.size + r.manifest_sig.size + r.bundle.size + r.bundle_sig.size)
        .max()
        .unwrap_or(0);
    mib(slots + staging)
}

/// Why the device cannot take `app` at all, whatever its release: it already holds
/// `others` (its other apps' releases), as many apps as its agent can. `None`: room left.
pub fn full(device: &str, b: Budget, others: &[&ReleaseRef], app: &str) -> Option<String> {
    if others.is_empty() || (others.len() as u32) < b.max_apps {
        return None;
    }
    let held: Vec<String> = others
        .iter()
        .map(|r| format!("{}@{}", r.app, r.version))
        .collect();
    Some(if b.max_apps == 1 {
        format!(
            "device {device} already holds {} and its agent holds one app (protocol 1.1, or --max-apps 1): upgrade the agent or raise --max-apps to place {app} next to it",
            held.join(", ")
        )
    } else {
        format!(
            "device {device} already holds {} apps ({}), its agent's limit (--max-apps {}): remove one or raise the limit",
            others.len(),
            held.join(", "),
            b.max_apps
        )
    })
}

/// Whether `new` (an app the device does not hold yet) fits next to `others` (the device's
/// other apps' releases). `Err`: why not, saying what to do.
pub fn fits(
    device: &str,
    b: Budget,
    others: &[&ReleaseRef],
    new: &ReleaseRef,
) -> Result<(), String> {
    if others.is_empty() {
        return Ok(());
    }
    if let Some(why) = full(device, b, others, &new.app) {
        return Err(why);
    }
    let held: Vec<String> = others
        .iter()
        .map(|r| format!("{}@{}", r.app, r.version))
        .collect();
    let mut all = others.to_vec();
    all.push(new);
    let ram: u64 = all.iter().filter_map(|r| r.hardware.min_ram_mb).sum();
    if ram > b.ram_mb {
        return Err(format!(
            "{}@{} with {} needs {ram} MiB of RAM together (the releases' min_ram_mb), device {device} has {} MiB",
            new.app,
            new.version,
            held.join(", "),
            b.ram_mb
        ));
    }
    if let Some(have) = b.storage_mb {
        let need = storage_need_mb(&all);
        if need > have {
            return Err(format!(
                "{}@{} with {} needs about {need} MiB of storage together (two slots per app and room to download), device {device} has {have} MiB",
                new.app,
                new.version,
                held.join(", ")
            ));
        }
    }
    Ok(())
}

/// [`fits`] for `release` on `device_id` as stored now; 422 with the reason when it does not.
pub async fn check_device(
    st: &AppState,
    device_id: &str,
    release: &ReleaseRef,
) -> Result<(), ApiError> {
    match refusal(st, device_id, release).await? {
        Some(why) => Err(ApiError::unprocessable(why)),
        None => Ok(()),
    }
}

/// Why `release` does not fit on `device_id` next to its other apps (`None`: it fits).
pub async fn refusal(
    st: &AppState,
    device_id: &str,
    release: &ReleaseRef,
) -> Result<Option<String>, ApiError> {
    let mut rows = st.store.device_assignments(device_id).await?;
    rows.retain(|a| !a.removed);
    if rows.iter().any(|a| a.app == release.app) || rows.is_empty() {
        return Ok(None);
    }
    let others: Vec<ReleaseRef> = rows
        .iter()
        .map(|a| json_col::<Assignment>(&a.payload).map(|p| p.release))
        .collect::<Result<_, _>>()?;
    let inv: Option<Inventory> = match st.store.device(device_id).await? {
        Some(d) => d.inventory.as_deref().map(json_col).transpose()?,
        None => None,
    };
    let refs: Vec<&ReleaseRef> = others.iter().collect();
    Ok(fits(device_id, Budget::of(inv.as_ref()), &refs, release).err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecd_api::profile::{HardwareProfile, RuntimePin};
    use edgecd_api::protocol::BlobRef;

    fn rel(app: &str, ram: Option<u64>, bundle_mb: u64) -> ReleaseRef {
        let blob = |size| BlobRef {
            digest: "sha256:00".into(),
            size,
        };
        ReleaseRef {
            app: app.into(),
            version: "1".into(),
            bundle_digest: "sha256:00".into(),
            manifest: blob(1000),
            manifest_sig: blob(1000),
            bundle: blob(bundle_mb << 20),
            bundle_sig: blob(1000),
            hardware: HardwareProfile {
                board: "rpi5".into(),
                accelerator: None,
                min_ram_mb: ram,
            },
            runtime: RuntimePin {
                name: "onnx".into(),
                version: "1".into(),
            },
        }
    }

    #[test]
    fn the_first_app_always_fits_and_a_second_needs_an_agent_that_holds_two() {
        let b = Budget::of(None);
        assert!(fits("d", b, &[], &rel("det", Some(64_000), 10)).is_ok());
        let det = rel("det", None, 10);
        let err = fits("d", b, &[&det], &rel("cls", None, 10)).unwrap_err();
        assert!(
            err.contains("holds one app") && err.contains("det@1"),
            "{err}"
        );
        let b = Budget {
            removes: Default::default(),
            max_apps: 2,
            ram_mb: 8192,
            storage_mb: None,
        };
        assert!(fits("d", b, &[&det], &rel("cls", None, 10)).is_ok());
        let cls = rel("cls", None, 10);
        let err = fits("d", b, &[&det, &cls], &rel("ocr", None, 10)).unwrap_err();
        assert!(err.contains("--max-apps 2"), "{err}");
    }

    #[test]
    fn ram_and_storage_are_summed_over_the_apps() {
        let b = Budget {
            removes: Default::default(),
            max_apps: 4,
            ram_mb: 4096,
            storage_mb: Some(100),
        };
        let det = rel("det", Some(3000), 10);
        let err = fits("d", b, &[&det], &rel("cls", Some(2000), 10)).unwrap_err();
        assert!(
            err.contains("5000 MiB of RAM") && err.contains("4096"),
            "{err}"
        );
        assert!(fits("d", b, &[&det], &rel("cls", Some(1000), 10)).is_ok());
        // Two slots per app (2 × 30 + 2 × 10) and the largest download (30): 110 > 100.
        let big = rel("det", None, 30);
        let err = fits("d", b, &[&big], &rel("cls", None, 10)).unwrap_err();
        assert!(err.contains("about 111 MiB of storage"), "{err}");
        assert!(
            fits(
                "d",
                Budget {
                    storage_mb: Some(120),
                    ..b
                },
                &[&big],
                &rel("cls", None, 10)
            )
            .is_ok()
        );
    }
}
