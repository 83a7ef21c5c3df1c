//! End to end with virtual machines (QEMU, TCG): a golden node disk (partition table, ext4 root
//! with /etc/fstab, extlinux, a kernel and a tiny initramfs that prints a marker) is saved by
//! node A booted from the network (iPXE → `rimage serve` → the netboot kernel, whose init is
//! rimage), and restored by node B onto a blank disk with a post-restore command; B then reboots,
//! the service answers `local`, and B boots the restored system. Every phase is timed.
//!
//! Needs root (loop mount for extlinux), qemu-system-x86_64 with the iPXE ROMs (ipxe-qemu),
//! extlinux and syslinux's MBR, static busybox, a kernel in /boot with its modules, and the static
//! rimage (`cargo build --release --target x86_64-unknown-linux-musl --bin rimage`); it skips,
//! saying why, without them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GOLDEN_MARKER: &str = "GOLDEN-NODE-BOOTED";
const POST_RESTORE_FILE: &str = "post-restore-ran";
const MAC_A: &str = "52:54:00:00:00:0a";
const MAC_B: &str = "52:54:00:00:00:0b";
/// Disk size of both nodes.
const DISK_MIB: u64 = 48;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rimage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rimage"))
}

fn musl_rimage() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/x86_64-unknown-linux-musl/release/rimage")
}

fn host_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .is_some_and(|rel| {
                    Path::new("/lib/modules")
                        .join(rel)
                        .join("modules.dep")
                        .exists()
                })
        })
        .collect();
    kernels.sort();
    kernels.pop()
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    // The effective user, from /proc.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Some("not root (the golden disk is loop-mounted to install extlinux)".into());
    }
    for tool in [
        "qemu-system-x86_64",
        "extlinux",
        "sfdisk",
        "mke2fs",
        "mount",
    ] {
        if !have(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/usr/lib/ipxe/qemu/efi-virtio.rom").exists() {
        return Some("the iPXE ROMs are not installed (apt-get install ipxe-qemu)".into());
    }
    if !Path::new("/usr/lib/syslinux/mbr/mbr.bin").exists() {
        return Some("syslinux's mbr.bin is not installed (apt-get install syslinux)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is missing (apt-get install busybox-static)".into());
    }
    if host_kernel().is_none() {
        return Some("no kernel in /boot with modules (apt-get install linux-image-amd64)".into());
    }
    if !musl_rimage().exists() {
        return Some(format!(
            "{} is missing (cargo build --release --target x86_64-unknown-linux-musl --bin rimage)",
            musl_rimage().display()
        ));
    }
    None
}

/// The golden node's initramfs: busybox and an init that prints the marker on the serial console
/// and powers off (uncompressed newc: every kernel unpacks it).
fn golden_initramfs() -> Vec<u8> {
    let mut w = rimage::netboot::cpio::Writer::new(Vec::new());
    for d in ["bin", "dev", "proc"] {
        w.dir(d).unwrap();
    }
    w.char_device("dev/console", 0o600, 5, 1).unwrap();
    w.file(
        "bin/busybox",
        0o755,
        &std::fs::read("/bin/busybox").unwrap(),
    )
    .unwrap();
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         echo \"{GOLDEN_MARKER} $(/bin/busybox cat /proc/cmdline)\"\n\
         /bin/busybox poweroff -f\n"
    );
    w.file("init", 0o755, init.as_bytes()).unwrap();
    w.finish().unwrap()
}

/// A bootable disk: MBR (syslinux), one ext4 partition from 1 MiB with /etc/fstab, /boot/vmlinuz,
/// /boot/initrd and extlinux.
fn golden_disk(work: &Path, kernel: &Path, disk: &Path) {
    let tree = work.join("golden-tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("boot/extlinux")).unwrap();
    std::fs::copy(kernel, tree.join("boot/vmlinuz")).unwrap();
    std::fs::write(tree.join("boot/initrd"), golden_initramfs()).unwrap();
    std::fs::write(tree.join("etc/hostname"), "golden\n").unwrap();
    std::fs::write(
        tree.join("boot/extlinux/extlinux.conf"),
        "DEFAULT golden\nTIMEOUT 1\nSERIAL 0 115200\nLABEL golden\n  KERNEL /boot/vmlinuz\n  \
         INITRD /boot/initrd\n  APPEND console=ttyS0,115200 quiet\n",
    )
    .unwrap();
    let part = work.join("golden-part.img");
    std::fs::File::create(&part)
        .unwrap()
        .set_len((DISK_MIB - 1) << 20)
        .unwrap();
    // 4 KiB blocks and no 64bit/metadata_csum: what extlinux 6.04 reads.
    run(Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-O",
            "^64bit,^metadata_csum",
            "-L",
            "golden",
            "-d",
        ])
        .arg(&tree)
        .arg(&part));
    let uuid = run(Command::new("blkid")
        .args(["-s", "UUID", "-o", "value"])
        .arg(&part));
    std::fs::write(
        tree.join("etc/fstab"),
        format!("UUID={} / ext4 defaults 0 1\n", uuid.trim()),
    )
    .unwrap();
    std::fs::File::create(disk)
        .unwrap()
        .set_len(DISK_MIB << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q"])
        .arg(disk)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, type=83, bootable\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    run(Command::new("dd")
        .arg(format!("if={}", part.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc", "status=none"]));
    let mnt = work.join("golden-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-o", "loop,offset=1048576"])
        .arg(disk)
        .arg(&mnt));
    let result = std::fs::copy(tree.join("etc/fstab"), mnt.join("etc/fstab"))
        .map(|_| ())
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let out = Command::new("extlinux")
                .arg("--install")
                .arg(mnt.join("boot/extlinux"))
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
    run(Command::new("umount").arg(&mnt));
    result.expect("extlinux --install");
    // The MBR boot code that chains to the active partition's extlinux.
    let mbr = std::fs::read("/usr/lib/syslinux/mbr/mbr.bin").unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.write_all(&mbr[..440]).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 10.0.2.2:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots a VM from the network then its disk, watching its serial console for `marks` (in
/// order); returns the seconds from start at which each appeared. The VM ends when the golden
/// system powers off.
fn boot_vm(
    name: &str,
    work: &Path,
    disk: &Path,
    mac: &str,
    marks: &[&str],
    limit: Duration,
) -> Vec<f64> {
    let log = work.join(format!("{name}.serial.log"));
    let started = Instant::now();
    let mut vm = Kill(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-m",
                "1024",
                "-display",
                "none",
                "-no-user-config",
            ])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-nic")
            .arg(format!(
                "user,model=virtio-net-pci,mac={mac},tftp={},bootfile=chain.ipxe",
                work.join("tftp").display()
            ))
            .args(["-boot", "order=nc"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
    let mut times: Vec<f64> = Vec::new();
    loop {
        // Firmware writes bytes that are not UTF-8.
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        // Each mark is looked for after the previous one.
        let (mut from, mut found) = (0, 0);
        for m in marks {
            match text[from..].find(m) {
                Some(i) => {
                    from += i + m.len();
                    found += 1;
                }
                None => break,
            }
        }
        while times.len() < found {
            times.push(started.elapsed().as_secs_f64());
        }
        if found == marks.len() {
            return times;
        }
        if let Ok(Some(status)) = vm.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = vm.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "{name}: the VM stopped ({status}) before {:?}: {err}\nserial log:\n{text}",
                marks[found]
            );
        }
        if started.elapsed() > limit {
            panic!(
                "{name}: {:?} not seen after {} s; serial log:\n{text}",
                marks[found],
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn netboot_save_and_restore_with_virtual_machines() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let t0 = Instant::now();
    let mut phases: Vec<(String, f64)> = Vec::new();
    let mut phase =
        |name: &str, since: Instant| phases.push((name.to_string(), since.elapsed().as_secs_f64()));
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kernel = host_kernel().unwrap();

    // The netboot kernel and initramfs.
    let t = Instant::now();
    let nb = work.join("netboot");
    let out = run(rimage()
        .args(["netboot", "build", "--json", "--kernel"])
        .arg(&kernel)
        .arg("--rimage")
        .arg(musl_rimage())
        .arg("--out")
        .arg(&nb));
    let built: serde_json::Value = serde_json::from_str(&out).unwrap();
    let initrd = built["initrd_bytes"].as_u64().unwrap();
    let total = initrd + built["kernel_bytes"].as_u64().unwrap();
    println!(
        "netboot image: initrd {:.2} MiB ({}), kernel + initrd {:.2} MiB, {} modules",
        initrd as f64 / 1048576.0,
        built["compression"],
        total as f64 / 1048576.0,
        built["modules"].as_array().map_or(0, Vec::len)
    );
    assert!(total <= 24 << 20, "kernel + initrd over 24 MiB: {total}");
    phase("netboot build", t);

    // The golden disk, and a blank one filled with a pattern (stale data must not matter).
    let t = Instant::now();
    let disk_a = work.join("node-a.img");
    golden_disk(work, &kernel, &disk_a);
    let disk_b = work.join("node-b.img");
    std::fs::write(&disk_b, vec![0xa5u8; (DISK_MIB << 20) as usize]).unwrap();
    phase("golden disk", t);

    // The service, and the iPXE script QEMU's TFTP hands the NIC's ROM: ask the service.
    let port = free_port();
    let (root, state) = (work.join("images"), work.join("state"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(work.join("tftp")).unwrap();
    std::fs::write(
        work.join("tftp/chain.ipxe"),
        format!("#!ipxe\nchain http://10.0.2.2:{port}/boot/${{mac}}\n"),
    )
    .unwrap();
    let serve_log = work.join("serve.log");
    let _serve = Kill(
        rimage()
            .arg("serve")
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .arg("--netboot")
            .arg(&nb)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(std::fs::File::create(&serve_log).unwrap())
            .stderr(std::fs::File::create(work.join("serve.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let up = Instant::now();
    while http_get(port, "/api/v1/nodes").is_none() {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "rimage serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let node = |args: &[&str]| run(rimage().arg("node").arg("--state").arg(&state).args(args));
    node(&["add", "node-a", "--mac", MAC_A]);
    node(&["add", "node-b", "--mac", MAC_B]);
    node(&["set", "node-a", "save", "--image", "golden"]);

    // Node A: network boot, save, upload, reboot, the service says local, its own system boots.
    let t = Instant::now();
    let marks = [
        "netboot init",
        "network up",
        "job started",
        "job done",
        GOLDEN_MARKER,
    ];
    let at = boot_vm(
        "node-a",
        work,
        &disk_a,
        MAC_A,
        &marks,
        Duration::from_secs(240),
    );
    println!(
        "node A (save): init {:.1} s, network up {:.1} s, job start {:.1} s, job done {:.1} s, \
         own system booted {:.1} s after VM start",
        at[0], at[1], at[2], at[3], at[4]
    );
    phase("node A: save", t);
    let t = Instant::now();
    let saved = root.join("golden");
    assert!(
        saved.join("manifest.toml").exists(),
        "no saved disk in {}",
        root.display()
    );
    run(rimage().arg("verify").arg(&saved));
    phase("verify", t);

    // Node B: restore with a post-restore command that writes into the restored root.
    node(&[
        "set",
        "node-b",
        "restore",
        "--image",
        "golden",
        "--post-restore",
        &format!("echo restored-by-rimage > \"$RIMAGE_ROOT/{POST_RESTORE_FILE}\""),
    ]);
    let t = Instant::now();
    let at = boot_vm(
        "node-b",
        work,
        &disk_b,
        MAC_B,
        &marks,
        Duration::from_secs(240),
    );
    println!(
        "node B (restore): init {:.1} s, network up {:.1} s, job start {:.1} s, job done {:.1} s, \
         restored system booted {:.1} s after VM start",
        at[0], at[1], at[2], at[3], at[4]
    );
    phase("node B: restore and boot", t);

    // The service now boots B locally, and the post-restore command ran in B's root.
    let script = http_get(port, &format!("/boot/{MAC_B}")).unwrap();
    assert!(script.contains("exit"), "B is not back to local:\n{script}");
    let mnt = work.join("b-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-o", "ro,loop,offset=1048576"])
        .arg(&disk_b)
        .arg(&mnt));
    let post = std::fs::read_to_string(mnt.join(POST_RESTORE_FILE));
    let fstab = std::fs::read_to_string(mnt.join("etc/fstab"));
    run(Command::new("umount").arg(&mnt));
    assert_eq!(post.unwrap(), "restored-by-rimage\n");
    assert!(fstab.unwrap().contains(" / ext4 "));

    phases.push(("total".into(), t0.elapsed().as_secs_f64()));
    for (name, secs) in &phases {
        println!("phase {name:28} {secs:6.1} s");
    }
}
