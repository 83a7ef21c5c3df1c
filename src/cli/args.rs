//! The command line: subcommands and the option groups they share (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use rimage::{ExpectUuid, FreeSpace};

/// rimage saves a partition by copying only the blocks its filesystem uses, into a chunked,
/// checksummed, zstd-compressed image, and restores it in parallel.
#[derive(Debug, Parser)]
#[command(name = "rimage", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 success, 1 failure, 2 usage error, 3 image failed verification."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How results and progress are shown.
#[derive(Debug, Args)]
pub struct Output {
    /// Print a JSON summary instead of text (to stderr when the image itself goes to stdout).
    #[arg(long)]
    pub json: bool,
    /// No progress, no summary and no notes; errors are still printed.
    #[arg(short, long)]
    pub quiet: bool,
    /// Progress on stderr: a bar when stderr is a terminal (auto), always a bar, JSON lines
    /// for supervising scripts (one object every half second), or none.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    Auto,
    /// A bar.
    Bar,
    /// JSON lines on stderr.
    Json,
    /// Nothing.
    None,
}

/// Worker threads.
#[derive(Debug, Args)]
pub struct Threads {
    /// Worker threads (default: one per CPU).
    #[arg(short = 'j', long = "threads", default_value_t = 0)]
    pub threads: usize,
}

/// How images are written.
#[derive(Debug, Args)]
pub struct Compression {
    /// zstd level: 1 is fastest, 3 the default, up to 22 for the smallest images.
    #[arg(short, long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    #[command(flatten)]
    pub threads: Threads,
}

/// How images named by URL (`http://`, `https://`) are fetched.
#[derive(Debug, Args)]
pub struct Net {
    /// Attempts after the first for each request to a server (reset connections, stalls,
    /// 5xx answers, short bodies); a transfer resumes from the byte where it stopped.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Seconds to wait for a connection, an answer or the next bytes of one.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
}

impl Net {
    /// The transport's options.
    pub fn options(&self) -> rimage::transport::http::HttpOptions {
        rimage::transport::http::HttpOptions {
            retries: self.retries,
            timeout: std::time::Duration::from_secs(self.timeout.max(1)),
        }
    }

    /// The image `arg` names (a path, "-", or a URL fetched with these options).
    pub fn source(&self, arg: &std::path::Path) -> rimage::ImageSource {
        rimage::ImageSource::from_arg_with(arg, self.options())
    }
}

/// What restore does with the blocks the image does not store.
#[derive(Debug, Args)]
pub struct FreeSpaceArgs {
    /// Make the filesystem's free blocks read as zeros (no stale data left in free space).
    #[arg(long, conflicts_with = "discard")]
    pub zero_free: bool,
    /// Discard (TRIM) the filesystem's free blocks; where the device cannot, zero them.
    #[arg(long)]
    pub discard: bool,
}

impl Command {
    /// Whether the command was asked for JSON output (its errors are then JSON too).
    pub fn wants_json(&self) -> bool {
        match self {
            Self::Save { out, .. }
            | Self::Restore { out, .. }
            | Self::Verify { out, .. }
            | Self::SaveDisk { out, .. }
            | Self::RestoreDisk { out, .. }
            | Self::Agent { out, .. } => out.json,
            Self::Import { out_opts, .. } => out_opts.json,
            Self::Netboot {
                action: NetbootAction::Build { json, .. },
            } => *json,
            Self::Info { json, .. } | Self::Ls { json, .. } | Self::Node { json, .. } => *json,
            Self::Cat { .. }
            | Self::Send { .. }
            | Self::Serve { .. }
            | Self::Extract { .. }
            | Self::Completions { .. }
            | Self::Man { .. } => false,
        }
    }
}

impl FreeSpaceArgs {
    /// The treatment asked for.
    pub fn free_space(&self) -> FreeSpace {
        if self.zero_free {
            FreeSpace::Zero
        } else if self.discard {
            FreeSpace::Discard
        } else {
            FreeSpace::Leave
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save a partition or filesystem image file into a rimage image.
    ///
    /// ext2/3/4 filesystems are read through their block bitmaps and only used blocks are
    /// stored; anything else is imaged raw, every block except all-zero ones. The image is
    /// written under a temporary name in the destination directory, fsynced and renamed, so a
    /// failed or interrupted save never leaves a file under IMAGE.
    Save {
        /// Block device or filesystem image file to save, e.g. /dev/sda2.
        source: PathBuf,
        /// Image file to write, e.g. /cluster/images/root.rimg; "-" writes to stdout.
        image: PathBuf,
        #[command(flatten)]
        compression: Compression,
        /// Uncompressed size of each chunk (64K to 64M): larger compresses slightly better,
        /// smaller gives finer random access.
        #[arg(long, default_value = "4M", value_parser = parse_chunk_size)]
        chunk_size: u32,
        /// Save a filesystem that is not clean (mounted, errors, journal needing recovery) as it
        /// is, and tolerate metadata checksum errors. The image may be inconsistent.
        #[arg(long)]
        force: bool,
        /// Image every non-zero block even if the source is ext2/3/4.
        #[arg(long)]
        raw: bool,
        /// Check the block bitmaps against every in-use inode even on a clean filesystem, and
        /// copy the blocks they miss (done anyway for an unclean one, and with --force).
        #[arg(long)]
        thorough: bool,
        /// Replace IMAGE if it exists.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Restore an image onto a block device or file.
    ///
    /// The image header is checked and the target's size compared before anything is written.
    /// Each chunk is verified (CRC, extents, zstd checksum, index hash) before its blocks are
    /// written; a chunk that fails is never written and the command exits non-zero. A block
    /// device is opened exclusively: a mounted target is refused.
    Restore {
        /// Image file, URL (http://head:8080/images/root.rimg), or "-" to read the image from
        /// stdin.
        image: PathBuf,
        /// Block device or file to write, e.g. /dev/sda2. A missing file is created (sparse).
        target: PathBuf,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        free: FreeSpaceArgs,
        /// Refuse, before writing anything, unless TARGET currently holds a filesystem with
        /// this UUID ("image": the image's own UUID). For scripted and multicast restores.
        #[arg(long, value_name = "UUID|image", value_parser = parse_expect_uuid)]
        expect_uuid: Option<ExpectUuid>,
        /// Restore even when TARGET holds a partition table, partitions, another filesystem
        /// than the image's, or an image: all of it is overwritten. Without it such a target
        /// is refused before anything is written.
        #[arg(long)]
        force: bool,
        /// Re-image cheaply: compare each chunk with what TARGET holds at the same blocks and
        /// skip the chunks it already holds. With a version 2 image read at random (file,
        /// URL) a skipped chunk is not even fetched; otherwise it is decompressed and compared,
        /// which saves writes, not reads.
        #[arg(long)]
        delta: bool,
        #[command(flatten)]
        net: Net,
        #[command(flatten)]
        out: Output,
    },
    /// Check an image completely: header, every chunk (CRC, decompression, extents), index
    /// and whole-image digest. Exit status 0 only when everything holds, 3 when it does not.
    ///
    /// Given a directory written by save-disk, checks the whole saved disk: the manifest, the
    /// boot area, and every partition image against its partition.
    Verify {
        /// Image file, URL, save-disk directory, or "-" to read an image from stdin.
        image: PathBuf,
        /// Check a device against the image instead (drift check): does DEVICE (read, never
        /// written) hold every block the image stores? Lists the block ranges that differ and,
        /// for an ext image, the files they belong to. Exit status 0 when identical, 4 when not.
        #[arg(long, value_name = "DEVICE")]
        against: Option<PathBuf>,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        net: Net,
        #[command(flatten)]
        out: Output,
    },
    /// Describe an image (header, chunks, sizes, ratio), a disk saved by save-disk, or what a
    /// save of a device or filesystem image file would copy (type, label, UUID, block size,
    /// used blocks).
    ///
    /// For a device, every block bitmap of an ext2/3/4 filesystem is read to count exactly the
    /// blocks a save copies. Anything that is not ext2/3/4 is reported as "raw". A whole disk
    /// (one with a partition table) is described by its table; save it with save-disk.
    Info {
        /// Image file or URL, save-disk directory, block device, or filesystem image file.
        path: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: Net,
    },
    /// List a directory (or describe a file) inside an image, without restoring it.
    ///
    /// Only the chunks holding the filesystem metadata and the directory are read. Shows mode,
    /// owner, size, modification time and name, like `ls -l`.
    Ls {
        /// Image file or URL.
        image: PathBuf,
        /// Absolute path inside the filesystem.
        #[arg(default_value = "/")]
        path: String,
        /// Print a JSON array instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: Net,
    },
    /// Write a file from inside an image to stdout, without restoring the image.
    Cat {
        /// Image file or URL.
        image: PathBuf,
        /// Absolute path of a file inside the filesystem, e.g. /etc/fstab.
        path: String,
        #[command(flatten)]
        net: Net,
    },
    /// Copy a file or directory tree out of an image, keeping modes, times and (as root)
    /// owners. Existing files are never overwritten.
    Extract {
        /// Image file or URL.
        image: PathBuf,
        /// Absolute path inside the filesystem, e.g. /etc.
        path: String,
        /// Where to put it (must not exist).
        dest: PathBuf,
        #[command(flatten)]
        net: Net,
    },
    /// Save a whole disk: its partition table, an image of every partition, and a manifest.
    ///
    /// ext2/3/4 partitions are imaged through their bitmaps, other filesystems raw. Swap is only
    /// described (UUID, label), never imaged. The directory gets manifest.toml (human-readable),
    /// boot-area.bin (the bytes before the first partition: boot code and boot loader area) and
    /// partN.rimg per imaged partition. With DIR "-", the same goes to stdout as one disk
    /// stream (manifest, boot area, images), for `restore-disk -` at the other end of a pipe.
    SaveDisk {
        /// The disk, e.g. /dev/sda (or a disk image file).
        disk: PathBuf,
        /// Directory for the manifest and images, e.g. /cluster/images/node-golden; "-" for a
        /// disk stream on stdout.
        dir: PathBuf,
        /// Record partition N as "re-create empty with the same UUID and label" instead of
        /// imaging it (for a data partition a distributed filesystem refills). Repeatable.
        #[arg(long, value_name = "N")]
        reformat: Vec<u32>,
        /// Image only these partitions (the others are recorded but skipped). Repeatable.
        #[arg(long, value_name = "N")]
        only: Vec<u32>,
        /// Skip these partitions (recorded in the table, not restored). Repeatable.
        #[arg(long, value_name = "N")]
        skip: Vec<u32>,
        #[command(flatten)]
        compression: Compression,
        /// Save partitions that are mounted read-write or not clean anyway.
        #[arg(long)]
        force: bool,
        /// Check every partition's block bitmaps against its files (see `rimage save --thorough`).
        #[arg(long)]
        thorough: bool,
        /// Replace a disk already saved in DIR.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Restore a disk saved by save-disk onto a disk: partition table (kept if identical),
    /// every imaged partition, swap with its old UUID and label, empty filesystems re-created
    /// with their old UUIDs; then check every partition's identity.
    ///
    /// The disk must be a block device and nothing on it mounted. Everything that can be
    /// checked (manifest, images, sizes, mke2fs present) is checked before anything is written.
    /// The kernel is asked to re-read the table (BLKRRPART); where it cannot, partitions are
    /// added one by one (BLKPG).
    RestoreDisk {
        /// Directory written by save-disk, or its URL (http://head:8080/images/node-golden/):
        /// the manifest, boot area and partition images are fetched from under it; "-" reads a
        /// disk stream from stdin (save-disk DISK -, rimage send, udp-receiver).
        dir: PathBuf,
        /// The disk to write, e.g. /dev/sda.
        disk: PathBuf,
        /// Run this shell command with the restored root filesystem mounted (and the restored
        /// partitions its /etc/fstab mounts under it, like /boot), then unmount. The command
        /// sees RIMAGE_ROOT (the mount point), RIMAGE_DISK, RIMAGE_ROOT_DEVICE and
        /// RIMAGE_PART_<N>. Example: 'arch-chroot "$RIMAGE_ROOT" mkinitcpio -p linux'.
        #[arg(long, value_name = "CMD")]
        post_restore: Option<String>,
        /// The root partition for --post-restore (default: the one with /etc/fstab).
        #[arg(long, value_name = "N")]
        root: Option<u32>,
        #[command(flatten)]
        threads: Threads,
        /// Make free blocks of restored filesystems read as zeros.
        #[arg(long)]
        zero_free: bool,
        /// On a disk larger than the saved one, grow the last partition to the end of the disk
        /// (GPT: backup header moved to the new end) and its ext filesystem with resize2fs.
        /// Without it the extra space is left unused (and a note says so).
        #[arg(long)]
        grow: bool,
        /// Skip the chunks each partition already holds (see `rimage restore --delta`).
        #[arg(long)]
        delta: bool,
        #[command(flatten)]
        net: Net,
        #[command(flatten)]
        out: Output,
    },
    /// Write a saved disk directory (or one image) to stdout as one stream, for any transport:
    /// `rimage send /cluster/images/node-golden | udp-sender ...` on the head node and
    /// `udp-receiver ... | rimage restore-disk - /dev/sda` on each node.
    Send {
        /// A directory written by save-disk, or an image file.
        path: PathBuf,
    },
    /// Bring a partclone or Clonezilla image along: convert it into a rimage image, checking it
    /// on the way.
    ///
    /// Given a partclone image file (formats 0001 and 0002; gzip, zstd, xz, bzip2, lz4 or
    /// uncompressed; split pieces NAME.aa, NAME.ab, ... given by the first piece or by NAME),
    /// writes an ordinary rimage image: ext2/3/4 as ext (browsable), anything else raw with the
    /// blocks partclone's bitmap marks used. Every partclone checksum is checked; a mismatch
    /// names the block. Clonezilla's raw `*.dd-img` files are imported as raw images.
    ///
    /// Given a Clonezilla image directory (savedisk: `disk`, `parts`, `<disk>-pt.sf`, ...),
    /// writes a save-disk directory (manifest, boot area, one image per partition) that
    /// restore-disk reads. `rimage info CLONEZILLA_DIR` shows what it would write.
    ///
    /// Nothing is left under OUT when the import fails.
    Import {
        /// partclone image file (or its first split piece), or Clonezilla image directory.
        input: PathBuf,
        /// rimage image file to write, or (for a Clonezilla directory) the directory.
        out: PathBuf,
        #[command(flatten)]
        compression: Compression,
        /// Uncompressed size of each chunk (64K to 64M).
        #[arg(long, default_value = "4M", value_parser = parse_chunk_size)]
        chunk_size: u32,
        /// Replace OUT if it exists.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        out_opts: Output,
    },
    /// The netboot imaging environment: a kernel and an initramfs whose init is rimage itself.
    ///
    /// A node boots it over the network (iPXE, pxelinux); the init brings up the NIC, asks
    /// `rimage serve` for the node's job (save or restore its disk), runs it, reports and reboots
    /// (docs/SERVICE.md).
    Netboot {
        #[command(subcommand)]
        action: NetbootAction,
    },
    /// Run this node's job from `rimage serve` (what the netboot init does): fetch the job,
    /// save the disk to the head node or restore it from there, report progress and the
    /// result. A successful save or restore puts the node back to local boot.
    Agent {
        /// The service, e.g. http://10.0.2.2:8080 (rimage.server=).
        #[arg(long, value_name = "URL")]
        server: String,
        /// This node's name (rimage.node=).
        #[arg(long)]
        node: String,
        /// The job token (rimage.token=).
        #[arg(long)]
        token: String,
        /// The disk to save or restore (default: the job's).
        #[arg(long, value_name = "DEV")]
        disk: Option<PathBuf>,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        net: Net,
        #[command(flatten)]
        out: Output,
    },
    /// The head-node service (docs/SERVICE.md): images read-only with ranges, checked uploads
    /// from nodes saving their disk, per-node iPXE boot scripts, job and report API, and a
    /// live dashboard at /.
    ///
    /// Nodes and their next boot are changed with `rimage node` (same --state). A node that
    /// reports a successful save or restore goes back to local boot.
    Serve {
        /// The image root: save-disk directories and .rimg files, served under /images/.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// Address and port to listen on.
        #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// The state directory shared with `rimage node` (nodes, jobs, admin token).
        #[arg(long, value_name = "DIR", default_value = "/var/lib/rimage")]
        state: PathBuf,
        /// The URL nodes reach the service by, e.g. http://10.0.0.1:8080 (default: the Host
        /// header of each request).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Directory with the netboot kernel and initrd (vmlinuz, initrd.img), served under
        /// /netboot/.
        #[arg(long, value_name = "DIR")]
        netboot: Option<PathBuf>,
        /// Largest upload accepted (e.g. 500G); larger ones are refused with 413.
        #[arg(long, value_name = "SIZE", default_value = "1T", value_parser = parse_size_arg)]
        max_upload: u64,
        #[command(flatten)]
        threads: Threads,
    },
    /// Manage the nodes `rimage serve` boots: add, set the next boot mode, list, remove.
    ///
    /// Changes go to the state directory (locked, written atomically), so they are safe while
    /// the service runs and against other admins. With --dhcp-hostsdir, each node gets a
    /// dnsmasq dhcp-hostsdir file (MAC,IP,NAME; dnsmasq re-reads it without a restart); with
    /// --tftp-dir, a pxelinux.cfg/01-<mac> file (LOCALBOOT 0, or the netboot kernel from
    /// TFTP_DIR/rimage/). Both directories and --public-url are remembered once given.
    Node {
        #[command(subcommand)]
        action: NodeAction,
        /// The state directory shared with `rimage serve`.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/var/lib/rimage",
            global = true
        )]
        state: PathBuf,
        /// dnsmasq dhcp-hostsdir: write one file per node there.
        #[arg(long, value_name = "DIR", global = true)]
        dhcp_hostsdir: Option<PathBuf>,
        /// TFTP root: write pxelinux.cfg/01-<mac> per node there.
        #[arg(long, value_name = "DIR", global = true)]
        tftp_dir: Option<PathBuf>,
        /// The service's URL as nodes reach it (needed in pxelinux entries).
        #[arg(long, value_name = "URL", global = true)]
        public_url: Option<String>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Print a shell completion script, e.g. `rimage completions bash > /etc/bash_completion.d/rimage`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff), e.g. `rimage man | man -l -`, `rimage man restore-disk`.
    Man {
        /// The subcommand whose page to print (rimage-SUBCOMMAND(1)); the main page without it.
        subcommand: Option<String>,
        /// Write every page (rimage.1, rimage-save.1, ...) into this directory instead.
        #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
        out_dir: Option<PathBuf>,
    },
}

/// `rimage netboot` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetbootAction {
    /// Write OUT/vmlinuz, OUT/initrd.img, and sample boot.ipxe and pxelinux entries.
    ///
    /// The initramfs holds a static rimage as /init, static busybox (the live shell, udhcpc,
    /// sh for post-restore commands) and the kernel modules nodes and VMs need (virtio,
    /// e1000/e1000e, ahci/sd_mod, nvme, ext4, vfat, xfs) with their dependencies from
    /// modules.dep. Serve OUT with `rimage serve --netboot OUT`.
    ///
    /// Example: rimage netboot build --kernel /boot/vmlinuz-6.1.0-56-amd64
    /// --rimage target/x86_64-unknown-linux-musl/release/rimage --out /srv/rimage/netboot
    Build {
        /// The kernel, e.g. /boot/vmlinuz-6.1.0-56-amd64.
        #[arg(long, value_name = "VMLINUZ")]
        kernel: PathBuf,
        /// Its modules directory (default: /lib/modules/VERSION, VERSION from the kernel's name).
        #[arg(long, value_name = "DIR")]
        modules: Option<PathBuf>,
        /// Static busybox (Debian: busybox-static).
        #[arg(long, value_name = "PATH", default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// The static rimage to use as /init (default: this executable, if it is static; build
        /// one with `cargo build --release --target x86_64-unknown-linux-musl`).
        #[arg(long, value_name = "PATH")]
        rimage: Option<PathBuf>,
        /// Another kernel module to include (with its dependencies). Repeatable.
        #[arg(long = "module", value_name = "NAME")]
        modules_extra: Vec<String>,
        /// Initramfs compression (default: zstd when the kernel's config-VERSION beside it
        /// has CONFIG_RD_ZSTD, else gzip).
        #[arg(long, value_enum)]
        compression: Option<InitrdCompressionArg>,
        /// Output directory (created; files in it are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
}

/// Initramfs compression.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum InitrdCompressionArg {
    /// zstd, level 19.
    Zstd,
    /// gzip, level 9.
    Gzip,
}

/// What `rimage node` does.
#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Add a node (next boot: local) and write its DHCP entry.
    Add {
        /// Its name (a host name: letters, digits, '-').
        name: String,
        /// Its boot NIC, e.g. 52:54:00:12:34:56.
        #[arg(long)]
        mac: String,
        /// Its fixed IPv4 address (in the DHCP entry).
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
    },
    /// Set a node's next network boot: local (its disk), live (a shell in the imaging
    /// system), save (its disk to the image root) or restore (an image onto its disk). Each
    /// call makes a new job token. Save and restore are one-shot: after success the node goes
    /// back to local.
    Set {
        /// The node.
        name: String,
        /// local, live, save or restore.
        #[arg(value_enum)]
        mode: ModeArg,
        /// restore: the image (a save-disk directory or NAME.rimg under the root); save: the
        /// name to save to (default NAME-YYYY-MM-DD).
        #[arg(long)]
        image: Option<String>,
        /// restore: a shell command run in the restored root (see restore-disk).
        #[arg(long, value_name = "CMD")]
        post_restore: Option<String>,
        /// Stay in this mode after a success (not one-shot).
        #[arg(long)]
        keep: bool,
        /// restore: skip the chunks the disk already holds.
        #[arg(long)]
        delta: bool,
        /// The disk to use on the node, e.g. /dev/sda (default: the only one).
        #[arg(long, value_name = "DEV")]
        disk: Option<String>,
        /// save: replace an existing image of that name.
        #[arg(long)]
        overwrite: bool,
    },
    /// List the nodes: next boot, job, last result.
    List,
    /// Remove a node and its DHCP and pxelinux files.
    Rm {
        /// The node.
        name: String,
    },
}

/// A node's next boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Boot the local disk.
    Local,
    /// A shell in the imaging system.
    Live,
    /// Save the disk to the head node.
    Save,
    /// Restore an image.
    Restore,
}

impl ModeArg {
    /// The library's mode.
    pub fn mode(self) -> rimage::serve::proto::Mode {
        use rimage::serve::proto::Mode;
        match self {
            Self::Local => Mode::Local,
            Self::Live => Mode::Live,
            Self::Save => Mode::Save,
            Self::Restore => Mode::Restore,
        }
    }
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| e.to_string())
}

fn parse_expect_uuid(s: &str) -> Result<ExpectUuid, String> {
    if s == "image" {
        Ok(ExpectUuid::Image)
    } else {
        s.parse().map(ExpectUuid::Uuid)
    }
}

fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| e.to_string())?;
    u32::try_from(n)
        .ok()
        .filter(|n| (64 << 10..=64 << 20).contains(n))
        .ok_or_else(|| format!("{s} is not between 64K and 64M"))
}
