//! The netboot imaging environment: [`build`] makes a kernel + initramfs whose `/init` is the
//! static rimage binary; [`init`] is what that binary does as PID 1 (bring-up, network, the
//! node's job, reboot). The interface to `rimage serve` is docs/SERVICE.md; [`cmdline`] reads
//! its kernel command line, [`modules`] resolves the kernel modules the initramfs carries.

pub mod build;
pub mod cmdline;
pub mod cpio;
pub mod init;
pub mod modules;

use std::path::PathBuf;

use thiserror::Error;

pub use build::{BuildOptions, BuildReport, InitrdCompression, build};

/// What can go wrong building the netboot image.
#[derive(Debug, Error)]
pub enum NetbootError {
    /// Reading or writing a file failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing an output file failed.
    #[error(transparent)]
    Write(#[from] Box<crate::Error>),
    /// The executable that should become `/init` (or busybox) needs a dynamic loader the
    /// initramfs does not have.
    #[error(
        "{} is dynamically linked; the initramfs needs a static binary (build rimage with \
         `cargo build --release --target x86_64-unknown-linux-musl` and pass --rimage \
         target/x86_64-unknown-linux-musl/release/rimage; for busybox install busybox-static)",
        .0.display()
    )]
    NotStatic(PathBuf),
    /// Not an x86-64 ELF executable.
    #[error("{}: not a 64-bit ELF executable", .0.display())]
    NotElf(PathBuf),
    /// Busybox is missing.
    #[error(
        "{}: {source} (the initramfs needs a static busybox for DHCP and the shell: \
         apt-get install busybox-static, or pass --busybox)",
        path.display()
    )]
    Busybox {
        /// Where it was looked for.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The modules directory cannot be derived from the kernel's file name.
    #[error(
        "{}: cannot tell the kernel release from the file name; pass --modules /lib/modules/VERSION",
        .0.display()
    )]
    NoModulesDir(PathBuf),
    /// `modules.dep` is malformed.
    #[error("{}: {source}", path.display())]
    Modules {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: modules::ModulesError,
    },
}
