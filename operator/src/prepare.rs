//! `operator prepare-volume`: what the one-shot pod of a static volume runs on its node.
//! It hands the volume's directory, and everything already in it, to MongoDB's user, so
//! that MongoDB itself runs without root and without capabilities. The pod runs as root
//! with only CHOWN, DAC_OVERRIDE and FOWNER, and sees nothing of the node but this one
//! directory.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};

/// Mode of the data directory: MongoDB's user alone may enter it.
pub const DIRECTORY_MODE: u32 = 0o700;

/// What a preparation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Entries (the directory included) whose owner was changed.
    pub owners_changed: u64,
    /// Entries looked at, the directory included.
    pub entries: u64,
}

/// Gives `directory` and everything under it to `uid:gid`, and makes the directory
/// private to that user. Symbolic links are changed themselves, never followed, so a link
/// left in the data cannot hand anything outside it over.
pub fn prepare(directory: &Path, uid: u32, gid: u32) -> io::Result<Prepared> {
    let top =
        fs::symlink_metadata(directory).map_err(|e| with_path(e, "cannot read", directory))?;
    if !top.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", directory.display()),
        ));
    }
    let mut prepared = Prepared::default();
    let mut pending: Vec<PathBuf> = vec![directory.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata =
            fs::symlink_metadata(&path).map_err(|e| with_path(e, "cannot read", &path))?;
        prepared.entries += 1;
        if metadata.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| with_path(e, "cannot list", &path))? {
                pending.push(
                    entry
                        .map_err(|e| with_path(e, "cannot list", &path))?
                        .path(),
                );
            }
        }
        if (metadata.uid(), metadata.gid()) != (uid, gid) {
            lchown(&path, Some(uid), Some(gid))
                .map_err(|e| with_path(e, "cannot change the owner of", &path))?;
            prepared.owners_changed += 1;
        }
    }
    fs::set_permissions(directory, fs::Permissions::from_mode(DIRECTORY_MODE))
        .map_err(|e| with_path(e, "cannot set the mode of", directory))?;
    Ok(prepared)
}

/// `uid:gid` as two numbers.
pub fn parse_owner(owner: &str) -> Result<(u32, u32), String> {
    let parsed = owner
        .split_once(':')
        .and_then(|(uid, gid)| Some((uid.parse().ok()?, gid.parse().ok()?)));
    parsed.ok_or_else(|| format!("owner {owner:?} must be two numbers, UID:GID"))
}

fn with_path(error: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{doing} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("flaskmongo-prepare-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        path
    }

    /// The owner to hand things to: MongoDB's user where this process may change owners
    /// (as root), else this process's own user, which still checks the walk and the mode.
    fn target_owner(probe: &Path) -> (u32, u32) {
        let me = fs::metadata(probe).unwrap();
        if me.uid() == 0 {
            (999, 999)
        } else {
            (me.uid(), me.gid())
        }
    }

    #[test]
    fn the_directory_and_all_it_holds_go_to_the_owner_and_links_are_not_followed() {
        let outside = scratch("outside");
        let secret = outside.join("shadow");
        fs::write(&secret, "outside the volume").unwrap();
        let before = fs::metadata(&secret).unwrap();

        let data = scratch("data");
        fs::create_dir_all(data.join("journal")).unwrap();
        fs::write(data.join("journal/WiredTigerLog.1"), "log").unwrap();
        fs::write(data.join("collection-0.wt"), "data").unwrap();
        symlink(&secret, data.join("link-out")).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = target_owner(&data);

        let prepared = prepare(&data, uid, gid).unwrap();
        assert_eq!(
            prepared.entries, 5,
            "the directory, journal, two files, one link"
        );
        for path in [
            data.clone(),
            data.join("journal"),
            data.join("journal/WiredTigerLog.1"),
            data.join("collection-0.wt"),
        ] {
            let metadata = fs::metadata(&path).unwrap();
            assert_eq!((metadata.uid(), metadata.gid()), (uid, gid), "{path:?}");
        }
        let link = fs::symlink_metadata(data.join("link-out")).unwrap();
        assert_eq!((link.uid(), link.gid()), (uid, gid));
        let target = fs::metadata(&secret).unwrap();
        assert_eq!(
            (target.uid(), target.gid(), target.mode()),
            (before.uid(), before.gid(), before.mode()),
            "what a link points to is left as it was"
        );
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o7777, DIRECTORY_MODE);
        assert_eq!(
            prepare(&data, uid, gid).unwrap().owners_changed,
            0,
            "a second run changes nothing"
        );
        for path in [data, outside] {
            fs::remove_dir_all(path).unwrap();
        }
    }

    #[test]
    fn only_a_directory_is_prepared_and_its_error_names_it() {
        let dir = scratch("file");
        let file = dir.join("not-a-directory");
        fs::write(&file, "").unwrap();
        let error = prepare(&file, 999, 999).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("not-a-directory is not a directory"),
            "{error}"
        );
        let missing = prepare(&dir.join("missing"), 999, 999).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_owner_is_two_numbers() {
        assert_eq!(parse_owner("999:999"), Ok((999, 999)));
        for bad in ["999", "mongodb:mongodb", "999:", ":999", "-1:999"] {
            let error = parse_owner(bad).unwrap_err();
            assert!(error.contains("UID:GID"), "{bad}: {error}");
        }
    }
}
