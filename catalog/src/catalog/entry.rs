//! One catalog row: a file, directory, symlink, device, fifo or socket.

use crate::ObjectId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

pub const S_IFMT: u32 = 0o170000;

impl FileType {
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & S_IFMT {
            0o100000 => FileType::Regular,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => return None,
        })
    }

    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
        }
    }
}

/// One piece of a chunked file, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub id: ObjectId,
    pub size: u64,
}

/// Where a regular file's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Data {
    /// Not a regular file, or an empty one.
    #[default]
    None,
    /// Small files: the bytes themselves, in the catalog.
    Inline(Vec<u8>),
    /// One content object.
    Object(ObjectId),
    /// Content-defined chunks, each a content object.
    Chunks(Vec<Chunk>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Inode number within its catalog (set by the catalog; ignored on insert).
    pub id: i64,
    pub parent: i64,
    pub name: Vec<u8>,
    /// Full `st_mode`: file type bits and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: u32,
    pub rdev: u64,
    /// Number of entries of this catalog in the same hardlink group (1 if none).
    pub nlink: u32,
    /// Hardlink group within the catalog; 0 = not hardlinked.
    pub hardlink: i64,
    pub flags: i64,
    pub symlink: Option<Vec<u8>>,
    pub data: Data,
    /// Set on a directory that is the mount point of a nested catalog.
    pub nested: Option<ObjectId>,
    /// Sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub fn new(ft: FileType, perm: u32) -> Self {
        Entry {
            id: 0,
            parent: 0,
            name: Vec::new(),
            mode: ft.mode_bits() | (perm & 0o7777),
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            mtime_ns: 0,
            rdev: 0,
            nlink: 1,
            hardlink: 0,
            flags: 0,
            symlink: None,
            data: Data::None,
            nested: None,
            xattrs: Vec::new(),
        }
    }

    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == Some(FileType::Directory)
    }

    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// An overlayfs whiteout: a character device 0:0.
    pub fn is_whiteout(&self) -> bool {
        self.file_type() == Some(FileType::CharDevice) && self.rdev == 0
    }

    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A directory that hides everything below it in lower layers.
    pub fn is_opaque(&self) -> bool {
        self.is_dir() && self.xattr(OPAQUE_XATTR) == Some(b"y")
    }

    /// Major and minor device numbers, Linux encoding.
    pub fn device(&self) -> (u32, u32) {
        let d = self.rdev;
        let major = ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff);
        let minor = (d & 0xff) | ((d >> 12) & !0xff);
        (major as u32, minor as u32)
    }

    pub fn make_rdev(major: u32, minor: u32) -> u64 {
        let (ma, mi) = (u64::from(major), u64::from(minor));
        ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
    }
}

/// The xattrs that mark an opaque directory for overlayfs. Both are written:
/// `trusted.*` for a root mount, `user.*` for unprivileged overlay mounts.
pub const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
pub const OPAQUE_XATTR_USER: &[u8] = b"user.overlay.opaque";
