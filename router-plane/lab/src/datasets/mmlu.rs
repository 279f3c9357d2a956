//! MMLU (`mmlu/test/`): its test questions, asked zero-shot as multiple choice, for `label`.

use std::path::Path;

use super::{choice_prompt, csv_rows, files_with_extension};
use crate::{
    data::DataError,
    label::{Gold, Question},
};

/// MMLU test questions (`mmlu/test/<subject>_test.csv`), asked zero-shot.
pub fn questions(root: &Path) -> Result<Vec<Question>, DataError> {
    let dir = root.join("mmlu/test");
    let files = files_with_extension(&dir, "csv")?;
    let mut out = Vec::new();
    for f in files {
        let subject = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .trim_end_matches("_test")
            .to_owned();
        let (_, rows) = csv_rows(&f)?;
        for (n, (line, r)) in rows.into_iter().enumerate() {
            let field = |k: usize| r.get(k).unwrap_or_default();
            let answer: usize = field(5)
                .trim()
                .parse()
                .map_err(|_| DataError::parse(&f, line, "answer is not 0..3"))?;
            let letter = ['A', 'B', 'C', 'D']
                .get(answer)
                .copied()
                .ok_or_else(|| DataError::parse(&f, line, "answer is not 0..3"))?;
            let prompt = choice_prompt(
                Some(&subject.replace('_', " ")),
                field(0),
                &[field(1), field(2), field(3), field(4)],
            );
            out.push(Question {
                id: format!("mmlu/{subject}/{n}"),
                source: format!("label/mmlu/{subject}"),
                prompt,
                gold: Gold::Letter {
                    answer: letter,
                    last: 'D',
                },
            });
        }
    }
    Ok(out)
}
