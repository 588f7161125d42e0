//! The check that a command's outputs stay clear of its inputs.

use std::path::{Component, Path, PathBuf};

use crate::OutputError;

/// A path a command was given, with the flag that gave it (named in errors).
#[derive(Debug, Clone, Copy)]
pub struct Role<'a> {
    pub flag: &'a str,
    pub path: &'a Path,
}

impl<'a> Role<'a> {
    pub fn new(flag: &'a str, path: &'a Path) -> Self {
        Self { flag, path }
    }
}

/// Refuses an output that is one of the inputs, contains one (an output folder that is
/// replaced whole would delete it), or lies inside an input folder (a file written into a
/// model dir may replace one of its files, as `--out M/model.safetensors` would).
///
/// Paths are compared after resolving symbolic links and `..`, so `./m`, `m/` and a link to
/// `m` are the same folder. Outputs that do not exist yet are resolved through their nearest
/// existing ancestor.
pub fn check_disjoint(output: Role<'_>, inputs: &[Role<'_>]) -> Result<(), OutputError> {
    let out = resolve(output.path)?;
    for input in inputs {
        let inp = resolve(input.path)?;
        let relation = if out == inp {
            "is"
        } else if inp.starts_with(&out) {
            "contains"
        } else if out.starts_with(&inp) && input.path.is_dir() {
            "is inside"
        } else {
            continue;
        };
        return Err(OutputError::Overlaps {
            output_flag: output.flag.to_string(),
            output: output.path.to_path_buf(),
            relation,
            input_flag: input.flag.to_string(),
            input: input.path.to_path_buf(),
        });
    }
    Ok(())
}

/// `path` made absolute, with links and `..` resolved as far as the path exists; the rest is
/// normalised lexically.
pub fn resolve(path: &Path) -> Result<PathBuf, OutputError> {
    let absolute = std::path::absolute(path).map_err(|e| OutputError::io(path, e))?;
    let mut existing = absolute.as_path();
    let mut rest: Vec<Component<'_>> = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut resolved) => {
                for component in rest.iter().rev() {
                    match component {
                        Component::ParentDir => {
                            resolved.pop();
                        }
                        Component::CurDir => {}
                        other => resolved.push(other),
                    }
                }
                return Ok(resolved);
            }
            Err(e) => match (existing.parent(), existing.components().next_back()) {
                (Some(parent), Some(last)) => {
                    rest.push(last);
                    existing = parent;
                }
                _ => return Err(OutputError::io(path, e)),
            },
        }
    }
}
