//! The external tools the tests use, installed by `scripts/setup.sh` into `.tools/`.

use std::path::{Path, PathBuf};

/// Where `scripts/setup.sh` installs tools (`NODEWRIGHT_TOOLS` overrides).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("NODEWRIGHT_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join(".tools"))
}

/// A program from the tools' Python venv (moto_server, kubernetes-validate, kubectl).
pub fn venv_bin(name: &str) -> PathBuf {
    let path = tools_dir().join("venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it installs the test tools)",
        path.display()
    );
    path
}

/// A binary of this workspace, from the same target directory as the running test.
pub fn workspace_bin(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(format!(
        "NODEWRIGHT_BIN_{}",
        name.to_uppercase().replace('-', "_")
    )) {
        return PathBuf::from(path);
    }
    // A test executable is target/<profile>/deps/<test>-<hash>; a harness binary (the
    // demo, the benchmarks) is target/<profile>/<name>.
    let exe = std::env::current_exe().expect("the process knows its path");
    let parent = exe.parent().expect("an executable lives in a directory");
    let profile_dir = if parent.ends_with("deps") {
        parent.parent().expect("deps/ has a parent")
    } else {
        parent
    };
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    assert_fresh(name, &path);
    path
}

/// `cargo test -p nodewright-e2e` does not rebuild other packages' binaries: refuse to
/// test a binary older than the sources it is built from.
fn assert_fresh(name: &str, binary: &Path) {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok();
    // The shim does not depend on the agent; the agent uses the shim's library.
    let sources: &[&str] = if name == "controller-shim" {
        &["controller-shim/src"]
    } else {
        &["agent/src", "controller-shim/src"]
    };
    let newest = sources
        .iter()
        .filter_map(|dir| newest_mtime(&crate::workspace().join(dir)))
        .max();
    if let (Some(built), Some(newest)) = (built, newest) {
        assert!(
            built >= newest,
            "{} is older than its sources: run cargo build --workspace --bins first",
            binary.display()
        );
    }
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// Whether a command exists on PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

/// Puts a helper process in its own process group and has the kernel kill it if the
/// thread that started it dies (a test that panics, or is killed, leaves nothing behind).
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// Kills a process started with [`die_with_parent`] and everything in its group.
pub fn kill_group(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// Whether `tool` is installed. If not, prints that the calling test is skipped, or
/// fails when `NODEWRIGHT_REQUIRE_ALL` says every test must run (scripts/test.sh, CI).
pub fn installed_or_skip(tool: &str) -> bool {
    if on_path(tool) {
        return true;
    }
    assert!(
        std::env::var_os("NODEWRIGHT_REQUIRE_ALL").is_none(),
        "{tool} is required here (NODEWRIGHT_REQUIRE_ALL) but missing: run scripts/setup.sh"
    );
    eprintln!("skipped: {tool} is missing (scripts/setup.sh installs it)");
    false
}
