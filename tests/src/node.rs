//! A booted node: the baked image started with `systemd-nspawn -b`, as EC2 starts an
//! instance from its AMI. systemd is PID 1, `nodewright.service` runs from the image at
//! every boot, and IMDS answers at 169.254.169.254 with this instance's identity and user
//! data. The node writes to its own overlay above the image's layers, so a reboot keeps
//! its disk and another node starts from the same clean image.
//!
//! Processes: `unshare --pid --fork --kill-child` runs nspawn as PID 1 of a fresh PID
//! namespace, so when it dies for any reason (stop, test failure, the test process
//! killed) the kernel kills every process of the node with it. The node's mounts, its
//! namespace and its directory go on drop; [`crate::janitor`] reclaims those of a test
//! process that was killed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::agent::Run;
use crate::image::Image;
use crate::imds::{FakeImds, Instance};
use crate::netns::NetNs;
use crate::network::Network;
use crate::overlay::Overlay;

/// How long a node may take to boot, power off, or reach a unit state the test waits for.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A node to launch.
#[derive(Debug, Clone)]
pub struct Launch {
    pub instance: Instance,
    /// EC2 user data as IMDS serves it.
    pub user_data: Vec<u8>,
    /// `/etc/default/nodewright` on the node: the boot unit's environment (the AWS
    /// endpoint inside the test network, deadlines, log filter).
    pub environment: BTreeMap<String, String>,
}

pub struct Node {
    name: String,
    dir: PathBuf,
    root: Option<Overlay>,
    netns: Option<NetNs>,
    imds: FakeImds,
    machine: Option<Machine>,
    boots: u32,
    /// Block devices attached to the instance (EBS volumes).
    devices: DeviceBay,
    _image: Arc<Image>,
}

/// The instance's attached block devices, shared with whoever attaches volumes while
/// the node runs (the fidelity layer's listener hears the emulator attach one).
#[derive(Clone, Default)]
pub struct DeviceBay {
    inner: Arc<Mutex<Bay>>,
}

#[derive(Default)]
struct Bay {
    /// By their name in the node (`nvme1n1`).
    devices: BTreeMap<String, AttachedDevice>,
    /// The running machine's PID 1, to enter it; `None` while it is down.
    init: Option<i32>,
    node: String,
}

/// A machine block device presented in the node, as EC2 presents an EBS volume.
#[derive(Debug, Clone)]
struct AttachedDevice {
    /// On the machine (a loop device).
    source: PathBuf,
    /// Symlinks to it in the node, as udev makes them (`/dev/disk/by-id/...`).
    links: Vec<String>,
}

/// A running boot of the node.
struct Machine {
    /// `unshare`, whose only child is nspawn.
    child: Child,
    nspawn: i32,
    /// The container's PID 1 (systemd), as the machine sees it.
    init: i32,
    started: SystemTime,
}

/// What `systemctl show` says about a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStatus {
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
    pub n_restarts: u32,
    pub exec_main_status: i32,
}

/// One journal entry.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub boot_id: String,
    /// Microseconds since the epoch.
    pub realtime_us: u64,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

impl Node {
    /// Prepares the node's disk and network and boots it.
    pub fn launch(name: &str, image: Arc<Image>, network: &Network, launch: Launch) -> Self {
        Self::launch_with_bay(name, image, network, launch, DeviceBay::default())
    }

    /// Like [`Node::launch`], with device slots the caller already shares (with a
    /// listener that attaches volumes to the instance as soon as it asks).
    pub fn launch_with_bay(
        name: &str,
        image: Arc<Image>,
        network: &Network,
        launch: Launch,
        devices: DeviceBay,
    ) -> Self {
        crate::janitor::sweep_once();
        let dir = crate::image::cache_dir()
            .join("nodes")
            .join(format!("{}-{name}", crate::janitor::owner_tag()));
        let root = Overlay::mount(image.layers(), &dir.join("upper"), &dir.join("root"))
            .unwrap_or_else(|e| panic!("preparing node {name}'s disk: {e}"));
        let netns = NetNs::create(name);
        network.attach(&netns, launch.instance.private_ip);
        // The link-local metadata address, as on every EC2 instance.
        netns.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
        let imds = FakeImds::start_in(
            &netns,
            SocketAddr::from((Ipv4Addr::new(169, 254, 169, 254), 80)),
            launch.instance.clone(),
            &launch.user_data,
        )
        .unwrap_or_else(|e| panic!("starting node {name}'s IMDS: {e}"));
        let mut node = Self {
            name: name.to_owned(),
            dir,
            root: Some(root),
            netns: Some(netns),
            imds,
            machine: None,
            boots: 0,
            devices,
            _image: image,
        };
        node.devices.lock().node = name.to_owned();
        node.write_environment(&launch.environment);
        node.write_resolver();
        node.boot();
        node
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn imds(&self) -> &FakeImds {
        &self.imds
    }

    pub fn instance(&self) -> Instance {
        self.imds.instance()
    }

    /// A path on the node's disk, seen from the harness.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.dir
            .join("root")
            .join(node_path.trim_start_matches('/'))
    }

    /// The node's directory on the machine (its disk's upper layer, root mount, console).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's network namespace.
    pub fn netns_name(&self) -> Option<&str> {
        self.netns.as_ref().map(NetNs::name)
    }

    /// The running machine's processes: unshare, nspawn, and the container's PID 1.
    pub fn pids(&self) -> Option<[i32; 3]> {
        self.machine
            .as_ref()
            .map(|m| [m.child.id() as i32, m.nspawn, m.init])
    }

    /// How many times the node has booted.
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// When the current boot began (the "instance start").
    pub fn started(&self) -> Option<SystemTime> {
        self.machine.as_ref().map(|m| m.started)
    }

    fn write_environment(&self, environment: &BTreeMap<String, String>) {
        let mut text = String::from("# Written by the test harness: this node's site settings.\n");
        for (key, value) in environment {
            text.push_str(&format!("{key}={value}\n"));
        }
        let path = self.path("/etc/default/nodewright");
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating /etc/default");
        std::fs::write(&path, text).expect("writing /etc/default/nodewright");
    }

    /// `/etc/resolv.conf` as EC2's DHCP options give it: the VPC's resolver
    /// ([`crate::vpc_dns`]) and the region's search domain.
    fn write_resolver(&self) {
        let path = self.path("/etc/resolv.conf");
        let _ = std::fs::remove_file(&path);
        std::fs::write(
            &path,
            format!(
                "# Written by the test harness, as EC2's DHCP options would.\n\
                 nameserver {}\nsearch ec2.internal\noptions timeout:1 attempts:3\n",
                crate::vpc_dns::RESOLVER_ADDR.ip()
            ),
        )
        .expect("writing /etc/resolv.conf");
    }

    /// Starts the machine (power on).
    pub fn boot(&mut self) {
        assert!(
            self.machine.is_none(),
            "node {} is already running",
            self.name
        );
        let netns = self.netns.as_ref().expect("the node has a network");
        let console = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("console.log"))
            .expect("opening the console log");
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--fork", "--kill-child=SIGKILL", "--"])
            .args(["systemd-nspawn", "--quiet", "--boot"])
            .args(["--register=no", "--keep-unit", "--link-journal=no"])
            .args(["--console=read-only", "--resolv-conf=off"])
            .arg(format!("--directory={}", self.dir.join("root").display()))
            .arg(format!("--hostname={}", self.instance().hostname()))
            .arg(format!(
                "--network-namespace-path={}",
                netns.path().display()
            ))
            // The node administers its own network (sysctls, CNI later), as any host
            // does; nspawn grants that only with a network it made itself.
            .arg("--capability=CAP_NET_ADMIN")
            // /proc/sys/net is the node's own (its network namespace): let it set those
            // sysctls. Everything else in /proc/sys is the machine's and stays read-only.
            .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
            // With that, nspawn gives the node an empty /sys; the agent learns which
            // kernel modules are loaded from /sys/module, so show it the kernel's (read
            // only: a node cannot load modules into the machine's kernel).
            .arg("--bind-ro=/sys/module")
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("a console handle"))
            .stderr(console);
        // Volumes attached while the machine was down are there when it boots, with
        // their udev-style links made by systemd-tmpfiles before any service starts.
        for (name, device) in &self.devices.lock().devices {
            command.arg(format!("--bind={}:/dev/{name}", device.source.display()));
        }
        self.write_device_links();
        crate::tools::die_with_parent(&mut command);
        ensure_nspawn_runtime_dir();
        let started = SystemTime::now();
        let child = command.spawn().expect("unshare and systemd-nspawn start");
        let (nspawn, init) = find_init(child.id() as i32).unwrap_or_else(|| {
            panic!(
                "node {}: systemd did not start in the container (see {})",
                self.name,
                self.dir.join("console.log").display()
            )
        });
        self.machine = Some(Machine {
            child,
            nspawn,
            init,
            started,
        });
        self.devices.lock().init = Some(init);
        self.boots += 1;
    }

    /// Attaches a block device of the machine (a loop device standing in for an EBS
    /// volume) to the instance: it appears in the running node as `/dev/<name>` with
    /// `links` to it (e.g. `/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol…`), as
    /// udev makes them on EC2, and it stays attached across reboots.
    pub fn attach_block_device(&self, source: &Path, name: &str, links: &[&str]) {
        self.devices.attach(source, name, links);
    }

    /// Detaches a device attached with [`Node::attach_block_device`]: it and its links
    /// disappear from the node, as when EC2 detaches a volume (a mount of it stays
    /// until unmounted, and fails on I/O).
    pub fn detach_block_device(&self, name: &str) {
        self.devices.detach(name);
    }

    /// The udev-style links of attached devices, as a tmpfiles.d rule in the node.
    fn write_device_links(&self) {
        let path = self.path("/etc/tmpfiles.d/nodewright-harness-devices.conf");
        let bay = self.devices.lock();
        if bay.devices.is_empty() {
            let _ = std::fs::remove_file(&path);
            return;
        }
        let mut text = String::from("# Written by the test harness: links to attached volumes.\n");
        for (name, device) in &bay.devices {
            for link in &device.links {
                text.push_str(&format!("L+ {link} - - - - /dev/{name}\n"));
            }
        }
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&path, text).expect("writing the device links");
    }

    /// Powers the node off in order (systemd stops its units) and waits for it.
    pub fn shutdown(&mut self) {
        let Some(mut machine) = self.machine.take() else {
            return;
        };
        self.devices.lock().init = None;
        // nspawn turns SIGTERM into an orderly shutdown of the container.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(machine.nspawn),
            nix::sys::signal::Signal::SIGTERM,
        );
        if wait_exit(&mut machine.child, BOOT_TIMEOUT).is_none() {
            crate::tools::kill_group(&mut machine.child);
            panic!(
                "node {} did not power off within {BOOT_TIMEOUT:?}",
                self.name
            );
        }
    }

    /// Reboots from inside (`systemctl reboot`), as an operator or EC2 would, and boots
    /// again once the machine is down.
    pub fn reboot(&mut self) {
        let _ = self.exec(&["systemctl", "reboot"]);
        let mut machine = self.machine.take().expect("the node is running");
        self.devices.lock().init = None;
        let status = wait_exit(&mut machine.child, BOOT_TIMEOUT);
        let Some(status) = status else {
            crate::tools::kill_group(&mut machine.child);
            panic!("node {} did not go down for the reboot", self.name);
        };
        // nspawn exits with 133 when the container asked for a reboot.
        assert_eq!(
            status.code(),
            Some(133),
            "node {}: nspawn ended with {status} instead of a reboot",
            self.name
        );
        self.boot();
    }

    /// Runs a command inside the running node (all its namespaces), with a clean
    /// environment.
    pub fn exec(&self, args: &[&str]) -> Output {
        let machine = self.machine.as_ref().expect("the node is running");
        exec_in(machine.init, &self.name, args)
    }

    /// `nodewright ARGS` on the node, as an operator would run it.
    pub fn nodewright(&self, args: &[&str]) -> Run {
        let mut full = vec!["nodewright"];
        full.extend_from_slice(args);
        Run::from_output(self.exec(&full))
    }

    /// The unit's state, or `None` while systemd does not answer yet.
    pub fn unit(&self, unit: &str) -> Option<UnitStatus> {
        let output = self.exec(&[
            "systemctl",
            "show",
            unit,
            "--property=ActiveState,SubState,Result,NRestarts,ExecMainStatus",
        ]);
        if !output.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_default()
                .to_owned()
        };
        Some(UnitStatus {
            active_state: value("ActiveState"),
            sub_state: value("SubState"),
            result: value("Result"),
            n_restarts: value("NRestarts").parse().unwrap_or(0),
            exec_main_status: value("ExecMainStatus").parse().unwrap_or(-1),
        })
    }

    /// Waits until `check` says yes about `unit`, or fails with the unit's journal.
    pub fn wait_for_unit(
        &self,
        unit: &str,
        what: &str,
        check: impl Fn(&UnitStatus) -> bool,
    ) -> UnitStatus {
        self.wait_for_unit_within(unit, what, BOOT_TIMEOUT, check)
    }

    pub fn wait_for_unit_within(
        &self,
        unit: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&UnitStatus) -> bool,
    ) -> UnitStatus {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(status) = self.unit(unit) {
                if check(&status) {
                    return status;
                }
                last = Some(status);
            }
            if Instant::now() > deadline {
                panic!(
                    "node {}: {unit} never became {what} within {timeout:?}; last: {last:?}\n--- journal\n{}",
                    self.name,
                    self.journal_text(unit)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until nodewright.service has finished a successful run in this boot.
    pub fn wait_converged(&self) -> UnitStatus {
        self.wait_for_unit("nodewright.service", "active after a successful run", |s| {
            s.active_state == "active" && s.result == "success"
        })
    }

    /// The journal of one unit (all boots, oldest first), read from the node's disk
    /// with the machine's own journalctl.
    pub fn journal(&self, unit: &str) -> Vec<JournalEntry> {
        self.journal_matching(&["--unit", unit])
    }

    /// Journal entries selected by `journalctl` arguments (`--boot ID`, `FIELD=value`).
    pub fn journal_matching(&self, args: &[&str]) -> Vec<JournalEntry> {
        let output = Command::new("journalctl")
            .arg(format!(
                "--directory={}",
                self.path("/var/log/journal").display()
            ))
            .args(["--output=json", "--no-pager"])
            .args(args)
            .output()
            .expect("running journalctl");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|value| {
                let text = |key: &str| match &value[key] {
                    serde_json::Value::String(s) => s.clone(),
                    // journald gives non-UTF-8 fields as byte arrays.
                    serde_json::Value::Array(bytes) => String::from_utf8_lossy(
                        &bytes
                            .iter()
                            .filter_map(|b| b.as_u64().map(|b| b as u8))
                            .collect::<Vec<_>>(),
                    )
                    .into_owned(),
                    _ => String::new(),
                };
                let fields = value
                    .as_object()
                    .map(|o| o.keys().map(|k| (k.clone(), text(k))).collect())
                    .unwrap_or_default();
                JournalEntry {
                    boot_id: text("_BOOT_ID"),
                    realtime_us: text("__REALTIME_TIMESTAMP").parse().unwrap_or(0),
                    message: text("MESSAGE"),
                    fields,
                }
            })
            .collect()
    }

    /// The unit's journal as `journalctl` prints it, for failure messages and checks of
    /// what a failed run said. Beyond `--unit`, it takes the lines whose syslog
    /// identifier is the unit's name: journald attributes a line to a unit by reading
    /// the sender's cgroup, and a run that fails within milliseconds has often exited
    /// before journald gets to its lines, which then carry no `_SYSTEMD_UNIT`.
    pub fn journal_text(&self, unit: &str) -> String {
        let identifier = unit.strip_suffix(".service").unwrap_or(unit);
        let output = Command::new("journalctl")
            .arg(format!(
                "--directory={}",
                self.path("/var/log/journal").display()
            ))
            .args(["--output=short-precise", "--no-pager"])
            .args([
                format!("_SYSTEMD_UNIT={unit}"),
                "+".to_owned(),
                format!("UNIT={unit}"),
                "_PID=1".to_owned(),
                "+".to_owned(),
                format!("SYSLOG_IDENTIFIER={identifier}"),
            ])
            .output()
            .expect("running journalctl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The state nodewright recorded on the node, if any.
    pub fn state(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.path("/var/lib/nodewright/state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn teardown(&mut self) {
        if let Some(mut machine) = self.machine.take() {
            crate::tools::kill_group(&mut machine.child);
            // nspawn is PID 1 of its namespace: it dies only after the kernel has
            // killed everything in the node, which takes a moment.
            wait_gone(&[machine.nspawn, machine.init], Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprintln!(
                "--- node {}: journal of nodewright.service\n{}",
                self.name,
                self.journal_text("nodewright.service")
            );
        }
        // The overlay first, then the namespace (its IMDS socket closes with `imds`).
        drop(self.root.take());
        drop(self.netns.take());
        crate::janitor::reclaim(&self.dir);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Finds nspawn (unshare's child) and the container's PID 1 (nspawn's child that is PID
/// 1 of its own namespace), waiting for them to appear.
fn find_init(unshare: i32) -> Option<(i32, i32)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(nspawn) = children(unshare).into_iter().next() {
            for child in children(nspawn) {
                if ns_pids(child).is_some_and(|pids| pids.len() == 3 && pids[2] == 1) {
                    return Some((nspawn, child));
                }
            }
        }
        if !Path::new(&format!("/proc/{unshare}")).exists() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The process's pid in each namespace, outermost first (`NSpid:` in its status).
fn ns_pids(pid: i32) -> Option<Vec<i32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect(),
    )
}

/// Runs a shell command on `node` and returns its stdout, trimmed; panics with its
/// stderr on a non-zero exit.
pub fn sh(node: &Node, command: &str) -> String {
    let output = node.exec(&["/bin/sh", "-c", command]);
    assert!(
        output.status.success(),
        "{command}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs a command inside the node whose PID 1 is `init` (all its namespaces), with a
/// clean environment.
fn exec_in(init: i32, node: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .args(["--target", &init.to_string(), "--all", "--"])
        .args([
            "/usr/bin/env",
            "-i",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("nsenter into node {node}: {e}"))
}

impl DeviceBay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Bay> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// See [`Node::attach_block_device`].
    pub fn attach(&self, source: &Path, name: &str, links: &[&str]) {
        let device = AttachedDevice {
            source: source.to_owned(),
            links: links.iter().map(|l| (*l).to_owned()).collect(),
        };
        let mut bay = self.lock();
        if let Some(init) = bay.init {
            let stat = nix::sys::stat::stat(source)
                .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
            let (major, minor) = (
                nix::sys::stat::major(stat.st_rdev),
                nix::sys::stat::minor(stat.st_rdev),
            );
            let mut script = format!("mknod /dev/{name} b {major} {minor}");
            for link in &device.links {
                script.push_str(&format!(
                    " && mkdir -p \"$(dirname {link})\" && ln -sfn /dev/{name} {link}"
                ));
            }
            let output = exec_in(init, &bay.node, &["/bin/sh", "-c", &script]);
            assert!(
                output.status.success(),
                "attaching {} as /dev/{name}: {}",
                source.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        bay.devices.insert(name.to_owned(), device);
    }

    /// See [`Node::detach_block_device`].
    pub fn detach(&self, name: &str) {
        let mut bay = self.lock();
        let Some(device) = bay.devices.remove(name) else {
            return;
        };
        if let Some(init) = bay.init {
            let mut paths = vec![format!("/dev/{name}")];
            paths.extend(device.links);
            let mut args = vec!["rm", "-f"];
            args.extend(paths.iter().map(String::as_str));
            exec_in(init, &bay.node, &args);
        }
    }

    /// The names of the attached devices (`nvme1n1`...).
    pub fn names(&self) -> Vec<String> {
        self.lock().devices.keys().cloned().collect()
    }
}

/// Waits until none of `pids` runs any more (gone, or a zombie left to its parent).
fn wait_gone(pids: &[i32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|pid| is_running(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Without systemd on the machine, nspawn needs a tmpfs on /run/systemd/nspawn or it
/// hangs at exit (HARNESS.md). Mounted once, under a lock: test processes race here.
fn ensure_nspawn_runtime_dir() {
    let dir = Path::new("/run/systemd/nspawn");
    let is_tmpfs = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/run/systemd/nspawn"))
    };
    if is_tmpfs() {
        return;
    }
    std::fs::create_dir_all(dir).expect("creating /run/systemd/nspawn");
    let lock = std::fs::File::create("/run/systemd/.nodewright-nspawn.lock")
        .expect("creating the nspawn lock");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("locking");
    if !is_tmpfs() {
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("mode=0755"),
        )
        .expect("mounting a tmpfs on /run/systemd/nspawn");
    }
}
