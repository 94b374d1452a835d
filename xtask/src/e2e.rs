//! End-to-end tests (`tests/e2e/NAME.sh`, contract in `tests/README.md`):
//! one guest run per test and kernel, reported as KTAP.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::kernel::{self, Flavor};
use crate::{cache, imx8mp, kmod, process, qemu, splat, vm};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error("{test}: header `{key}`: {problem}")]
    Header {
        test: String,
        key: String,
        problem: String,
    },
    #[error("no e2e test matches {0}")]
    NoMatch(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Pass,
    Splat,
}

/// The module a test loads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TestModule {
    /// `virtio_video_m2m` on q35; the dw100 driver (variant from `# dw100:`)
    /// on imx8mp-evk.
    Default,
    None,
    /// A project module by name, built for the guest's kernel.
    Named(String),
}

/// A test script and what its header asks for.
#[derive(Debug)]
struct Test {
    name: String,
    script: PathBuf,
    machine: vm::Machine,
    kernels: Vec<Flavor>,
    devices: Vec<vm::Device>,
    /// `None`: the machine's default.
    qemu: Option<qemu::Choice>,
    module: TestModule,
    /// `None`: the fixed one, on imx8mp-evk.
    dw100: Option<imx8mp::Dw100Variant>,
    module_params: String,
    data: Option<String>,
    timeout: Duration,
    expect: Expect,
    /// Per kernel, why the test is known to fail there: it still runs, and a
    /// failure is reported as KTAP `# TODO` instead of failing the suite.
    known_failures: Vec<(Flavor, String)>,
}

fn header_error(test: &str, key: &str, problem: impl std::fmt::Display) -> Error {
    Error::Header {
        test: test.to_string(),
        key: key.to_string(),
        problem: problem.to_string(),
    }
}

fn parse(script: &Path) -> Result<Test, Error> {
    let name = script
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = fs::read_to_string(script).map_err(cache::io_error("cannot read", script))?;
    let mut test = Test {
        name: name.clone(),
        script: script.to_path_buf(),
        machine: vm::Machine::Q35,
        kernels: vec![Flavor::DebianRt],
        devices: Vec::new(),
        qemu: None,
        module: TestModule::Default,
        dw100: None,
        module_params: String::new(),
        data: None,
        timeout: Duration::from_secs(300),
        expect: Expect::Pass,
        known_failures: Vec::new(),
    };
    for line in text.lines().skip_while(|l| l.starts_with("#!")) {
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        let key = key.trim();
        // Headers may carry an explanation after the value, as in the README.
        let value = value.trim();
        match key {
            "machine" => {
                let word = value.split_whitespace().next().unwrap_or("q35");
                test.machine = word
                    .parse::<vm::Machine>()
                    .map_err(|e| header_error(&name, key, e))?;
            }
            "dw100" => {
                let word = value.split_whitespace().next().unwrap_or("fixed");
                test.dw100 = Some(
                    word.parse::<imx8mp::Dw100Variant>()
                        .map_err(|e| header_error(&name, key, e))?,
                );
            }
            "kernels" => {
                test.kernels = value
                    .split_whitespace()
                    .map(|k| k.parse::<Flavor>())
                    .collect::<Result<_, kernel::Error>>()
                    .map_err(|e| header_error(&name, key, e))?;
            }
            "devices" => {
                let word = value.split_whitespace().next().unwrap_or("none");
                test.devices = match word {
                    "none" => Vec::new(),
                    "both" => vec![vm::Device::Decoder, vm::Device::Dewarper],
                    list => list
                        .split(',')
                        .map(|d| d.parse::<vm::Device>())
                        .collect::<Result<_, vm::Error>>()
                        .map_err(|e| header_error(&name, key, e))?,
                };
            }
            "qemu" => {
                test.qemu = match value.split_whitespace().next() {
                    Some("stock") => Some(qemu::Choice::Stock),
                    Some("patched") => Some(qemu::Choice::Patched),
                    None => None,
                    Some(other) => {
                        return Err(header_error(&name, key, format!("unknown `{other}`")))
                    }
                };
            }
            "module" => {
                let mut words = value.split_whitespace();
                test.module = match words.next() {
                    Some("none") | None => TestModule::None,
                    Some(module) => {
                        kmod::source_dir(module).map_err(|e| header_error(&name, key, e))?;
                        TestModule::Named(module.to_string())
                    }
                };
                test.module_params = words.collect::<Vec<_>>().join(" ");
            }
            "data" => {
                test.data = value
                    .split_whitespace()
                    .next()
                    .filter(|d| *d != "none")
                    .map(str::to_string);
            }
            "timeout" => {
                let secs = value
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| header_error(&name, key, "not a number of seconds"))?;
                test.timeout = Duration::from_secs(secs);
            }
            "todo" => {
                // `# todo: KERNEL|all REASON`
                let (which, reason) = value.split_once(' ').unwrap_or((value, ""));
                let kernels = if which == "all" {
                    vec![Flavor::DebugRt, Flavor::DebianRt]
                } else {
                    vec![which
                        .parse::<Flavor>()
                        .map_err(|e| header_error(&name, key, e))?]
                };
                for kernel in kernels {
                    test.known_failures
                        .push((kernel, reason.trim().to_string()));
                }
            }
            "expect" => {
                test.expect = match value.split_whitespace().next() {
                    Some("pass") | None => Expect::Pass,
                    Some("splat") => Expect::Splat,
                    Some(other) => {
                        return Err(header_error(&name, key, format!("unknown `{other}`")))
                    }
                };
            }
            _ => {}
        }
    }
    if test.machine == vm::Machine::Q35 && test.dw100.is_some() {
        return Err(header_error(
            &name,
            "dw100",
            "the dw100 driver runs on `# machine: imx8mp-evk` only",
        ));
    }
    if test.machine == vm::Machine::Imx8mpEvk
        && test.devices.iter().any(|d| *d != vm::Device::Dw100)
    {
        return Err(header_error(
            &name,
            "devices",
            "imx8mp-evk has the DW100 only (its backend is always attached)",
        ));
    }
    Ok(test)
}

impl Test {
    /// `name.kernel` on q35, `name.machine.kernel` on the others.
    fn id(&self, kernel: Flavor) -> String {
        match self.machine {
            vm::Machine::Q35 => format!("{}.{}", self.name, kernel.name()),
            machine => format!("{}.{machine}.{}", self.name, kernel.name()),
        }
    }

    fn vm_module(&self) -> vm::Module {
        match (&self.module, self.machine) {
            (TestModule::None, _) => vm::Module::None,
            (TestModule::Named(name), _) => vm::Module::Named(name.clone()),
            (TestModule::Default, vm::Machine::Q35) => {
                vm::Module::Named("virtio_video_m2m".to_string())
            }
            (TestModule::Default, vm::Machine::Imx8mpEvk) => {
                vm::Module::Dw100(self.dw100.unwrap_or_default())
            }
        }
    }
}

fn discover(filters: &[String]) -> Result<Vec<Test>, Error> {
    let dir = cache::repo_root().join("tests/e2e");
    let mut scripts: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sh"))
            .collect(),
        Err(_) => Vec::new(),
    };
    scripts.sort();
    let tests = scripts
        .iter()
        .map(|script| parse(script))
        .collect::<Result<Vec<_>, _>>()?;
    if filters.is_empty() {
        return Ok(tests);
    }
    let chosen: Vec<Test> = tests
        .into_iter()
        .filter(|t| filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        return Err(Error::NoMatch(filters.join(" ")));
    }
    Ok(chosen)
}

/// Runs `tests/data/NAME.sh OUT` once per script content; returns OUT.
fn data_set(name: &str) -> Result<Result<PathBuf, String>, Error> {
    let script = cache::repo_root().join(format!("tests/data/{name}.sh"));
    let Ok(content) = fs::read(&script) else {
        return Ok(Err(format!("tests/data/{name}.sh does not exist")));
    };
    let dir = cache::dir("testdata")?.join(format!("{name}-{}", cache::key(&[&content])));
    if cache::is_complete(&dir) {
        return Ok(Ok(dir));
    }
    let _lock = cache::lock(&format!("testdata-{name}"))?;
    let log = cache::dir("logs")?.join(format!("testdata-{name}.log"));
    let built = cache::build_in_place(&dir, |dir| -> Result<(), Error> {
        let mut command = Command::new("sh");
        command.arg(&script).arg(dir);
        process::run_logged(command, &log, Duration::from_secs(3600))?;
        Ok(())
    });
    match built {
        Ok(()) => Ok(Ok(dir)),
        Err(Error::Process(err)) => Ok(Err(format!("data set {name}: {err}"))),
        Err(other) => Err(other),
    }
}

enum Verdict {
    Pass(String),
    Fail(String),
    Skip(String),
    Todo(String),
}

fn run_one(test: &Test, kernel: Flavor) -> Result<Verdict, Error> {
    if let vm::Module::Named(module) = test.vm_module() {
        if !kmod::present(&module).unwrap_or(false) {
            return Ok(Verdict::Skip(format!(
                "{} does not exist yet",
                kmod::source_dir(&module).unwrap_or(&module)
            )));
        }
    }
    // imx8mp-evk always has the DW100's backend.
    let backend_needed = !test.devices.is_empty() || test.machine != vm::Machine::Q35;
    if backend_needed
        && !cache::repo_root()
            .join("vhost-device-video/src/main.rs")
            .exists()
    {
        return Ok(Verdict::Skip(
            "the backend binary does not exist yet".to_string(),
        ));
    }
    let testdata = match &test.data {
        Some(name) => match data_set(name)? {
            Ok(dir) => dir,
            Err(reason) => return Ok(Verdict::Fail(reason)),
        },
        None => PathBuf::new(),
    };
    let base = cache::repo_root()
        .join("target/e2e")
        .join(test.id(kernel).replace('.', "-"));
    let results = base.join("results");
    if results.exists() {
        fs::remove_dir_all(&results).map_err(cache::io_error("cannot remove", &results))?;
    }
    fs::create_dir_all(&results).map_err(cache::io_error("cannot create", &results))?;
    let repo = cache::repo_root();
    let options = vm::Options {
        machine: test.machine,
        kernel,
        devices: test.devices.clone(),
        qemu: test
            .qemu
            .clone()
            .unwrap_or_else(|| test.machine.default_qemu()),
        shares: vec![results.clone()],
        // The arm64 guests do not see the host's root, where the data is.
        readonly_shares: test
            .data
            .is_some()
            .then(|| testdata.clone())
            .into_iter()
            .collect(),
        timeout: test.timeout,
        module: test.vm_module(),
        module_params: test.module_params.clone(),
        env: vec![
            ("REPO".to_string(), repo.to_string_lossy().into_owned()),
            (
                "TESTDATA".to_string(),
                testdata.to_string_lossy().into_owned(),
            ),
            (
                "RESULTS".to_string(),
                results.to_string_lossy().into_owned(),
            ),
        ],
        accel: vm::Accel::Auto,
        command: vec![
            "sh".to_string(),
            "-eu".to_string(),
            test.script.to_string_lossy().into_owned(),
        ],
        artifacts: Some(base.join("vm")),
        stream: false,
        boot_timeout: vm::BOOT_TIMEOUT,
    };
    let outcome = match vm::run(&options) {
        Ok(outcome) => outcome,
        Err(vm::Error::Process(process::Error::Interrupted)) => {
            return Err(process::Error::Interrupted.into())
        }
        Err(err) => return Ok(Verdict::Fail(err.to_string())),
    };
    let output = base.join("output.log");
    let _ = fs::write(&output, &outcome.output);
    let logs = format!("logs: {}", base.display());
    Ok(match test.expect {
        Expect::Pass if outcome.passed() => Verdict::Pass(String::new()),
        Expect::Pass => {
            eprintln!("{}", tail_lines(&outcome.output, 20));
            if let Some(splat) = &outcome.splat {
                eprintln!("--- kernel splat ---\n{splat}\n---");
            }
            Verdict::Fail(format!("{}; {logs}", outcome.reason()))
        }
        Expect::Splat => match &outcome.splat {
            Some(found) => Verdict::Pass(format!(
                "splat detected as expected: {}",
                splat::summary(found)
            )),
            None => Verdict::Fail(format!(
                "expected a kernel splat, none was detected ({}); {logs}",
                outcome.reason()
            )),
        },
    })
}

/// Builds the guest-side test clients on the host: compiling them inside a
/// TCG guest would cost minutes per test.
fn build_guest_clients() -> Result<(), Error> {
    let dir = cache::repo_root().join("tests/clients");
    if !dir.join("Makefile").exists() {
        return Ok(());
    }
    let log = cache::dir("logs")?.join("guest-clients.log");
    let mut make = Command::new("make");
    make.arg("-C").arg(&dir);
    process::run_logged(make, &log, Duration::from_secs(600))?;
    Ok(())
}

fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Known failures (`# todo:`) that failed as known.
    pub todo: usize,
}

/// Runs the matching tests, printing KTAP; also written to
/// `target/e2e/results.ktap`.
pub fn run(filters: &[String], only_kernel: Option<Flavor>) -> Result<Totals, Error> {
    let tests = discover(filters)?;
    build_guest_clients()?;
    let cases: Vec<(&Test, Flavor)> = tests
        .iter()
        .flat_map(|t| t.kernels.iter().map(move |k| (t, *k)))
        .filter(|(_, k)| only_kernel.is_none_or(|only| only == *k))
        .collect();
    let mut ktap = format!("KTAP version 1\n1..{}\n", cases.len());
    println!("KTAP version 1\n1..{}", cases.len());
    let mut totals = Totals::default();
    let mut summary = String::new();
    for (index, (test, kernel)) in cases.iter().enumerate() {
        let id = test.id(*kernel);
        eprintln!("# running {id}");
        let known = test
            .known_failures
            .iter()
            .find(|(k, _)| k == kernel)
            .map(|(_, reason)| reason.as_str());
        let verdict = match (run_one(test, *kernel)?, known) {
            (Verdict::Fail(reason), Some(known)) => Verdict::Todo(format!("{known} ({reason})")),
            (Verdict::Pass(_), Some(known)) => {
                Verdict::Pass(format!("passed although marked todo: {known}"))
            }
            (verdict, _) => verdict,
        };
        let line = match verdict {
            Verdict::Pass(note) => {
                totals.passed += 1;
                let _ = writeln!(summary, "  PASS  {id}");
                if note.is_empty() {
                    format!("ok {} {id}", index + 1)
                } else {
                    format!("ok {} {id} # {note}", index + 1)
                }
            }
            Verdict::Fail(reason) => {
                totals.failed += 1;
                let _ = writeln!(summary, "  FAIL  {id}: {reason}");
                format!("not ok {} {id} # {}", index + 1, reason.replace('\n', " "))
            }
            Verdict::Todo(reason) => {
                totals.todo += 1;
                let _ = writeln!(summary, "  TODO  {id}: known failure: {reason}");
                format!(
                    "not ok {} {id} # TODO {}",
                    index + 1,
                    reason.replace('\n', " ")
                )
            }
            Verdict::Skip(reason) => {
                totals.skipped += 1;
                let _ = writeln!(summary, "  SKIP  {id}: {reason}");
                format!("ok {} {id} # SKIP {reason}", index + 1)
            }
        };
        println!("{line}");
        ktap.push_str(&line);
        ktap.push('\n');
    }
    let report = cache::repo_root().join("target/e2e/results.ktap");
    if let Some(parent) = report.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let _ = fs::write(&report, &ktap);
    println!(
        "# e2e summary:\n{summary}# {} passed, {} failed, {} skipped, {} known failures (TODO)",
        totals.passed, totals.failed, totals.skipped, totals.todo
    );
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(name: &str, text: &str) -> Result<Test, Error> {
        let dir = std::env::temp_dir().join(format!("vdv-e2e-parse-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(cache::io_error("cannot create", &dir))?;
        let script = dir.join(format!("{name}.sh"));
        fs::write(&script, text).map_err(cache::io_error("cannot write", &script))?;
        let parsed = parse(&script);
        let _ = fs::remove_file(&script);
        parsed
    }

    #[test]
    fn an_imx8mp_test_loads_its_dw100_variant() {
        let test = parse_text(
            "dw100-x",
            "#!/bin/sh\n# machine: imx8mp-evk\n# kernels: debug-rt debian-rt\n# dw100: unfixed\ntrue\n",
        )
        .expect("a valid header");
        assert_eq!(test.id(Flavor::DebugRt), "dw100-x.imx8mp-evk.debug-rt");
        assert_eq!(
            test.vm_module(),
            vm::Module::Dw100(imx8mp::Dw100Variant::Unfixed)
        );
        let defaulted = parse_text("dw100-y", "#!/bin/sh\n# machine: imx8mp-evk\ntrue\n")
            .expect("a valid header");
        assert_eq!(
            defaulted.vm_module(),
            vm::Module::Dw100(imx8mp::Dw100Variant::Fixed)
        );
    }

    #[test]
    fn a_q35_test_keeps_its_id_and_module() {
        let test =
            parse_text("plain", "#!/bin/sh\n# kernels: debian-rt\ntrue\n").expect("a valid header");
        assert_eq!(test.id(Flavor::DebianRt), "plain.debian-rt");
        assert_eq!(
            test.vm_module(),
            vm::Module::Named("virtio_video_m2m".to_string())
        );
    }

    #[test]
    fn machine_mismatches_are_header_errors() {
        for text in [
            "#!/bin/sh\n# dw100: fixed\ntrue\n",
            "#!/bin/sh\n# machine: imx8mp-evk\n# devices: dewarper\ntrue\n",
            "#!/bin/sh\n# machine: virt\ntrue\n",
        ] {
            assert!(parse_text("bad", text).is_err(), "{text}");
        }
    }
}
