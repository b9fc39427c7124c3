//! A real `witnessd` for one workload, on a temporary socket and database.

use super::*;

/// A `witnessd` process on a temporary folder.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) socket: PathBuf,
    pub(crate) _dir: tempfile::TempDir,
}

impl Daemon {
    pub(crate) fn start(binary: &Path, extra: &[String]) -> anyhow::Result<Daemon> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("witness.sock");
        let child = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .arg("--db")
            .arg(dir.path().join("witness.db"))
            // Quiet by default; a --log-level among the extra flags replaces this one.
            .args(
                ["--log-level", "warn"]
                    .iter()
                    .filter(|_| !extra.iter().any(|arg| arg.starts_with("--log-level"))),
            )
            .args(extra)
            .spawn()?;
        witness_bench::wait_until_serving(&socket)?;
        Ok(Daemon {
            child,
            socket,
            _dir: dir,
        })
    }

    pub(crate) fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
            f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
        });
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill with a valid pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "witnessd exited with {status:?}");
        Ok(())
    }
}

/// The release `witnessd` beside this binary, built first if need be.
pub(crate) fn witnessd_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let profile_dir = me.parent().context("binary folder")?;
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => "release".to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "witness-daemon",
            "--bin",
            "witnessd",
            "--profile",
            &profile,
        ])
        .arg("--target-dir")
        .arg(profile_dir.parent().context("target folder")?)
        .status()?;
    anyhow::ensure!(status.success(), "building witnessd");
    Ok(profile_dir.join("witnessd"))
}
