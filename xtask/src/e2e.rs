//! End-to-end tests (`tests/e2e/NAME.sh`, contract in `tests/README.md`):
//! one guest run per test and kernel, reported as KTAP.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::kernel::tree::Need;
use crate::kernel::{self, Flavor};
use crate::{cache, imx8mp, junit, kmod, process, qemu, splat, vm};

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
    #[error("{location}: {problem}")]
    HeaderLine { location: String, problem: String },
    #[error("no e2e test matches {0}")]
    NoMatch(String),
    #[error("`{filter}` matches {count} e2e tests ({names}): name one")]
    Ambiguous {
        filter: String,
        count: usize,
        names: String,
    },
}

/// The keys a header may hold, in the order tests/README.md lists them.
const HEADER_KEYS: [&str; 15] = [
    "machine",
    "needs-config",
    "kernels",
    "devices",
    "qemu",
    "iommu",
    "module",
    "dw100",
    "dw100-model",
    "data",
    "timeout",
    "repeat",
    "expect",
    "splat-names",
    "todo",
];

/// A license line may stand among the header's lines; the harness skips it.
const LICENSE_KEY: &str = "SPDX-License-Identifier";

/// Boots a `# repeat:` header may ask for at most.
const MAX_REPEAT: u32 = 100;

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
    /// A virtual IOMMU (`# iommu:`), q35 only.
    iommu: vm::Iommu,
    data: Option<String>,
    timeout: Duration,
    expect: Expect,
    /// Properties of the DW100 model (`# dw100-model:`), imx8mp-evk only.
    model: Vec<vm::ModelProperty>,
    /// Separate boots per kernel (`# repeat:`), each judged on its own.
    repeat: u32,
    /// What a splat must name to count (`# splat-names:`, one line each):
    /// every term, each a list of alternatives.
    splat_names: Vec<Vec<String>>,
    /// Per kernel, why the test is known to fail there: it still runs, and a
    /// failure is reported as KTAP `# TODO` instead of failing the suite.
    known_failures: Vec<(Flavor, String)>,
    /// Kernel options the test needs beyond its guest and module
    /// (`# needs-config:`, without `CONFIG_`), built in or modules: a kernel
    /// tree (`--kernel PATH`) without them fails the test unbooted.
    needs_config: Vec<String>,
}

fn header_error(test: &str, key: &str, problem: impl std::fmt::Display) -> Error {
    Error::Header {
        test: test.to_string(),
        key: key.to_string(),
        problem: problem.to_string(),
    }
}

/// The `# key: value` lines at the top of a script, after the shebang, up
/// to the first bare `#` or uncommented line; what follows is prose. A line
/// there that is no header, or names a key the harness does not know, is an
/// error with its file and line: a misspelt key must not quietly fall back
/// to a default.
fn header_lines(script: &Path, text: &str) -> Result<Vec<(String, String)>, Error> {
    let shown = script
        .strip_prefix(cache::repo_root())
        .unwrap_or(script)
        .display();
    let mut headers = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if index == 0 && line.starts_with("#!") {
            continue;
        }
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        if comment.trim().is_empty() {
            break;
        }
        let location = format!("{shown}:{}", index + 1);
        let Some((key, value)) = comment.split_once(':') else {
            return Err(Error::HeaderLine {
                location,
                problem: "not a `# key: value` header line (a bare `#` line ends the header)"
                    .to_string(),
            });
        };
        let key = key.trim();
        if key == LICENSE_KEY {
            continue;
        }
        if !HEADER_KEYS.contains(&key) {
            return Err(Error::HeaderLine {
                location,
                problem: format!(
                    "unknown header key `{key}` (known: {})",
                    HEADER_KEYS.join(", ")
                ),
            });
        }
        headers.push((key.to_string(), value.trim().to_string()));
    }
    Ok(headers)
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
        iommu: vm::Iommu::None,
        data: None,
        timeout: Duration::from_secs(300),
        expect: Expect::Pass,
        model: Vec::new(),
        repeat: 1,
        splat_names: Vec::new(),
        needs_config: Vec::new(),
        known_failures: Vec::new(),
    };
    for (key, value) in header_lines(script, &text)? {
        let key = key.as_str();
        // Headers may carry an explanation after the value, as in the README.
        let value = value.as_str();
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
            "iommu" => {
                let word = value.split_whitespace().next().unwrap_or("none");
                test.iommu = word
                    .parse::<vm::Iommu>()
                    .map_err(|e| header_error(&name, key, e))?;
            }
            "dw100-model" => {
                test.model =
                    vm::parse_model_properties(value).map_err(|e| header_error(&name, key, e))?;
            }
            "repeat" => {
                test.repeat = value
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse::<u32>().ok())
                    .filter(|n| (1..=MAX_REPEAT).contains(n))
                    .ok_or_else(|| {
                        header_error(&name, key, format!("not a count from 1 to {MAX_REPEAT}"))
                    })?;
            }
            "needs-config" => {
                // `# needs-config: CONFIG_A CONFIG_B`
                for word in value.split_whitespace() {
                    let symbol = word.strip_prefix("CONFIG_").ok_or_else(|| {
                        header_error(&name, key, format!("`{word}` is no CONFIG_ symbol"))
                    })?;
                    test.needs_config.push(symbol.to_string());
                }
            }
            "splat-names" => {
                // `# splat-names: A | B`: the splat must contain A or B.
                let alternatives: Vec<String> = value
                    .split('|')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect();
                if alternatives.is_empty() {
                    return Err(header_error(&name, key, "names nothing"));
                }
                test.splat_names.push(alternatives);
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
            // header_lines let only known keys through.
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
    if test.machine == vm::Machine::Q35 && !test.model.is_empty() {
        return Err(header_error(
            &name,
            "dw100-model",
            "the DW100 model exists on `# machine: imx8mp-evk` only",
        ));
    }
    if test.machine != vm::Machine::Q35 && test.iommu != vm::Iommu::None {
        return Err(header_error(
            &name,
            "iommu",
            "a virtual IOMMU exists on `# machine: q35` only",
        ));
    }
    if test.expect != Expect::Splat && !test.splat_names.is_empty() {
        return Err(header_error(
            &name,
            "splat-names",
            "only a test that expects a splat (`# expect: splat`) names one",
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

/// Runs `tests/data/NAME.sh OUT` once per content of the script and of the
/// files its `# inputs:` lines name; returns OUT.
fn data_set(name: &str) -> Result<Result<PathBuf, String>, Error> {
    let root = cache::repo_root();
    let script = root.join(format!("tests/data/{name}.sh"));
    let Ok(content) = fs::read(&script) else {
        return Ok(Err(format!("tests/data/{name}.sh does not exist")));
    };
    let mut parts = vec![content.clone()];
    for input in data_inputs(&String::from_utf8_lossy(&content)) {
        match input_files(&root, &input) {
            Ok(files) => parts.extend(files),
            Err(problem) => return Ok(Err(format!("tests/data/{name}.sh: {problem}"))),
        }
    }
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let dir = cache::dir("testdata")?.join(format!("{name}-{}", cache::key(&parts)));
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

/// The repository paths a data-set script names in its `# inputs:` lines:
/// what it reads besides itself.
fn data_inputs(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|line| line.strip_prefix("# inputs:"))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// The name and content of `input` (a file, or every file below a
/// directory, in name order), for a cache key.
fn input_files(root: &Path, input: &str) -> Result<Vec<Vec<u8>>, String> {
    let path = root.join(input);
    if path.is_file() {
        let content = fs::read(&path).map_err(|e| format!("input {input}: {e}"))?;
        return Ok(vec![input.as_bytes().to_vec(), content]);
    }
    let entries = fs::read_dir(&path).map_err(|e| format!("input {input}: {e}"))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut parts = Vec::new();
    for name in names {
        parts.extend(input_files(root, &format!("{input}/{name}"))?);
    }
    Ok(parts)
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Pass(String),
    Fail(String),
    Skip(String),
    Todo(String),
}

/// How one boot of a test went, judged against what the test expects.
#[derive(Debug, PartialEq, Eq)]
struct RunResult {
    passed: bool,
    /// Why it failed; for a pass, what it showed (may be empty).
    note: String,
}

/// The terms of `# splat-names:` as the reports quote them.
fn terms_text(terms: &[Vec<String>]) -> String {
    terms
        .iter()
        .map(|alternatives| format!("`{}`", alternatives.join("` or `")))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Judges one boot. Under `expect: splat` only a report that names every
/// term of `splat-names` counts: a run without it did not catch the bug,
/// whatever else it showed.
fn judge_run(test: &Test, outcome: &vm::Outcome, logs: &str) -> RunResult {
    let fail = |note: String| RunResult {
        passed: false,
        note,
    };
    match test.expect {
        Expect::Pass if outcome.passed() => RunResult {
            passed: true,
            note: String::new(),
        },
        Expect::Pass => fail(format!("{}; {logs}", outcome.reason())),
        Expect::Splat => {
            let Some(first) = &outcome.splat else {
                return fail(format!(
                    "expected a kernel splat, none was detected: the bug was not caught ({}); {logs}",
                    outcome.reason()
                ));
            };
            if test.splat_names.is_empty() {
                return RunResult {
                    passed: true,
                    note: splat::summary(first),
                };
            }
            match splat::naming(&outcome.reports, &test.splat_names) {
                Some(report) => RunResult {
                    passed: true,
                    note: splat::summary(report),
                },
                None => fail(format!(
                    "no kernel splat names {}: the bug was not caught (the first splat: {}); {logs}",
                    terms_text(&test.splat_names),
                    splat::summary(first)
                )),
            }
        }
    }
}

/// Failing runs a verdict lists at most.
const LISTED_FAILURES: usize = 3;

/// The verdict of a test case from its boots, in order. A single boot reads
/// as before repeats existed; several say how many of them passed.
fn verdict(expect: Expect, runs: &[RunResult]) -> Verdict {
    let what = match expect {
        Expect::Pass => "passed",
        Expect::Splat => "caught the splat",
    };
    let passed = runs.iter().filter(|r| r.passed).count();
    if let [only] = runs {
        return match (only.passed, expect) {
            (true, Expect::Splat) => {
                Verdict::Pass(format!("splat detected as expected: {}", only.note))
            }
            (true, Expect::Pass) => Verdict::Pass(only.note.clone()),
            (false, _) => Verdict::Fail(only.note.clone()),
        };
    }
    let count = format!("{passed}/{} runs {what}", runs.len());
    if passed == runs.len() && !runs.is_empty() {
        let shown = runs.iter().find(|r| !r.note.is_empty());
        return Verdict::Pass(match shown {
            Some(run) => format!("{count}: {}", run.note),
            None => count,
        });
    }
    let failures: Vec<String> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.passed)
        .map(|(index, r)| format!("run {}: {}", index + 1, r.note))
        .collect();
    let more = failures.len().saturating_sub(LISTED_FAILURES);
    let mut text = format!(
        "{count}; {}",
        failures[..failures.len().min(LISTED_FAILURES)].join("; ")
    );
    if more > 0 {
        let _ = write!(text, "; and {more} more failed run(s)");
    }
    Verdict::Fail(text)
}

/// Why a test case cannot run here yet, if it cannot.
fn missing_parts(test: &Test) -> Option<String> {
    if let vm::Module::Named(module) = test.vm_module() {
        if !kmod::present(&module).unwrap_or(false) {
            return Some(format!(
                "{} does not exist yet",
                kmod::source_dir(&module).unwrap_or(&module)
            ));
        }
    }
    // imx8mp-evk always has the DW100's backend.
    let backend_needed = !test.devices.is_empty() || test.machine != vm::Machine::Q35;
    if backend_needed
        && !cache::repo_root()
            .join("vhost-device-video/src/main.rs")
            .exists()
    {
        return Some("the backend binary does not exist yet".to_string());
    }
    None
}

/// What one boot runs: the test, on a kernel, with the module and model a
/// measurement may choose instead of the header's.
struct Boot<'a> {
    test: &'a Test,
    kernel: Flavor,
    module: vm::Module,
    model: &'a [vm::ModelProperty],
    testdata: &'a Path,
}

/// Boots the guest once, with its logs and `$RESULTS` under `base`. An error
/// of the harness that is no interruption comes back as the run's failure.
fn boot_once(boot: &Boot, base: &Path) -> Result<Result<vm::Outcome, String>, Error> {
    let test = boot.test;
    let results = base.join("results");
    if results.exists() {
        fs::remove_dir_all(&results).map_err(cache::io_error("cannot remove", &results))?;
    }
    fs::create_dir_all(&results).map_err(cache::io_error("cannot create", &results))?;
    let repo = cache::repo_root();
    let options = vm::Options {
        machine: test.machine,
        kernel: boot.kernel,
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
            .then(|| boot.testdata.to_path_buf())
            .into_iter()
            .collect(),
        timeout: test.timeout,
        module: boot.module.clone(),
        module_params: test.module_params.clone(),
        iommu: test.iommu,
        env: vec![
            ("REPO".to_string(), repo.to_string_lossy().into_owned()),
            (
                "TESTDATA".to_string(),
                boot.testdata.to_string_lossy().into_owned(),
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
    let outcome = match vm::run_with_model(&options, boot.model) {
        Ok(outcome) => outcome,
        Err(vm::Error::Process(process::Error::Interrupted)) => {
            return Err(process::Error::Interrupted.into())
        }
        Err(err) => return Ok(Err(err.to_string())),
    };
    let output = base.join("output.log");
    let _ = fs::write(&output, &outcome.output);
    Ok(Ok(outcome))
}

/// The test's data set, built on the host; `Err` is the test's failure.
fn test_data(test: &Test) -> Result<Result<PathBuf, String>, Error> {
    match &test.data {
        Some(name) => data_set(name),
        None => Ok(Ok(PathBuf::new())),
    }
}

/// `target/e2e/<id>`, dots made dashes.
fn case_dir(test: &Test, kernel: Flavor) -> PathBuf {
    cache::repo_root()
        .join("target/e2e")
        .join(test.id(kernel).replace('.', "-"))
}

/// Where boot `index` (from 0) of `count` keeps its logs: the case's
/// directory for a single boot, `run-NN/` in it for repeats.
fn run_dir(case: &Path, index: u32, count: u32) -> PathBuf {
    if count == 1 {
        case.to_path_buf()
    } else {
        case.join(format!("run-{:02}", index + 1))
    }
}

/// Lines of a failing run's output a report shows.
const OUTPUT_TAIL: usize = 20;

/// The verdict of a test case, and what shows its failing runs: the end of
/// their output and their splats.
fn run_one(test: &Test, kernel: Flavor) -> Result<(Verdict, String), Error> {
    if let Some(reason) = missing_parts(test) {
        return Ok((Verdict::Skip(reason), String::new()));
    }
    if let Flavor::Tree(tree) = kernel {
        let needs: Vec<Need> = test
            .needs_config
            .iter()
            .map(|symbol| Need::Enabled(symbol))
            .collect();
        let what = format!("the test {}", test.name);
        if let Err(lacks) = tree.check(tree.arch, test.machine.name(), &what, &needs) {
            return Ok((Verdict::Fail(lacks.to_string()), String::new()));
        }
    }
    let testdata = match test_data(test)? {
        Ok(dir) => dir,
        Err(reason) => return Ok((Verdict::Fail(reason), String::new())),
    };
    let boot = Boot {
        test,
        kernel,
        module: test.vm_module(),
        model: &test.model,
        testdata: &testdata,
    };
    let case = case_dir(test, kernel);
    let mut runs = Vec::new();
    let mut evidence = String::new();
    for index in 0..test.repeat {
        if test.repeat > 1 {
            eprintln!("#   boot {}/{}", index + 1, test.repeat);
        }
        let base = run_dir(&case, index, test.repeat);
        let logs = format!("logs: {}", base.display());
        let result = match boot_once(&boot, &base)? {
            Ok(outcome) => {
                let result = judge_run(test, &outcome, &logs);
                if !result.passed {
                    let mut shown = tail_lines(&outcome.output, OUTPUT_TAIL);
                    if let Some(splat) = &outcome.splat {
                        let _ = write!(shown, "\n--- kernel splat ---\n{splat}\n---");
                    }
                    if test.expect == Expect::Pass {
                        eprintln!("{shown}");
                    }
                    let _ = writeln!(evidence, "--- run {} ---\n{shown}", index + 1);
                }
                result
            }
            Err(reason) => RunResult {
                passed: false,
                note: reason,
            },
        };
        runs.push(result);
    }
    Ok((verdict(test.expect, &runs), evidence))
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
#[derive(Debug, Default)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Known failures (`# todo:`) that failed as known.
    pub todo: usize,
    /// Every case, for a JUnit report.
    pub cases: Vec<junit::Case>,
}

/// A case's verdict as JUnit has it: known failures are skipped with
/// their reason, failures carry what shows them.
fn junit_case(
    test: &Test,
    kernel: Flavor,
    time: Duration,
    verdict: &Verdict,
    evidence: &str,
) -> junit::Case {
    let outcome = match verdict {
        Verdict::Pass(_) => junit::Outcome::Passed,
        Verdict::Fail(reason) => junit::Outcome::Failed {
            message: reason.replace('\n', " "),
            detail: if evidence.is_empty() {
                reason.clone()
            } else {
                format!("{reason}\n{evidence}")
            },
        },
        Verdict::Todo(reason) => junit::Outcome::Skipped(format!("known failure: {reason}")),
        Verdict::Skip(reason) => junit::Outcome::Skipped(reason.clone()),
    };
    junit::Case {
        classname: format!("{}.{}", test.machine, kernel.name()),
        name: test.name.clone(),
        time,
        outcome,
    }
}

/// Runs the matching tests, printing KTAP; also written to
/// `target/e2e/results.ktap`.
pub fn run(filters: &[String], only_kernel: Option<Flavor>) -> Result<Totals, Error> {
    let tests = discover(filters)?;
    build_guest_clients()?;
    let cases: Vec<(&Test, Flavor)> = match only_kernel {
        // A kernel tree runs every test of the machine it boots on: the
        // header's kernels are the harness's own.
        Some(Flavor::Tree(tree)) => tests
            .iter()
            .filter(|t| t.machine.arch() == tree.arch)
            .map(|t| (t, Flavor::Tree(tree)))
            .collect(),
        _ => tests
            .iter()
            .flat_map(|t| t.kernels.iter().map(move |k| (t, *k)))
            .filter(|(_, k)| only_kernel.is_none_or(|only| only == *k))
            .collect(),
    };
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
        let started = std::time::Instant::now();
        let (verdict, evidence) = run_one(test, *kernel)?;
        let verdict = match (verdict, known) {
            (Verdict::Fail(reason), Some(known)) => Verdict::Todo(format!("{known} ({reason})")),
            (Verdict::Pass(_), Some(known)) => {
                Verdict::Pass(format!("passed although marked todo: {known}"))
            }
            (verdict, _) => verdict,
        };
        totals.cases.push(junit_case(
            test,
            *kernel,
            started.elapsed(),
            &verdict,
            &evidence,
        ));
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

/// A test booted again and again, its outcomes counted instead of judged:
/// `cargo xtask tally`.
pub struct Tally {
    /// A test's name, or a filter matching exactly one test.
    pub test: String,
    /// Any kernel, whether or not the test's `kernels:` names it.
    pub kernel: Flavor,
    pub runs: u32,
    /// Instead of the `dw100:` header's variant.
    pub dw100: Option<imx8mp::Dw100Variant>,
    /// Instead of the `dw100-model:` header's properties.
    pub model: Option<Vec<vm::ModelProperty>>,
}

/// Output lines of a test script that a tally repeats for each run.
const MEASURE_PREFIX: &str = "measure:";

/// A harness failure that means the guest hung.
fn is_hang(failure: &str) -> bool {
    failure.contains("timed out") || failure.contains("did not finish")
}

/// A harness failure that means the guest kernel died.
fn is_death(failure: &str) -> bool {
    failure.contains("panicked") || failure.contains("before the guest finished")
}

/// What one boot showed, as a tally counts it: the kind of the first
/// splat (and whether the guest then hung or died), a task left in D
/// state, a hang, a failed command, or clean.
fn classify(outcome: &vm::Outcome) -> String {
    let failure = outcome.failure.as_deref().unwrap_or("");
    if let Some(splat) = &outcome.splat {
        let kind = splat::kind(splat);
        if is_hang(failure) {
            format!("splat: {kind}, then a hang")
        } else if is_death(failure) {
            format!("splat: {kind}, then the kernel died")
        } else {
            format!("splat: {kind}")
        }
    } else if outcome.d_state.is_some() {
        "task left in D state".to_string()
    } else if !failure.is_empty() {
        if is_hang(failure) {
            format!("hang: {failure}")
        } else {
            format!("failed: {failure}")
        }
    } else {
        match outcome.status {
            Some(0) => "clean".to_string(),
            Some(code) => format!("command exited with status {code}"),
            None => "command did not finish".to_string(),
        }
    }
}

/// Counts of each class, most frequent first (ties in the order seen).
fn count_classes(classes: &[String]) -> Vec<(usize, String)> {
    let mut counts: Vec<(usize, String)> = Vec::new();
    for class in classes {
        match counts.iter_mut().find(|(_, c)| c == class) {
            Some((count, _)) => *count += 1,
            None => counts.push((1, class.clone())),
        }
    }
    counts.sort_by_key(|(count, _)| std::cmp::Reverse(*count));
    counts
}

/// The one test `filter` names: its exact name, or the only test whose
/// name contains it.
fn one_test(filter: &str) -> Result<Test, Error> {
    let mut tests = discover(&[filter.to_string()])?;
    if let Some(exact) = tests.iter().position(|t| t.name == filter) {
        return Ok(tests.swap_remove(exact));
    }
    match tests.len() {
        1 => Ok(tests.remove(0)),
        count => Err(Error::Ambiguous {
            filter: filter.to_string(),
            count,
            names: tests
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Boots the test `tally.runs` times and prints what each run showed and
/// how often each outcome came; also written to
/// `target/e2e/tally/<id>/tally.txt`, with each run's logs beside it.
pub fn tally(tally: &Tally) -> Result<(), Error> {
    let mut test = one_test(&tally.test)?;
    if let Some(variant) = tally.dw100 {
        test.dw100 = Some(variant);
    }
    if let Some(model) = &tally.model {
        test.model.clone_from(model);
    }
    if let Some(reason) = missing_parts(&test) {
        eprintln!("# {}: cannot run: {reason}", test.name);
        return Ok(());
    }
    build_guest_clients()?;
    let testdata = match test_data(&test)? {
        Ok(dir) => dir,
        Err(reason) => {
            eprintln!("# {}: {reason}", test.name);
            return Ok(());
        }
    };
    let module = test.vm_module();
    let boot = Boot {
        test: &test,
        kernel: tally.kernel,
        module: module.clone(),
        model: &test.model,
        testdata: &testdata,
    };
    let dir = cache::repo_root()
        .join("target/e2e/tally")
        .join(test.id(tally.kernel).replace('.', "-"));
    let mut title = format!("{} on {} {}", test.name, test.machine, tally.kernel.name());
    if let vm::Module::Dw100(variant) = module {
        let _ = write!(title, ", dw100 {variant}");
    }
    if !test.model.is_empty() {
        let model: Vec<String> = test.model.iter().map(ToString::to_string).collect();
        let _ = write!(title, ", model {}", model.join(","));
    }
    let mut report = format!("# tally: {title}, {} runs\n", tally.runs);
    print!("{report}");
    let mut classes = Vec::new();
    for index in 0..tally.runs {
        let base = dir.join(format!("run-{:02}", index + 1));
        let started = std::time::Instant::now();
        let (class, detail) = match boot_once(&boot, &base)? {
            Ok(outcome) => {
                let mut detail = outcome
                    .splat
                    .as_deref()
                    .map(splat::summary)
                    .or_else(|| {
                        outcome
                            .d_state
                            .as_deref()
                            .map(|d| d.lines().next().unwrap_or("").trim().to_string())
                    })
                    .unwrap_or_default();
                for line in outcome.output.lines() {
                    if let Some(measure) = line.trim().strip_prefix(MEASURE_PREFIX) {
                        let _ = write!(detail, " | {}", measure.trim());
                    }
                }
                (classify(&outcome), detail)
            }
            Err(reason) => (format!("failed: {reason}"), String::new()),
        };
        let line = format!(
            "run {:02}/{}: {class} ({} s){}{detail}\n",
            index + 1,
            tally.runs,
            started.elapsed().as_secs(),
            if detail.is_empty() { "" } else { ": " }
        );
        print!("{line}");
        report.push_str(&line);
        classes.push(class);
    }
    let mut summary = format!("# {} runs:\n", tally.runs);
    for (count, class) in count_classes(&classes) {
        let _ = writeln!(summary, "#   {count:>3}  {class}");
    }
    print!("{summary}");
    report.push_str(&summary);
    fs::create_dir_all(&dir).map_err(cache::io_error("cannot create", &dir))?;
    let file = dir.join("tally.txt");
    fs::write(&file, &report).map_err(cache::io_error("cannot write", &file))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(name: &str, text: &str) -> Result<Test, Error> {
        // Tests run in parallel and reuse names: one directory per call.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vdv-e2e-parse-{}-{call}", std::process::id()));
        fs::create_dir_all(&dir).map_err(cache::io_error("cannot create", &dir))?;
        let script = dir.join(format!("{name}.sh"));
        fs::write(&script, text).map_err(cache::io_error("cannot write", &script))?;
        let parsed = parse(&script);
        let _ = fs::remove_dir_all(&dir);
        parsed
    }

    #[test]
    fn data_set_inputs_change_its_key() {
        let root = std::env::temp_dir().join(format!("vdv-e2e-inputs-{}", std::process::id()));
        let dir = root.join("engine");
        fs::create_dir_all(dir.join("sub")).expect("temporary directory");
        fs::write(root.join("lib.sh"), "a").expect("write");
        fs::write(dir.join("sub/b.rs"), "b").expect("write");
        let script = "#!/bin/sh\n# inputs: lib.sh engine\n# inputs: lib.sh\nset -eu\n";
        let inputs = data_inputs(script);
        assert_eq!(inputs, ["lib.sh", "engine", "lib.sh"]);
        let key = |root: &Path| -> Vec<Vec<u8>> {
            inputs
                .iter()
                .flat_map(|i| input_files(root, i).expect("inputs exist"))
                .collect()
        };
        let before = key(&root);
        fs::write(dir.join("sub/b.rs"), "c").expect("write");
        assert_ne!(before, key(&root), "a file below a named directory changed");
        assert!(input_files(&root, "missing").is_err());
        let _ = fs::remove_dir_all(&root);
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

    #[test]
    fn an_unknown_header_key_is_refused_with_its_file_and_line() {
        let err = parse_text(
            "typo",
            "#!/bin/sh\n# kernels: debug-rt\n# kernel: debian-rt\ntrue\n",
        )
        .expect_err("`kernel` is no key");
        let text = err.to_string();
        assert!(
            text.contains("typo.sh:3: unknown header key `kernel`"),
            "{text}"
        );
        // A header line without a key is no header either.
        let err = parse_text("nokey", "#!/bin/sh\n# expect pass\ntrue\n").expect_err("no key");
        assert!(
            err.to_string().contains("nokey.sh:2: not a `# key: value`"),
            "{err}"
        );
    }

    #[test]
    fn prose_after_a_bare_hash_and_a_license_line_are_no_headers() {
        let test = parse_text(
            "prose",
            "#!/bin/sh\n# SPDX-License-Identifier: GPL-2.0\n# kernels: debug-rt\n#\n# kernel: a sentence that wraps\n# todo: not a header here\ntrue\n",
        )
        .expect("a valid header");
        assert_eq!(test.kernels, [Flavor::DebugRt]);
        assert!(test.known_failures.is_empty());
    }

    #[test]
    fn every_e2e_script_of_the_tree_parses() {
        let tests = discover(&[]).expect("every header parses");
        assert!(tests.len() > 10, "{} tests", tests.len());
    }

    #[test]
    fn junit_cases_name_machine_and_kernel_and_skip_known_failures() {
        let test =
            parse_text("dw100-x", "#!/bin/sh\n# machine: imx8mp-evk\ntrue\n").expect("valid");
        let second = Duration::from_secs(1);
        let todo = junit_case(
            &test,
            Flavor::DebugRt,
            second,
            &Verdict::Todo("no job timeout (task left in D state)".to_string()),
            "",
        );
        assert_eq!(todo.classname, "imx8mp-evk.debug-rt");
        assert_eq!(todo.name, "dw100-x");
        assert_eq!(
            todo.outcome,
            junit::Outcome::Skipped(
                "known failure: no job timeout (task left in D state)".to_string()
            )
        );
        let failed = junit_case(
            &test,
            Flavor::DebianRt,
            second,
            &Verdict::Fail("kernel splat: BUG: x".to_string()),
            "--- run 1 ---\n--- kernel splat ---\nBUG: x\n",
        );
        assert_eq!(
            failed.outcome,
            junit::Outcome::Failed {
                message: "kernel splat: BUG: x".to_string(),
                detail: "kernel splat: BUG: x\n--- run 1 ---\n--- kernel splat ---\nBUG: x\n"
                    .to_string(),
            }
        );
        let passed = junit_case(
            &test,
            Flavor::DebianRt,
            second,
            &Verdict::Pass(String::new()),
            "",
        );
        assert_eq!(passed.outcome, junit::Outcome::Passed);
    }

    const UNFIXED_HEADER: &str = "#!/bin/sh\n# machine: imx8mp-evk\n# kernels: debug-rt\n# dw100: unfixed\n# dw100-model: bus-timeout-us=200, fault-no-irq=on\n# repeat: 10\n# expect: splat\n# splat-names: dw100_irq_handler\n# splat-names: Invalid wait context | sleeping function called from invalid context\ntrue\n";

    #[test]
    fn repeat_model_and_splat_names_headers_parse() {
        let test = parse_text("dw100-splat", UNFIXED_HEADER).expect("a valid header");
        assert_eq!(test.repeat, 10);
        let model: Vec<String> = test.model.iter().map(ToString::to_string).collect();
        assert_eq!(model, ["bus-timeout-us=200", "fault-no-irq=on"]);
        assert_eq!(
            test.splat_names,
            [
                vec!["dw100_irq_handler".to_string()],
                vec![
                    "Invalid wait context".to_string(),
                    "sleeping function called from invalid context".to_string()
                ]
            ]
        );
        let plain = parse_text("plain", "#!/bin/sh\ntrue\n").expect("a valid header");
        assert_eq!(plain.repeat, 1);
        assert!(plain.model.is_empty() && plain.splat_names.is_empty());
    }

    #[test]
    fn bad_repeat_model_and_splat_names_headers_are_errors() {
        for text in [
            "#!/bin/sh\n# machine: imx8mp-evk\n# repeat: 0\ntrue\n",
            "#!/bin/sh\n# machine: imx8mp-evk\n# repeat: 101\ntrue\n",
            "#!/bin/sh\n# machine: imx8mp-evk\n# repeat: ten\ntrue\n",
            "#!/bin/sh\n# dw100-model: fault-no-irq=on\ntrue\n",
            "#!/bin/sh\n# machine: imx8mp-evk\n# dw100-model: no-such=1\ntrue\n",
            "#!/bin/sh\n# machine: imx8mp-evk\n# dw100-model: bus-timeout-us=x\ntrue\n",
            "#!/bin/sh\n# machine: imx8mp-evk\n# splat-names: dw100_irq_handler\ntrue\n",
            "#!/bin/sh\n# machine: imx8mp-evk\n# expect: splat\n# splat-names: |\ntrue\n",
        ] {
            assert!(parse_text("bad", text).is_err(), "{text}");
        }
    }

    const REAL_SPLAT: &str = include_str!("../testdata/dw100-unfixed-debug-rt-arm64.log");

    /// An outcome as the harness makes it from a guest's kernel log.
    fn outcome_of(log: &str, status: i32) -> vm::Outcome {
        vm::Outcome {
            status: Some(status),
            splat: splat::find(log),
            reports: splat::reports(log),
            ..vm::Outcome::default()
        }
    }

    #[test]
    fn a_splat_counts_only_when_it_names_the_bug() {
        let test = parse_text("dw100-splat", UNFIXED_HEADER).expect("a valid header");
        let caught = judge_run(&test, &outcome_of(REAL_SPLAT, 0), "logs: x");
        assert!(caught.passed, "{caught:?}");
        assert!(caught.note.contains("dw100_irq_handler [dw100]"));
        // A clean run did not catch the bug.
        let clean = judge_run(&test, &outcome_of("[ 1.0] booted\n", 0), "logs: x");
        assert!(!clean.passed);
        assert!(
            clean.note.contains("the bug was not caught"),
            "{}",
            clean.note
        );
        // Nor did a run whose only splat is elsewhere.
        let elsewhere = "[ 9.0] WARNING: possible circular locking dependency detected\n[ 9.0] Call trace:\n[ 9.0]  clk_pm_runtime_get+0x1c/0x90\n";
        let other = judge_run(&test, &outcome_of(elsewhere, 0), "logs: x");
        assert!(!other.passed);
        assert!(other.note.contains("`dw100_irq_handler`"), "{}", other.note);
        // Without splat-names any splat counts.
        let any = parse_text("any", "#!/bin/sh\n# expect: splat\ntrue\n").expect("valid");
        assert!(judge_run(&any, &outcome_of(elsewhere, 0), "logs: x").passed);
        assert!(!judge_run(&any, &outcome_of("", 0), "logs: x").passed);
    }

    #[test]
    fn an_expected_pass_fails_on_a_splat_or_a_status() {
        let test = parse_text("plain", "#!/bin/sh\ntrue\n").expect("valid");
        assert!(judge_run(&test, &outcome_of("", 0), "logs: x").passed);
        assert!(!judge_run(&test, &outcome_of("", 1), "logs: x").passed);
        assert!(!judge_run(&test, &outcome_of(REAL_SPLAT, 0), "logs: x").passed);
    }

    fn run(passed: bool, note: &str) -> RunResult {
        RunResult {
            passed,
            note: note.to_string(),
        }
    }

    #[test]
    fn repeated_runs_report_how_many_passed() {
        let all: Vec<RunResult> = (0..10).map(|_| run(true, "[ BUG: x ]")).collect();
        assert_eq!(
            verdict(Expect::Splat, &all),
            Verdict::Pass("10/10 runs caught the splat: [ BUG: x ]".to_string())
        );
        let mut some = all;
        some[3] = run(false, "expected a kernel splat, none was detected");
        assert_eq!(
            verdict(Expect::Splat, &some),
            Verdict::Fail(
                "9/10 runs caught the splat; run 4: expected a kernel splat, none was detected"
                    .to_string()
            )
        );
        let passes = [run(true, ""), run(true, "")];
        assert_eq!(
            verdict(Expect::Pass, &passes),
            Verdict::Pass("2/2 runs passed".to_string())
        );
        let failing: Vec<RunResult> = (0..5).map(|i| run(false, &format!("f{i}"))).collect();
        assert_eq!(
            verdict(Expect::Pass, &failing),
            Verdict::Fail(
                "0/5 runs passed; run 1: f0; run 2: f1; run 3: f2; and 2 more failed run(s)"
                    .to_string()
            )
        );
    }

    #[test]
    fn a_single_run_reads_as_before() {
        assert_eq!(
            verdict(Expect::Splat, &[run(true, "[ BUG: x ]")]),
            Verdict::Pass("splat detected as expected: [ BUG: x ]".to_string())
        );
        assert_eq!(
            verdict(Expect::Pass, &[run(true, "")]),
            Verdict::Pass(String::new())
        );
        assert_eq!(
            verdict(Expect::Splat, &[run(false, "none")]),
            Verdict::Fail("none".to_string())
        );
    }

    #[test]
    fn a_tally_counts_outcomes_by_kind() {
        let scheduling = "[ 3.0] BUG: scheduling while atomic: irq/100-dw100/87/0x00000002\n";
        let then = |failure: &str| vm::Outcome {
            failure: Some(failure.to_string()),
            ..outcome_of(scheduling, 0)
        };
        let classes: Vec<String> = [
            outcome_of("", 0),
            outcome_of(scheduling, 0),
            outcome_of("", 0),
            vm::Outcome {
                failure: Some("the command timed out after 120 s".to_string()),
                ..vm::Outcome::default()
            },
            then("the command timed out after 600 s"),
            then("the guest kernel panicked: Kernel panic - not syncing: Oops - BUG: Fatal exception"),
        ]
        .iter()
        .map(classify)
        .collect();
        assert_eq!(
            count_classes(&classes),
            [
                (2, "clean".to_string()),
                (1, "splat: scheduling while atomic".to_string()),
                (1, "hang: the command timed out after 120 s".to_string()),
                (1, "splat: scheduling while atomic, then a hang".to_string()),
                (
                    1,
                    "splat: scheduling while atomic, then the kernel died".to_string()
                )
            ]
        );
    }
}
