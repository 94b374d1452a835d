//! `cargo xtask fuzz`: builds the libFuzzer targets of
//! `vhost-device-video/fuzz` with cargo-fuzz on the stable toolchain and
//! runs each for a bounded time, growing a corpus kept in the cache.
//!
//! cargo-fuzz needs unstable compiler flags: `RUSTC_BOOTSTRAP=1` allows them
//! on stable. AddressSanitizer is used when the toolchain ships its runtime,
//! else the targets run with coverage instrumentation only.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cache, deps, process};

const CARGO_FUZZ_VERSION: &str = "0.13.2";
const FUZZ_DIR: &str = "vhost-device-video/fuzz";
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// A single input may run this long before libFuzzer calls it a hang.
const UNIT_TIMEOUT_SECS: u64 = 30;
/// Memory one fuzzing process may use before libFuzzer calls it a leak.
const RSS_LIMIT_MB: u64 = 3072;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error("no fuzz target matches {0:?}")]
    NoTarget(Vec<String>),
}

pub struct Options {
    /// Targets whose name contains one of these (all when empty).
    pub filters: Vec<String>,
    /// How long each target runs.
    pub seconds: u64,
}

/// What one target's run found.
struct Outcome {
    executions: Option<u64>,
    reproducer: Option<PathBuf>,
    passed: bool,
    log: PathBuf,
}

/// cargo-fuzz, installed once into the cache keyed by its version.
fn cargo_fuzz() -> Result<PathBuf, Error> {
    let root = cache::root()?.join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let binary = root.join("bin/cargo-fuzz");
    if binary.is_file() {
        return Ok(binary);
    }
    let _lock = cache::lock("cargo-fuzz")?;
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "# installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        root.display()
    );
    let mut command = Command::new("cargo");
    command
        .args(["install", "cargo-fuzz", "--locked", "-j2", "--version"])
        .arg(CARGO_FUZZ_VERSION)
        .arg("--root")
        .arg(&root);
    let log = cache::dir("logs")?.join("cargo-fuzz-install.log");
    process::run_step("installing cargo-fuzz", command, &log, BUILD_TIMEOUT)?;
    Ok(binary)
}

/// `address` when the toolchain ships the AddressSanitizer runtime.
fn sanitizer() -> &'static str {
    let sysroot = Command::new("rustc")
        .args(["--print", "target-libdir"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let has_asan = sysroot
        .and_then(|dir| fs::read_dir(dir).ok())
        .is_some_and(|entries| {
            entries.flatten().any(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with("librustc-") && name.ends_with("_rt.asan.a")
            })
        });
    if has_asan {
        "address"
    } else {
        "none"
    }
}

fn target_dir() -> PathBuf {
    cache::repo_root().join("target/fuzz")
}

fn cargo_fuzz_command(binary: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .current_dir(cache::repo_root())
        .arg("fuzz")
        .args(args)
        .arg("--fuzz-dir")
        .arg(FUZZ_DIR)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_BUILD_JOBS", "2");
    command
}

fn targets(binary: &Path, filters: &[String]) -> Result<Vec<String>, Error> {
    let listed = process::output(
        cargo_fuzz_command(binary, &["list"]),
        Duration::from_secs(120),
    )?;
    let chosen: Vec<String> = listed
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .filter(|name| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .map(str::to_owned)
        .collect();
    if chosen.is_empty() {
        return Err(Error::NoTarget(filters.to_vec()));
    }
    Ok(chosen)
}

/// The last number libFuzzer printed after `key`.
fn last_number(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|line| line.split_once(key))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn reproducer(log: &str) -> Option<PathBuf> {
    log.lines().find_map(|line| {
        line.split_once("Test unit written to ")
            .map(|(_, path)| PathBuf::from(path.trim()))
    })
}

fn run_target(binary: &Path, name: &str, seconds: u64) -> Result<Outcome, Error> {
    let corpus = cache::dir(&format!("fuzz-corpus/{name}"))?;
    let seeds = cache::repo_root().join(FUZZ_DIR).join("seeds").join(name);
    let artifacts = target_dir().join("artifacts").join(name);
    fs::create_dir_all(&artifacts).map_err(cache::io_error("cannot create", &artifacts))?;
    let logs = target_dir().join("logs");
    fs::create_dir_all(&logs).map_err(cache::io_error("cannot create", &logs))?;
    let log = logs.join(format!("{name}.log"));

    let mut command = Command::new(binary);
    command
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={UNIT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .arg(&corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    let file = File::create(&log).map_err(cache::io_error("cannot create", &log))?;
    let err = file
        .try_clone()
        .map_err(cache::io_error("cannot reopen", &log))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
    let mut group = process::Group::spawn(command, name)?;
    // Loading the corpus and the last input come on top of the fuzzing time.
    let limit = seconds + 2 * UNIT_TIMEOUT_SECS + 60;
    let status = group.wait_until(Instant::now() + Duration::from_secs(limit), limit)?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    Ok(Outcome {
        executions: last_number(&text, "stat::number_of_executed_units:"),
        reproducer: reproducer(&text),
        passed: status.success(),
        log,
    })
}

/// Builds and runs the chosen targets; true when none crashed.
pub fn run(options: &Options) -> Result<bool, Error> {
    // The targets link FFmpeg and build libFuzzer: the backend's packages.
    deps::run()?;
    let cargo_fuzz = cargo_fuzz()?;
    let sanitizer = sanitizer();
    if sanitizer == "none" {
        eprintln!("# fuzz: no AddressSanitizer runtime in this toolchain: coverage-guided only");
    }
    let names = targets(&cargo_fuzz, &options.filters)?;
    let out = target_dir();
    fs::create_dir_all(&out).map_err(cache::io_error("cannot create", &out))?;
    let build_log = out.join("build.log");
    let started = Instant::now();
    process::run_step(
        "building the fuzz targets",
        cargo_fuzz_command(
            &cargo_fuzz,
            &[
                "build",
                "--release",
                "--debug-assertions",
                "--sanitizer",
                sanitizer,
                "--target-dir",
                &out.to_string_lossy(),
            ],
        ),
        &build_log,
        BUILD_TIMEOUT,
    )?;
    eprintln!(
        "# fuzz: targets built (sanitizer: {sanitizer}) in {} s",
        started.elapsed().as_secs()
    );
    let host = host_triple().unwrap_or_else(|| "x86_64-unknown-linux-gnu".to_owned());
    let bin_dir = out.join(host).join("release");
    let mut all_passed = true;
    for name in &names {
        let outcome = run_target(&bin_dir.join(name), name, options.seconds)?;
        let executions = outcome
            .executions
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        if outcome.passed {
            println!(
                "fuzz {name}: {executions} executions in {} s, 0 crashes",
                options.seconds
            );
            continue;
        }
        all_passed = false;
        println!(
            "fuzz {name}: CRASH after {executions} executions (log: {})",
            outcome.log.display()
        );
        println!("{}", process::log_tail(&outcome.log, 40));
        match outcome.reproducer {
            Some(path) => println!(
                "fuzz {name}: reproducer: {} (rerun: {} {})",
                path.display(),
                bin_dir.join(name).display(),
                path.display()
            ),
            None => println!("fuzz {name}: no reproducer written, see the log"),
        }
    }
    Ok(all_passed)
}

fn host_triple() -> Option<String> {
    let out = Command::new("rustc").arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRASH_LOG: &str = "\
INFO: Seed: 1
#2\tINITED cov: 183 ft: 275 corp: 73/8066b exec/s: 0 rss: 94Mb
==1== ERROR: libFuzzer: deadly signal
artifact_prefix='/t/a/'; Test unit written to /t/a/crash-635d22
stat::number_of_executed_units: 429934
stat::average_exec_per_sec:     14331
";

    #[test]
    fn reads_executions_and_the_reproducer_from_a_crash_log() {
        assert_eq!(
            last_number(CRASH_LOG, "stat::number_of_executed_units:"),
            Some(429_934)
        );
        assert_eq!(
            reproducer(CRASH_LOG),
            Some(PathBuf::from("/t/a/crash-635d22"))
        );
    }

    #[test]
    fn a_clean_log_has_no_reproducer() {
        let log = "#100\tDONE   cov: 1\nstat::number_of_executed_units: 100\n";
        assert_eq!(reproducer(log), None);
        assert_eq!(
            last_number(log, "stat::number_of_executed_units:"),
            Some(100)
        );
        assert_eq!(last_number("", "stat::number_of_executed_units:"), None);
    }
}
