//! Handing volumes' directories to MongoDB's user, so that MongoDB itself runs without root
//! and without capabilities:
//! - `operator prepare-volumes`, what the volume preparer runs on every node (a DaemonSet,
//!   as root with CHOWN alone, seeing nothing of the node but the volume root): every new,
//!   empty directory the kubelet makes there for a volume goes to MongoDB's user at once;
//! - `operator await-volume`, what MongoDB's pod runs first, without privileges: it waits
//!   until its data directory is writable, so MongoDB never starts on one it cannot use;
//! - `operator prepare-volume`, the one-shot pod of a volume from before MongoDB ran
//!   without root, with only CHOWN, DAC_OVERRIDE and FOWNER and that directory mounted: it
//!   hands over the directory and everything already in it.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// What one look at the volume root did.
#[derive(Debug, Default)]
pub struct HandOver {
    /// The directories given to MongoDB's user.
    pub handed: Vec<PathBuf>,
    /// What could not be read or changed, each on its own: one directory's trouble holds
    /// back no other.
    pub failed: Vec<io::Error>,
}

/// Gives every new volume directory under `root`, `<root>/<namespace>/<directory>`, to
/// `uid:gid` with mode 0700. New means empty and owned by another user: the kubelet makes
/// a volume's directory, as root, when a pod first mounts it. Data in a directory is never
/// handed over here (a volume from before MongoDB ran without root has its own
/// preparation, once MongoDB has stopped), and nothing that is not a directory, a symbolic
/// link above all, is followed or changed. Fails only when `root` cannot be listed.
pub fn hand_over_new(root: &Path, uid: u32, gid: u32) -> io::Result<HandOver> {
    let mut done = HandOver::default();
    for namespace in directories(root)? {
        let inside = match directories(&namespace) {
            Ok(inside) => inside,
            Err(error) => {
                done.failed.push(error);
                continue;
            }
        };
        for directory in inside {
            match hand_over_if_new(&directory, uid, gid) {
                Ok(true) => done.handed.push(directory),
                Ok(false) => {}
                Err(error) => done.failed.push(error),
            }
        }
    }
    Ok(done)
}

/// Gives `directory` to `uid:gid` with mode 0700 if it is new; whether it was.
fn hand_over_if_new(directory: &Path, uid: u32, gid: u32) -> io::Result<bool> {
    let metadata =
        fs::symlink_metadata(directory).map_err(|e| with_path(e, "cannot read", directory))?;
    let foreign = (metadata.uid(), metadata.gid()) != (uid, gid);
    if !foreign || !is_empty(directory)? {
        return Ok(false);
    }
    // The mode first, while root still owns it: afterwards changing it would take FOWNER,
    // which the preparer does not have.
    fs::set_permissions(directory, fs::Permissions::from_mode(DIRECTORY_MODE))
        .map_err(|e| with_path(e, "cannot set the mode of", directory))?;
    lchown(directory, Some(uid), Some(gid))
        .map_err(|e| with_path(e, "cannot change the owner of", directory))?;
    Ok(true)
}

/// `operator prepare-volumes`: hands the new directories under `root` over every `every`,
/// until the process is stopped, and says each one it hands over on standard output. An
/// error is one directory's or one moment's (a volume removed while it is looked at): it
/// is tried again at each look, and said on standard error when it first appears.
pub fn keep_handing_over(root: &Path, uid: u32, gid: u32, every: Duration) -> ! {
    println!(
        "handing new directories under {} to {uid}:{gid}",
        root.display()
    );
    let mut failing = HashSet::new();
    loop {
        let errors = match hand_over_new(root, uid, gid) {
            Ok(done) => {
                for directory in done.handed {
                    println!("{}: owner {uid}:{gid}, mode 0700", directory.display());
                }
                done.failed
            }
            Err(error) => vec![error],
        };
        let now: HashSet<String> = errors.iter().map(ToString::to_string).collect();
        for error in now.difference(&failing) {
            eprintln!("error: {error}");
        }
        failing = now;
        std::thread::sleep(every);
    }
}

fn is_empty(directory: &Path) -> io::Result<bool> {
    let mut entries =
        fs::read_dir(directory).map_err(|e| with_path(e, "cannot list", directory))?;
    Ok(entries.next().is_none())
}

/// The real directories in `parent` (no symbolic link, no file), in no particular order.
/// One that goes while it is read is left out.
fn directories(parent: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(parent).map_err(|e| with_path(e, "cannot list", parent))? {
        let entry = entry.map_err(|e| with_path(e, "cannot list", parent))?;
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => found.push(entry.path()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(with_path(error, "cannot read", &entry.path())),
        }
    }
    Ok(found)
}

/// Waits until this process may write in `directory`, trying every `every` for at most
/// `limit`, and says why not when it gives up. It writes and removes one empty file,
/// which is what MongoDB will have to do.
pub fn await_writable(directory: &Path, every: Duration, limit: Duration) -> Result<(), String> {
    let probe = directory.join(".flaskmongo-write-check");
    let started = Instant::now();
    loop {
        let last = match fs::File::create(&probe) {
            Ok(_) => {
                return fs::remove_file(&probe)
                    .map_err(|e| format!("cannot remove {}: {e}", probe.display()));
            }
            Err(error) => error,
        };
        if started.elapsed() >= limit {
            return Err(format!(
                "{} is still not writable after {} s ({last}): the volume preparer of its node \
                 (operator prepare-volumes) has not handed it to this user",
                directory.display(),
                limit.as_secs()
            ));
        }
        std::thread::sleep(every);
    }
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
    fn only_new_empty_directories_two_levels_down_go_to_mongodb_and_no_link_is_followed() {
        let root = scratch("root");
        let outside = scratch("outside-root");
        fs::create_dir_all(outside.join("empty")).unwrap();
        assert_eq!(
            fs::metadata(&root).unwrap().uid(),
            0,
            "the preparer runs as root: run the tests as root (as CI does)"
        );
        let made = |path: &Path| {
            fs::create_dir_all(path).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        };
        let new = root.join("shop/web-1234");
        made(&new);
        let with_data = root.join("shop/old-5678");
        made(&with_data);
        fs::write(with_data.join("collection-0.wt"), "data").unwrap();
        let deeper = root.join("shop/web-1234-x/inner");
        made(&deeper);
        fs::write(root.join("shop/a-file"), "").unwrap();
        symlink(outside.join("empty"), root.join("shop/link-to-empty")).unwrap();
        symlink(&outside, root.join("linked-namespace")).unwrap();

        let done = hand_over_new(&root, 999, 999).unwrap();
        assert_eq!(done.handed, vec![new.clone()]);
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        let metadata = fs::metadata(&new).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), (999, 999));
        assert_eq!(metadata.mode() & 0o7777, DIRECTORY_MODE);
        for untouched in [
            with_data.clone(),
            with_data.join("collection-0.wt"),
            deeper.clone(),
            root.join("shop/web-1234-x"),
            root.join("shop"),
            outside.join("empty"),
        ] {
            let metadata = fs::metadata(&untouched).unwrap();
            assert_eq!(metadata.uid(), 0, "{untouched:?} keeps its owner");
        }
        assert_eq!(
            fs::metadata(outside.join("empty")).unwrap().mode() & 0o7777,
            0o755,
            "what a link points to is left as it was"
        );
        assert!(
            hand_over_new(&root, 999, 999).unwrap().handed.is_empty(),
            "a second pass changes nothing"
        );
        let missing = hand_over_new(&root.join("missing"), 999, 999).unwrap_err();
        assert!(missing.to_string().contains("cannot list"), "{missing}");
        for path in [root, outside] {
            fs::remove_dir_all(path).unwrap();
        }
    }

    #[test]
    fn mongodb_waits_until_its_directory_is_writable_and_is_told_why_when_it_never_is() {
        let parent = scratch("await");
        let data = parent.join("db");
        let later = data.clone();
        let maker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            fs::create_dir(&later).unwrap();
        });
        await_writable(&data, Duration::from_millis(10), Duration::from_secs(10)).unwrap();
        maker.join().unwrap();
        assert_eq!(
            fs::read_dir(&data).unwrap().count(),
            0,
            "the check leaves nothing behind"
        );

        let never = parent.join("never");
        let error = await_writable(&never, Duration::from_millis(10), Duration::from_millis(50))
            .unwrap_err();
        assert!(
            error.contains("never is still not writable after 0 s")
                && error.contains("volume preparer"),
            "{error}"
        );
        fs::remove_dir_all(parent).unwrap();
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
