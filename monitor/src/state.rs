//! Files the agent keeps across restarts in `state_dir` (firing alerts, baselines, the last good
//! policy): replaced atomically and durably, so a crash or power loss leaves the old file or the
//! new one, never a torn or empty one.
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path` and
/// fsyncs the directory (the rename itself is only durable once the directory is).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A full disk: the partial copy must not hold the space the next save needs (the old
        // file is untouched).
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// A state file saved again and again (baselines every minute, firing alerts every 5 s): each
/// failure counted, logged at the start of an outage and at its end, not at every try; the next
/// save is the retry, and what it saves is the whole state, so nothing pending is lost when space
/// returns.
#[derive(Debug, Default)]
pub struct SaveHealth {
    pub errors: u64,
    failing: bool,
}

impl SaveHealth {
    pub fn record(&mut self, what: &str, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    log::info!("{what} saved again");
                }
            }
            Err(e) => {
                self.errors += 1;
                if !std::mem::replace(&mut self.failing, true) {
                    log::warn!(
                        "cannot save {what}: {e}; the agent keeps its state in memory and tries again at the next save (apiwatch_state_write_errors_total)"
                    );
                }
            }
        }
    }
}

/// Moves an unreadable state file aside, to `NAME.corrupt` (replacing an older one), so the
/// next save does not destroy what an operator may want to look at. Returns where it went.
pub fn set_aside(path: &Path) -> Option<std::path::PathBuf> {
    let mut name = path.file_name()?.to_os_string();
    name.push(".corrupt");
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside).ok().map(|()| aside)
}

/// Makes renames and creations in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("apiwatch-state-{}", std::process::id()));
        let path = dir.join("sub/state.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        // A directory where the file should be: an error, and the directory is left alone.
        assert!(write_atomic(&dir.join("sub"), b"x").is_err());
        assert!(
            !dir.join("sub.tmp").exists(),
            "no temporary left behind by a failed save"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_failures_are_counted_each_time() {
        let mut h = SaveHealth::default();
        h.record("x", Err(std::io::Error::other("disk full")));
        h.record("x", Err(std::io::Error::other("disk full")));
        assert_eq!((h.errors, h.failing), (2, true));
        h.record("x", Ok(()));
        assert_eq!((h.errors, h.failing), (2, false));
    }
}
