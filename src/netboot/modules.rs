//! Which kernel modules go into the initramfs, and in what order the init loads them: the wanted
//! names resolved through `modules.dep` (dependencies first), skipping what `modules.builtin`
//! says is compiled in.

use std::collections::{HashMap, HashSet};

use thiserror::Error;

/// Modules a node or VM needs to reach its disk and network. Names as `modprobe` spells them
/// (`-` and `_` are the same).
pub const DEFAULT_MODULES: &[&str] = &[
    // Virtual machines (QEMU/KVM): virtio transport, network, disks.
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    // Common physical and emulated NICs.
    "e1000",
    "e1000e",
    // SATA, SCSI disks and NVMe.
    "ahci",
    "sd_mod",
    "nvme",
    // Filesystems the post-restore step mounts; ext4 checksums need crc32c.
    "ext4",
    "crc32c_generic",
    "crc32c_intel",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "xfs",
];

/// What is wrong with `modules.dep`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModulesError {
    /// A line without the `path:` separator.
    #[error("modules.dep line {line}: no ':' after the module path")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// Dependencies that loop.
    #[error("modules.dep: dependency cycle through {0}")]
    Cycle(String),
}

/// The module name of a path in `modules.dep`: `kernel/fs/ext4/ext4.ko.xz` → `ext4`, with `-`
/// spelled `_` as the kernel does.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .unwrap_or(file);
    stem.replace('-', "_")
}

/// `modules.dep`: each module's path and its dependencies (paths relative to the modules
/// directory).
#[derive(Debug, Default)]
pub struct ModuleDeps {
    by_name: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

impl ModuleDeps {
    /// Parses `modules.dep` and `modules.builtin` (empty when the kernel has no such file).
    ///
    /// # Errors
    /// [`ModulesError::Syntax`] for a line without a colon.
    pub fn parse(dep: &str, builtin: &str) -> Result<Self, ModulesError> {
        let mut by_name = HashMap::new();
        for (i, line) in dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line
                .split_once(':')
                .ok_or(ModulesError::Syntax { line: i + 1 })?;
            let deps = deps.split_whitespace().map(str::to_string).collect();
            by_name.insert(module_name(path), (path.to_string(), deps));
        }
        let builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Ok(Self { by_name, builtin })
    }

    /// Resolves `wanted` to module paths in load order (every module after its dependencies,
    /// each once). Built-in modules are skipped and listed; names the kernel has neither as a
    /// module nor built in are listed as missing.
    ///
    /// # Errors
    /// [`ModulesError::Cycle`] when dependencies loop.
    pub fn resolve(&self, wanted: &[&str]) -> Result<Resolution, ModulesError> {
        let mut out = Resolution::default();
        let mut done = HashSet::new();
        let mut visiting = HashSet::new();
        for name in wanted {
            let name = name.replace('-', "_");
            if let Some((path, _)) = self.by_name.get(&name) {
                self.visit(path, &mut done, &mut visiting, &mut out.load_order)?;
            } else if self.builtin.contains(&name) {
                out.builtin.push(name);
            } else {
                out.missing.push(name);
            }
        }
        Ok(out)
    }

    fn visit(
        &self,
        path: &str,
        done: &mut HashSet<String>,
        visiting: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), ModulesError> {
        if done.contains(path) {
            return Ok(());
        }
        if !visiting.insert(path.to_string()) {
            return Err(ModulesError::Cycle(module_name(path)));
        }
        // A dependency modules.dep does not list itself (not possible from depmod, but the file
        // is read as data) is still loaded first.
        let deps = self
            .by_name
            .get(&module_name(path))
            .filter(|(p, _)| p == path)
            .map(|(_, d)| d.as_slice())
            .unwrap_or_default();
        for dep in deps {
            self.visit(dep, done, visiting, order)?;
        }
        visiting.remove(path);
        done.insert(path.to_string());
        order.push(path.to_string());
        Ok(())
    }
}

/// The outcome of [`ModuleDeps::resolve`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Module paths (relative to the modules directory), dependencies first.
    pub load_order: Vec<String>,
    /// Wanted names compiled into the kernel.
    pub builtin: Vec<String>,
    /// Wanted names this kernel does not have.
    pub missing: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko.zst: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/nvme/host/nvme-core.ko:
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko
";

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.xz"), "ext4");
        assert_eq!(
            module_name("kernel/drivers/nvme/host/nvme-core.ko"),
            "nvme_core"
        );
        assert_eq!(module_name("crc32c-intel.ko.zst"), "crc32c_intel");
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.gz"), "ext4");
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let deps = ModuleDeps::parse(DEP, "kernel/fs/ext4/ext4.ko\n").unwrap();
        let r = deps
            .resolve(&["virtio-net", "virtio_blk", "ext4", "nvme", "nosuch"])
            .unwrap();
        assert_eq!(
            r.load_order,
            [
                "kernel/net/core/failover.ko.xz",
                "kernel/drivers/net/net_failover.ko.xz",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/net/virtio_net.ko.xz",
                "kernel/drivers/block/virtio_blk.ko.zst",
                "kernel/drivers/nvme/host/nvme-core.ko",
                "kernel/drivers/nvme/host/nvme.ko",
            ]
        );
        assert_eq!(r.builtin, ["ext4"]);
        assert_eq!(r.missing, ["nosuch"]);
    }

    #[test]
    fn cycles_and_syntax_are_errors() {
        let deps = ModuleDeps::parse("a.ko: b.ko\nb.ko: a.ko\n", "").unwrap();
        assert!(matches!(deps.resolve(&["a"]), Err(ModulesError::Cycle(_))));
        assert_eq!(
            ModuleDeps::parse("a.ko b.ko\n", "").unwrap_err(),
            ModulesError::Syntax { line: 1 }
        );
    }

    #[test]
    fn the_host_kernel_resolves() {
        // On a machine with a Debian kernel, the default list resolves with nothing missing
        // that a VM needs.
        let Some(dir) = std::fs::read_dir("/lib/modules")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
        else {
            eprintln!("skipped: no /lib/modules");
            return;
        };
        let dir = dir.path();
        let Ok(dep) = std::fs::read_to_string(dir.join("modules.dep")) else {
            eprintln!("skipped: no modules.dep in {}", dir.display());
            return;
        };
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        let r = ModuleDeps::parse(&dep, &builtin)
            .unwrap()
            .resolve(DEFAULT_MODULES)
            .unwrap();
        for m in ["virtio_net", "virtio_blk", "ext4"] {
            assert!(
                r.load_order.iter().any(|p| module_name(p) == m)
                    || r.builtin.iter().any(|b| b == m),
                "{m} not resolved: {r:?}"
            );
        }
    }
}
