//! Which overlayfs markers of opaque directories a mount shows.

/// Which of the overlayfs markers that layer trees carry (FORMAT.md §5.3:
/// `trusted.overlay.opaque` and `user.overlay.opaque` on opaque
/// directories) a mount shows. overlayfs hides the markers of the namespace
/// it uses from its merged view (`trusted.` normally, `user.` when mounted
/// with `userxattr`) but passes the other namespace through as ordinary
/// xattrs: a stack must be given exactly the namespace it reads, or its
/// merged view shows overlayfs' private attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayXattrs {
    /// `trusted.overlay.*` only: for overlayfs mounted by root.
    Trusted,
    /// `user.overlay.*` only: for overlayfs mounted with `userxattr` (rootless).
    User,
    /// Both, as stored.
    Both,
}

impl OverlayXattrs {
    /// What a stack built by this process would read: `Trusted` for root,
    /// `User` otherwise (only root can mount overlayfs without `userxattr`).
    pub fn for_this_process() -> Self {
        if rustix::process::geteuid().is_root() {
            OverlayXattrs::Trusted
        } else {
            OverlayXattrs::User
        }
    }

    /// True when the xattr `name` is hidden by this choice.
    pub fn hides(self, name: &[u8]) -> bool {
        match self {
            OverlayXattrs::Trusted => name.starts_with(b"user.overlay."),
            OverlayXattrs::User => name.starts_with(b"trusted.overlay."),
            OverlayXattrs::Both => false,
        }
    }
}
