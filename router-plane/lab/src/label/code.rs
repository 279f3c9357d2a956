//! Grading a tier's code by running it: MBPP and HumanEval answers pass when the program
//! made of the answer's code and the problem's tests exits cleanly, as their own harnesses
//! grade them (pass@1, greedy).
//!
//! This runs code a model wrote. It runs in a fresh directory, with an empty environment,
//! a time limit and address-space, CPU and file-size limits set before the program starts;
//! that keeps a runaway loop or allocation from hurting the labelling run, but it is not a
//! sandbox: run `label` on code datasets in a throwaway container or VM, as the HumanEval
//! authors advise for theirs.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

/// Why an answer could not be run: always ours, never the program's.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("{}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {}: {source}", python.display())]
    Spawn {
        python: PathBuf,
        source: std::io::Error,
    },
    #[error("waiting for the program: {0}")]
    Wait(#[source] std::io::Error),
}

/// How one problem's answer becomes a program to run.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeCheck {
    /// MBPP: the answer's code, then the problem's `assert` lines.
    Asserts(Vec<String>),
    /// HumanEval: the prompt (imports, helpers, the signature and docstring), the answer's
    /// code (a whole definition replaces the stub; a bare body completes it), the tests'
    /// `check(candidate)`, and a call of it on `entry`.
    Check {
        prompt: String,
        test: String,
        entry: String,
    },
}

impl CodeCheck {
    /// The program that passes when `answer` (the tier's whole reply) is right.
    pub fn program(&self, answer: &str) -> String {
        let code = extract_code(answer);
        match self {
            Self::Asserts(asserts) => format!("{code}\n\n{}\n", asserts.join("\n")),
            Self::Check {
                prompt,
                test,
                entry,
            } => format!("{prompt}{code}\n\n{test}\n\ncheck({entry})\n"),
        }
    }
}

/// The code in a reply: its fenced blocks (```` ```python ```` or bare ```` ``` ````),
/// joined, or the whole reply when it has none. A block left open (the answer ran out of
/// tokens) counts up to the end.
pub fn extract_code(answer: &str) -> String {
    let mut blocks = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        // The info string (`python`, `py`) runs to the end of the fence's line.
        let body = after.split_once('\n').map_or("", |(_, b)| b);
        match body.find("```") {
            Some(end) => {
                blocks.push(&body[..end]);
                rest = &body[end + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    if blocks.is_empty() {
        answer.to_owned()
    } else {
        blocks.join("\n")
    }
}

/// The last top-level `def NAME(` of `prompt`: HumanEval's entry point (its helpers, when
/// it has any, come first).
pub fn last_function(prompt: &str) -> Option<String> {
    prompt
        .lines()
        .filter_map(|l| l.strip_prefix("def "))
        .filter_map(|l| l.split_once('(').map(|(name, _)| name.trim().to_owned()))
        .next_back()
}

/// Sets the limits, then runs `program.py` as `__main__` (through `exec`, so a program
/// that starts with a `from __future__` import still compiles).
const RUNNER: &str = r#"import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
resource.setrlimit(resource.RLIMIT_CPU, (10, 10))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
sys.setrecursionlimit(5000)
source = open("program.py", encoding="utf-8").read()
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
"#;

/// Whether `program` exits with status 0 under `python` within `timeout`. An error here is
/// one of ours (no Python, no temporary directory), never the program's: that would make a
/// label the tier never earned.
pub async fn passes(python: &Path, program: &str, timeout: Duration) -> Result<bool, CodeError> {
    let dir = std::env::temp_dir().join(format!("switchback-code-{}", uuid::Uuid::new_v4()));
    let in_dir = |source| CodeError::Dir {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir(&dir).map_err(in_dir)?;
    let result = async {
        std::fs::write(dir.join("runner.py"), RUNNER)
            .and_then(|()| std::fs::write(dir.join("program.py"), program))
            .map_err(in_dir)?;
        let mut child = tokio::process::Command::new(python)
            .args(["-I", "-B", "runner.py"])
            .current_dir(&dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| CodeError::Spawn {
                python: python.to_owned(),
                source,
            })?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status.map_err(CodeError::Wait)?.success()),
            // Too slow is wrong, as in HumanEval's harness; the drop kills it.
            Err(_) => Ok(false),
        }
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_comes_from_the_fenced_blocks_or_the_whole_reply() {
        assert_eq!(
            extract_code("Here:\n```python\ndef f():\n    return 1\n```\nIt returns 1."),
            "def f():\n    return 1\n"
        );
        assert_eq!(
            extract_code("```\na = 1\n```\nthen\n```py\nb = 2\n```"),
            "a = 1\n\nb = 2\n"
        );
        assert_eq!(
            extract_code("```python\ndef f():\n    return"),
            "def f():\n    return",
            "a block cut off by the token limit counts to the end"
        );
        assert_eq!(extract_code("    return x + 1\n"), "    return x + 1\n");
    }

    #[test]
    fn the_entry_point_is_the_last_top_level_function() {
        let prompt = "import math\n\ndef helper(x):\n    return x\n\ndef make(s: str) -> str:\n    \"\"\"Doc.\"\"\"\n";
        assert_eq!(last_function(prompt).as_deref(), Some("make"));
        assert_eq!(last_function("x = 1\n"), None);
    }

    fn python() -> std::path::PathBuf {
        std::env::var_os(switchback_common::env::PYTHON)
            .map(Into::into)
            .unwrap_or_else(|| "python3".into())
    }

    async fn grade(check: &CodeCheck, answer: &str) -> bool {
        passes(&python(), &check.program(answer), Duration::from_secs(20))
            .await
            .expect("python runs")
    }

    #[tokio::test]
    async fn mbpp_answers_pass_only_when_their_asserts_hold() {
        let check = CodeCheck::Asserts(vec![
            "assert add(1, 2) == 3".into(),
            "assert add(-1, 1) == 0".into(),
        ]);
        assert!(grade(&check, "```python\ndef add(a, b):\n    return a + b\n```").await);
        assert!(!grade(&check, "```python\ndef add(a, b):\n    return a - b\n```").await);
        assert!(
            !grade(&check, "def add(a, b) return a + b").await,
            "a syntax error fails"
        );
        assert!(
            !grade(&check, "I cannot write that function.").await,
            "prose fails"
        );
    }

    #[tokio::test]
    async fn humaneval_answers_pass_as_a_whole_function_or_a_completed_body() {
        let check = CodeCheck::Check {
            prompt: "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum of xs.\"\"\"\n".into(),
            test: "def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n".into(),
            entry: "total".into(),
        };
        let whole = "```python\nfrom typing import List\n\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```";
        assert!(grade(&check, whole).await);
        assert!(grade(&check, "    return sum(xs)\n").await, "a bare body");
        assert!(!grade(&check, "    return len(xs)\n").await);
    }

    #[tokio::test]
    async fn a_program_that_never_ends_or_hogs_memory_fails_instead_of_hanging() {
        let check = CodeCheck::Asserts(vec!["assert f() == 1".into()]);
        let forever = "```python\ndef f():\n    while True:\n        pass\n```";
        assert!(
            !passes(&python(), &check.program(forever), Duration::from_secs(2))
                .await
                .expect("python runs")
        );
        let hog = "```python\ndef f():\n    x = bytearray(8 << 30)\n    return 1\n```";
        assert!(!grade(&check, hog).await, "8 GiB is over the 2 GiB limit");
    }

    #[tokio::test]
    async fn a_missing_python_is_an_error_not_a_failed_answer() {
        let err = passes(
            Path::new("/nonexistent/python"),
            "pass",
            Duration::from_secs(5),
        )
        .await
        .expect_err("no python");
        assert!(err.to_string().contains("/nonexistent/python"), "{err}");
    }
}
