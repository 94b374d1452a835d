//! `cargo xtask test`: every check the project has, in order, continuing
//! past failures so one run reports all of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kernel::{self, Flavor};
use crate::{cache, deps, e2e, fuzz, imx8mp, junit, kmod, process, qemu, vm};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    E2e(#[from] e2e::Error),
    #[error(transparent)]
    Junit(#[from] junit::Error),
    #[error("interrupted")]
    Interrupted,
}

const CARGO_TIMEOUT: Duration = Duration::from_secs(3600);
const CHECKPATCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Fuzzing time per target in the suite; `cargo xtask fuzz` runs longer.
const SHORT_FUZZ_SECONDS: u64 = 20;

struct Report {
    failed: Vec<String>,
    /// Every step, for a JUnit report.
    steps: Vec<junit::Case>,
    /// When the previous step was reported: a step's time is what passed
    /// since (steps built together share the first one's time).
    last: Instant,
}

impl Report {
    fn new() -> Self {
        Self {
            failed: Vec::new(),
            steps: Vec::new(),
            last: Instant::now(),
        }
    }

    fn step(&mut self, name: &str, result: Result<(), String>) -> Result<(), Error> {
        if process::interrupted() {
            return Err(Error::Interrupted);
        }
        let outcome = match result {
            Ok(()) => {
                eprintln!("# step ok: {name}");
                junit::Outcome::Passed
            }
            Err(reason) => {
                eprintln!("# step FAILED: {name}: {reason}");
                self.failed.push(format!("{name}: {reason}"));
                junit::Outcome::Failed {
                    message: reason.lines().next().unwrap_or_default().to_string(),
                    detail: reason,
                }
            }
        };
        self.steps.push(junit::Case {
            classname: "steps".to_string(),
            name: name.to_string(),
            time: self.last.elapsed(),
            outcome,
        });
        self.last = Instant::now();
        Ok(())
    }
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("cargo");
    command.current_dir(cache::repo_root()).args(args);
    process::run_visible(command, CARGO_TIMEOUT).map_err(|e| e.to_string())
}

/// Files git tracks or would track (untracked, not ignored) matching
/// `pathspecs`, as paths relative to the checkout, sorted, without repeats.
fn git_listed<S: AsRef<std::ffi::OsStr>>(pathspecs: &[S]) -> Vec<String> {
    let mut command = Command::new("git");
    command
        .current_dir(cache::repo_root())
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
        ])
        .args(pathspecs);
    let listed = process::output(command, Duration::from_secs(60)).unwrap_or_default();
    let mut files: Vec<String> = listed
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// C sources of a module directory: files git tracks or would track, so
/// build products (`*.mod.c`, ignored extracted sources) are left out.
fn c_sources(dir: &str) -> Vec<PathBuf> {
    let root = cache::repo_root();
    git_listed(&[format!("{dir}/*.c"), format!("{dir}/*.h")])
        .iter()
        .filter(|line| {
            !line
                .trim_start_matches(dir)
                .trim_start_matches('/')
                .contains('/')
        })
        .map(|line| root.join(line))
        .filter(|path| path.is_file())
        .collect()
}

/// The tree's shell scripts: `*.sh` and the files whose `#!` line runs a
/// shell, among those git tracks or would track under `dirs`.
fn shell_scripts(dirs: &[&str]) -> Vec<PathBuf> {
    let root = cache::repo_root();
    git_listed(dirs)
        .iter()
        .map(|line| root.join(line))
        .filter(|path| path.is_file())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sh") || runs_a_shell(path))
        .collect()
}

/// Whether a file starts with a `#!` line naming a shell.
fn runs_a_shell(path: &std::path::Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut first = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(file), &mut first);
    first.starts_with("#!")
        && first
            .split(|c: char| c == '/' || c.is_whitespace())
            .any(|word| matches!(word, "sh" | "bash" | "dash"))
}

/// shellcheck on every shell script of the tests, the guest images and CI
/// (also `cargo xtask shellcheck`).
pub fn shellcheck() -> Result<(), String> {
    let scripts = shell_scripts(&["tests", "images", ".ci"]);
    if scripts.is_empty() {
        return Err("no shell scripts found under tests/, images/, .ci/".to_string());
    }
    let mut command = Command::new("shellcheck");
    command.arg("--format=gcc").args(&scripts);
    let log = cache::repo_root().join("target/shellcheck.log");
    process::run_logged(command, &log, CHECKPATCH_TIMEOUT).map_err(|e| e.to_string())
}

fn checkpatch(dir: &str) -> Result<(), String> {
    let files = c_sources(dir);
    if files.is_empty() {
        return Ok(());
    }
    let source = kernel::source_tree().map_err(|e| e.to_string())?;
    let mut command = Command::new("perl");
    command
        .arg(source.join("scripts/checkpatch.pl"))
        .args(["--strict", "--no-tree", "--terse", "--show-types", "-f"])
        .args(&files);
    let log = cache::repo_root().join(format!("target/checkpatch-{}.log", dir.replace('/', "-")));
    process::run_logged(command, &log, CHECKPATCH_TIMEOUT).map_err(|e| e.to_string())
}

/// The kernel's `checkpatch.pl --strict` on patch files (`git format-patch`
/// form), as upstream will run it on them.
fn checkpatch_patches(dir: &str) -> Result<(), String> {
    let root = cache::repo_root();
    let mut patches: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
        .map_err(|e| format!("cannot list {dir}: {e}"))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "patch"))
        .collect();
    patches.sort();
    let source = kernel::source_tree().map_err(|e| e.to_string())?;
    let mut command = Command::new("perl");
    // Run outside the checkout: in a git tree checkpatch checks a tracked
    // file as a source file, not as the patch it holds.
    command
        .current_dir(&source)
        .arg(source.join("scripts/checkpatch.pl"))
        .args(["--strict", "--no-tree", "--terse", "--show-types"])
        .args(&patches);
    let log = root.join(format!("target/checkpatch-{}.log", dir.replace('/', "-")));
    process::run_logged(command, &log, CHECKPATCH_TIMEOUT).map_err(|e| e.to_string())
}

/// The kernels the guest part runs on: the harness's two, or only the
/// kernel tree `--kernel PATH` names when it is built for `arch`.
fn guest_kernels(tree: Option<Flavor>, arch: kernel::Arch) -> Vec<Flavor> {
    match tree {
        Some(Flavor::Tree(tree)) if tree.arch == arch => vec![Flavor::Tree(tree)],
        Some(_) => Vec::new(),
        None => vec![Flavor::DebianRt, Flavor::DebugRt],
    }
}

/// Every dw100 variant built with `W=1` for the arm64 kernels.
fn dw100_builds(tree: Option<Flavor>) -> Vec<(String, Result<(), String>)> {
    let mut steps = Vec::new();
    for flavor in guest_kernels(tree, kernel::Arch::Arm64) {
        let kernel = imx8mp::kernel(flavor).map_err(|e| e.to_string());
        for variant in imx8mp::Dw100Variant::ALL {
            let result = kernel.as_ref().map_err(Clone::clone).and_then(|k| {
                imx8mp::dw100_module(k, variant)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            steps.push((
                format!("dw100 ({variant}) W=1 build for arm64 {flavor}"),
                result,
            ));
        }
    }
    steps
}

fn short_fuzz() -> Result<(), String> {
    let options = fuzz::Options {
        filters: Vec::new(),
        seconds: SHORT_FUZZ_SECONDS,
    };
    match fuzz::run(&options) {
        Ok(true) => Ok(()),
        Ok(false) => Err("a fuzz target crashed (reproducer above)".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn module_builds(name: &str, tree: Option<Flavor>) -> Vec<(String, Result<(), String>)> {
    guest_kernels(tree, kernel::Arch::X86_64)
        .into_iter()
        .map(|flavor| {
            let result = kernel::prepare(flavor)
                .map_err(|e| e.to_string())
                .and_then(|k| {
                    kmod::build(name, &k, true)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                });
            (format!("{name} W=1 build for {flavor}"), result)
        })
        .collect()
}

/// Runs every check; with `tree` (`--kernel PATH`) the guest part (module
/// builds, e2e tests) runs on that kernel only.
pub fn run(junit: Option<&Path>, tree: Option<Flavor>) -> Result<bool, Error> {
    let started = Instant::now();
    deps::run()?;
    let mut report = Report::new();
    report.step("cargo fmt --check", cargo(&["fmt", "--all", "--check"]))?;
    report.step("shellcheck tests/ images/ .ci/", shellcheck())?;
    report.step(
        "cargo clippy",
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    report.step("cargo test", cargo(&["test", "--workspace"]))?;
    report.step(
        &format!("fuzz, {SHORT_FUZZ_SECONDS} s per target"),
        short_fuzz(),
    )?;
    for (module, dir) in [
        ("virtio_video_m2m", "guest-driver"),
        ("rt_negative", "tests/rt-negative"),
    ] {
        if !kmod::present(module).unwrap_or(false) {
            eprintln!("# step skipped: {dir} does not exist yet");
            continue;
        }
        for (name, result) in module_builds(module, tree) {
            report.step(&name, result)?;
        }
        report.step(&format!("checkpatch --strict {dir}"), checkpatch(dir))?;
    }
    for (name, result) in dw100_builds(tree) {
        report.step(&name, result)?;
    }
    report.step(
        "checkpatch --strict tests/dw100",
        checkpatch_patches("tests/dw100"),
    )?;
    report.step(
        "QEMU checkpatch qemu-patches",
        qemu::checkpatch_patches().map_err(|e| e.to_string()),
    )?;
    report.step(
        "qtest of the QEMU DW100 model (imx8mp-dw100-test)",
        qemu::qtest_dw100().map_err(|e| e.to_string()),
    )?;
    report.step(
        "--kernel PATH's check on the debug kernels' trees",
        vm::check_tree_needs(),
    )?;
    let totals = e2e::run(&[], tree)?;
    if let Some(path) = junit {
        junit::write(
            path,
            &[
                junit::Suite {
                    name: "steps",
                    cases: &report.steps,
                },
                junit::Suite {
                    name: "e2e",
                    cases: &totals.cases,
                },
            ],
        )?;
    }
    if totals.failed > 0 {
        report
            .failed
            .push(format!("{} e2e test(s) failed", totals.failed));
    }
    let minutes = started.elapsed().as_secs() / 60;
    let seconds = started.elapsed().as_secs() % 60;
    if report.failed.is_empty() {
        eprintln!("# all checks passed in {minutes}m{seconds:02}s");
    } else {
        eprintln!("# FAILED ({minutes}m{seconds:02}s):");
        for failure in &report.failed {
            eprintln!("#   {failure}");
        }
    }
    if totals.todo > 0 {
        println!(
            "# {} known failure(s) marked TODO, listed above",
            totals.todo
        );
    }
    println!(
        "{} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.skipped
    );
    Ok(report.failed.is_empty())
}
