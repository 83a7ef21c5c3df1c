//! rimage as PID 1 of the netboot initramfs: mount the kernel filesystems, load the modules,
//! bring up the NIC the boot used, run the node's job (docs/SERVICE.md), sync and reboot.
//!
//! Unlike the rest of the library this module prints: it owns the console, and the console is
//! where an admin standing at the node looks.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::build::{LOAD_LIST, MODULE_DIR};
use super::cmdline::{self, BootParams, Mac, Mode, StaticAddress};
use crate::sys::{self, PowerAction};

const BUSYBOX: &str = "/bin/busybox";

/// Whether this process should act as the netboot init: PID 1, or started as `init`.
pub fn is_init() -> bool {
    sys::is_pid1()
        || std::env::args_os()
            .next()
            .as_deref()
            .map(Path::new)
            .and_then(Path::file_name)
            .is_some_and(|n| n == "init")
}

/// What stops the boot.
#[derive(Debug, Error)]
pub enum InitError {
    /// The kernel command line is wrong.
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    /// A key the job needs is missing.
    #[error("kernel command line: {0} is missing (rimage serve's boot script sets it)")]
    Missing(&'static str),
    /// No network interface appeared (or none with the MAC asked for).
    #[error("no network interface{} after {secs} s (a NIC driver missing from the initramfs?)", mac.map(|m| format!(" with MAC {m}")).unwrap_or_default())]
    NoInterface {
        /// The MAC looked for.
        mac: Option<Mac>,
        /// How long it waited.
        secs: u64,
    },
    /// A command (busybox ip, udhcpc) failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status or error.
        message: String,
    },
    /// No disk, or several and nothing says which.
    #[error(transparent)]
    Disk(#[from] DiskChoiceError),
    /// The job failed.
    #[error("{0}")]
    Job(String),
}

/// A disk the init could image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskCandidate {
    /// /dev/NAME.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Whether the kernel calls it removable (USB sticks, card readers).
    pub removable: bool,
}

/// Why no target disk was picked.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DiskChoiceError {
    /// The disk named does not exist.
    #[error("{}: no such disk (disks: {})", .0.display(), .1)]
    NotFound(PathBuf, String),
    /// No non-removable disk.
    #[error("no disk found (a disk driver missing from the initramfs?)")]
    NoDisk,
    /// Several: guessing could overwrite the wrong one.
    #[error("several disks: {0}; refusing to guess: set rimage.disk= or the job's disk")]
    Several(String),
}

fn describe(disks: &[&DiskCandidate]) -> String {
    disks
        .iter()
        .map(|d| format!("{} ({})", d.path.display(), crate::human_bytes(d.bytes)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the disk: the one named (kernel command line, else the job), else the only
/// non-removable one.
///
/// # Errors
/// [`DiskChoiceError`]: the named disk is missing, there is none, or there are several.
pub fn choose_disk(
    disks: &[DiskCandidate],
    named: Option<&Path>,
) -> Result<PathBuf, DiskChoiceError> {
    if let Some(named) = named {
        return if disks.iter().any(|d| d.path == named) || named.exists() {
            Ok(named.to_path_buf())
        } else {
            Err(DiskChoiceError::NotFound(
                named.to_path_buf(),
                describe(&disks.iter().collect::<Vec<_>>()),
            ))
        };
    }
    let fixed: Vec<&DiskCandidate> = disks.iter().filter(|d| !d.removable).collect();
    match fixed.as_slice() {
        [] => Err(DiskChoiceError::NoDisk),
        [one] => Ok(one.path.clone()),
        several => Err(DiskChoiceError::Several(describe(several))),
    }
}

/// The whole disks in /sys/block: not loop, ram, zram, optical, floppy, device-mapper or md
/// devices, and not empty.
pub fn list_disks() -> Vec<DiskCandidate> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).unwrap_or_default();
        let sectors: u64 = read("size").trim().parse().unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        out.push(DiskCandidate {
            path: PathBuf::from("/dev").join(&name),
            bytes: sectors * 512,
            removable: read("removable").trim() == "1",
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The console: every device in /sys/class/tty/console/active (serial and screen), so that a
/// line reaches both whatever `console=` came last.
pub struct Console {
    outs: Vec<File>,
}

impl Console {
    fn open() -> Self {
        let mut outs = Vec::new();
        if let Ok(active) = std::fs::read_to_string("/sys/class/tty/console/active") {
            for name in active.split_whitespace() {
                if let Ok(f) = std::fs::OpenOptions::new()
                    .write(true)
                    .open(Path::new("/dev").join(name))
                {
                    outs.push(f);
                }
            }
        }
        Self { outs }
    }

    /// Prints one line, prefixed with the time since the kernel started.
    pub fn line(&self, msg: &str) {
        let line = format!("rimage-init [{:7.2}] {msg}\n", uptime());
        if self.outs.is_empty() {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        for mut out in &self.outs {
            let _ = out.write_all(line.as_bytes());
        }
    }
}

/// Seconds since the kernel started (/proc/uptime).
fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn busybox(args: &[&str]) -> Result<(), InitError> {
    let command = format!("busybox {}", args.join(" "));
    match Command::new(BUSYBOX).args(args).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(InitError::Command {
            command,
            message: s.to_string(),
        }),
        Err(e) => Err(InitError::Command {
            command,
            message: e.to_string(),
        }),
    }
}

fn mount_kernel_filesystems(con: &Console) {
    for (fs, at) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        let _ = std::fs::create_dir_all(at);
        if let Err(e) = sys::mount_kernel_fs(fs, Path::new(at)) {
            // EBUSY: already mounted (the kernel mounts devtmpfs itself with DEVTMPFS_MOUNT).
            if e.raw_os_error() != Some(libc::EBUSY) {
                con.line(&format!("warning: mount {fs} on {at}: {e}"));
            }
        }
    }
}

fn load_modules(con: &Console) {
    let dir = Path::new("/").join(MODULE_DIR);
    let Ok(list) = std::fs::read_to_string(dir.join(LOAD_LIST)) else {
        con.line("no module list: using the kernel's built-in drivers only");
        return;
    };
    let started = Instant::now();
    let (mut loaded, mut failed, mut absent) = (0, Vec::new(), Vec::new());
    for name in list.lines().filter(|l| !l.is_empty()) {
        let path = dir.join(name);
        let result = File::open(&path).and_then(|f| sys::load_module(&f, name.ends_with(".xz")));
        match result {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => loaded += 1,
            // ENODEV: a driver for hardware (or a CPU feature) this machine lacks.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => absent.push(name.to_string()),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    con.line(&format!(
        "loaded {loaded} modules in {:.2} s{}",
        started.elapsed().as_secs_f64(),
        if absent.is_empty() {
            String::new()
        } else {
            format!(" (not for this machine: {})", absent.join(" "))
        }
    ));
    for f in failed {
        con.line(&format!("warning: module {f}"));
    }
}

/// The interface with `mac`, or the first Ethernet one; waits for drivers to create it.
fn find_interface(mac: Option<Mac>, wait: Duration) -> Result<String, InitError> {
    let started = Instant::now();
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        let addr = |n: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{n}/address"))
                .ok()
                .and_then(|a| a.trim().parse::<Mac>().ok())
        };
        // ARPHRD_ETHER = 1: skip tunnels and the like.
        let ether = |n: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{n}/type"))
                .is_ok_and(|t| t.trim() == "1")
        };
        let found = match mac {
            Some(m) => names.into_iter().find(|n| addr(n) == Some(m)),
            None => names.into_iter().find(|n| ether(n)),
        };
        if let Some(n) = found {
            return Ok(n);
        }
        if started.elapsed() > wait {
            return Err(InitError::NoInterface {
                mac,
                secs: wait.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_carrier(iface: &str, wait: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < wait {
        if std::fs::read_to_string(format!("/sys/class/net/{iface}/carrier"))
            .is_ok_and(|c| c.trim() == "1")
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Configures `iface` with the address iPXE had, or with DHCP; returns a description.
fn network_up(con: &Console, params: &BootParams) -> Result<String, InitError> {
    let iface = find_interface(params.mac, Duration::from_secs(20))?;
    busybox(&["ip", "link", "set", "lo", "up"])?;
    busybox(&["ip", "link", "set", &iface, "up"])?;
    if !wait_for_carrier(&iface, Duration::from_secs(10)) {
        con.line(&format!("warning: {iface}: no carrier after 10 s"));
    }
    match &params.address {
        Some(StaticAddress {
            ip,
            prefix,
            gateway,
            dns,
        }) => {
            busybox(&[
                "ip",
                "addr",
                "add",
                &format!("{ip}/{prefix}"),
                "dev",
                &iface,
            ])?;
            if let Some(gw) = gateway {
                busybox(&[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &gw.to_string(),
                    "dev",
                    &iface,
                ])?;
            }
            if let Some(dns) = dns {
                let _ = std::fs::write("/etc/resolv.conf", format!("nameserver {dns}\n"));
            }
            Ok(format!("{iface} {ip}/{prefix} (from the boot loader)"))
        }
        None => {
            con.line(&format!("{iface}: DHCP"));
            // -n: fail instead of retrying forever; -q: exit once configured.
            busybox(&[
                "udhcpc",
                "-i",
                &iface,
                "-n",
                "-q",
                "-t",
                "10",
                "-T",
                "2",
                "-s",
                "/usr/share/udhcpc/default.script",
            ])?;
            Ok(format!("{iface} {} (DHCP)", address_of(&iface)))
        }
    }
}

/// The IPv4 address and prefix of `iface` as `ip` shows it ("10.0.2.15/24"), or "?".
fn address_of(iface: &str) -> String {
    Command::new(BUSYBOX)
        .args(["ip", "-o", "-4", "addr", "show", "dev", iface])
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut words = text.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// Waits until the set of disks stops changing (drivers probe asynchronously).
fn settled_disks(wait: Duration) -> Vec<DiskCandidate> {
    let started = Instant::now();
    let mut last = list_disks();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = list_disks();
        if (now == last && !now.is_empty()) || started.elapsed() > wait {
            return now;
        }
        last = now;
    }
}

/// What the init was asked to do, checked.
struct JobRequest<'a> {
    mode: Mode,
    server: &'a str,
    node: &'a str,
    token: &'a str,
}

fn job_request(params: &BootParams) -> Result<Option<JobRequest<'_>>, InitError> {
    let mode = match params.mode {
        None | Some(Mode::Live) => return Ok(None),
        Some(m) => m,
    };
    Ok(Some(JobRequest {
        mode,
        server: params
            .server
            .as_deref()
            .ok_or(InitError::Missing("rimage.server"))?,
        node: params
            .node
            .as_deref()
            .ok_or(InitError::Missing("rimage.node"))?,
        token: params
            .token
            .as_deref()
            .ok_or(InitError::Missing("rimage.token"))?,
    }))
}

/// Progress on the console: each phase's start and end, and every 10%.
struct ConsoleProgress<'a> {
    con: &'a Console,
    state: std::sync::Mutex<(String, u64, u64, u64)>,
}

impl crate::Progress for ConsoleProgress<'_> {
    fn start(&self, phase: &str, total_bytes: u64) {
        *self.state.lock().expect("progress lock") = (phase.to_string(), total_bytes, 0, 0);
        self.con
            .line(&format!("{phase}: {}", crate::human_bytes(total_bytes)));
    }

    fn advance(&self, bytes: u64) {
        let mut st = self.state.lock().expect("progress lock");
        st.2 += bytes;
        let tenth = (st.2 * 10).checked_div(st.1).unwrap_or(0);
        if tenth > st.3 && tenth < 10 {
            st.3 = tenth;
            self.con.line(&format!("{}: {}%", st.0, tenth * 10));
        }
    }

    fn finish(&self) {
        let st = self.state.lock().expect("progress lock");
        self.con
            .line(&format!("{}: done ({})", st.0, crate::human_bytes(st.2)));
    }

    fn note(&self, message: &str) {
        self.con.line(message);
    }
}

/// How a job ended well.
enum Done {
    /// Nothing to run (live): a shell.
    Shell,
    /// Reboot (the job's `reboot`).
    Reboot,
    /// Stop (a job with `"reboot": false`).
    Halt,
}

/// Tells the service a job failed before the job runner could (no disk, say).
fn report_failure(req: &JobRequest<'_>, message: &str) {
    let line = crate::serve::proto::ReportLine::Result {
        ok: false,
        message: message.to_string(),
        seconds: 0.0,
        bytes: 0,
    };
    let _ = crate::agent::send_report(req.server, req.token, &[line]);
}

/// Runs the node's job with the job runner `rimage agent` uses ([`crate::agent::run_job`]): it
/// fetches the job, saves (upload) or restores the disk, and reports progress and the result.
fn run_job(con: &Console, params: &BootParams, req: &JobRequest<'_>) -> Result<Done, InitError> {
    con.line(&format!(
        "job: {} for node {} from {}",
        req.mode.as_str(),
        req.node,
        req.server
    ));
    let job = crate::agent::fetch_job(req.server, req.token)
        .map_err(|e| InitError::Job(format!("fetching the job: {e}")))?;
    con.line(&format!(
        "job {}: {} {}",
        job.job,
        job.mode,
        job.image.as_deref().unwrap_or("")
    ));
    let disks = settled_disks(Duration::from_secs(10));
    let named = params
        .disk
        .clone()
        .or_else(|| job.disk.as_deref().map(PathBuf::from));
    let disk = choose_disk(&disks, named.as_deref()).inspect_err(|e| {
        report_failure(req, &e.to_string());
    })?;
    con.line(&format!("disk: {}", disk.display()));
    let opts = crate::agent::AgentOptions {
        server: req.server.to_string(),
        node: req.node.to_string(),
        token: req.token.to_string(),
        disk: Some(disk),
        threads: 0,
        http: crate::transport::http::HttpOptions::default(),
    };
    let progress = ConsoleProgress {
        con,
        state: std::sync::Mutex::new((String::new(), 0, 0, 0)),
    };
    con.line("job started");
    let outcome =
        crate::agent::run_job(&opts, &progress).map_err(|e| InitError::Job(format!("job: {e}")))?;
    if !outcome.ok {
        return Err(InitError::Job(outcome.message));
    }
    con.line(&format!(
        "job done: {} in {:.1} s{}",
        outcome.message,
        outcome.seconds,
        if outcome.bytes > 0 {
            format!(", {}", crate::human_bytes(outcome.bytes))
        } else {
            String::new()
        }
    ));
    Ok(if outcome.job.reboot {
        Done::Reboot
    } else {
        Done::Halt
    })
}

fn shell(con: &Console) {
    con.line("starting a shell on the console; exit it to reboot");
    // cttyhack gives the shell the console as its controlling terminal (job control, ^C).
    let _ = Command::new(BUSYBOX)
        .args(["setsid", "cttyhack", "sh", "-l"])
        .env("PATH", "/bin:/sbin")
        .env("HOME", "/root")
        .env("PS1", "rimage# ")
        .status();
}

/// Everything up to the job's end; `Err` after the network is up is reported to the service.
fn boot(con: &Console) -> (BootParams, Result<Done, InitError>) {
    mount_kernel_filesystems(con);
    let con2 = Console::open();
    let con = if con2.outs.is_empty() { con } else { &con2 };
    con.line(&format!(
        "rimage {} netboot init",
        env!("CARGO_PKG_VERSION")
    ));
    let raw = std::fs::read("/proc/cmdline").unwrap_or_default();
    let params = match cmdline::parse(&raw) {
        Ok(p) => p,
        Err(e) => {
            let p = BootParams {
                shell: true,
                ..BootParams::default()
            };
            return (p, Err(e.into()));
        }
    };
    load_modules(con);
    let result = (|| {
        let net = network_up(con, &params)?;
        con.line(&format!("network up: {net}"));
        match job_request(&params)? {
            None => Ok(Done::Shell),
            Some(req) => run_job(con, &params, &req),
        }
    })();
    (params, result)
}

/// Runs as PID 1 and never returns: the machine reboots (after a job, or after the shell of a
/// `live` boot exits) or halts (after a failure, with the error on the console).
pub fn run() -> ! {
    // The kernel starts init with almost no environment; the commands the job runs (the
    // post-restore step, mke2fs) need a PATH.
    sys::set_env_before_threads("PATH", "/bin:/sbin:/usr/bin:/usr/sbin");
    sys::set_env_before_threads("HOME", "/root");
    let con = Console::open();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| boot(&con)));
    let con = Console::open();
    let (params, result) = match outcome {
        Ok(r) => r,
        Err(_) => (
            BootParams {
                shell: true,
                ..BootParams::default()
            },
            Err(InitError::Job("the init panicked".into())),
        ),
    };
    let action = match result {
        Ok(Done::Reboot) => {
            con.line("rebooting");
            PowerAction::Reboot
        }
        Ok(Done::Halt) => {
            con.line("the job says not to reboot: halting");
            PowerAction::Halt
        }
        Ok(Done::Shell) => {
            shell(&con);
            PowerAction::Reboot
        }
        Err(e) => {
            con.line(&format!("FAILED: {e}"));
            if params.wants_shell() {
                shell(&con);
                PowerAction::Reboot
            } else {
                con.line("halting (rimage.shell=1 leaves a shell instead)");
                PowerAction::Halt
            }
        }
    };
    let err = sys::power(action);
    con.line(&format!("reboot(2) failed: {err:?}"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, gib: u64, removable: bool) -> DiskCandidate {
        DiskCandidate {
            path: PathBuf::from(format!("/dev/{name}")),
            bytes: gib << 30,
            removable,
        }
    }

    #[test]
    fn the_only_fixed_disk() {
        let disks = [disk("sda", 100, false), disk("sdb", 16, true)];
        assert_eq!(choose_disk(&disks, None), Ok(PathBuf::from("/dev/sda")));
    }

    #[test]
    fn several_disks_are_named_not_guessed() {
        let disks = [disk("nvme0n1", 512, false), disk("vda", 20, false)];
        let e = choose_disk(&disks, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "several disks: /dev/nvme0n1 (512.00 GiB), /dev/vda (20.00 GiB); refusing to guess: \
             set rimage.disk= or the job's disk"
        );
        assert_eq!(
            choose_disk(&disks, Some(Path::new("/dev/vda"))),
            Ok(PathBuf::from("/dev/vda"))
        );
        assert!(matches!(
            choose_disk(&disks, Some(Path::new("/dev/nosuchdisk0"))),
            Err(DiskChoiceError::NotFound(..))
        ));
        assert_eq!(
            choose_disk(&[disk("sdb", 16, true)], None),
            Err(DiskChoiceError::NoDisk)
        );
    }
}
