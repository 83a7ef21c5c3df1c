//! The nodes and their next boot, kept in `STATE/state.json` and shared by `rimage serve` and
//! any number of `rimage node` commands: every change takes an exclusive `flock` on
//! `STATE/lock`, reads, changes and writes the file under a temporary name that is renamed
//! over it. Readers take a shared lock. A crash leaves the old state or the new one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::proto::{Mac, Mode};
use crate::Error;
use crate::error::IoError;

/// The state file.
pub const STATE_FILE: &str = "state.json";
/// The lock file.
const LOCK_FILE: &str = "lock";
/// The admin token (uploads under any name).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Largest state file read.
const MAX_STATE: u64 = 64 << 20;

/// Where generated files go; remembered once given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// dnsmasq `dhcp-hostsdir`: one file per node, `MAC,IP,NAME`.
    pub dhcp_hostsdir: Option<PathBuf>,
    /// TFTP root: `pxelinux.cfg/01-<mac>` per node.
    pub tftp_dir: Option<PathBuf>,
    /// The service's URL as nodes reach it (pxelinux entries need it; boot scripts prefer it).
    pub public_url: Option<String>,
}

/// How a node's last job ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastResult {
    /// Whether it succeeded.
    pub ok: bool,
    /// What the node said.
    pub message: String,
    /// The job's mode.
    pub mode: Mode,
    /// Its image.
    pub image: Option<String>,
    /// When it was reported (RFC 3339).
    pub at: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Bytes moved.
    pub bytes: u64,
}

/// One node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Its name (a host name label).
    pub name: String,
    /// Its boot NIC.
    pub mac: Mac,
    /// Its fixed address, when DHCP gives one.
    pub ip: Option<std::net::Ipv4Addr>,
    /// What it does at its next network boot.
    pub mode: Mode,
    /// The image restored, or the name a save goes to.
    pub image: Option<String>,
    /// Command run in the restored root.
    pub post_restore: Option<String>,
    /// Stay in this mode after a success (not one-shot).
    pub keep: bool,
    /// Restore with `--delta`.
    pub delta: bool,
    /// The disk to use.
    pub disk: Option<String>,
    /// A save may replace an existing image.
    pub overwrite: bool,
    /// The current job's token (secret; never shown by the API: [`super::nodes::NodeView`]
    /// leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The current job's id.
    pub job: Option<String>,
    /// When the mode was set (RFC 3339).
    pub set_at: Option<String>,
    /// The last job's outcome.
    pub last: Option<LastResult>,
}

/// Everything kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Where generated files go.
    #[serde(default)]
    pub config: Config,
    /// The nodes by name.
    #[serde(default)]
    pub nodes: BTreeMap<String, Node>,
}

impl State {
    /// The node with this MAC.
    pub fn by_mac(&self, mac: Mac) -> Option<&Node> {
        self.nodes.values().find(|n| n.mac == mac)
    }

    /// The node whose current job has this token (compared in constant time).
    pub fn by_token(&self, token: &str) -> Option<&Node> {
        self.nodes
            .values()
            .find(|n| n.token.as_deref().is_some_and(|t| same(t, token)))
    }
}

/// Compares secrets without stopping at the first difference.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> Error + 'a {
    move |e| Error::Io(IoError::new(path, op, None, e))
}

/// 128 random bits, hex.
///
/// # Errors
/// When /dev/urandom cannot be read.
pub fn random_hex() -> Result<String, Error> {
    let mut b = [0u8; 16];
    let urandom = Path::new("/dev/urandom");
    File::open(urandom)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(io(urandom, "read"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Now, RFC 3339.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl StateDir {
    /// Opens (creating, private to its owner) the state directory.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir, "create the state directory"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn lock(&self, exclusive: bool) -> Result<File, Error> {
        let path = self.dir.join(LOCK_FILE);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path, "open"))?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&f, op).map_err(|e| io(&path, "lock")(e.into()))?;
        Ok(f)
    }

    fn load(&self) -> Result<State, Error> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match File::open(&path) {
            Ok(f) => {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_STATE), &mut v)
                    .map_err(io(&path, "read"))?;
                v
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(io(&path, "open")(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::refused(
                &path,
                format!("is not a rimage state file ({e}); restore it from a backup"),
            )
        })
    }

    /// Reads the state.
    ///
    /// # Errors
    /// When it cannot be read or parsed.
    pub fn read(&self) -> Result<State, Error> {
        let _lock = self.lock(false)?;
        self.load()
    }

    /// Changes the state: `f` sees the current state under an exclusive lock; what it leaves is
    /// written (atomically) unless it fails.
    ///
    /// # Errors
    /// `f`'s error (nothing is written), or failures reading or writing the state.
    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Error>) -> Result<T, Error> {
        let _lock = self.lock(true)?;
        let mut st = self.load()?;
        let out = f(&mut st)?;
        let bytes = serde_json::to_vec_pretty(&st)
            .map_err(|e| Error::Internal(format!("state cannot be written: {e}")))?;
        write_private(&self.dir.join(STATE_FILE), &bytes)?;
        Ok(out)
    }

    /// The admin token, made on first use.
    ///
    /// # Errors
    /// When it cannot be read or written.
    pub fn admin_token(&self) -> Result<String, Error> {
        let _lock = self.lock(true)?;
        let path = self.dir.join(ADMIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            Ok(_) => self.new_admin_token(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.new_admin_token(&path),
            Err(e) => Err(io(&path, "read")(e)),
        }
    }

    fn new_admin_token(&self, path: &Path) -> Result<String, Error> {
        let t = random_hex()?;
        write_private(path, format!("{t}\n").as_bytes())?;
        Ok(t)
    }
}

/// Writes a file only its owner can read (it holds tokens), atomically.
///
/// # Errors
/// The failing step.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".state.")
        .suffix(crate::atomic::PARTIAL_SUFFIX)
        .tempfile_in(dir)
        .map_err(io(dir, "create a temporary file in"))?;
    tmp.write_all(bytes).map_err(io(path, "write"))?;
    tmp.as_file().sync_all().map_err(io(path, "fsync"))?;
    tmp.persist(path)
        .map_err(|e| io(path, "rename into place")(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_updates_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let sd = sd.clone();
                s.spawn(move || {
                    for i in 0..10 {
                        sd.update(|st| {
                            let name = format!("n{t}x{i}");
                            st.nodes.insert(
                                name.clone(),
                                Node {
                                    name,
                                    mac: Mac([0, 0, 0, 0, t, i]),
                                    ip: None,
                                    mode: Mode::Local,
                                    image: None,
                                    post_restore: None,
                                    keep: false,
                                    delta: false,
                                    disk: None,
                                    overwrite: false,
                                    token: None,
                                    job: None,
                                    set_at: None,
                                    last: None,
                                },
                            );
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(sd.read().unwrap().nodes.len(), 40);
        let t = sd.admin_token().unwrap();
        assert_eq!(t.len(), 32);
        assert_eq!(sd.admin_token().unwrap(), t);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
