//! Checks a GGUF file before mistral.rs sees it.
//!
//! mistral.rs 0.8 panics on a GGUF whose `general.architecture` it has no loader for (a
//! `gemma3` file, say), and candle fails deep inside loading on a tensor type it does not
//! know. The worker reads the header itself first — the metadata and the tensor table, not
//! the weights — and refuses such a file with an error that names the file, what it holds
//! and what this worker loads. Every length read from the file is bounded, so a corrupt or
//! hostile header is an error too, never a huge allocation.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufReader, Read},
    path::Path,
};

/// The architectures mistral.rs 0.8.1 builds a model for from GGUF
/// (`mistralrs-core/src/pipeline/gguf.rs`).
pub const ARCHITECTURES: &[&str] = &[
    "llama",
    "mistral3",
    "phi2",
    "phi3",
    "starcoder2",
    "qwen2",
    "qwen3",
    "qwen3moe",
];

/// What the header says, for the log line and the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub architecture: String,
    /// Tensor type name -> how many tensors have it.
    pub tensor_types: BTreeMap<&'static str, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF file this worker can read: {why}")]
    Malformed { path: String, why: String },
    #[error(
        "{path} holds a `{architecture}` model; this worker (mistral.rs 0.8.1) loads GGUF models of the architectures {}",
        ARCHITECTURES.join(", ")
    )]
    Architecture { path: String, architecture: String },
    #[error(
        "{path}: tensor `{tensor}` has GGML type {type_id}, which candle cannot load (it loads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and Q2_K to Q8_K)"
    )]
    TensorType {
        path: String,
        tensor: String,
        type_id: u32,
    },
}

/// The GGML tensor types candle 0.10 loads, by their id in the file.
fn tensor_type(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        30 => "BF16",
        _ => return None,
    })
}

/// Bounds on what a header may claim, far above any real model's.
const MAX_STRING: u64 = 1 << 20;
const MAX_ARRAY: u64 = 1 << 24;
const MAX_ENTRIES: u64 = 1 << 20;
const MAX_DIMS: u32 = 8;

/// Reads `path`'s header and checks that mistral.rs can load what it describes.
pub fn check(path: &Path) -> Result<Summary, GgufError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| GgufError::Io {
        path: shown.clone(),
        source,
    })?;
    let summary = read_header(&mut BufReader::new(file)).map_err(|e| match e {
        HeaderError::Io(source) if source.kind() != std::io::ErrorKind::UnexpectedEof => {
            GgufError::Io {
                path: shown.clone(),
                source,
            }
        }
        HeaderError::Io(_) => GgufError::Malformed {
            path: shown.clone(),
            why: "the header ends early".into(),
        },
        HeaderError::Malformed(why) => GgufError::Malformed {
            path: shown.clone(),
            why,
        },
        HeaderError::TensorType { tensor, type_id } => GgufError::TensorType {
            path: shown.clone(),
            tensor,
            type_id,
        },
    })?;
    if !ARCHITECTURES.contains(&summary.architecture.as_str()) {
        return Err(GgufError::Architecture {
            path: shown,
            architecture: summary.architecture,
        });
    }
    Ok(summary)
}

#[derive(Debug)]
enum HeaderError {
    Io(std::io::Error),
    Malformed(String),
    TensorType { tensor: String, type_id: u32 },
}

impl From<std::io::Error> for HeaderError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

fn malformed(why: impl Into<String>) -> HeaderError {
    HeaderError::Malformed(why.into())
}

struct Header<'a, R> {
    r: &'a mut R,
    /// Version 1 files use u32 lengths and counts; 2 and 3 use u64.
    wide: bool,
}

impl<R: Read> Header<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A length or count, bounded by `max`.
    fn count(&mut self, what: &str, max: u64) -> Result<u64, HeaderError> {
        let n = if self.wide {
            self.u64()?
        } else {
            u64::from(self.u32()?)
        };
        if n > max {
            return Err(malformed(format!(
                "{what} of {n} is over the limit of {max}"
            )));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let len = self.count("a string length", MAX_STRING)?;
        let mut buf = Vec::with_capacity(len as usize);
        self.r.by_ref().take(len).read_to_end(&mut buf)?;
        if buf.len() as u64 != len {
            return Err(HeaderError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        String::from_utf8(buf).map_err(|_| malformed("a string is not UTF-8"))
    }

    fn skip(&mut self, n: u64) -> Result<(), HeaderError> {
        let skipped = std::io::copy(&mut self.r.by_ref().take(n), &mut std::io::sink())?;
        if skipped != n {
            return Err(HeaderError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// Reads a metadata value of `kind`: strings are returned, everything else skipped.
    fn value(&mut self, kind: u32, depth: u32) -> Result<Option<String>, HeaderError> {
        match kind {
            // u8, i8, bool
            0 | 1 | 7 => self.skip(1)?,
            // u16, i16
            2 | 3 => self.skip(2)?,
            // u32, i32, f32
            4..=6 => self.skip(4)?,
            // u64, i64, f64
            10..=12 => self.skip(8)?,
            8 => return self.string().map(Some),
            9 => {
                if depth > 2 {
                    return Err(malformed("arrays nested too deep"));
                }
                let inner = self.u32()?;
                let n = self.count("an array length", MAX_ARRAY)?;
                for _ in 0..n {
                    self.value(inner, depth + 1)?;
                }
            }
            other => return Err(malformed(format!("unknown metadata value type {other}"))),
        }
        Ok(None)
    }
}

fn read_header<R: Read>(r: &mut R) -> Result<Summary, HeaderError> {
    let mut h = Header { r, wide: true };
    if &h.bytes::<4>()? != b"GGUF" {
        return Err(malformed("it does not start with the GGUF magic"));
    }
    h.wide = match h.u32()? {
        1 => false,
        2 | 3 => true,
        v => return Err(malformed(format!("unknown GGUF version {v}"))),
    };
    let tensors = h.count("a tensor count", MAX_ENTRIES)?;
    let entries = h.count("a metadata count", MAX_ENTRIES)?;
    let mut architecture = None;
    for _ in 0..entries {
        let key = h.string()?;
        let kind = h.u32()?;
        let value = h.value(kind, 0)?;
        if key == "general.architecture" {
            architecture =
                Some(value.ok_or_else(|| malformed("general.architecture is not a string"))?);
        }
    }
    let architecture = architecture.ok_or_else(|| malformed("it has no general.architecture"))?;
    let mut tensor_types = BTreeMap::new();
    for _ in 0..tensors {
        let name = h.string()?;
        let dims = h.u32()?;
        if dims > MAX_DIMS {
            return Err(malformed(format!("tensor `{name}` has {dims} dimensions")));
        }
        for _ in 0..dims {
            h.count("a tensor dimension", u64::MAX)?;
        }
        let type_id = h.u32()?;
        let _offset = h.u64()?;
        let ty = tensor_type(type_id).ok_or(HeaderError::TensorType {
            tensor: name,
            type_id,
        })?;
        *tensor_types.entry(ty).or_insert(0) += 1;
    }
    Ok(Summary {
        architecture,
        tensor_types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 header with `metadata` (key, string value) and `tensors` (name, type id),
    /// plus a u32 and an array of strings to skip over.
    fn header(metadata: &[(&str, &str)], tensors: &[(&str, u32)]) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64 + 2).to_le_bytes());
        string(&mut out, "general.alignment");
        out.extend(4u32.to_le_bytes());
        out.extend(32u32.to_le_bytes());
        string(&mut out, "tokenizer.ggml.tokens");
        out.extend(9u32.to_le_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        string(&mut out, "<s>");
        string(&mut out, "hello");
        for (k, v) in metadata {
            string(&mut out, k);
            out.extend(8u32.to_le_bytes());
            string(&mut out, v);
        }
        for (name, ty) in tensors {
            string(&mut out, name);
            out.extend(2u32.to_le_bytes());
            out.extend(64u64.to_le_bytes());
            out.extend(32u64.to_le_bytes());
            out.extend(ty.to_le_bytes());
            out.extend(0u64.to_le_bytes());
        }
        out
    }

    fn check_bytes(bytes: &[u8]) -> Result<Summary, GgufError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, bytes).expect("write");
        check(&path)
    }

    #[test]
    fn a_qwen2_file_passes_with_its_tensor_types_counted() {
        let s = check_bytes(&header(
            &[("general.architecture", "qwen2"), ("general.name", "q")],
            &[("a.weight", 12), ("b.weight", 12), ("c.weight", 14)],
        ))
        .expect("loadable");
        assert_eq!(s.architecture, "qwen2");
        assert_eq!(
            s.tensor_types,
            BTreeMap::from([("Q4_K", 2usize), ("Q6_K", 1)])
        );
    }

    #[test]
    fn an_unknown_architecture_is_named_with_the_file() {
        let err = check_bytes(&header(&[("general.architecture", "gemma3")], &[]))
            .expect_err("gemma3 is refused");
        let msg = err.to_string();
        assert!(matches!(err, GgufError::Architecture { .. }), "{msg}");
        assert!(
            msg.contains("model.gguf") && msg.contains("`gemma3`"),
            "{msg}"
        );
        assert!(msg.contains("qwen2"), "says what it loads: {msg}");
    }

    #[test]
    fn an_unknown_tensor_type_names_the_tensor() {
        // 16 is IQ2_XXS, which candle does not load.
        let err = check_bytes(&header(
            &[("general.architecture", "llama")],
            &[("ok.weight", 2), ("blk.0.attn_q.weight", 16)],
        ))
        .expect_err("IQ2_XXS is refused");
        assert!(
            matches!(&err, GgufError::TensorType { tensor, type_id: 16, .. } if tensor == "blk.0.attn_q.weight"),
            "{err}"
        );
    }

    #[test]
    fn broken_headers_are_errors_not_allocations() {
        assert!(matches!(
            check_bytes(b"GGML\x03\0\0\0"),
            Err(GgufError::Malformed { .. })
        ));
        let full = header(&[("general.architecture", "llama")], &[("t", 0)]);
        for cut in [6, 20, full.len() - 3] {
            assert!(
                matches!(check_bytes(&full[..cut]), Err(GgufError::Malformed { .. })),
                "cut at {cut}"
            );
        }
        // A string claiming 2^40 bytes.
        let mut huge = b"GGUF".to_vec();
        huge.extend(3u32.to_le_bytes());
        huge.extend(0u64.to_le_bytes());
        huge.extend(1u64.to_le_bytes());
        huge.extend((1u64 << 40).to_le_bytes());
        let err = check_bytes(&huge).expect_err("refused");
        assert!(err.to_string().contains("over the limit"), "{err}");
        assert!(matches!(
            check_bytes(&header(&[("general.name", "x")], &[])),
            Err(GgufError::Malformed { .. })
        ));
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        assert!(matches!(
            check(Path::new("/nonexistent/model.gguf")),
            Err(GgufError::Io { .. })
        ));
    }
}
