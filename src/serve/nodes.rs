//! What `rimage node` and the service do to nodes: add, set the next boot, remove, record a
//! job's result; the files that follow from a node (dnsmasq `dhcp-hostsdir` entries and
//! pxelinux configs), its iPXE boot script and its job.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::proto::{self, Job, Mac, Mode};
use super::state::{Config, LastResult, Node, State, StateDir, now, random_hex};
use crate::Error;
use crate::error::IoError;

/// Kernel console arguments of the netboot system.
const CONSOLE: &str = "console=ttyS0,115200 console=tty0";
/// Where pxelinux finds the netboot kernel and initrd, under the TFTP root.
pub const TFTP_NETBOOT: &str = "rimage";

/// What `node set` may change besides the mode.
#[derive(Clone, Debug, Default)]
pub struct SetOptions {
    /// Image restored, or saved to (default for save: NAME-YYYY-MM-DD).
    pub image: Option<String>,
    /// Command run in the restored root.
    pub post_restore: Option<String>,
    /// Stay in the mode after a success.
    pub keep: bool,
    /// Restore with `--delta`.
    pub delta: bool,
    /// The disk to use.
    pub disk: Option<String>,
    /// A save may replace an existing image.
    pub overwrite: bool,
}

/// A node as shown: the node without its job token, which never leaves the state.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct NodeView(Node);

impl From<&Node> for NodeView {
    fn from(n: &Node) -> Self {
        Self(Node {
            token: None,
            ..n.clone()
        })
    }
}

impl std::ops::Deref for NodeView {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.0
    }
}

/// What a change wrote and removed outside the state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Written {
    /// Files written.
    pub wrote: Vec<PathBuf>,
    /// Files removed.
    pub removed: Vec<PathBuf>,
}

fn usage(e: proto::ProtoError) -> Error {
    Error::Usage(e.to_string())
}

/// Remembers the directories and URL given (the others stay as they were).
pub fn merge_config(st: &mut State, cfg: &Config) {
    if cfg.dhcp_hostsdir.is_some() {
        st.config.dhcp_hostsdir.clone_from(&cfg.dhcp_hostsdir);
    }
    if cfg.tftp_dir.is_some() {
        st.config.tftp_dir.clone_from(&cfg.tftp_dir);
    }
    if cfg.public_url.is_some() {
        st.config.public_url = cfg
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_string());
    }
}

/// Adds a node (in local mode) and writes its DHCP entry and pxelinux config.
///
/// # Errors
/// [`Error::Usage`] for a bad name, or a name or MAC another node has; write failures.
pub fn add(
    sd: &StateDir,
    cfg: &Config,
    name: &str,
    mac: Mac,
    ip: Option<std::net::Ipv4Addr>,
) -> Result<(NodeView, Written), Error> {
    proto::check_node_name(name).map_err(usage)?;
    sd.update(|st| {
        merge_config(st, cfg);
        if st.nodes.contains_key(name) {
            return Err(Error::Usage(format!(
                "a node named {name} exists; `rimage node rm {name}` first"
            )));
        }
        if let Some(other) = st.by_mac(mac) {
            return Err(Error::Usage(format!(
                "{mac} is already node {}",
                other.name
            )));
        }
        let node = Node {
            name: name.to_string(),
            mac,
            ip,
            mode: Mode::Local,
            image: None,
            post_restore: None,
            keep: false,
            delta: false,
            disk: None,
            overwrite: false,
            token: None,
            job: None,
            set_at: Some(now()),
            last: None,
        };
        let w = write_files(&st.config, &node)?;
        st.nodes.insert(name.to_string(), node.clone());
        Ok((NodeView::from(&node), w))
    })
}

/// Sets a node's next boot; a save, restore or live job gets a new token and id.
///
/// # Errors
/// [`Error::Usage`] for an unknown node, a restore without an image, a bad image name; write
/// failures.
pub fn set(
    sd: &StateDir,
    cfg: &Config,
    name: &str,
    mode: Mode,
    opts: &SetOptions,
) -> Result<(NodeView, Written), Error> {
    if let Some(i) = &opts.image {
        proto::check_image_name(i).map_err(usage)?;
    }
    if mode == Mode::Restore && opts.image.is_none() {
        return Err(Error::Usage(
            "a restore needs --image NAME (a save-disk directory or NAME.rimg in the image root)"
                .into(),
        ));
    }
    sd.update(|st| {
        merge_config(st, cfg);
        let config = st.config.clone();
        let node = st
            .nodes
            .get_mut(name)
            .ok_or_else(|| Error::Usage(format!("no node named {name}; `rimage node list`")))?;
        node.mode = mode;
        node.image = match mode {
            Mode::Save => Some(opts.image.clone().unwrap_or_else(|| {
                format!(
                    "{name}-{}",
                    now().get(..10).unwrap_or("save").replace(':', "-")
                )
            })),
            Mode::Restore => opts.image.clone(),
            Mode::Local | Mode::Live => None,
        };
        node.post_restore = opts.post_restore.clone();
        node.keep = opts.keep;
        node.delta = opts.delta;
        node.disk = opts.disk.clone();
        node.overwrite = opts.overwrite;
        if mode == Mode::Local {
            node.token = None;
            node.job = None;
        } else {
            node.token = Some(random_hex()?);
            node.job = Some(random_hex()?[..16].to_string());
        }
        node.set_at = Some(now());
        let w = write_files(&config, node)?;
        Ok((NodeView::from(&*node), w))
    })
}

/// Removes a node and its files.
///
/// # Errors
/// [`Error::Usage`] for an unknown node; failures removing its files.
pub fn remove(sd: &StateDir, name: &str) -> Result<Written, Error> {
    sd.update(|st| {
        let node = st
            .nodes
            .remove(name)
            .ok_or_else(|| Error::Usage(format!("no node named {name}; `rimage node list`")))?;
        let mut w = Written::default();
        for path in node_files(&st.config, &node) {
            match std::fs::remove_file(&path) {
                Ok(()) => w.removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io(IoError::new(&path, "remove", None, e))),
            }
        }
        Ok(w)
    })
}

/// Every node, by name.
///
/// # Errors
/// When the state cannot be read.
pub fn list(sd: &StateDir) -> Result<Vec<NodeView>, Error> {
    Ok(sd.read()?.nodes.values().map(NodeView::from).collect())
}

/// Records the result a node reported for the job with `token`. A success of a save or
/// restore puts the node back to local boot (its token then stops working) unless it was set
/// with `keep`. Returns the node as it now is, or `None` when no job has the token.
///
/// # Errors
/// Failures writing the state or the node's files.
pub fn record_result(
    sd: &StateDir,
    token: &str,
    ok: bool,
    message: &str,
    seconds: f64,
    bytes: u64,
) -> Result<Option<(NodeView, Written)>, Error> {
    sd.update(|st| {
        let Some(name) = st.by_token(token).map(|n| n.name.clone()) else {
            return Ok(None);
        };
        let config = st.config.clone();
        let node = st.nodes.get_mut(&name).expect("found by token");
        node.last = Some(LastResult {
            ok,
            message: message.to_string(),
            mode: node.mode,
            image: node.image.clone(),
            at: now(),
            seconds,
            bytes,
        });
        let mut w = Written::default();
        if ok && matches!(node.mode, Mode::Save | Mode::Restore) && !node.keep {
            node.mode = Mode::Local;
            node.token = None;
            node.job = None;
            node.set_at = Some(now());
            w = write_files(&config, node)?;
        }
        Ok(Some((NodeView::from(&*node), w)))
    })
}

/// The files a node has: its DHCP host entry and its pxelinux config, where configured.
fn node_files(cfg: &Config, node: &Node) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = &cfg.dhcp_hostsdir {
        v.push(d.join(&node.name));
    }
    if let Some(t) = &cfg.tftp_dir {
        v.push(
            t.join("pxelinux.cfg")
                .join(format!("01-{}", node.mac.hyphenated())),
        );
    }
    v
}

/// The dnsmasq `dhcp-hostsdir` line of a node: `MAC,IP,NAME` (or `MAC,NAME`).
pub fn dhcp_host_line(node: &Node) -> String {
    match node.ip {
        Some(ip) => format!("{},{ip},{}\n", node.mac, node.name),
        None => format!("{},{}\n", node.mac, node.name),
    }
}

/// The kernel command line of a node's job (docs/SERVICE.md); `${...}` are iPXE's.
fn kernel_args(node: &Node, base: &str, ipxe: bool) -> String {
    let mut s = format!(
        "{CONSOLE} rimage.mode={} rimage.server={base} rimage.node={} rimage.token={}",
        node.mode,
        node.name,
        node.token.as_deref().unwrap_or_default()
    );
    if ipxe {
        s.push_str(" rimage.mac=${mac} rimage.ip=${ip} rimage.netmask=${netmask} rimage.gateway=${gateway} rimage.dns=${dns}");
    }
    s
}

/// A node's pxelinux config: `LOCALBOOT 0`, or the netboot kernel from `TFTP/rimage/`.
///
/// # Errors
/// [`Error::Usage`] when a job needs the service's URL and none was given.
pub fn pxelinux_config(cfg: &Config, node: &Node) -> Result<String, Error> {
    if node.mode == Mode::Local {
        return Ok("DEFAULT local\nLABEL local\n  LOCALBOOT 0\n".into());
    }
    let base = cfg.public_url.as_deref().ok_or_else(|| {
        Error::Usage(
            "a pxelinux entry for a job needs the service's URL: pass --public-url URL once".into(),
        )
    })?;
    Ok(format!(
        "DEFAULT rimage\nLABEL rimage\n  KERNEL {TFTP_NETBOOT}/vmlinuz\n  INITRD {TFTP_NETBOOT}/initrd.img\n  APPEND {}\n  IPAPPEND 2\n",
        kernel_args(node, base, false)
    ))
}

/// Writes a node's DHCP entry and pxelinux config where configured; returns their paths.
///
/// # Errors
/// Write failures, a missing public URL for a pxelinux job.
pub fn write_files(cfg: &Config, node: &Node) -> Result<Written, Error> {
    let mut w = Written::default();
    if let Some(d) = &cfg.dhcp_hostsdir {
        let path = d.join(&node.name);
        write_public(&path, dhcp_host_line(node).as_bytes())?;
        w.wrote.push(path);
    }
    if let Some(t) = &cfg.tftp_dir {
        let path = t
            .join("pxelinux.cfg")
            .join(format!("01-{}", node.mac.hyphenated()));
        let text = pxelinux_config(cfg, node)?;
        std::fs::create_dir_all(t.join("pxelinux.cfg"))
            .map_err(|e| IoError::new(&t.join("pxelinux.cfg"), "create", None, e))?;
        // The TFTP server must read it (and gives it to anyone on the boot network, as the
        // service does the iPXE script): the job token is as exposed as on a kernel command line.
        super::state::write_private(&path, text.as_bytes())?;
        set_mode(&path, 0o644)?;
        w.wrote.push(path);
    }
    Ok(w)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::Io(IoError::new(path, "chmod", None, e)))
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| IoError::new(d, "create", None, e))?;
    }
    crate::atomic::write_file(path, bytes)
}

/// The iPXE script for the node with `mac` (unknown or local: boot the disk).
pub fn boot_script(st: &State, mac: Mac, base: &str) -> String {
    match st.by_mac(mac) {
        Some(node) if node.mode != Mode::Local && node.token.is_some() => format!(
            "#!ipxe\nkernel {base}/netboot/vmlinuz initrd=initrd.img {}\ninitrd {base}/netboot/initrd.img\nboot\n",
            kernel_args(node, base, true)
        ),
        _ => "#!ipxe\nexit\n".into(),
    }
}

/// The job of a node, with URLs under `base`; `disk_image`: whether the restore image is a
/// save-disk directory (else `NAME.rimg`, or `NAME` as it is when it ends so).
pub fn job(node: &Node, base: &str, disk_image: bool) -> Job {
    let image = node.image.clone();
    let (image_url, upload_url) = match (node.mode, &image) {
        (Mode::Restore, Some(i)) if disk_image => (Some(format!("{base}/images/{i}/")), None),
        (Mode::Restore, Some(i)) if i.ends_with(".rimg") => {
            (Some(format!("{base}/images/{i}")), None)
        }
        (Mode::Restore, Some(i)) => (Some(format!("{base}/images/{i}.rimg")), None),
        (Mode::Save, Some(i)) => (None, Some(format!("{base}/images/{i}"))),
        _ => (None, None),
    };
    Job {
        node: node.name.clone(),
        mode: node.mode,
        job: node.job.clone().unwrap_or_default(),
        image,
        image_url,
        upload_url,
        delta: node.delta,
        post_restore: node.post_restore.clone(),
        disk: node.disk.clone(),
        reboot: true,
        overwrite: node.overwrite,
    }
}
