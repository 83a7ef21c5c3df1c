//! A small network of namespaces for fleet tests and the fleet benchmark: a bridge in the root
//! namespace, a head namespace and N node namespaces, each joined to the bridge by a veth pair
//! (`eth0` inside, with an address on one /24). Everything is removed on drop.

use std::process::Command;

/// One namespace on the bridge.
pub struct Ns {
    /// The namespace name (for `ip netns exec`).
    pub name: String,
    /// Its address on the bridge's subnet.
    pub addr: String,
    /// The veth end left in the root namespace (enslaved to the bridge).
    pub host_if: String,
}

impl Ns {
    /// A command run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Bytes sent by the namespace's `eth0` so far (its interface counter).
    pub fn tx_bytes(&self) -> u64 {
        let out = ip(&[
            "netns",
            "exec",
            &self.name,
            "cat",
            "/sys/class/net/eth0/statistics/tx_bytes",
        ])
        .unwrap_or_default();
        out.trim().parse().unwrap_or(0)
    }
}

/// A head and nodes on one bridge.
pub struct Fleet {
    bridge: String,
    /// The head node's namespace (10.x.y.1).
    pub head: Ns,
    /// The nodes' namespaces (10.x.y.11, .12, ...).
    pub nodes: Vec<Ns>,
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why a fleet cannot be built here, if it cannot (for a skip message).
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces need it)".into());
    }
    if !super::have("ip") {
        return Some("missing `ip` (iproute2)".into());
    }
    None
}

impl Fleet {
    /// Builds a head and `nodes` nodes; `tag` keeps names unique (at most 4 characters).
    ///
    /// # Errors
    /// The failing `ip` command.
    pub fn new(tag: &str, nodes: usize) -> Result<Self, String> {
        let bridge = format!("rf{tag}br");
        let subnet = 100 + (std::process::id() % 100);
        // Leftovers of a killed run with the same tag.
        let _ = ip(&["link", "del", &bridge]);
        let mut fleet = Self {
            bridge: bridge.clone(),
            head: Ns {
                name: String::new(),
                addr: String::new(),
                host_if: String::new(),
            },
            nodes: Vec::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        // Flood multicast to every port: no querier runs here, so snooping would drop it.
        ip(&[
            "link",
            "set",
            &bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        fleet.head = join(&bridge, &format!("rf{tag}h"), &format!("10.{subnet}.7.1"))?;
        for i in 0..nodes {
            let ns = join(
                &bridge,
                &format!("rf{tag}n{i}"),
                &format!("10.{subnet}.7.{}", 11 + i),
            )?;
            fleet.nodes.push(ns);
        }
        Ok(fleet)
    }

    /// Shapes what `ns` sends to `rate` (e.g. "200mbit") with a token bucket.
    ///
    /// # Errors
    /// The failing `tc` command.
    pub fn shape(&self, ns: &Ns, rate: &str) -> Result<(), String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "tc", "qdisc", "replace", "dev"])
            .args(["eth0", "root", "tbf", "rate", rate, "burst", "256kbit"])
            .args(["latency", "50ms"])
            .output()
            .map_err(|e| format!("tc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tc on {}: {}",
                ns.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }
}

/// A namespace `name` with `eth0` at `addr`/24, its peer on `bridge`.
fn join(bridge: &str, name: &str, addr: &str) -> Result<Ns, String> {
    let _ = ip(&["netns", "del", name]);
    ip(&["netns", "add", name])?;
    let inner = format!("{name}i");
    let host_if = format!("{name}o");
    let _ = ip(&["link", "del", &host_if]);
    ip(&[
        "link", "add", &inner, "type", "veth", "peer", "name", &host_if,
    ])?;
    ip(&["link", "set", &inner, "netns", name])?;
    ip(&["-n", name, "link", "set", &inner, "name", "eth0"])?;
    ip(&[
        "-n",
        name,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", name, "link", "set", "eth0", "up"])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    // Multicast leaves through eth0 (there is no default route).
    ip(&["-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
    ip(&["link", "set", &host_if, "master", bridge])?;
    ip(&["link", "set", &host_if, "up"])?;
    Ok(Ns {
        name: name.to_string(),
        addr: addr.to_string(),
        host_if,
    })
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.head)) {
            if !ns.name.is_empty() {
                let _ = ip(&["netns", "del", &ns.name]);
                let _ = ip(&["link", "del", &ns.host_if]);
            }
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
