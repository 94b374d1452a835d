//! JUnit XML reports (`--junit FILE`), for CI systems that read JUnit rather
//! than KTAP: one `<testsuite>` per group of cases, one `<testcase>` per test
//! and kernel.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the JUnit report {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// `message`: the reason in one line; `detail`: what shows it (the
    /// splat, the end of the guest's output).
    Failed {
        message: String,
        detail: String,
    },
    /// Not run, or a known failure (`# todo:`): the reason.
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Where the case ran, `machine.kernel` for the e2e tests.
    pub classname: String,
    pub name: String,
    pub time: Duration,
    pub outcome: Outcome,
}

pub struct Suite<'a> {
    pub name: &'a str,
    pub cases: &'a [Case],
}

/// Text made safe for XML 1.0 content and attribute values: the five
/// markup characters become entities, and the characters XML 1.0 cannot
/// hold at all (most C0 controls, as in a kernel log's escape sequences)
/// become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Kept as references so attribute values keep them too.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn seconds(time: Duration) -> String {
    format!("{:.3}", time.as_secs_f64())
}

/// The report as a JUnit XML document.
pub fn render(suites: &[Suite]) -> String {
    let count = |suite: &Suite, pick: fn(&Outcome) -> bool| {
        suite.cases.iter().filter(|c| pick(&c.outcome)).count()
    };
    let failed = |o: &Outcome| matches!(o, Outcome::Failed { .. });
    let skipped = |o: &Outcome| matches!(o, Outcome::Skipped(_));
    let all_cases = suites.iter().map(|s| s.cases.len()).sum::<usize>();
    let all_failed = suites.iter().map(|s| count(s, failed)).sum::<usize>();
    let all_skipped = suites.iter().map(|s| count(s, skipped)).sum::<usize>();
    let all_time: Duration = suites.iter().flat_map(|s| s.cases).map(|c| c.time).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"vhost-device-video\" tests=\"{all_cases}\" failures=\"{all_failed}\" errors=\"0\" skipped=\"{all_skipped}\" time=\"{}\">",
        seconds(all_time)
    );
    for suite in suites {
        let time: Duration = suite.cases.iter().map(|c| c.time).sum();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
            escape(suite.name),
            suite.cases.len(),
            count(suite, failed),
            count(suite, skipped),
            seconds(time)
        );
        for case in suite.cases {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                escape(&case.classname),
                escape(&case.name),
                seconds(case.time)
            );
            match &case.outcome {
                Outcome::Passed => xml.push_str("/>\n"),
                Outcome::Failed { message, detail } => {
                    let _ = writeln!(
                        xml,
                        ">\n      <failure message=\"{}\" type=\"failure\">{}</failure>\n    </testcase>",
                        escape(message),
                        escape(detail)
                    );
                }
                Outcome::Skipped(reason) => {
                    let _ = writeln!(
                        xml,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        escape(reason)
                    );
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

pub fn write(path: &Path, suites: &[Suite]) -> Result<(), Error> {
    let error = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(error)?;
    }
    fs::write(path, render(suites)).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, outcome: Outcome) -> Case {
        Case {
            classname: "q35.debian-rt".to_string(),
            name: name.to_string(),
            time: Duration::from_millis(1500),
            outcome,
        }
    }

    #[test]
    fn markup_quotes_and_control_characters_are_escaped() {
        assert_eq!(
            escape("a<b> & \"c\" 'd'"),
            "a&lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;"
        );
        assert_eq!(escape("x\ny\tz"), "x&#10;y&#9;z");
        // A kernel log's colour escape and a NUL cannot stand in XML 1.0.
        assert_eq!(escape("\u{1b}[31mred\u{0}"), "\u{fffd}[31mred\u{fffd}");
        assert_eq!(escape("ümlaut ✓"), "ümlaut ✓");
    }

    #[test]
    fn a_report_counts_and_renders_each_outcome() {
        let cases = [
            case("clean", Outcome::Passed),
            case(
                "splat",
                Outcome::Failed {
                    message: "kernel splat: BUG: <sleeping> & \"atomic\"".to_string(),
                    detail: "BUG: sleeping function called\nCall trace:\n".to_string(),
                },
            ),
            case(
                "known",
                Outcome::Skipped("known failure: D state".to_string()),
            ),
        ];
        let xml = render(&[Suite {
            name: "e2e",
            cases: &cases,
        }]);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        assert!(xml.contains(
            "<testsuites name=\"vhost-device-video\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"4.500\">"
        ));
        assert!(xml.contains(
            "<testsuite name=\"e2e\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"4.500\">"
        ));
        assert!(
            xml.contains("<testcase classname=\"q35.debian-rt\" name=\"clean\" time=\"1.500\"/>\n")
        );
        assert!(xml.contains(
            "<failure message=\"kernel splat: BUG: &lt;sleeping&gt; &amp; &quot;atomic&quot;\" type=\"failure\">BUG: sleeping function called&#10;Call trace:&#10;</failure>"
        ));
        assert!(xml.contains("<skipped message=\"known failure: D state\"/>"));
        assert!(xml.trim_end().ends_with("</testsuites>"));
    }

    #[test]
    fn an_empty_report_is_still_a_document() {
        let xml = render(&[]);
        assert!(xml.contains("tests=\"0\" failures=\"0\" errors=\"0\" skipped=\"0\""));
        assert!(xml.trim_end().ends_with("</testsuites>"));
    }
}
