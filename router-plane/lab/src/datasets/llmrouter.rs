//! LLMRouter (`llmrouter/data/`), read by one reader ([`rows`]) for both of its uses: the
//! outcomes of 9 open models on its questions (`dcrouter_preprocessed/`), which `import`
//! turns into labelled JSONL with each model's price; and its query data
//! (`example_data/query_data/`), whose multiple-choice and code tasks `label` asks a
//! cluster's own tiers.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{choice_prompt, read};
use crate::{
    data::{DataError, Item},
    label::{
        Gold, Question,
        code::{self, CodeCheck},
    },
};

/// The dataset's folder under the datasets' root.
const BASE: &str = "llmrouter/data";

/// LLMRouter's tables, each in a train and a test part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// `dcrouter_preprocessed/{train,test}.json`: a JSON array of questions, each with its
    /// `scores` (0/1) per model.
    Outcomes,
    /// `example_data/query_data/default_query_{train,test}.jsonl`: one query per line with
    /// its `task_name`, `ground_truth` and, for multiple choice, `choices`.
    Queries,
}

impl Table {
    fn path(self, root: &Path, part: &str) -> PathBuf {
        let base = root.join(BASE);
        match self {
            Self::Outcomes => base.join(format!("dcrouter_preprocessed/{part}.json")),
            Self::Queries => base.join(format!(
                "example_data/query_data/default_query_{part}.jsonl"
            )),
        }
    }
}

/// One record of an LLMRouter table.
struct Row<'a> {
    path: &'a Path,
    part: &'static str,
    /// The element's index in the array, or the 0-based line index in the file (blank
    /// lines counted, so ids stay stable).
    index: usize,
    value: Value,
}

impl Row<'_> {
    fn task(&self) -> &str {
        self.value["task_name"].as_str().unwrap_or_default()
    }

    /// `llmrouter/TASK/PART/LINE` for a query: stable across runs, so `label` can resume
    /// by it.
    fn id(&self) -> String {
        format!("llmrouter/{}/{}/{}", self.task(), self.part, self.index)
    }

    fn bad(&self, what: &str) -> DataError {
        DataError::parse(self.path, self.index + 1, what)
    }
}

/// Hands `each` every record of `table`, the train part then the test part.
fn rows(
    root: &Path,
    table: Table,
    mut each: impl FnMut(Row<'_>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    for part in ["train", "test"] {
        let path = table.path(root, part);
        let text = read(&path)?;
        match table {
            Table::Outcomes => {
                let all: Value = serde_json::from_str(&text)
                    .map_err(|e| DataError::parse(&path, 0, e.to_string()))?;
                let Value::Array(all) = all else { continue };
                for (index, value) in all.into_iter().enumerate() {
                    each(Row {
                        path: &path,
                        part,
                        index,
                        value,
                    })?;
                }
            }
            Table::Queries => {
                for (index, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let value: Value = serde_json::from_str(line)
                        .map_err(|e| DataError::parse(&path, index + 1, e.to_string()))?;
                    each(Row {
                        path: &path,
                        part,
                        index,
                        value,
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// The queries whose task is one of `tasks`, train file then test file.
fn queries(
    root: &Path,
    tasks: &[&str],
    mut each: impl FnMut(Row<'_>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    rows(root, Table::Queries, |row| {
        if tasks.contains(&row.task()) {
            each(row)?;
        }
        Ok(())
    })
}

/// The outcomes (0/1 scores over 9 open models), with each model's price from
/// `example_data/llm_candidates/default_llm.json` (the mean of its input and output
/// prices).
pub fn outcomes(root: &Path) -> Result<Vec<Item>, DataError> {
    let prices_path = root
        .join(BASE)
        .join("example_data/llm_candidates/default_llm.json");
    let prices: Value = serde_json::from_str(&read(&prices_path)?)
        .map_err(|e| DataError::parse(&prices_path, 0, e.to_string()))?;
    let mut out = Vec::new();
    rows(root, Table::Outcomes, |row| {
        let q = &row.value;
        let mut scores = BTreeMap::new();
        let mut costs = BTreeMap::new();
        for (model, s) in q["scores"].as_object().into_iter().flatten() {
            let Some(s) = s.as_f64() else { continue };
            scores.insert(model.clone(), s);
            if let Some(p) = prices[model]["output_price"].as_f64() {
                let input = prices[model]["input_price"].as_f64().unwrap_or(p);
                costs.insert(model.clone(), (input + p) / 2.0);
            }
        }
        out.push(Item {
            id: format!("llmrouter/{}/{}", row.part, row.index),
            prompt: q["question"].as_str().unwrap_or_default().to_owned(),
            source: "llmrouter/dcrouter".to_owned(),
            scores,
            costs,
            confidence: BTreeMap::new(),
            answers: BTreeMap::new(),
        });
        Ok(())
    })?;
    Ok(out)
}

/// LLMRouter's multiple-choice tasks with their letter choices in a dict (its query data:
/// `llmrouter/data/example_data/query_data/default_query_{train,test}.jsonl`).
pub const CHOICE_TASKS: [&str; 3] = ["commonsense_qa", "openbook_qa", "arc_challenge"];

/// Questions of LLMRouter's query data for `tasks` (of [`CHOICE_TASKS`]), both
/// of its files, asked zero-shot as multiple choice with their own letters (CommonsenseQA
/// has five). Short prompts with one-letter answers: cheap to label on CPU, and easy
/// enough that a 0.5B model is well above chance where a 135M one is not.
pub fn choice_questions(root: &Path, tasks: &[&str]) -> Result<Vec<Question>, DataError> {
    let mut out = Vec::new();
    queries(root, tasks, |row| {
        let (v, task, bad) = (&row.value, row.task(), |what: &str| row.bad(what));
        let choices = v["choices"]
            .as_str()
            .and_then(python_literal_to_json)
            .ok_or_else(|| bad("choices is not a {'label': [...], 'text': [...]} dict"))?;
        // A few ARC questions number their choices 1, 2, 3, ... (the gold answer too):
        // they are asked with letters like the rest, so every answer is one letter.
        let letter = |l: &str| match l.trim().parse::<u32>() {
            Ok(k @ 1..=26) => char::from_u32(u32::from('A') + k - 1),
            _ => l.trim().chars().next(),
        };
        let labels: Vec<char> = choices["label"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| letter(l.as_str()?))
            .collect();
        let texts: Vec<&str> = choices["text"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let expected: Vec<char> = ('A'..='Z').take(labels.len()).collect();
        if labels.len() < 2 || labels != expected || texts.len() != labels.len() {
            return Err(bad(
                "choices are not labelled A, B, C, ... with a text each",
            ));
        }
        let answer = v["ground_truth"]
            .as_str()
            .and_then(letter)
            .filter(|g| labels.contains(g))
            .ok_or_else(|| bad("ground_truth is not one of the choice letters"))?;
        out.push(Question {
            id: row.id(),
            source: format!("label/{task}"),
            prompt: choice_prompt(None, v["query"].as_str().unwrap_or_default().trim(), &texts),
            gold: Gold::Letter {
                answer,
                last: labels[labels.len() - 1],
            },
        });
        Ok(())
    })?;
    Ok(out)
}

/// LLMRouter's code tasks (its query data): MBPP (a task and its `assert` lines) and
/// HumanEval (a signature and docstring, and a `check(candidate)` of tests).
pub const CODE_TASKS: [&str; 2] = ["mbpp", "human_eval"];

/// Problems of LLMRouter's query data for `tasks` (of [`CODE_TASKS`]), both of
/// its files, once each (HumanEval's test file repeats train problems). An answer is
/// right when its code passes the problem's tests. The models this labels on CPU are
/// small code models: where a 0.5B coder solves half of them and a 135M model almost none,
/// the labels carry the signal that multiple choice at chance level does not.
pub fn code_questions(root: &Path, tasks: &[&str]) -> Result<Vec<Question>, DataError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    queries(root, tasks, |row| {
        let (v, task, bad) = (&row.value, row.task(), |what: &str| row.bad(what));
        let query = v["query"].as_str().unwrap_or_default();
        let truth = v["ground_truth"].as_str().unwrap_or_default();
        let (prompt, check) = match task {
            "mbpp" => {
                let asserts: Vec<String> = python_literal_to_json(truth)
                    .and_then(|j| serde_json::from_value(j).ok())
                    .filter(|a: &Vec<String>| !a.is_empty())
                    .ok_or_else(|| bad("ground_truth is not a list of assert lines"))?;
                let prompt = format!(
                    "{}\nYour code should pass these tests:\n{}\n\nReply with only \
                         the Python function, in a ```python code block.",
                    query.trim(),
                    asserts.join("\n")
                );
                (prompt, CodeCheck::Asserts(asserts))
            }
            _ => {
                let entry =
                    code::last_function(query).ok_or_else(|| bad("query defines no function"))?;
                if !truth.contains("def check(") {
                    return Err(bad("ground_truth has no check(candidate)"));
                }
                let prompt = format!(
                    "Complete this Python function. Reply with only the whole function, \
                         in a ```python code block.\n\n```python\n{query}```"
                );
                let check = CodeCheck::Check {
                    prompt: query.to_owned(),
                    test: truth.to_owned(),
                    entry,
                };
                (prompt, check)
            }
        };
        if seen.insert(prompt.clone()) {
            out.push(Question {
                id: row.id(),
                source: format!("label/{task}"),
                prompt,
                gold: Gold::Code(check),
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// A Python literal of strings, lists and dicts (LLMRouter stores its choices as the
/// `repr` of a dict) as JSON: quotes of either kind, and Python's escapes inside them.
fn python_literal_to_json(text: &str) -> Option<Value> {
    let mut json = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\'' && c != '"' {
            json.push(c);
            continue;
        }
        let quote = c;
        let mut s = String::new();
        loop {
            match chars.next()? {
                ch if ch == quote => break,
                '\\' => match chars.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'x' => {
                        let hex: String = chars.by_ref().take(2).collect();
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => s.push(other),
                },
                ch => s.push(ch),
            }
        }
        json.push_str(&serde_json::to_string(&s).ok()?);
    }
    serde_json::from_str(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A datasets root with both of LLMRouter's tables: two outcome rows (one per part)
    /// and two queries (a blank line before the test part's).
    fn both_tables(root: &Path) {
        let base = root.join(BASE);
        for dir in [
            "dcrouter_preprocessed",
            "example_data/query_data",
            "example_data/llm_candidates",
        ] {
            std::fs::create_dir_all(base.join(dir)).expect("dirs");
        }
        std::fs::write(
            base.join("example_data/llm_candidates/default_llm.json"),
            json!({"small": {"input_price": 0.25, "output_price": 0.75}, "big": {"output_price": 2.0}})
                .to_string(),
        )
        .expect("write");
        for (part, question) in [("train", "What is 2 + 2?"), ("test", "Name a prime.")] {
            std::fs::write(
                base.join(format!("dcrouter_preprocessed/{part}.json")),
                json!([{"question": question, "scores": {"small": 0.0, "big": 1.0, "gone": null}}])
                    .to_string(),
            )
            .expect("write");
        }
        let query = |task: &str| {
            json!({"task_name": task, "query": "Which?", "ground_truth": "A",
                   "choices": "{'label': ['A', 'B'], 'text': ['yes', 'no']}"})
            .to_string()
        };
        let q = base.join("example_data/query_data");
        std::fs::write(q.join("default_query_train.jsonl"), query("openbook_qa")).expect("write");
        std::fs::write(
            q.join("default_query_test.jsonl"),
            format!("\n{}", query("arc_challenge")),
        )
        .expect("write");
    }

    #[test]
    fn one_reader_serves_the_outcomes_and_the_queries() {
        let dir = tempfile::tempdir().expect("tempdir");
        both_tables(dir.path());
        // `import`: one item per outcome row, train part first, each model's price the
        // mean of its input and output prices (the output price when that is all there is).
        let items = outcomes(dir.path()).expect("outcomes");
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["llmrouter/train/0", "llmrouter/test/0"]);
        assert_eq!(items[0].prompt, "What is 2 + 2?");
        assert_eq!(
            items[0].scores,
            BTreeMap::from([("big".to_owned(), 1.0), ("small".to_owned(), 0.0)]),
            "a score that is not a number is left out"
        );
        assert_eq!(
            items[1].costs,
            BTreeMap::from([("big".to_owned(), 2.0), ("small".to_owned(), 0.5)])
        );
        // `label`: the queries of the same dataset, ids by part and line (blank lines
        // count, so a resumed run finds its questions again).
        let qs = choice_questions(dir.path(), &CHOICE_TASKS).expect("queries");
        let ids: Vec<&str> = qs.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "llmrouter/openbook_qa/train/0",
                "llmrouter/arc_challenge/test/1"
            ]
        );
        // A bad record is an error naming its file and line, in either table.
        let q = dir.path().join(BASE).join("example_data/query_data");
        std::fs::write(q.join("default_query_test.jsonl"), "\n\n{not json").expect("write");
        let err = choice_questions(dir.path(), &CHOICE_TASKS)
            .expect_err("bad line")
            .to_string();
        assert!(err.contains("default_query_test.jsonl:3:"), "{err}");
        let d = dir.path().join(BASE).join("dcrouter_preprocessed");
        std::fs::write(d.join("test.json"), "[{").expect("write");
        let err = outcomes(dir.path()).expect_err("bad file").to_string();
        assert!(err.contains("test.json:0:"), "{err}");
    }

    #[test]
    fn python_reprs_of_choices_read_as_json() {
        let v = python_literal_to_json(
            r#"{'label': ['A', 'B'], 'text': ["driver's seat", 'a \'quote\' and \\ and \xe9 and "x"']}"#,
        )
        .expect("parses");
        assert_eq!(v["label"], json!(["A", "B"]));
        assert_eq!(
            v["text"],
            json!(["driver's seat", "a 'quote' and \\ and \u{e9} and \"x\""])
        );
        assert!(
            python_literal_to_json("{'label': ['A'").is_none(),
            "unterminated"
        );
    }

    #[test]
    fn llmrouter_questions_keep_their_letters_and_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = dir.path().join("llmrouter/data/example_data/query_data");
        std::fs::create_dir_all(&q).expect("dirs");
        let row = |task: &str, labels: &str, gold: &str| {
            json!({"task_name": task, "query": "If a bum wanted to ride for free, where?",
                   "ground_truth": gold, "metric": "em_mc",
                   "choices": format!("{{'label': [{labels}], 'text': ['bus depot', 'train station', 'beach', 'bridge', 'taxi']}}")})
            .to_string()
        };
        let five = "'A', 'B', 'C', 'D', 'E'";
        std::fs::write(
            q.join("default_query_train.jsonl"),
            [row("commonsense_qa", five, "B"), row("math", five, "B")].join("\n"),
        )
        .expect("write");
        std::fs::write(
            q.join("default_query_test.jsonl"),
            row("openbook_qa", five, "E"),
        )
        .expect("write");
        let qs = choice_questions(dir.path(), &CHOICE_TASKS).expect("load");
        assert_eq!(qs.len(), 2, "math is not a choice task");
        assert_eq!(qs[0].id, "llmrouter/commonsense_qa/train/0");
        assert_eq!(
            qs[0].gold,
            Gold::Letter {
                answer: 'B',
                last: 'E'
            }
        );
        assert!(qs[0].prompt.contains("\nE. taxi\n"), "{}", qs[0].prompt);
        assert_eq!(qs[1].id, "llmrouter/openbook_qa/test/0");

        // Choices numbered 1..4 (some ARC questions) are asked as A..D.
        std::fs::write(
            q.join("default_query_test.jsonl"),
            row("arc_challenge", "'1', '2', '3', '4', '5'", "3"),
        )
        .expect("write");
        let qs = choice_questions(dir.path(), &CHOICE_TASKS).expect("load");
        assert_eq!(
            qs[1].gold,
            Gold::Letter {
                answer: 'C',
                last: 'E'
            }
        );
        assert!(qs[1].prompt.contains("\nC. beach\n"), "{}", qs[1].prompt);

        // A gold answer that is not among the choices is an error, not a silent label.
        std::fs::write(
            q.join("default_query_test.jsonl"),
            row("openbook_qa", five, "F"),
        )
        .expect("write");
        let err = choice_questions(dir.path(), &CHOICE_TASKS).expect_err("bad gold");
        assert!(err.to_string().contains("ground_truth"), "{err}");
    }

    #[test]
    fn llmrouter_code_problems_carry_their_tests_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = dir.path().join("llmrouter/data/example_data/query_data");
        std::fs::create_dir_all(&q).expect("dirs");
        let mbpp = json!({"task_name": "mbpp", "query": "Write a function to add two numbers.",
            "ground_truth": "['assert add(1, 2) == 3', \"assert add(0, 0) == 0\"]", "metric": "code_eval"});
        let he_prompt = "def helper():\n    pass\n\n\ndef total(xs):\n    \"\"\"Sum.\"\"\"\n";
        let he = json!({"task_name": "human_eval", "query": he_prompt,
            "ground_truth": "\n\ndef check(candidate):\n    assert candidate([1]) == 1\n", "metric": "code_eval"});
        let other = json!({"task_name": "gsm8k", "query": "1+1?", "ground_truth": "2"});
        std::fs::write(
            q.join("default_query_train.jsonl"),
            [mbpp.to_string(), he.to_string(), other.to_string()].join("\n"),
        )
        .expect("write");
        // HumanEval's test file repeats train problems: asked once.
        std::fs::write(q.join("default_query_test.jsonl"), he.to_string()).expect("write");
        let qs = code_questions(dir.path(), &CODE_TASKS).expect("load");
        assert_eq!(qs.len(), 2, "{qs:?}");
        assert_eq!(qs[0].id, "llmrouter/mbpp/train/0");
        assert!(
            qs[0].prompt.contains("assert add(0, 0) == 0"),
            "MBPP shows its tests: {}",
            qs[0].prompt
        );
        assert_eq!(
            qs[0].gold,
            Gold::Code(CodeCheck::Asserts(vec![
                "assert add(1, 2) == 3".into(),
                "assert add(0, 0) == 0".into()
            ]))
        );
        let Gold::Code(CodeCheck::Check { entry, .. }) = &qs[1].gold else {
            panic!("{:?}", qs[1].gold)
        };
        assert_eq!(entry, "total", "the last function is the entry point");
        assert_eq!(qs[0].gold.score("def add(a, b): return a + b"), None);

        let bad = json!({"task_name": "mbpp", "query": "x", "ground_truth": "not a list"});
        std::fs::write(q.join("default_query_test.jsonl"), bad.to_string()).expect("write");
        let err = code_questions(dir.path(), &["mbpp"]).expect_err("bad tests");
        assert!(err.to_string().contains("assert"), "{err}");
    }
}
