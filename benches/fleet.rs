//! The fleet benchmark (`cargo bench --bench fleet`, as root): a head node and 8 nodes in
//! network namespaces on a bridge, links shaped with `tc tbf` (default 200 Mbit/s, so the
//! network rather than this machine's CPUs is the bottleneck), the compare corpus (made by
//! benches/make-corpus.sh, RIMAGE_FLEET_GIB GiB, default 1) saved as a one-partition GPT disk.
//! Times re-imaging every node:
//!
//! - one node alone restoring over HTTP (nginx on the head): the reference;
//! - all nodes pulling over HTTP at once (what NFS does: the head's link is shared);
//! - one multicast stream: `rimage send | udp-sender`, `udp-receiver | rimage restore-disk -`;
//! - HTTP `restore-disk --delta` on every node after ~1% of its files drifted.
//!
//! Recorded: wall time, bytes the head's interface sent divided by the image size, and CPU
//! seconds per node (user + system of rimage, and of udp-receiver for multicast). Results go to
//! benches/results/fleet.md. Environment: RIMAGE_BENCH_DIR (work directory, default
//! target/bench-fleet), RIMAGE_FLEET_NODES (8), RIMAGE_FLEET_RATE (200mbit), RIMAGE_FLEET_DISKS
//! (where the nodes' disk files go, default /dev/shm).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::netns::{Fleet, Ns};

const RDV: &str = "239.1.1.1";
const PORTBASE: &str = "9400";
const PORT: u16 = 8089;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sh(script: &str) {
    let st = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .status()
        .unwrap();
    assert!(st.success(), "failed: {script}");
}

/// CPU seconds (user + system) of a child, reaped with wait4; panics when it failed.
fn reap(child: Child, what: &str) -> f64 {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet reaped (Child::wait was never called); the pointers
    // are to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4 {what}");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what} failed (status {status:#x})"
    );
    std::mem::forget(child);
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

struct Run {
    name: &'static str,
    seconds: f64,
    head_bytes: u64,
    cpu_per_node: f64,
}

fn nginx(fleet: &Fleet, root: &Path, work: &Path) -> Child {
    let d = work.join("nginx");
    std::fs::create_dir_all(&d).unwrap();
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  default_type application/octet-stream;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  sendfile on;\n\
             server {{\n    listen {addr}:{PORT};\n    root {root};\n  }}\n}}\n",
            d = d.display(),
            addr = fleet.head.addr,
            root = root.display(),
        ),
    )
    .unwrap();
    let child = fleet
        .head
        .cmd("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    child
}

/// Restores every node in `nodes` over HTTP at once.
fn http_restore(
    bin: &str,
    fleet: &Fleet,
    nodes: &[(&Ns, &Path)],
    url: &str,
    delta: bool,
) -> (f64, u64, f64) {
    let tx0 = fleet.head.tx_bytes();
    let t0 = Instant::now();
    let children: Vec<Child> = nodes
        .iter()
        .map(|(ns, disk)| {
            let mut c = ns.cmd(bin);
            c.args(["restore-disk", "-q"]);
            if delta {
                c.arg("--delta");
            }
            c.arg(url).arg(disk).stdout(Stdio::null()).spawn().unwrap()
        })
        .collect();
    let cpu: f64 = children
        .into_iter()
        .enumerate()
        .map(|(i, c)| reap(c, &format!("restore-disk on node {i}")))
        .sum();
    (
        t0.elapsed().as_secs_f64(),
        fleet.head.tx_bytes() - tx0,
        cpu / nodes.len() as f64,
    )
}

fn multicast(bin: &str, fleet: &Fleet, disks: &[PathBuf], saved: &Path, rate: &str) -> Run {
    let mut pairs = Vec::new();
    for (ns, disk) in fleet.nodes.iter().zip(disks) {
        let mut recv = ns
            .cmd("udp-receiver")
            .args(["--interface", "eth0", "--mcast-rdv-address", RDV])
            .args(["--portbase", PORTBASE, "--nokbd"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let restore = Command::new(bin)
            .args(["restore-disk", "-q", "-"])
            .arg(disk)
            .stdin(recv.stdout.take().unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        pairs.push((recv, restore));
    }
    let tx0 = fleet.head.tx_bytes();
    let t0 = Instant::now();
    let mut send = Command::new(bin)
        .args(["send"])
        .arg(saved)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A little under the link's rate, so the shaper does not drop what udpcast sends.
    let mbit: u64 = rate.trim_end_matches("mbit").parse().unwrap_or(200);
    let sender = fleet
        .head
        .cmd("udp-sender")
        .args(["--interface", "eth0", "--mcast-rdv-address", RDV])
        .args(["--portbase", PORTBASE, "--nokbd"])
        .args(["--min-receivers", &fleet.nodes.len().to_string()])
        .args([
            "--max-wait",
            "60",
            "--max-bitrate",
            &format!("{}m", mbit * 9 / 10),
        ])
        .stdin(send.stdout.take().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut cpu = 0.0;
    for (i, (recv, restore)) in pairs.into_iter().enumerate() {
        cpu += reap(restore, &format!("restore-disk - on node {i}"));
        cpu += reap(recv, &format!("udp-receiver on node {i}"));
    }
    reap(sender, "udp-sender");
    reap(send, "rimage send");
    Run {
        name: "one multicast stream (udpcast)",
        seconds: t0.elapsed().as_secs_f64(),
        head_bytes: fleet.head.tx_bytes() - tx0,
        cpu_per_node: cpu / fleet.nodes.len() as f64,
    }
}

/// Rewrites about `fraction` of the used bytes of the node's filesystem in place: whole
/// existing files, picked spread over the tree, overwritten with new random bytes.
fn drift(disk: &Path, fraction: f64, seed: u64) -> (u64, u64) {
    let mnt = tempfile::tempdir().unwrap();
    let part = format!("{}p1", disk.display());
    sh(&format!("mount {part} {}", mnt.path().display()));
    let mut files = Vec::new();
    let mut stack = vec![mnt.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push((e.path(), e.metadata().unwrap().len()));
            }
        }
    }
    files.sort();
    let used: u64 = files.iter().map(|f| f.1).sum();
    let budget = (used as f64 * fraction) as u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut changed = 0u64;
    while changed < budget && !files.is_empty() {
        let (path, len) = files.swap_remove(rng.usize(..files.len()));
        if len == 0 || len > budget / 4 {
            continue;
        }
        let mut bytes = vec![0u8; len as usize];
        rng.fill(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        changed += len;
    }
    sh(&format!("sync; umount {}", mnt.path().display()));
    (changed, used)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(why) = common::netns::unavailable() {
        eprintln!("fleet: {why}; nothing measured");
        return;
    }
    for tool in [
        "udp-sender",
        "udp-receiver",
        "tc",
        "nginx",
        "sfdisk",
        "partx",
    ] {
        if !common::have(tool) {
            eprintln!(
                "fleet: {tool} is missing (Debian: apt-get install udpcast iproute2 nginx-light fdisk util-linux); nothing measured"
            );
            return;
        }
    }
    let bin = env!("CARGO_BIN_EXE_rimage");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::var_os("RIMAGE_BENCH_DIR")
        .map_or_else(|| root.join("target/bench-fleet"), PathBuf::from);
    std::fs::create_dir_all(&work).unwrap();
    let n: usize = env_or("RIMAGE_FLEET_NODES", 8);
    let gib: u64 = env_or("RIMAGE_FLEET_GIB", 1);
    let rate: String = env_or("RIMAGE_FLEET_RATE", "200mbit".to_string());

    // The corpus as a one-partition GPT disk, saved.
    let corpus = work.join(format!("fleet-corpus-{gib}g.img"));
    if !corpus.exists() {
        eprintln!("fleet: building the corpus {}", corpus.display());
        sh(&format!(
            "{}/benches/make-corpus.sh {} {gib}",
            root.display(),
            corpus.display()
        ));
    }
    let fs_bytes = std::fs::metadata(&corpus).unwrap().len();
    let disk_bytes = fs_bytes + (2 << 20);
    let golden = work.join("fleet-golden.img");
    let saved_root = work.join("fleet-images");
    let saved = saved_root.join("golden");
    let _ = std::fs::remove_dir_all(&saved_root);
    std::fs::create_dir_all(&saved_root).unwrap();
    sh(&format!(
        "rm -f {g}; truncate -s {disk_bytes} {g}; \
         printf 'label: gpt\\nstart=2048, size={sectors}, type=L\\n' | sfdisk -q {g}; \
         lo=$(losetup -f --show {g}); partx -a $lo; \
         dd if={c} of=${{lo}}p1 bs=4M conv=sparse status=none; \
         {bin} save-disk -q $lo {s}; partx -d $lo || true; losetup -d $lo",
        g = golden.display(),
        sectors = fs_bytes / 512,
        c = corpus.display(),
        s = saved.display(),
    ));
    let image_bytes: u64 = std::fs::read_dir(&saved)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();

    // Node disks: sparse files on loop devices, in memory by default: real nodes each write
    // their own disk, while here one host disk would take every node's writes.
    let disk_dir = std::env::var_os("RIMAGE_FLEET_DISKS")
        .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
    let mut loops = Vec::new();
    for i in 0..n {
        let f = disk_dir.join(format!("rimage-fleet-node{i}.img"));
        let _ = std::fs::remove_file(&f);
        std::fs::File::create(&f)
            .unwrap()
            .set_len(disk_bytes)
            .unwrap();
        loops.push(common::LoopDev::new(&f).unwrap());
    }
    let disks: Vec<PathBuf> = loops.iter().map(|l| l.dev.clone()).collect();

    let fleet = Fleet::new("b", n).unwrap();
    // Every link: the head's uplink and each node's port, shaped on their way out.
    fleet.shape(&fleet.head, &rate).unwrap();
    for ns in &fleet.nodes {
        fleet.shape(ns, &rate).unwrap();
        sh(&format!(
            "tc qdisc replace dev {} root tbf rate {rate} burst 256kbit latency 50ms",
            ns.host_if
        ));
    }
    let mut server = nginx(&fleet, &saved_root, &work);
    let url = format!("http://{}:{PORT}/golden/", fleet.head.addr);

    let mut runs = Vec::new();
    let pairs: Vec<(&Ns, &Path)> = fleet
        .nodes
        .iter()
        .zip(disks.iter().map(PathBuf::as_path))
        .collect();
    eprintln!("fleet: one node over HTTP");
    let (s, b, c) = http_restore(bin, &fleet, &pairs[..1], &url, false);
    runs.push(Run {
        name: "one node alone, HTTP",
        seconds: s,
        head_bytes: b,
        cpu_per_node: c,
    });
    eprintln!("fleet: {n} nodes over HTTP at once");
    let (s, b, c) = http_restore(bin, &fleet, &pairs, &url, false);
    runs.push(Run {
        name: "all nodes pull over HTTP at once",
        seconds: s,
        head_bytes: b,
        cpu_per_node: c,
    });
    eprintln!("fleet: {n} nodes by multicast");
    runs.push(multicast(bin, &fleet, &disks, &saved, &rate));
    eprintln!("fleet: ~1% drift on every node, then HTTP --delta");
    let (mut drifted, mut used) = (0, 0);
    for (i, d) in disks.iter().enumerate() {
        let (c, u) = drift(d, 0.01, i as u64 + 1);
        drifted += c;
        used += u;
    }
    let (s, b, c) = http_restore(bin, &fleet, &pairs, &url, true);
    runs.push(Run {
        name: "HTTP --delta after ~1% drift",
        seconds: s,
        head_bytes: b,
        cpu_per_node: c,
    });
    let _ = server.kill();
    let _ = server.wait();

    // Check one restored node against the golden disk's partition, byte for byte where used:
    // e2fsck on the restored filesystem at least.
    sh(&format!(
        "e2fsck -fn {}p1 >/dev/null",
        disks[n - 1].display()
    ));

    let single = runs[0].seconds;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Fleet benchmark\n\n`cargo bench --bench fleet` on this machine (2 cores), {n} nodes and a head in network \
         namespaces on one bridge, every link shaped to {rate} with tc tbf, node disks in {}. Image: the compare corpus \
         ({gib} GiB ext4, make-corpus.sh) saved as a one-partition GPT disk: {:.1} MiB. Drift: {:.1} MiB of \
         files rewritten per node on average ({:.2}% of the used data).\n",
        disk_dir.display(),
        image_bytes as f64 / 1048576.0,
        drifted as f64 / n as f64 / 1048576.0,
        100.0 * drifted as f64 / used as f64
    );
    let _ = writeln!(
        md,
        "| run | wall time | vs one node alone | head sent / image | per node / image | CPU s per node |\n|---|---|---|---|---|---|"
    );
    for r in &runs {
        let nodes = if r.name.starts_with("one node") { 1 } else { n };
        let _ = writeln!(
            md,
            "| {} | {:.1} s | {:.2}× | {:.2} | {:.3} | {:.1} |",
            r.name,
            r.seconds,
            r.seconds / single,
            r.head_bytes as f64 / image_bytes as f64,
            r.head_bytes as f64 / nodes as f64 / image_bytes as f64,
            r.cpu_per_node
        );
    }
    let _ = writeln!(
        md,
        "\nTargets: multicast time ≤ 1.3× one node alone ({:.2}×), head bytes ≤ 1.1× the image ({:.2}×); \
         delta fetches ≤ 5% of the image per node ({:.1}%).",
        runs[2].seconds / single,
        runs[2].head_bytes as f64 / image_bytes as f64,
        100.0 * runs[3].head_bytes as f64 / n as f64 / image_bytes as f64
    );
    print!("{md}");
    let out = root.join("benches/results/fleet.md");
    std::fs::write(&out, md).unwrap();
    eprintln!("fleet: wrote {}", out.display());
    drop(fleet);
    drop(loops);
    for i in 0..n {
        let _ = std::fs::remove_file(disk_dir.join(format!("rimage-fleet-node{i}.img")));
    }
}
