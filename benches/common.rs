//! Shared bench data: realistic bytes (libraries from /usr/lib, falling back to generated
//! data) and small ext4 filesystems made with mke2fs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// About `len` bytes of real-world content: shared libraries and binaries as found on the
/// machine, padded with generated text when there are not enough.
pub fn realistic_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut stack = vec![
        PathBuf::from("/usr/lib/x86_64-linux-gnu"),
        PathBuf::from("/usr/bin"),
    ];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if out.len() >= len {
                return out;
            }
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && let Ok(data) = std::fs::read(&p)
            {
                out.extend_from_slice(&data[..data.len().min(len - out.len())]);
            }
        }
    }
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "generated line {i} value {}\n",
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Whether mke2fs is available.
pub fn have_mke2fs() -> bool {
    Command::new("sh")
        .args(["-c", "command -v mke2fs"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes an ext4 filesystem image of `size_mib` at `img` with `extra` mke2fs arguments,
/// populated from `tree` when given.
pub fn mkfs(img: &Path, size_mib: u64, extra: &[&str], tree: Option<&Path>) {
    std::fs::File::create(img)
        .unwrap()
        .set_len(size_mib << 20)
        .unwrap();
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-F", "-t", "ext4"]).args(extra);
    if let Some(t) = tree {
        cmd.arg("-d").arg(t);
    }
    let st = cmd.arg(img).status().unwrap();
    assert!(st.success(), "mke2fs failed");
}

/// A directory tree of `mib` MiB of realistic files for `mke2fs -d`.
pub fn tree(dir: &Path, mib: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let data = realistic_bytes(mib << 20);
    for (i, piece) in data.chunks(3 << 20).enumerate() {
        std::fs::write(dir.join(format!("file{i}")), piece).unwrap();
    }
}
