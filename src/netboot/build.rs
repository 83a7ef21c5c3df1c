//! `rimage netboot build`: the kernel, an initramfs whose `/init` is the static rimage binary
//! (with busybox and the kernel modules nodes need), and sample boot entries.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::NetbootError;
use super::cpio;
use super::modules::{DEFAULT_MODULES, ModuleDeps, module_name};

/// Where the init finds its modules and the order to load them in.
pub const MODULE_DIR: &str = "lib/modules/rimage";
/// The load order file inside [`MODULE_DIR`]: one file name a line.
pub const LOAD_LIST: &str = "load.list";

/// Busybox applets linked in /bin: the `live` shell, DHCP, and what post-restore commands use.
const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "udhcpc",
    "ip",
    "ifconfig",
    "route",
    "ping",
    "wget",
    "nc",
    "mount",
    "umount",
    "ls",
    "cat",
    "cp",
    "mv",
    "rm",
    "ln",
    "mkdir",
    "rmdir",
    "touch",
    "chmod",
    "chown",
    "chroot",
    "echo",
    "printf",
    "test",
    "[",
    "true",
    "false",
    "sleep",
    "sync",
    "dmesg",
    "ps",
    "kill",
    "free",
    "df",
    "du",
    "grep",
    "sed",
    "awk",
    "cut",
    "head",
    "tail",
    "sort",
    "wc",
    "find",
    "xargs",
    "tr",
    "vi",
    "less",
    "more",
    "hexdump",
    "dd",
    "blkid",
    "fdisk",
    "mknod",
    "stat",
    "uname",
    "env",
    "date",
    "tar",
    "gzip",
    "gunzip",
    "zcat",
    "md5sum",
    "sha256sum",
    "basename",
    "dirname",
    "readlink",
    "realpath",
    "lsmod",
    "insmod",
    "rmmod",
    "poweroff",
    "halt",
    "reboot",
    "sysctl",
    "hostname",
    "clear",
    "reset",
    "setsid",
    "cttyhack",
    "nslookup",
    "top",
    "uptime",
    "which",
];

/// udhcpc's default script (`/usr/share/udhcpc/default.script`): applies the lease.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc calls this with the lease in the environment (rimage netboot).
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      ip route del default 2>/dev/null
      for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    fi
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
exit 0
"#;

/// How the initramfs is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitrdCompression {
    /// zstd (kernels with CONFIG_RD_ZSTD: Debian 12 and later, most since 5.9).
    Zstd,
    /// gzip (every kernel).
    Gzip,
}

impl InitrdCompression {
    /// The name as `--compression` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The kernel image, e.g. /boot/vmlinuz-6.1.0-56-amd64.
    pub kernel: PathBuf,
    /// The kernel's modules directory (default: /lib/modules/VERSION, VERSION from the kernel's
    /// file name).
    pub modules: Option<PathBuf>,
    /// Static busybox (default /bin/busybox).
    pub busybox: Option<PathBuf>,
    /// The static rimage binary that becomes /init.
    pub rimage: PathBuf,
    /// Modules to add to [`DEFAULT_MODULES`].
    pub extra_modules: Vec<String>,
    /// Compression (default: zstd when the kernel's config says it can, else gzip).
    pub compression: Option<InitrdCompression>,
    /// Output directory (created).
    pub out: PathBuf,
}

/// What was built.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BuildReport {
    /// DIR/vmlinuz.
    pub kernel: PathBuf,
    /// Its size.
    pub kernel_bytes: u64,
    /// DIR/initrd.img.
    pub initrd: PathBuf,
    /// Its size.
    pub initrd_bytes: u64,
    /// The initramfs before compression.
    pub initrd_uncompressed: u64,
    /// How it is compressed.
    pub compression: InitrdCompression,
    /// Module names included, in load order.
    pub modules: Vec<String>,
    /// Wanted modules the kernel has built in.
    pub builtin: Vec<String>,
    /// Wanted modules the kernel does not have.
    pub missing: Vec<String>,
    /// The sample boot entries written.
    pub samples: Vec<PathBuf>,
    /// Whether rimage was stripped (binutils' strip was found).
    pub stripped: bool,
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> NetbootError {
    let path = path.to_path_buf();
    move |source| NetbootError::Io { path, op, source }
}

/// Whether an ELF executable is statically linked (no program interpreter).
///
/// # Errors
/// [`NetbootError::NotElf`] when `data` is not a 64-bit little-endian ELF file.
pub fn is_static_elf(path: &Path, data: &[u8]) -> Result<bool, NetbootError> {
    let not_elf = || NetbootError::NotElf(path.to_path_buf());
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Err(not_elf());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().expect("8 bytes"));
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    let phoff = usize::try_from(phoff).map_err(|_| not_elf())?;
    for i in 0..phnum {
        let at = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .ok_or_else(not_elf)?;
        let end = at.checked_add(4).ok_or_else(not_elf)?;
        let p_type = data.get(at..end).ok_or_else(not_elf)?;
        // PT_INTERP: the dynamic loader a dynamically linked program needs.
        if p_type == 3u32.to_le_bytes() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The executable without symbols and debug information (the release profile keeps line
/// tables: 50 MiB instead of 10), by binutils' `strip` when it is installed; as it is otherwise.
fn strip(path: &Path, data: Vec<u8>) -> (Vec<u8>, bool) {
    let Ok(dir) = tempfile::tempdir() else {
        return (data, false);
    };
    let out = dir.path().join("rimage");
    let ok = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match std::fs::read(&out) {
        Ok(stripped) if ok && is_static_elf(&out, &stripped).unwrap_or(false) => (stripped, true),
        _ => (data, false),
    }
}

/// The kernel release from a kernel file name like `vmlinuz-6.1.0-56-amd64`.
fn kernel_release(kernel: &Path) -> Option<String> {
    let name = kernel.file_name()?.to_str()?;
    let rel = name
        .strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("bzImage-"))?;
    (!rel.is_empty()).then(|| rel.to_string())
}

/// The compression the kernel's config (`config-VERSION` beside it) says it can unpack.
fn pick_compression(kernel: &Path) -> InitrdCompression {
    let config = kernel_release(kernel)
        .and_then(|r| std::fs::read_to_string(kernel.with_file_name(format!("config-{r}"))).ok());
    match config {
        Some(c) if !c.lines().any(|l| l == "CONFIG_RD_ZSTD=y") => InitrdCompression::Gzip,
        // Without a config: zstd is what every kernel since 5.9 unpacks.
        _ => InitrdCompression::Zstd,
    }
}

/// A module file's contents, decompressed when the init could not load it as it is. `.xz`
/// stays compressed: the kernel decompresses it when built with CONFIG_MODULE_DECOMPRESS
/// (distributions that ship `.ko.xz` do), and the init passes MODULE_INIT_COMPRESSED_FILE.
fn module_bytes(path: &Path, data: Vec<u8>) -> Result<(Vec<u8>, &'static str), NetbootError> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko.zst") {
        let d = zstd::decode_all(&data[..]).map_err(io_err(path, "decompress (zstd)"))?;
        Ok((d, ".ko"))
    } else if name.ends_with(".ko.gz") {
        let mut d = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut d)
            .map_err(io_err(path, "decompress (gzip)"))?;
        Ok((d, ".ko"))
    } else if name.ends_with(".ko.xz") {
        Ok((data, ".ko.xz"))
    } else {
        Ok((data, ".ko"))
    }
}

fn sample_ipxe() -> String {
    "#!ipxe\n\
     # rimage netboot. With `rimage serve`, let iPXE ask the service what this node does:\n\
     #   chain http://HEAD:8080/boot/${mac}\n\
     # Without it, a fixed entry (a live shell; set mode/server/node/token for a job):\n\
     dhcp\n\
     kernel vmlinuz initrd=initrd.img console=ttyS0,115200 console=tty0 rimage.mode=live \
     rimage.mac=${mac} rimage.ip=${ip} rimage.netmask=${netmask} rimage.gateway=${gateway} \
     rimage.dns=${dns}\n\
     initrd initrd.img\n\
     boot\n"
        .to_string()
}

fn sample_pxelinux() -> String {
    "# rimage netboot entry for pxelinux.cfg/default (`rimage node --tftp-dir DIR` writes one\n\
     # per node as DIR/pxelinux.cfg/01-<mac>; copy vmlinuz and initrd.img to DIR/rimage/).\n\
     # No rimage.ip: the init runs DHCP itself. IPAPPEND 2 adds BOOTIF=, naming the NIC.\n\
     DEFAULT rimage\n\
     LABEL rimage\n\
     \x20 KERNEL rimage/vmlinuz\n\
     \x20 INITRD rimage/initrd.img\n\
     \x20 APPEND console=ttyS0,115200 console=tty0 rimage.mode=restore \
     rimage.server=http://HEAD:8080 rimage.node=NODE rimage.token=TOKEN\n\
     \x20 IPAPPEND 2\n"
        .to_string()
}

/// Builds DIR/vmlinuz, DIR/initrd.img, DIR/boot.ipxe and DIR/pxelinux.cfg.sample.
///
/// # Errors
/// [`NetbootError`]: a missing or dynamically linked rimage or busybox, an unreadable kernel or
/// modules directory, a bad `modules.dep`, or a write error in DIR.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, NetbootError> {
    let rimage = std::fs::read(&opts.rimage).map_err(io_err(&opts.rimage, "read"))?;
    if !is_static_elf(&opts.rimage, &rimage)? {
        return Err(NetbootError::NotStatic(opts.rimage.clone()));
    }
    let (rimage, stripped) = strip(&opts.rimage, rimage);
    let busybox_path = opts
        .busybox
        .clone()
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    let busybox = std::fs::read(&busybox_path).map_err(|source| NetbootError::Busybox {
        path: busybox_path.clone(),
        source,
    })?;
    if !is_static_elf(&busybox_path, &busybox)? {
        return Err(NetbootError::NotStatic(busybox_path));
    }
    let modules_dir = match &opts.modules {
        Some(m) => m.clone(),
        None => {
            let rel = kernel_release(&opts.kernel)
                .ok_or_else(|| NetbootError::NoModulesDir(opts.kernel.clone()))?;
            PathBuf::from("/lib/modules").join(rel)
        }
    };
    let dep_path = modules_dir.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path).map_err(io_err(&dep_path, "read"))?;
    // Kernels without modules.builtin (no built-in modules listed) are fine.
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let deps = ModuleDeps::parse(&dep, &builtin).map_err(|source| NetbootError::Modules {
        path: dep_path.clone(),
        source,
    })?;
    let mut wanted: Vec<&str> = DEFAULT_MODULES.to_vec();
    wanted.extend(opts.extra_modules.iter().map(String::as_str));
    let resolution = deps
        .resolve(&wanted)
        .map_err(|source| NetbootError::Modules {
            path: dep_path,
            source,
        })?;
    let kernel = std::fs::read(&opts.kernel).map_err(io_err(&opts.kernel, "read"))?;
    let compression = opts
        .compression
        .unwrap_or_else(|| pick_compression(&opts.kernel));

    // The archive, uncompressed.
    let mut w = cpio::Writer::new(Vec::new());
    let cpio_err = |e| NetbootError::Io {
        path: PathBuf::from("initramfs"),
        op: "write",
        source: e,
    };
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "mnt",
        "root",
        "etc",
        "lib",
        "lib/modules",
        MODULE_DIR,
        "usr",
        "usr/share",
        "usr/share/udhcpc",
    ] {
        w.dir(d).map_err(cpio_err)?;
    }
    // The kernel opens /dev/console for init's stdin/out/err before devtmpfs is mounted.
    w.char_device("dev/console", 0o600, 5, 1)
        .map_err(cpio_err)?;
    w.char_device("dev/null", 0o666, 1, 3).map_err(cpio_err)?;
    w.file("init", 0o755, &rimage).map_err(cpio_err)?;
    w.file("bin/busybox", 0o755, &busybox).map_err(cpio_err)?;
    for applet in APPLETS {
        w.symlink(&format!("bin/{applet}"), "busybox")
            .map_err(cpio_err)?;
    }
    w.symlink("sbin/init", "../init").map_err(cpio_err)?;
    w.file(
        "usr/share/udhcpc/default.script",
        0o755,
        UDHCPC_SCRIPT.as_bytes(),
    )
    .map_err(cpio_err)?;
    w.file("etc/resolv.conf", 0o644, b"").map_err(cpio_err)?;
    w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .map_err(cpio_err)?;
    let mut list = String::new();
    let mut names = Vec::new();
    for rel in &resolution.load_order {
        let path = modules_dir.join(rel);
        let data = std::fs::read(&path).map_err(io_err(&path, "read"))?;
        let (data, ext) = module_bytes(&path, data)?;
        let name = module_name(rel);
        let file = format!("{name}{ext}");
        w.file(&format!("{MODULE_DIR}/{file}"), 0o644, &data)
            .map_err(cpio_err)?;
        list.push_str(&file);
        list.push('\n');
        names.push(name);
    }
    w.file(&format!("{MODULE_DIR}/{LOAD_LIST}"), 0o644, list.as_bytes())
        .map_err(cpio_err)?;
    let archive = w.finish().map_err(cpio_err)?;

    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out, "create directory"))?;
    let initrd_path = opts.out.join("initrd.img");
    let compressed = match compression {
        InitrdCompression::Zstd => {
            // Level 19 with the default 8 MiB window: small, and within what the kernel's
            // decompressor accepts.
            zstd::encode_all(&archive[..], 19).map_err(io_err(&initrd_path, "compress"))?
        }
        InitrdCompression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&archive)
                .and_then(|()| e.finish())
                .map_err(io_err(&initrd_path, "compress"))?
        }
    };
    // Atomically: a running service may be serving the previous files.
    let write = |path: &Path, data: &[u8]| crate::atomic::write_file(path, data).map_err(Box::new);
    write(&initrd_path, &compressed)?;
    let kernel_path = opts.out.join("vmlinuz");
    write(&kernel_path, &kernel)?;
    let ipxe = opts.out.join("boot.ipxe");
    write(&ipxe, sample_ipxe().as_bytes())?;
    let pxelinux = opts.out.join("pxelinux.cfg.sample");
    write(&pxelinux, sample_pxelinux().as_bytes())?;

    Ok(BuildReport {
        kernel: kernel_path,
        kernel_bytes: kernel.len() as u64,
        initrd: initrd_path,
        initrd_bytes: compressed.len() as u64,
        initrd_uncompressed: archive.len() as u64,
        compression,
        modules: names,
        builtin: resolution.builtin,
        missing: resolution.missing,
        samples: vec![ipxe, pxelinux],
        stripped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_from_kernel_names() {
        assert_eq!(
            kernel_release(Path::new("/boot/vmlinuz-6.1.0-56-amd64")).as_deref(),
            Some("6.1.0-56-amd64")
        );
        assert_eq!(kernel_release(Path::new("/boot/vmlinuz")), None);
    }

    #[test]
    fn static_and_dynamic_executables() {
        let me = std::env::current_exe().unwrap();
        let data = std::fs::read(&me).unwrap();
        // Test binaries are linked like the host's programs; /bin/busybox from busybox-static
        // is static when installed.
        assert!(is_static_elf(&me, &data).is_ok());
        if let Ok(bb) = std::fs::read("/bin/busybox") {
            let _ = is_static_elf(Path::new("/bin/busybox"), &bb).unwrap();
        }
        assert!(matches!(
            is_static_elf(Path::new("x"), b"#!/bin/sh\n"),
            Err(NetbootError::NotElf(_))
        ));
        let mut truncated = data[..64].to_vec();
        truncated[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(is_static_elf(&me, &truncated).is_err());
    }
}
