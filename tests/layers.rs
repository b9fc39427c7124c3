//! `ARCHITECTURE.md` kept true: the daemon's modules form layers, each importing only its own
//! layer or those below (read from the source, as a reviewer would), with no cycle between
//! files, and no file outside `format/` spells the column list of a row.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The daemon's top-level modules and their layers, read from the numbered list in the
/// doc comment of `lib.rs` (`//! 2. [`store`]: …`), so that the list people read is the one
/// checked: each module named in backticks and brackets belongs to the item it is in.
fn layers() -> BTreeMap<String, u32> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/src/lib.rs");
    let text = std::fs::read_to_string(lib).unwrap();
    let mut layers = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim_start();
        if let Some((number, _)) = doc.split_once(". ")
            && let Ok(number) = number.parse::<u32>()
        {
            current = Some(number);
        } else if doc.is_empty() || !line.starts_with("//!    ") {
            current = None;
        }
        let Some(layer) = current else { continue };
        for (at, _) in doc.match_indices("[`") {
            let name = &doc[at + 2..];
            if let Some(end) = name.find("`]") {
                layers.insert(name[..end].to_owned(), layer);
            }
        }
    }
    assert!(layers.len() >= 5, "no layers found in lib.rs: {layers:?}");
    layers
}

fn source_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The library's files (not the binaries'), by module path (`store::writer`), with their
/// text up to their unit tests, whose imports do not count.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files
        .into_iter()
        .filter(|path| !path.starts_with(src.join("bin")))
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|last| last == "mod") {
                parts.pop();
            }
            if parts == ["lib"] {
                return None;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap().to_owned();
            Some((parts.join("::"), text))
        })
        .collect()
}

/// The modules `text` names with `crate::a::b` or `super::b`, as module paths that exist.
fn imports(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parent: Vec<&str> = module.split("::").collect();
    let parent = parent[..parent.len() - 1].join("::");
    let mut found = BTreeSet::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        for (at, _) in text.match_indices(prefix) {
            let rest = &text[at + prefix.len()..];
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap()
                .split("::")
                .filter(|part| !part.is_empty())
                .collect();
            // The longest prefix of the path that is a module.
            for n in (1..=path.len()).rev() {
                let mut candidate = path[..n].join("::");
                if !base.is_empty() {
                    candidate = format!("{base}::{candidate}");
                }
                if known.contains(&candidate) {
                    if candidate != module {
                        found.insert(candidate);
                    }
                    break;
                }
            }
        }
    }
    found
}

#[test]
fn the_daemons_modules_import_only_their_layer_and_those_below_with_no_cycle() {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let layers = layers();
    let layer = |module: &str| {
        let top = module.split("::").next().unwrap();
        *layers
            .get(top)
            .unwrap_or_else(|| panic!("{top} is in no layer: add it to the list in lib.rs"))
    };
    let mut graph: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &modules {
        for imported in imports(module, text, &known) {
            assert!(
                layer(&imported) <= layer(module),
                "{module} (layer {}) imports {imported} (layer {})",
                layer(module),
                layer(&imported)
            );
            graph.entry(module).or_default().insert(imported);
        }
    }
    assert!(graph.contains_key("serve::server"), "{graph:?}");
    // Depth-first search for a cycle between files.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<&str, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
    ) {
        match state.get(module) {
            Some(true) => panic!("import cycle: {} -> {module}", path.join(" -> ")),
            Some(false) => return,
            None => {}
        }
        state.insert(module, true);
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, state, path);
        }
        path.pop();
        state.insert(module, false);
    }
    let mut state = BTreeMap::new();
    for module in modules.keys() {
        visit(module, &graph, &mut state, &mut Vec::new());
    }
}

#[test]
fn only_the_format_spells_the_columns_of_a_row() {
    // Three columns in their stored order, as any column list of a row would have them.
    let list = ["cache_read_tokens", "reasoning_tokens", "cost_micro_usd"];
    for (module, text) in modules() {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '"' && *c != ',')
            .collect();
        let spelled = compact.contains(&list.concat());
        assert_eq!(
            spelled,
            module == "format::row",
            "{module} spells the columns of a row; go through format::row"
        );
    }
}
