//! The README and the pages of `docs/`, and the fenced blocks in them, for the tests that
//! check what the documentation shows.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The README and every page of `docs/`: (path, text), in order.
pub fn documentation() -> Vec<(String, String)> {
    let root = root();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(&root).unwrap_or(&p).display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// A fenced block of a page.
pub struct Block {
    /// What follows the opening fence: `sh`, `python`, `toml`, or nothing.
    pub lang: String,
    /// The line of the opening fence, from 1.
    pub line: usize,
    /// The lines between the fences, each ending in `\n`.
    pub text: String,
}

/// Every fenced block of `page`, in order.
pub fn fenced_blocks(page: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (index, line) in page.lines().enumerate() {
        let trimmed = line.trim_start();
        match (&mut current, trimmed.strip_prefix("```")) {
            (None, Some(lang)) => {
                current = Some(Block {
                    lang: lang.trim().to_owned(),
                    line: index + 1,
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => blocks.extend(current.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}
