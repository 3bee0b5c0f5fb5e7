//! What a standalone evsd keeps across restarts, `kill -9` included: the model applied at run
//! time, the port ids it gave, the backends attached and the generation, in one JSON file
//! (`state.json`) in `dataplane.state_dir`.
//!
//! The file exists only once something was changed at run time (`Apply`, `Attach`, `Detach`,
//! from `evsd ctl` or any other client of the control loop): until then the config file is the
//! authority, so editing it and restarting works as before. Once it exists, the switch starts
//! from it, and the config file only supplies the EAL, switch and dataplane settings.
//!
//! Every save replaces the file atomically and durably (temp file in the same directory, fsync,
//! rename, fsync of the directory): after a crash the file is the old state or the new one,
//! never a mix. A file that cannot be read is never ignored: `evsd run` refuses to start until
//! the operator moves it away or says `--discard-state`.

use crate::config::{Attach, Config};
use api::Request;
use flowtable::switch::Switch;
use model::{Model, ModelError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The state file, in `dataplane.state_dir`.
pub const FILE: &str = "state.json";
/// Where `--discard-state` moves the file (kept, so a discard can be undone by hand).
pub const DISCARDED: &str = "state.json.discarded";
/// Held (flock) for the daemon's lifetime: two switches must not overwrite each other's state.
const LOCK: &str = "evsd.lock";
/// The layout of [`StateFile`]; bumped on any change an older evsd would misread.
pub const FORMAT_VERSION: u32 = 1;

/// Whether a request can change what a restart must bring back. Every request that changes the
/// model or the attachments must be listed here, whoever sends it (`evsd ctl`, a host agent).
pub fn persists(req: &Request) -> bool {
    matches!(
        req,
        Request::Apply { .. } | Request::Attach(_) | Request::Detach { .. }
    )
}

/// What is in force and must survive a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct InForce {
    /// The tables' version (what `Applied` answered); a restarted switch continues from it.
    pub generation: u64,
    pub model: Model,
    /// Port and uplink ids: they are conntrack zones and counter indexes, and `show ports` and
    /// metrics name them, so a restart keeps them rather than renumbering.
    pub port_ids: BTreeMap<String, u32>,
    /// Backends attached to ports of the model, in port name order.
    pub attach: Vec<Attach>,
}

impl InForce {
    /// `attached`: every port's backend. A port a newer model removed may still be attached
    /// (`show ports` calls it stale) until detached; after a restart it has no port to forward
    /// for, so it is not recorded.
    pub fn new(
        generation: u64,
        model: Model,
        port_ids: BTreeMap<String, u32>,
        attached: Vec<Attach>,
    ) -> InForce {
        let attach = attached
            .into_iter()
            .filter(|a| port_ids.contains_key(&a.port))
            .collect();
        InForce {
            generation,
            model,
            port_ids,
            attach,
        }
    }

    /// What a running switch has in force.
    pub fn of(sw: &Switch, attached: Vec<Attach>) -> InForce {
        InForce::new(sw.pipeline().version, sw.model(), sw.port_ids(), attached)
    }

    fn summary(&self) -> String {
        format!(
            "generation {}, {} ports, {} uplinks, {} attachments",
            self.generation,
            self.model.ports.len(),
            self.model.uplinks.len(),
            self.attach.len()
        )
    }
}

/// The file's layout. Flat and pretty-printed: an operator may well read it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format_version: u32,
    /// UTC, RFC 3339; informational only.
    saved_at: String,
    generation: u64,
    model: Model,
    port_ids: BTreeMap<String, u32>,
    attach: Vec<Attach>,
}

/// A state file as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub path: PathBuf,
    pub saved_at: String,
    pub state: InForce,
}

impl Saved {
    /// `boot` with the saved model and attachments in place of its own, checked as a config is
    /// (so a state file edited by hand cannot smuggle in what a config could not).
    pub fn overlay(&self, boot: &Config) -> Result<Config, StateError> {
        let m = &self.state.model;
        let c = Config {
            attach: self.state.attach.clone(),
            uplinks: m.uplinks.clone(),
            port_groups: m.port_groups.clone(),
            security_groups: m.security_groups.clone(),
            ports: m.ports.clone(),
            ..boot.clone()
        };
        c.checked().map_err(|msg| self.corrupt(msg))
    }

    fn corrupt(&self, msg: String) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            msg,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    #[error(
        "state directory {} is in use by another running evsd (it holds {}); give each evsd its \
         own dataplane.state_dir",
        dir.display(), dir.join(LOCK).display()
    )]
    Locked { dir: PathBuf },
    #[error("state file {}: cannot read it: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {}: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error(
        "state file {}: format version {found}, but this evsd reads version {FORMAT_VERSION} \
         (written by another evsd release)",
        path.display()
    )]
    Version { path: PathBuf, found: u64 },
    #[error("state file {}: cannot save it: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

impl StateError {
    /// Why `evsd run` refuses to start, and what the operator can do about it.
    fn refusal(self) -> String {
        match self {
            StateError::Read { .. } | StateError::Corrupt { .. } | StateError::Version { .. } => {
                format!(
                    "{self}. It holds the changes made at run time (evsd ctl apply/attach/detach) \
                     and evsd will not guess them: fix or move the file away, or run \
                     `evsd run --discard-state` to start from the config file's model and \
                     attachments (the file is then kept as {DISCARDED})"
                )
            }
            e => e.to_string(),
        }
    }
}

/// Decodes a state file's bytes; every problem is an error naming the file.
fn decode(path: &Path, bytes: &[u8]) -> Result<Saved, StateError> {
    let corrupt = |msg: String| StateError::Corrupt {
        path: path.to_owned(),
        msg,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(corrupt("the file is empty".into()));
    }
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    // The version first: a file of another format fails on its version, not on some field.
    match v.get("format_version").map(|f| f.as_u64()) {
        None => return Err(corrupt("no format_version: not an evsd state file".into())),
        Some(None) => return Err(corrupt("format_version is not a number".into())),
        Some(Some(n)) if n != u64::from(FORMAT_VERSION) => {
            return Err(StateError::Version {
                path: path.to_owned(),
                found: n,
            })
        }
        Some(Some(_)) => {}
    }
    let f: StateFile = serde_path_to_error::deserialize(v).map_err(|e| {
        let at = e.path().to_string();
        corrupt(format!("at `{at}`: {}", e.into_inner()))
    })?;
    let mut seen = BTreeSet::new();
    for (name, &id) in &f.port_ids {
        if id == 0 || id as usize >= flowtable::key::MAX_PORTS || !seen.insert(id) {
            return Err(corrupt(format!(
                "port_ids.{name}: id {id} is out of range or given twice"
            )));
        }
    }
    Ok(Saved {
        path: path.to_owned(),
        saved_at: f.saved_at,
        state: InForce {
            generation: f.generation,
            model: f.model,
            port_ids: f.port_ids,
            attach: f.attach,
        },
    })
}

fn encode(s: &InForce, saved_at: String) -> Vec<u8> {
    let f = StateFile {
        format_version: FORMAT_VERSION,
        saved_at,
        generation: s.generation,
        model: s.model.clone(),
        port_ids: s.port_ids.clone(),
        attach: s.attach.clone(),
    };
    let mut out = serde_json::to_vec_pretty(&f).expect("state types serialize");
    out.push(b'\n');
    out
}

/// Reads `path`; `None` if there is no such file.
fn read(path: &Path) -> Result<Option<Saved>, StateError> {
    match fs::read(path) {
        Ok(b) => decode(path, &b).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces `dir/name` with what `write` writes, so that at any instant, crash included, the
/// name holds the old content or the new one in full.
fn replace_file(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let staged = (|| {
        let mut f = fs::File::create(&tmp)?;
        write(&mut f)?;
        // The data must be on disk before the name points at it, or a crash right after the
        // rename could leave the name on an empty file.
        f.sync_all()
    })()
    .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = staged {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename lives in the directory: until the directory is synced it may not survive.
    fs::File::open(dir)?.sync_all()
}

/// `dataplane.state_dir`, locked for this process, and what its state file holds.
pub struct Store {
    dir: PathBuf,
    _lock: fs::File,
    /// What a restart would bring back: the file's content or, while there is no file, what the
    /// switch started with from the config file.
    restart: Option<InForce>,
    /// Whether there is a state file (if not, the config file is the authority).
    file: bool,
    /// Set when a save failed: what is in force is newer than the file.
    failing: Option<String>,
}

impl Store {
    /// Creates the directory if needed and locks it.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        let d = |source| StateError::Dir {
            dir: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(d)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(d)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    dir: dir.to_owned(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(d(e)),
        }
        Ok(Store {
            dir: dir.to_owned(),
            _lock: lock,
            restart: None,
            file: false,
            failing: None,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Reads the state file, if there is one.
    pub fn load(&mut self) -> Result<Option<Saved>, StateError> {
        let s = read(&self.path())?;
        self.restart = s.as_ref().map(|s| s.state.clone());
        self.file = s.is_some();
        Ok(s)
    }

    /// Moves the state file aside to [`DISCARDED`] (replacing an older one); returns where it
    /// went, `None` if there was none.
    pub fn discard(&mut self) -> Result<Option<PathBuf>, StateError> {
        let (from, to) = (self.path(), self.dir.join(DISCARDED));
        let w = |source| StateError::Write {
            path: from.clone(),
            source,
        };
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(w(e)),
        }
        // Durable like a save: a crash must not bring the discarded state back.
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(w)?;
        (self.restart, self.file) = (None, false);
        Ok(Some(to))
    }

    /// What the switch started with, once its ports are attached. Without a state file, a
    /// request that changes nothing (a refused apply) must not write one: the file would then
    /// outrank the config file for nothing.
    pub fn started(&mut self, now: InForce) {
        self.restart.get_or_insert(now);
    }

    /// Writes `now` unless a restart would bring it back anyway; `Ok(true)` if it wrote.
    pub fn save(&mut self, now: &InForce) -> Result<bool, StateError> {
        if self.restart.as_ref() == Some(now) {
            return Ok(false);
        }
        let bytes = encode(now, utc_now());
        replace_file(&self.dir, FILE, |f| f.write_all(&bytes)).map_err(|source| {
            StateError::Write {
                path: self.path(),
                source,
            }
        })?;
        (self.restart, self.file) = (Some(now.clone()), true);
        Ok(true)
    }

    /// After a request that [`persists`]: saves what is in force (even when the request failed,
    /// as a failure may have changed something, e.g. a detach that left the device behind) and
    /// turns the answer into an error if that could not be saved, so that a client never takes
    /// an unsaved change for a durable one. The change itself stays in force (traffic already
    /// follows it; undoing it could fail as well): the error says so, and [`Store::retry`]
    /// keeps trying.
    pub fn sync<T>(&mut self, answer: Result<T, String>, now: &InForce) -> Result<T, String> {
        match self.save(now) {
            Ok(_) => {
                self.failing = None;
                answer
            }
            Err(e) => {
                let why = format!(
                    "NOT persisted: {e}; a restart now would go back to {}; evsd retries the \
                     save every second and logs when it succeeds",
                    self.restart_description()
                );
                self.failing = Some(e.to_string());
                let g = now.generation;
                Err(match answer {
                    Ok(_) => {
                        format!("the change is applied (generation {g} is in force) but {why}")
                    }
                    Err(a) => format!("{a}; what is in force (generation {g}) is also {why}"),
                })
            }
        }
    }

    /// If a save failed, tries again; returns what to log once it succeeds.
    pub fn retry(&mut self, now: impl FnOnce() -> InForce) -> Option<String> {
        self.failing.as_ref()?;
        let now = now();
        self.save(&now).ok()?;
        self.failing = None;
        Some(format!(
            "state saved to {} ({}) after an earlier failure",
            self.path().display(),
            now.summary()
        ))
    }

    /// At a clean stop: a last retry; what to log if what is in force is still not saved.
    pub fn at_exit(&mut self, now: impl FnOnce() -> InForce) -> Option<String> {
        if let Some(ok) = self.retry(now) {
            return Some(ok);
        }
        self.failing.as_ref().map(|e| {
            format!(
                "WARNING: what is in force is NOT persisted ({e}); the next start goes back to {}",
                self.restart_description()
            )
        })
    }

    fn restart_description(&self) -> String {
        match &self.restart {
            Some(s) if self.file => format!("generation {} saved before", s.generation),
            _ => "the config file's model and attachments".into(),
        }
    }
}

/// Where `evsd run` starts from.
pub struct Startup {
    /// The boot config, with the saved model and attachments in place of its own if there was
    /// a state file.
    pub config: Config,
    /// The model to start with: the saved one as it was (a config has no place for the remote
    /// group members a controller may have sent), or the config's.
    model: Model,
    pub store: Store,
    /// One line for the log: what the switch starts from, and why.
    pub origin: String,
    /// The generation and port ids to continue from (from the state file).
    resume: Option<(u64, BTreeMap<String, u32>)>,
}

impl Startup {
    /// The switch with the starting model, continuing the saved generation if there was one.
    pub fn switch(&self) -> Result<Switch, ModelError> {
        let (cfg, model) = (self.config.switch.clone(), self.model.clone());
        match &self.resume {
            Some((generation, ids)) => Switch::resume(cfg, model, ids.clone(), *generation),
            None => Switch::new(cfg, model),
        }
    }

    /// Where the attachments came from, for errors when one cannot be attached again.
    pub fn attach_source(&self) -> String {
        match &self.resume {
            Some(_) => format!(
                "{} (saved at run time; `evsd run --discard-state` starts from the config file's \
                 [[attach]] instead)",
                self.store.path().display()
            ),
            None => "the config file".into(),
        }
    }
}

/// Opens the state directory of `boot` and decides what to start from: the state file if there
/// is one (unless `discard`, which moves it aside), otherwise the config file. Refuses a state
/// file it cannot read, with what to do about it.
pub fn startup(boot: Config, discard: bool) -> Result<Startup, String> {
    let mut store = Store::open(&boot.dataplane.state_dir).map_err(|e| e.to_string())?;
    if discard {
        let moved = store.discard().map_err(|e| e.to_string())?;
        let origin = match moved {
            Some(to) => format!(
                "--discard-state: the saved state was moved to {}; starting from the config \
                 file's model and attachments",
                to.display()
            ),
            None => format!(
                "--discard-state: there was no saved state in {}; starting from the config file",
                store.dir.display()
            ),
        };
        return Ok(Startup {
            model: boot.model(),
            config: boot,
            store,
            origin,
            resume: None,
        });
    }
    let Some(saved) = store.load().map_err(StateError::refusal)? else {
        let origin = format!(
            "no saved state in {}: starting from the config file's model and attachments",
            store.dir.display()
        );
        return Ok(Startup {
            model: boot.model(),
            config: boot,
            store,
            origin,
            resume: None,
        });
    };
    let config = saved.overlay(&boot).map_err(StateError::refusal)?;
    let origin = format!(
        "RESTORING the state saved at run time from {} ({}, saved {}): the config file's model \
         and [[attach]] are NOT used (`evsd run --discard-state` starts from them)",
        saved.path.display(),
        saved.state.summary(),
        saved.saved_at
    );
    Ok(Startup {
        config,
        model: saved.state.model,
        store,
        origin,
        resume: Some((saved.state.generation, saved.state.port_ids)),
    })
}

/// What `evsd check` says about the state directory of `cfg` (without creating or locking it):
/// an error if `evsd run` would refuse the state file.
pub fn inspect(cfg: &Config) -> Result<String, String> {
    let path = cfg.dataplane.state_dir.join(FILE);
    match read(&path).map_err(StateError::refusal)? {
        None => Ok(format!(
            "state: none in {}: `evsd run` starts from this config's model and attachments",
            cfg.dataplane.state_dir.display()
        )),
        Some(s) => {
            s.overlay(cfg).map_err(StateError::refusal)?;
            Ok(format!(
                "state: {} ({}, saved {}): `evsd run` starts from it, not from this config's \
                 model and [[attach]] (`--discard-state` to use them)",
                path.display(),
                s.state.summary(),
                s.saved_at
            ))
        }
    }
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc(secs)
}

/// RFC 3339 UTC of a Unix time (days to civil date: H. Hinnant's algorithm), so that the file
/// says when it was written without a date crate.
fn utc(unix_secs: u64) -> String {
    let (days, rem) = ((unix_secs / 86_400) as i64, unix_secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Backend, Role, VhostConfig};

    const BOOT: &str = r#"
        [dataplane]
        cores = [0]

        [[port_groups]]
        name = "web"
        vlan = 100

        [[ports]]
        name = "vm1"
        mac = "02:00:00:00:00:01"
        port_group = "web"

        [[attach]]
        port = "vm1"
        vhost = { socket = "/tmp/evs-state-test/vm1.sock" }
    "#;

    fn boot(dir: &Path) -> Config {
        let mut c = Config::parse(BOOT).unwrap().checked().unwrap();
        c.dataplane.state_dir = dir.to_owned();
        c
    }

    /// The boot model with a second port, attached as a client.
    fn changed(c: &Config) -> InForce {
        let mut model = c.model();
        let mut p = model.ports[0].clone();
        p.name = "vm2".into();
        p.mac = "02:00:00:00:00:02".parse().unwrap();
        model.ports.push(p);
        let ids = BTreeMap::from([("vm1".to_string(), 1), ("vm2".to_string(), 2)]);
        let vhost = |n: &str, role| {
            Backend::Vhost(VhostConfig {
                socket: format!("/tmp/evs-state-test/{n}.sock").into(),
                role,
            })
        };
        InForce::new(
            7,
            model,
            ids,
            vec![
                Attach::new("vm1", vhost("vm1", Role::Server)),
                Attach::new("vm2", vhost("vm2", Role::Client)),
                // Removed from the model but not yet detached: not for a restart.
                Attach::new("gone", vhost("gone", Role::Server)),
            ],
        )
    }

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let cfg = boot(d.path());
        let now = changed(&cfg);
        assert_eq!(now.attach.len(), 2, "the stale attachment is dropped");
        let mut st = Store::open(d.path()).unwrap();
        assert_eq!(st.load().unwrap(), None);
        assert!(st.save(&now).unwrap());
        assert!(!st.save(&now).unwrap(), "nothing new: no write");
        drop(st);

        let mut st = Store::open(d.path()).unwrap();
        let saved = st.load().unwrap().expect("a state file");
        assert_eq!(saved.state, now);
        assert!(saved.saved_at.ends_with('Z'), "{}", saved.saved_at);
        drop(st);

        // The restart: the saved model and attachments replace the config's, the rest stays.
        let s = startup(cfg.clone(), false).unwrap();
        assert!(s.origin.starts_with("RESTORING"), "{}", s.origin);
        assert!(s.origin.contains("generation 7, 2 ports"), "{}", s.origin);
        assert_eq!(s.config.model(), now.model);
        assert_eq!(s.config.attach, now.attach);
        assert_eq!(s.config.dataplane.cores, cfg.dataplane.cores);
        let sw = s.switch().unwrap();
        assert_eq!(sw.pipeline().version, 7, "the generation continues");
        assert_eq!(sw.port_ids(), now.port_ids);
        assert!(inspect(&cfg).unwrap().contains("generation 7"));
    }

    #[test]
    fn no_file_until_something_changes() {
        let d = tempfile::tempdir().unwrap();
        let cfg = boot(d.path());
        let s = startup(cfg.clone(), false).unwrap();
        let mut st = s.store;
        let model = s.config.model();
        let at_start = InForce::new(
            1,
            model,
            BTreeMap::from([("vm1".into(), 1)]),
            s.config.attach,
        );
        st.started(at_start.clone());
        let r: Result<(), String> = Err("port group \"x\": vlan: out of range".into());
        assert!(st.sync(r, &at_start).is_err());
        assert!(!st.path().exists(), "a refused apply writes no state file");
        let mut applied = at_start.clone();
        applied.generation = 2;
        st.sync(Ok(()), &applied).unwrap();
        assert_eq!(read(&st.path()).unwrap().unwrap().state, applied);
    }

    #[test]
    fn failed_write_leaves_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let cfg = boot(d.path());
        let mut st = Store::open(d.path()).unwrap();
        let old = changed(&cfg);
        st.save(&old).unwrap();
        let before = fs::read(st.path()).unwrap();

        // A write that dies half-way (disk full, I/O error): the file keeps the old state.
        let e = replace_file(d.path(), FILE, |f| {
            f.write_all(b"{\"format_version\": 1, \"gen")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(fs::read(st.path()).unwrap(), before);
        assert!(
            !d.path().join("state.json.tmp").exists(),
            "temp file removed"
        );

        // Through the store, with the temp file impossible to create: the answer becomes an
        // error saying the change is in force but not saved, and a retry saves it later.
        fs::create_dir(d.path().join("state.json.tmp")).unwrap();
        let mut new = old.clone();
        new.generation += 1;
        let r = st.sync(Ok("applied"), &new).unwrap_err();
        assert!(
            r.contains("applied (generation 8 is in force) but NOT persisted"),
            "{r}"
        );
        assert!(r.contains("generation 7 saved before"), "{r}");
        assert_eq!(fs::read(st.path()).unwrap(), before);
        assert!(st.retry(|| new.clone()).is_none(), "still failing");
        assert!(st
            .at_exit(|| new.clone())
            .unwrap()
            .contains("NOT persisted"));
        fs::remove_dir(d.path().join("state.json.tmp")).unwrap();
        assert!(st.retry(|| new.clone()).unwrap().contains("generation 8"));
        assert_eq!(read(&st.path()).unwrap().unwrap().state, new);
        assert!(st.retry(|| unreachable!("nothing pending")).is_none());
    }

    #[test]
    fn corrupt_file_is_refused_with_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let cfg = boot(d.path());
        let path = d.path().join(FILE);
        let mut good = Store::open(d.path()).unwrap();
        good.save(&changed(&cfg)).unwrap();
        drop(good);
        let text = fs::read_to_string(&path).unwrap();
        for (bad, why) in [
            (String::new(), "empty"),
            (text[..text.len() / 2].to_string(), "not valid JSON"),
            ("{\"generation\": 3}".to_string(), "no format_version"),
            (
                text.replace("\"02:00:00:00:00:02\"", "\"zz\""),
                "at `model.ports[1].mac`",
            ),
            (
                text.replace("\"port_group\": \"web\"", "\"port_group\": \"nope\""),
                "nope",
            ),
            (text.replace("\"vm2\": 2", "\"vm2\": 1"), "port_ids.vm2"),
        ] {
            fs::write(&path, &bad).unwrap();
            let e = startup(cfg.clone(), false).err().expect("refused");
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(why), "{why}: {e}");
            assert!(e.contains("--discard-state"), "{e}");
            let e = inspect(&cfg).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        // The operator says so: the file is kept aside and the config is in force.
        let s = startup(cfg.clone(), true).unwrap();
        assert!(s.origin.contains(DISCARDED), "{}", s.origin);
        assert_eq!(s.config.model(), cfg.model());
        assert!(!path.exists());
        assert!(d.path().join(DISCARDED).exists());
        drop(s);
        let s = startup(cfg.clone(), false).unwrap();
        assert!(s.origin.starts_with("no saved state"), "{}", s.origin);
        assert_eq!(s.switch().unwrap().pipeline().version, 1);
    }

    #[test]
    fn other_format_version_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let cfg = boot(d.path());
        let mut st = Store::open(d.path()).unwrap();
        st.save(&changed(&cfg)).unwrap();
        drop(st);
        let path = d.path().join(FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(
            &path,
            text.replace("\"format_version\": 1", "\"format_version\": 2"),
        )
        .unwrap();
        let e = startup(cfg, false).err().expect("refused");
        assert!(
            e.contains("format version 2, but this evsd reads version 1"),
            "{e}"
        );
        assert!(e.contains("--discard-state"), "{e}");
    }

    #[test]
    fn one_switch_per_state_directory() {
        let d = tempfile::tempdir().unwrap();
        let _first = Store::open(d.path()).unwrap();
        let e = Store::open(d.path()).err().expect("locked");
        assert!(
            e.to_string().contains("in use by another running evsd"),
            "{e}"
        );
    }

    #[test]
    fn only_model_and_attachment_changes_persist() {
        assert!(persists(&Request::Detach { port: "a".into() }));
        assert!(persists(&Request::Apply {
            model: Model::default()
        }));
        assert!(!persists(&Request::StatsReset));
        assert!(!persists(&Request::ShowModel));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
