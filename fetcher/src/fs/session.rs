//! The FUSE session of a mount: its options ([`MountConfig`]), serving a
//! [`StratumFs`] until it is unmounted, and unmounting.

use std::path::Path;

use fuser::MountOption;

use super::{StratumFs, TreeStore};

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub fsname: String,
    pub allow_other: bool,
    /// Honour setuid/setgid bits (`suid`); off by default (`nosuid`), so a
    /// hostile image cannot hand root to local users.
    pub suid: bool,
    /// Allow opening device nodes (`dev`); off by default (`nodev`).
    pub dev: bool,
    /// Request threads: one slow fetch occupies one of them, never the mount.
    pub threads: usize,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            fsname: "stratum".into(),
            allow_other: false,
            suid: false,
            dev: false,
            threads: 16,
        }
    }
}

/// Mounts `fs` at `mountpoint` and serves it until it is unmounted.
/// `on_mounted` receives a handle that unmounts (e.g. from a signal thread)
/// and one that sends the kernel cache invalidations (for [`Live`]).
pub fn serve<S: TreeStore>(
    fs: StratumFs<S>,
    mountpoint: &Path,
    cfg: &MountConfig,
    on_mounted: impl FnOnce(fuser::SessionUnmounter, fuser::Notifier),
) -> std::io::Result<()> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("stratum".into()),
        MountOption::DefaultPermissions,
        if cfg.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
        if cfg.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
        MountOption::Exec,
        MountOption::NoAtime,
    ];
    if cfg.allow_other {
        // The ACL, not a custom `allow_other` option: fuser filters requests
        // by it (the default, Owner, answers EACCES to every other uid even
        // when the kernel lets them through) and adds `allow_other` itself.
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = true;
    let mut session = fuser::Session::new(fs, mountpoint, &config)?;
    let notifier = session.notifier();
    on_mounted(session.unmount_callable(), notifier);
    session.run()
}

/// Unmounts a stratum mount (lazily, so a busy mount detaches at once).
pub fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    match rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::PERM => {
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(mountpoint)
                .status()?;
            if status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "fusermount3 -u {} failed",
                    mountpoint.display()
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}
