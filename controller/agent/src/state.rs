//! The agent's last applied slice on local disk: written durably (temporary file, fsync,
//! rename, fsync of the directory) after every apply, read at start.

use model::HostSlice;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSlice {
    pub revision: u64,
    pub fingerprint: String,
    pub slice: HostSlice,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    #[serde(flatten)]
    saved: SavedSlice,
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `None` if there is no file; an error names the file and what is wrong with it.
    pub fn load(&self) -> Result<Option<SavedSlice>, String> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let d: OnDisk = serde_json::from_slice(&text).map_err(|e| {
            format!(
                "{}: not a saved slice ({e}); move it away to start from the controller alone",
                self.path.display()
            )
        })?;
        if d.format != FORMAT {
            return Err(format!(
                "{}: format {} (this agent reads {FORMAT})",
                self.path.display(),
                d.format
            ));
        }
        Ok(Some(d.saved))
    }

    pub fn save(&self, s: &SavedSlice) -> Result<(), String> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let fail = |e: std::io::Error| format!("{}: {e}", self.path.display());
        std::fs::create_dir_all(dir).map_err(fail)?;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec(&OnDisk {
            format: FORMAT,
            saved: s.clone(),
        })
        .map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_refuses_garbage() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path().join("agent.json"));
        assert_eq!(f.load().unwrap(), None);
        let s = SavedSlice {
            revision: 7,
            fingerprint: "ab".into(),
            slice: HostSlice {
                host: "h1".into(),
                ..Default::default()
            },
        };
        f.save(&s).unwrap();
        assert_eq!(f.load().unwrap(), Some(s));
        std::fs::write(f.path(), b"{").unwrap();
        let e = f.load().unwrap_err();
        assert!(
            e.contains("agent.json") && e.contains("move it away"),
            "{e}"
        );
    }
}
