//! Network namespaces for capture tests: a client namespace and a pod namespace joined by a
//! veth pair, and ways to run code and servers inside either. Needs root, `ip` and
//! `iptables-restore`; without them the tests print `SKIPPED:` and pass, unless
//! `PILOTFISH_REQUIRE_NETNS=1` (set in CI) makes that a failure.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One network namespace, by name.
#[derive(Debug, Clone)]
pub struct Netns {
    /// Its name under /var/run/netns.
    pub name: String,
}

/// A client and a pod namespace joined by a veth pair on 10.77.<n>.0/24; deleted on drop.
pub struct Pair {
    /// The remote side: 10.77.<n>.1.
    pub client: Netns,
    /// The pod where the proxy and the application run: 10.77.<n>.2.
    pub pod: Netns,
    /// The client namespace's address.
    pub client_ip: Ipv4Addr,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The client namespace's IPv6 address: fd77:<n>::1.
    pub client_ip6: Ipv6Addr,
    /// The pod's IPv6 address: fd77:<n>::2.
    pub pod_ip6: Ipv6Addr,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.pod] {
            let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
        }
    }
}

fn skip(why: &str) -> Option<Pair> {
    if std::env::var("PILOTFISH_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("network namespace tests are required here but cannot run: {why}");
    }
    eprintln!("SKIPPED: network namespace test: {why}");
    None
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes the pair, or None (after a loud SKIPPED line) where it cannot be made.
pub fn pair() -> Option<Pair> {
    if !nix::unistd::geteuid().is_root() {
        return skip("not root");
    }
    for tool in ["ip", "iptables-restore", "iptables-save"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return skip(&format!("{tool} is not installed"));
        }
    }
    let n = (std::process::id() % 200 + NEXT.fetch_add(1, Ordering::Relaxed) * 7) % 250 + 1;
    let tag = format!("{}x{n}", std::process::id() % 100_000);
    let pair = Pair {
        client: Netns {
            name: format!("pfc{tag}"),
        },
        pod: Netns {
            name: format!("pfp{tag}"),
        },
        client_ip: Ipv4Addr::new(10, 77, n as u8, 1),
        pod_ip: Ipv4Addr::new(10, 77, n as u8, 2),
        client_ip6: Ipv6Addr::new(0xfd77, n as u16, 0, 0, 0, 0, 0, 1),
        pod_ip6: Ipv6Addr::new(0xfd77, n as u16, 0, 0, 0, 0, 0, 2),
    };
    let (vc, vp) = (format!("vc{tag}"), format!("vp{tag}"));
    let setup = || -> Result<(), String> {
        ip(&["netns", "add", &pair.client.name])?;
        ip(&["netns", "add", &pair.pod.name])?;
        ip(&["link", "add", &vc, "type", "veth", "peer", "name", &vp])?;
        ip(&["link", "set", &vc, "netns", &pair.client.name])?;
        ip(&["link", "set", &vp, "netns", &pair.pod.name])?;
        for (ns, dev, addr, addr6) in [
            (&pair.client.name, &vc, pair.client_ip, pair.client_ip6),
            (&pair.pod.name, &vp, pair.pod_ip, pair.pod_ip6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            let a6 = format!("{addr6}/64");
            ip(&["-n", ns, "addr", "add", &a6, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    };
    match setup() {
        Ok(()) => Some(pair),
        Err(e) => skip(&format!("cannot make network namespaces: {e}")),
    }
}

impl Netns {
    fn enter(&self) {
        let f =
            std::fs::File::open(format!("/var/run/netns/{}", self.name)).expect("namespace exists");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }

    /// Moves the calling thread into the namespace and runs `fut` there on a runtime of its
    /// own.
    fn run_inside<Fut: std::future::Future>(&self, fut: impl FnOnce() -> Fut) -> Fut::Output {
        self.enter();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut())
    }

    /// Runs `f` to completion on a thread inside the namespace (with its own runtime); child
    /// processes it starts live in the namespace too.
    pub fn block_on<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future,
        Fut::Output: Send + 'static,
    {
        let me = self.clone();
        std::thread::spawn(move || me.run_inside(f))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Starts servers inside the namespace (`start` spawns them on the runtime it runs in);
    /// they serve until the returned guard is dropped.
    pub fn serve<F, Fut>(&self, start: F) -> Serving
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let me = self.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            me.run_inside(|| async move {
                start().await;
                let _ = ready_tx.send(());
                let _ = stop_rx.await;
            })
        });
        ready_rx.recv().expect("servers started");
        Serving(Some(stop_tx))
    }

    /// Runs a command inside the namespace; panics with its output when it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec runs");
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Servers running in a namespace until dropped.
pub struct Serving(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}
