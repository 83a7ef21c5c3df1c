//! The kernel command line the netboot init reads (docs/SERVICE.md, "Kernel command line read by
//! the netboot init"). The bytes come from whoever wrote the boot script, so parsing never panics:
//! anything wrong with a `rimage.*` key is a typed error naming the key; other keys are the
//! kernel's and are ignored.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use thiserror::Error;

/// What the node does this boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Save the disk and upload it.
    Save,
    /// Restore the disk from the job's image.
    Restore,
    /// Bring the network up and leave a shell on the console.
    Live,
}

impl Mode {
    /// The name as the command line and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Save => "save",
            Self::Restore => "restore",
            Self::Live => "live",
        }
    }
}

/// A MAC address: the service's type (`52:54:00:12:34:56`; hyphens accepted).
pub use crate::serve::proto::Mac;

/// A static IPv4 configuration, as iPXE had it from DHCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticAddress {
    /// The node's address.
    pub ip: Ipv4Addr,
    /// Prefix length (from `rimage.netmask`; 24 when absent).
    pub prefix: u8,
    /// Default route, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Name server, if any.
    pub dns: Option<Ipv4Addr>,
}

/// Everything the init takes from the kernel command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootParams {
    /// `rimage.mode` (absent: no job; the init behaves as `live`).
    pub mode: Option<Mode>,
    /// `rimage.server`: the service's base URL, without a trailing slash.
    pub server: Option<String>,
    /// `rimage.node`.
    pub node: Option<String>,
    /// `rimage.token`.
    pub token: Option<String>,
    /// `rimage.mac`: the NIC to bring up.
    pub mac: Option<Mac>,
    /// `rimage.ip` and friends; `None` means DHCP.
    pub address: Option<StaticAddress>,
    /// `rimage.disk`.
    pub disk: Option<PathBuf>,
    /// `rimage.shell=1`.
    pub shell: bool,
}

impl BootParams {
    /// Whether a failure leaves a shell on the console (`live`, or `rimage.shell=1`).
    pub fn wants_shell(&self) -> bool {
        self.shell || matches!(self.mode, None | Some(Mode::Live))
    }
}

/// What is wrong with the command line.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// A `rimage.*` word is not UTF-8.
    #[error("kernel command line: a rimage.* parameter is not UTF-8")]
    NotUtf8,
    /// A double quote opened and never closed.
    #[error("kernel command line: unterminated quote")]
    UnterminatedQuote,
    /// A key the init does not know (a typo would otherwise silently be ignored).
    #[error("kernel command line: unknown parameter {0} (see docs/SERVICE.md)")]
    UnknownKey(String),
    /// A key given twice with different values.
    #[error("kernel command line: {key} is given twice")]
    Duplicate {
        /// The key.
        key: String,
    },
    /// A value that does not parse.
    #[error("kernel command line: {key}={value:?}: {expected}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The value as given (lossy, shortened).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// `rimage.gateway`, `netmask` or `dns` given without `rimage.ip`.
    #[error("kernel command line: {0} is given without rimage.ip")]
    WithoutIp(&'static str),
}

const KEYS: [&str; 11] = [
    "mode", "server", "node", "token", "mac", "ip", "netmask", "gateway", "dns", "disk", "shell",
];

/// Splits the command line into words the way the kernel does: on ASCII whitespace, with double
/// quotes grouping (and removed).
fn words(raw: &[u8]) -> Result<Vec<Vec<u8>>, CmdlineError> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut in_word = false;
    let mut quoted = false;
    for &b in raw {
        match b {
            b'"' => {
                quoted = !quoted;
                in_word = true;
            }
            b' ' | b'\t' | b'\n' | b'\r' | 0 if !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            _ => {
                cur.push(b);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(CmdlineError::UnterminatedQuote);
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn bad(key: &'static str, value: &str, expected: &'static str) -> CmdlineError {
    CmdlineError::BadValue {
        key,
        value: value.chars().take(64).collect(),
        expected,
    }
}

fn ipv4(key: &'static str, v: &str) -> Result<Ipv4Addr, CmdlineError> {
    v.parse()
        .map_err(|_| bad(key, v, "expected an IPv4 address like 10.0.2.15"))
}

/// A netmask as dotted quad (what iPXE's `${netmask}` gives) or as a prefix length.
fn prefix(v: &str) -> Result<u8, CmdlineError> {
    if let Ok(n) = v.parse::<u8>() {
        return if n <= 32 {
            Ok(n)
        } else {
            Err(bad("rimage.netmask", v, "a prefix length is at most 32"))
        };
    }
    let mask = u32::from(ipv4("rimage.netmask", v)?);
    // A netmask is ones then zeros.
    if mask.leading_ones() + mask.trailing_zeros() != 32 {
        return Err(bad("rimage.netmask", v, "not a contiguous netmask"));
    }
    Ok(mask.leading_ones() as u8)
}

/// Parses the kernel command line (`/proc/cmdline`'s bytes). Keys other than `rimage.*` are
/// ignored; an empty value counts as absent (iPXE expands an unset `${gateway}` to nothing).
///
/// # Errors
/// [`CmdlineError`] for an unknown `rimage.*` key, a value that does not parse, a key given
/// twice with different values, or an unterminated quote.
pub fn parse(raw: &[u8]) -> Result<BootParams, CmdlineError> {
    let mut values: [Option<String>; KEYS.len()] = Default::default();
    let mut bootif = None;
    for word in words(raw)? {
        // pxelinux's IPAPPEND 2: BOOTIF=01-52-54-00-12-34-56 (ARP type 1, then the MAC).
        if let Some(v) = word.strip_prefix(b"BOOTIF=") {
            bootif = Some(String::from_utf8_lossy(v).into_owned());
            continue;
        }
        let Some(rest) = word.strip_prefix(b"rimage.") else {
            continue;
        };
        let rest = std::str::from_utf8(rest).map_err(|_| CmdlineError::NotUtf8)?;
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        let Some(i) = KEYS.iter().position(|k| *k == key) else {
            return Err(CmdlineError::UnknownKey(format!(
                "rimage.{}",
                key.chars().take(64).collect::<String>()
            )));
        };
        if value.is_empty() {
            continue;
        }
        match &values[i] {
            Some(old) if old != value => {
                return Err(CmdlineError::Duplicate {
                    key: format!("rimage.{key}"),
                });
            }
            _ => values[i] = Some(value.to_string()),
        }
    }
    let [
        mode,
        server,
        node,
        token,
        mac,
        ip,
        netmask,
        gateway,
        dns,
        disk,
        shell,
    ] = values;

    let mode = match mode.as_deref() {
        None => None,
        Some("save") => Some(Mode::Save),
        Some("restore") => Some(Mode::Restore),
        Some("live") => Some(Mode::Live),
        Some(v) => return Err(bad("rimage.mode", v, "expected save, restore or live")),
    };
    let server = match server {
        None => None,
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => {
            Some(s.trim_end_matches('/').to_string())
        }
        Some(s) => {
            return Err(bad(
                "rimage.server",
                &s,
                "expected an http:// or https:// URL",
            ));
        }
    };
    let mac = match (mac, bootif) {
        (Some(m), _) => Some(
            m.parse()
                .map_err(|_| bad("rimage.mac", &m, "expected a MAC like 52:54:00:12:34:56"))?,
        ),
        (None, Some(b)) => Some(
            b.strip_prefix("01-")
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| bad("BOOTIF", &b, "expected 01-52-54-00-12-34-56"))?,
        ),
        (None, None) => None,
    };
    let address = match ip {
        None => {
            for (name, v) in [
                ("rimage.netmask", &netmask),
                ("rimage.gateway", &gateway),
                ("rimage.dns", &dns),
            ] {
                if v.is_some() {
                    return Err(CmdlineError::WithoutIp(name));
                }
            }
            None
        }
        Some(ip) => Some(StaticAddress {
            ip: ipv4("rimage.ip", &ip)?,
            prefix: netmask.as_deref().map(prefix).transpose()?.unwrap_or(24),
            gateway: gateway
                .as_deref()
                .map(|g| ipv4("rimage.gateway", g))
                .transpose()?,
            dns: dns.as_deref().map(|d| ipv4("rimage.dns", d)).transpose()?,
        }),
    };
    let disk = match disk {
        None => None,
        Some(d) if d.starts_with("/dev/") && !d.contains("..") => Some(PathBuf::from(d)),
        Some(d) if !d.contains('/') => Some(PathBuf::from("/dev").join(d)),
        Some(d) => return Err(bad("rimage.disk", &d, "expected /dev/NAME or NAME")),
    };
    let shell = match shell.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(v) => return Err(bad("rimage.shell", v, "expected 0 or 1")),
    };
    for (key, v) in [("rimage.node", &node), ("rimage.token", &token)] {
        if let Some(v) = v
            && v.chars().any(|c| c.is_control())
        {
            return Err(bad(key, v, "control characters are not allowed"));
        }
    }
    Ok(BootParams {
        mode,
        server,
        node,
        token,
        mac,
        address,
        disk,
        shell,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPXE: &str = "BOOT_IMAGE=vmlinuz initrd=initrd.img console=ttyS0,115200 console=tty0 \
        rimage.mode=restore rimage.server=http://10.0.2.2:8080/ rimage.node=node07 \
        rimage.token=00112233445566778899aabbccddeeff rimage.mac=52:54:00:12:34:56 \
        rimage.ip=10.0.2.15 rimage.netmask=255.255.255.0 rimage.gateway=10.0.2.2 \
        rimage.dns=10.0.2.3\n";

    #[test]
    fn the_service_boot_line() {
        let p = parse(IPXE.as_bytes()).unwrap();
        assert_eq!(p.mode, Some(Mode::Restore));
        assert_eq!(p.server.as_deref(), Some("http://10.0.2.2:8080"));
        assert_eq!(p.node.as_deref(), Some("node07"));
        assert_eq!(p.mac, Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        let a = p.address.clone().unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(a.prefix, 24);
        assert_eq!(a.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(a.dns, Some(Ipv4Addr::new(10, 0, 2, 3)));
        assert!(!p.shell);
        assert!(!p.wants_shell());
    }

    #[test]
    fn empty_expansions_mean_dhcp() {
        let p = parse(b"rimage.mode=save rimage.ip= rimage.netmask= rimage.gateway= rimage.dns=")
            .unwrap();
        assert_eq!(p.address, None);
        assert_eq!(p.mode, Some(Mode::Save));
    }

    #[test]
    fn quotes_disks_and_shell() {
        let p = parse(b"rimage.node=\"node 7\" rimage.disk=vda rimage.shell=1 quiet").unwrap();
        assert_eq!(p.node.as_deref(), Some("node 7"));
        assert_eq!(p.disk, Some(PathBuf::from("/dev/vda")));
        assert!(p.shell);
        let p = parse(b"rimage.disk=/dev/nvme0n1 rimage.netmask= ").unwrap();
        assert_eq!(p.disk, Some(PathBuf::from("/dev/nvme0n1")));
        assert!(p.wants_shell(), "no mode: live");
    }

    #[test]
    fn netmasks() {
        for (m, n) in [
            ("255.255.255.0", 24),
            ("16", 16),
            ("255.255.240.0", 20),
            ("0", 0),
        ] {
            let line = format!("rimage.ip=10.0.0.1 rimage.netmask={m}");
            assert_eq!(parse(line.as_bytes()).unwrap().address.unwrap().prefix, n);
        }
        assert!(matches!(
            parse(b"rimage.ip=10.0.0.1 rimage.netmask=255.0.255.0"),
            Err(CmdlineError::BadValue {
                key: "rimage.netmask",
                ..
            })
        ));
        assert!(matches!(
            parse(b"rimage.ip=10.0.0.1 rimage.netmask=33"),
            Err(CmdlineError::BadValue { .. })
        ));
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            parse(b"rimage.mdoe=save"),
            Err(CmdlineError::UnknownKey("rimage.mdoe".into()))
        );
        assert!(matches!(
            parse(b"rimage.mode=format"),
            Err(CmdlineError::BadValue {
                key: "rimage.mode",
                ..
            })
        ));
        assert!(matches!(
            parse(b"rimage.mac=52:54:00:12:34"),
            Err(CmdlineError::BadValue {
                key: "rimage.mac",
                ..
            })
        ));
        assert!(matches!(
            parse(b"rimage.mac=52:54:00:12:34:56:78"),
            Err(CmdlineError::BadValue {
                key: "rimage.mac",
                ..
            })
        ));
        assert!(matches!(
            parse(b"rimage.server=ftp://x"),
            Err(CmdlineError::BadValue {
                key: "rimage.server",
                ..
            })
        ));
        assert!(matches!(
            parse(b"rimage.disk=../etc/passwd"),
            Err(CmdlineError::BadValue {
                key: "rimage.disk",
                ..
            })
        ));
        assert_eq!(
            parse(b"rimage.gateway=10.0.2.2"),
            Err(CmdlineError::WithoutIp("rimage.gateway"))
        );
        assert_eq!(
            parse(b"rimage.node=a rimage.node=b"),
            Err(CmdlineError::Duplicate {
                key: "rimage.node".into()
            })
        );
        assert!(parse(b"rimage.node=a rimage.node=a").is_ok());
        assert_eq!(
            parse(b"rimage.node=\"a"),
            Err(CmdlineError::UnterminatedQuote)
        );
        assert_eq!(parse(b"rimage.node=\xff"), Err(CmdlineError::NotUtf8));
        assert!(parse(b"other=\xff\xfe rimage.mode=live").is_ok());
    }

    #[test]
    fn pxelinux_bootif() {
        let p = parse(b"BOOTIF=01-52-54-00-12-34-56 rimage.mode=save").unwrap();
        assert_eq!(p.mac, Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        let p = parse(b"BOOTIF=01-52-54-00-12-34-56 rimage.mac=52:54:00:00:00:01").unwrap();
        assert_eq!(
            p.mac,
            Some(Mac([0x52, 0x54, 0, 0, 0, 1])),
            "rimage.mac wins"
        );
        assert!(matches!(
            parse(b"BOOTIF=52-54-00-12-34-56"),
            Err(CmdlineError::BadValue { key: "BOOTIF", .. })
        ));
    }

    #[test]
    fn mac_forms() {
        let m: Mac = "52-54-00-AB-cd-0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert!("52:54:00:ab:cd:+f".parse::<Mac>().is_err());
        assert!("525:4:00:ab:cd:0f".parse::<Mac>().is_err());
    }
}
