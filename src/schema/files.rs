//! Writes the generated files to disk or checks that the committed copies
//! are current. The only part of the schema module that touches the disk.

use std::path::{Path, PathBuf};

use super::generated_files;

#[derive(Debug, thiserror::Error)]
pub enum SchemaFilesError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generated files differ from the schema model: {}", .paths.join(", "))]
    Stale { paths: Vec<String> },
}

/// Writes every generated file under `root`; returns the paths that changed.
pub fn write_all(root: &Path) -> Result<Vec<&'static str>, SchemaFilesError> {
    let mut changed = Vec::new();
    for file in generated_files() {
        let path = root.join(file.path);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(file.contents.as_str()) {
            continue;
        }
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &file.contents)
        };
        write(&path).map_err(|source| SchemaFilesError::Write {
            path: path.clone(),
            source,
        })?;
        changed.push(file.path);
    }
    Ok(changed)
}

/// Fails naming every file under `root` that is missing or differs.
pub fn check_all(root: &Path) -> Result<(), SchemaFilesError> {
    let stale: Vec<String> = generated_files()
        .into_iter()
        .filter(|f| {
            std::fs::read_to_string(root.join(f.path)).ok().as_deref() != Some(f.contents.as_str())
        })
        .map(|f| f.path.to_string())
        .collect();
    if stale.is_empty() {
        Ok(())
    } else {
        Err(SchemaFilesError::Stale { paths: stale })
    }
}
