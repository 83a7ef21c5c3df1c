//! Whole disks on loop devices for the tests: a node disk with /boot, /, swap and a data
//! partition, and the checks that two disks are the same (table, identities, fsck, files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{LoopDev, have, run};

pub const BOOT_UUID: &str = "5b0a0000-0000-4000-8000-000000000b00";
pub const SWAP_UUID: &str = "5ca90000-0000-4000-8000-000000000590";
pub const VFAT_ID: &str = "1234ABCD";

pub fn tools_missing() -> Option<String> {
    let missing: Vec<&str> = [
        "losetup",
        "partx",
        "sfdisk",
        "mke2fs",
        "mkswap",
        "blkid",
        "mkfs.vfat",
        "fsck.vfat",
        "mcopy",
        "e2fsck",
    ]
    .into_iter()
    .filter(|t| !have(t))
    .collect();
    if !missing.is_empty() {
        return Some(format!("missing {missing:?}"));
    }
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    None
}

/// `sfdisk -d` of a disk with its device name replaced, so two disks compare.
pub fn table_dump(dev: &Path) -> String {
    let name = dev.display().to_string();
    run(Command::new("sfdisk").arg("-d").arg(dev)).replace(&name, "DISK")
}

/// blkid's view of a partition: TYPE, UUID, LABEL, PARTUUID...
pub fn blkid(node: &Path) -> BTreeMap<String, String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(node)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            !matches!(
                *k,
                "DEVNAME" | "PART_ENTRY_DISK" | "PART_ENTRY_SCHEME" | "PART_ENTRY_NUMBER"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn make_source_disk(dir: &Path, label: &str, vfat_boot: bool) -> (PathBuf, LoopDev) {
    let img = dir.join("source-disk.img");
    let script = if label == "gpt" {
        "label: gpt\n,32M,L\n,160M,L\n,16M,S\n,,L\n"
    } else {
        "label: dos\n,32M,83,*\n,160M,83\n,16M,82\n,,83\n"
    };
    super::partitioned_file(&img, 300 << 20, script);
    let lo = LoopDev::with_partitions(&img).expect("loop device");

    // /boot
    let boot_tree = dir.join("boot-tree");
    std::fs::create_dir_all(boot_tree.join("grub")).unwrap();
    std::fs::write(boot_tree.join("grub/grub.cfg"), "menuentry node {}\n").unwrap();
    std::fs::write(boot_tree.join("vmlinuz-linux"), vec![0x5Au8; 700_000]).unwrap();
    let fstab_boot = if vfat_boot {
        run(Command::new("mkfs.vfat")
            .args(["-F", "16", "-i", VFAT_ID, "-n", "BOOT"])
            .arg(lo.part(1)));
        // Files go onto the FAT filesystem with mtools (the kernel here may lack vfat).
        run(Command::new("mcopy")
            .arg("-s")
            .arg("-i")
            .arg(lo.part(1))
            .arg(boot_tree.join("grub"))
            .arg(boot_tree.join("vmlinuz-linux"))
            .arg("::"));
        if kernel_has_vfat() {
            format!(
                "UUID={}-{} /boot vfat defaults 0 2\n",
                &VFAT_ID[..4],
                &VFAT_ID[4..]
            )
        } else {
            String::new()
        }
    } else {
        run(Command::new("mke2fs")
            .args([
                "-q", "-F", "-t", "ext2", "-L", "boot", "-U", BOOT_UUID, "-d",
            ])
            .arg(&boot_tree)
            .arg(lo.part(1)));
        format!("UUID={BOOT_UUID} /boot ext2 defaults 0 2\n")
    };
    // /
    let root_tree = dir.join("root-tree");
    super::tree::populate(&root_tree, 11);
    std::fs::create_dir_all(root_tree.join("boot")).unwrap();
    std::fs::write(root_tree.join("etc/fstab"), format!("# node\nLABEL=root / ext4 defaults 0 1\n{fstab_boot}UUID={SWAP_UUID} none swap sw 0 0\n")).unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-d"])
        .arg(&root_tree)
        .arg(lo.part(2)));
    // swap and data
    run(Command::new("mkswap")
        .args(["-q", "-L", "swap0", "-U", SWAP_UUID])
        .arg(lo.part(3)));
    let data_tree = dir.join("data-tree");
    std::fs::create_dir_all(&data_tree).unwrap();
    std::fs::write(data_tree.join("chunk-0001"), vec![1u8; 1 << 20]).unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "data", "-d"])
        .arg(&data_tree)
        .arg(lo.part(4)));
    (img, lo)
}

/// Whether the running kernel can mount FAT (the post-restore step mounts /boot from fstab).
pub fn kernel_has_vfat() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.trim_end().ends_with("vfat")))
}

/// Runs `sh -c script`, returning (status, stdout+stderr).
pub fn shell(script: &str) -> (Option<i32>, String) {
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn assert_same_disk(a: &LoopDev, b: &LoopDev, what: &str) {
    assert_eq!(
        table_dump(&a.dev),
        table_dump(&b.dev),
        "{what}: tables differ"
    );
    for n in 1..=4 {
        assert_eq!(
            blkid(&a.part(n)),
            blkid(&b.part(n)),
            "{what}: partition {n}"
        );
    }
    super::assert_fsck_clean(&b.part(2));
    let (_, x) = super::tree::snapshot(&a.part(2)).unwrap();
    let (_, y) = super::tree::snapshot(&b.part(2)).unwrap();
    assert!(x == y, "{what}: the root's files differ");
}
