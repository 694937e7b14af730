//! The workspace's layering, checked from the source text: no import circle between the
//! modules of any crate, and no role code reachable from the shared shell.
//!
//! It does not compile anything or resolve names the way rustc does: it reads each `.rs`
//! file, drops comments, strings and test-only code, and follows the paths that name a
//! module of the same crate (`crate::…`, `super::…`, `self::…`, or a child module's name).
//! A module is a file: `foo.rs` or `foo/mod.rs` is `foo`, `foo/bar.rs` is `foo::bar`, the
//! crate root (`lib.rs`, `main.rs`) is `crate`. A path `crate::foo::bar::X` is an edge to
//! `foo::bar` when that file exists, else to `foo`. A re-export (`pub use child::X`) is an
//! edge like any other: a module that gathers its children sits above them, so it cannot
//! also hold what they use. Tests sit below everything, so `tests.rs` files and
//! `#[cfg(test)]` items are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates whose modules are checked, by source folder.
const CRATES: &[&str] = &[
    "core/src",
    "shell/src",
    "shell-client/src",
    "shell-server/src",
];

/// The role packages (their package name and the crate name code would use).
const ROLE_PACKAGES: &[&str] = &["certrelay", "certrelayd"];
const ROLE_CRATE_NAMES: &[&str] = &[
    "certrelay",
    "certrelayd",
    "certrelay_client",
    "certrelay_server",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------
// Source text: comments and literals blanked out, newlines kept so line numbers hold.

/// `text` with comments, string literals and character literals replaced by spaces.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if is_raw_string_start(b, i) => {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let open = i + 1 + hashes + 1;
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                let end = find(b, open, &close).map_or(b.len(), |p| p + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(b.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'\'' => {
                // A character literal ('x', '\n', '\''), or else a lifetime ('a).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .skip(1)
                        .position(|&c| c == b'\'')
                        .map(|p| i + 3 + p + 1)
                } else {
                    let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + width) == Some(&b'\'')).then_some(i + 2 + width)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_raw_string_start(b: &[u8], i: usize) -> bool {
    // `r"…"`, `r#"…"#`, and the byte form `br"…"`.
    let before = match i.checked_sub(1).map(|j| b[j]) {
        Some(b'b') => i.checked_sub(2).map(|j| b[j]),
        other => other,
    };
    if before.is_some_and(is_ident_byte) {
        return false;
    }
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    b.get(i + 1 + hashes) == Some(&b'"')
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

// ---------------------------------------------------------------------------------------
// Tokens.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(text: &str) -> Vec<Token> {
    let b = text.as_bytes();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if is_ident_byte(c) || c >= 0x80 {
            let start = i;
            while i < b.len() && (is_ident_byte(b[i]) || b[i] >= 0x80) {
                i += 1;
            }
            let word = &text[start..i];
            let word = word.strip_prefix("r#").unwrap_or(word);
            out.push(Token {
                tok: Tok::Ident(word.to_string()),
                line,
            });
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += ch.len_utf8();
        }
    }
    out
}

/// The tokens with every `#[cfg(test)]` item taken out (the attribute through the end of the
/// item: its `;` or its braced body), and the names of the modules so declared (`mod x;`).
fn drop_test_items(tokens: Vec<Token>) -> (Vec<Token>, BTreeSet<String>) {
    let mut out = Vec::with_capacity(tokens.len());
    let mut test_mods = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(after) = cfg_test_attribute(&tokens, i) {
            let mut j = after;
            if let Some(name) = declared_module(&tokens, j) {
                test_mods.insert(name);
            }
            while j < tokens.len() {
                match tokens[j].tok {
                    Tok::Punct(';') => {
                        j += 1;
                        break;
                    }
                    Tok::Punct('{') => {
                        j = matching_close(&tokens, j) + 1;
                        break;
                    }
                    _ => j += 1,
                }
            }
            i = j;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    (out, test_mods)
}

/// When `#[cfg(test)]` starts at `i`, the index just past it.
fn cfg_test_attribute(t: &[Token], i: usize) -> Option<usize> {
    let want = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    let got = t.get(i..i + want.len())?;
    got.iter()
        .zip(&want)
        .all(|(a, b)| &a.tok == b)
        .then_some(i + want.len())
}

/// The name in `[pub[(…)]] mod name` starting at `i`, skipping other attributes first.
fn declared_module(t: &[Token], mut i: usize) -> Option<String> {
    while t.get(i)?.tok == Tok::Punct('#') {
        i = matching_close(t, i + 1) + 1;
    }
    if t.get(i)?.tok == Tok::Ident("pub".into()) {
        i += 1;
        if t.get(i)?.tok == Tok::Punct('(') {
            i = matching_close(t, i) + 1;
        }
    }
    match (&t.get(i)?.tok, &t.get(i + 1)?.tok) {
        (Tok::Ident(m), Tok::Ident(name)) if m == "mod" => Some(name.clone()),
        _ => None,
    }
}

/// The index of the bracket closing the one at `open`.
fn matching_close(t: &[Token], open: usize) -> usize {
    let (o, c) = match t[open].tok {
        Tok::Punct('{') => ('{', '}'),
        Tok::Punct('[') => ('[', ']'),
        Tok::Punct('(') => ('(', ')'),
        _ => return open,
    };
    let mut depth = 0;
    for (j, tok) in t.iter().enumerate().skip(open) {
        if tok.tok == Tok::Punct(o) {
            depth += 1;
        } else if tok.tok == Tok::Punct(c) {
            depth -= 1;
            if depth == 0 {
                return j;
            }
        }
    }
    t.len() - 1
}

// ---------------------------------------------------------------------------------------
// Paths: `a::b::{c, d::e as f, *}` expanded into every full path it names.

/// Parses the path starting at `i` (an identifier followed by `::`); returns the full paths
/// it names and the index after it.
fn parse_path(t: &[Token], i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = i;
    loop {
        match t.get(i).map(|x| &x.tok) {
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
            }
            Some(Tok::Punct('*')) => return (vec![prefix], i + 1),
            Some(Tok::Punct('{')) => {
                let close = matching_close(t, i);
                let mut paths = Vec::new();
                let mut j = i + 1;
                while j < close {
                    match &t[j].tok {
                        Tok::Ident(_) | Tok::Punct('*') => {
                            let (inner, next) = parse_path(t, j);
                            for p in inner {
                                let mut full = prefix.clone();
                                full.extend(p.into_iter().filter(|s| s != "self"));
                                paths.push(full);
                            }
                            j = next;
                        }
                        _ => j += 1,
                    }
                }
                return (paths, close + 1);
            }
            _ => return (vec![prefix], i),
        }
        if t.get(i).map(|x| &x.tok) == Some(&Tok::PathSep) {
            i += 1;
        } else {
            return (vec![prefix], i);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Modules and edges.

type Module = Vec<String>;

fn show(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

struct Crate {
    name: String,
    /// Each module's file.
    files: BTreeMap<Module, PathBuf>,
    /// from -> to -> where (file:line, first seen).
    edges: BTreeMap<Module, BTreeMap<Module, String>>,
    /// Every path naming something in this crate (resolved or not), with where it is.
    paths: Vec<(Module, Vec<String>, String)>,
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file is, from its path under the crate's source folder.
fn module_of(rel: &Path) -> Module {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    let at_root = parts.is_empty();
    if !(stem == "mod" || (at_root && (stem == "lib" || stem == "main"))) {
        parts.push(stem.to_string());
    }
    parts
}

fn read_crate(src: &str) -> Crate {
    let dir = root().join(src);
    let mut paths = Vec::new();
    rs_files(&dir, &mut paths);
    let files: BTreeMap<Module, PathBuf> = paths
        .into_iter()
        .map(|p| (module_of(p.strip_prefix(&dir).expect("under src")), p))
        .collect();
    let mut krate = Crate {
        name: src.to_string(),
        files: files.clone(),
        edges: BTreeMap::new(),
        paths: Vec::new(),
    };
    // Test-only modules: `tests.rs` files and modules declared under `#[cfg(test)]`.
    let mut test_only: BTreeSet<Module> = BTreeSet::new();
    let mut scanned = Vec::new();
    for (module, file) in &files {
        let text = fs::read_to_string(file).expect("source file");
        let (tokens, test_mods) = drop_test_items(tokenize(&strip(&text)));
        for name in test_mods {
            let mut child = module.clone();
            child.push(name);
            test_only.insert(child);
        }
        if module.last().is_some_and(|m| m == "tests") {
            test_only.insert(module.clone());
        }
        scanned.push((module.clone(), file.clone(), tokens));
    }
    for (module, file, tokens) in scanned {
        if test_only.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let rel = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        scan_module(&mut krate, &module, &rel, &tokens);
    }
    krate
}

/// Records the edges from one file's tokens.
fn scan_module(krate: &mut Crate, module: &Module, rel: &str, t: &[Token]) {
    // Inline modules (`mod der { … }`) shift what `super` and `self` mean inside them.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if let Some(&(_, close)) = inline.last() {
            if i > close {
                inline.pop();
                continue;
            }
        }
        if t[i].tok == Tok::Ident("mod".into()) {
            if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                (t.get(i + 1).map(|x| &x.tok), t.get(i + 2).map(|x| &x.tok))
            {
                inline.push((name.clone(), matching_close(t, i + 2)));
                i += 3;
                continue;
            }
        }
        let starts_path = matches!(t[i].tok, Tok::Ident(_))
            && t.get(i + 1).map(|x| &x.tok) == Some(&Tok::PathSep)
            && !(i > 0
                && (t[i - 1].tok == Tok::PathSep
                    || t[i - 1].tok == Tok::Punct('$')
                    || t[i - 1].tok == Tok::Punct('.')));
        if !starts_path {
            i += 1;
            continue;
        }
        let line = t[i].line;
        let (paths, next) = parse_path(t, i);
        let mut here = module.clone();
        here.extend(inline.iter().map(|(n, _)| n.clone()));
        for path in paths {
            if let Some(absolute) = absolute_path(krate, &here, &path) {
                let at = format!("{rel}:{line}");
                let to = resolve(krate, &absolute);
                krate.paths.push((module.clone(), absolute, at.clone()));
                if &to != module {
                    krate
                        .edges
                        .entry(module.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(at);
                }
            }
        }
        i = next;
    }
}

/// The path from the crate root, when `path` (seen in module `here`) names something in this
/// crate: `crate::`, `super::`, `self::`, or a child module of `here`.
fn absolute_path(krate: &Crate, here: &Module, path: &[String]) -> Option<Vec<String>> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => Some(here.iter().chain(&path[1..]).cloned().collect()),
        "super" => {
            let mut base = here.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            Some(base)
        }
        _ => {
            let mut child = here.clone();
            child.push(first.clone());
            krate
                .files
                .contains_key(&child)
                .then(|| here.iter().chain(path).cloned().collect())
        }
    }
}

/// The deepest module file that `absolute` runs through.
fn resolve(krate: &Crate, absolute: &[String]) -> Module {
    (0..=absolute.len())
        .rev()
        .map(|n| absolute[..n].to_vec())
        .find(|m| krate.files.contains_key(m))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Strongly connected components (Tarjan).

fn circles(edges: &BTreeMap<Module, BTreeMap<Module, String>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeMap<Module, String>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State, v: &Module) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let targets: Vec<Module> = s
            .edges
            .get(v)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for w in targets {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let low = s.low[v].min(s.low[&w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(&w) {
                let low = s.low[v].min(s.index[&w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("on the stack");
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// A readable account of a circle: every edge inside it, with where it is written.
fn describe(krate: &Crate, component: &[Module]) -> String {
    let inside: BTreeSet<&Module> = component.iter().collect();
    let mut lines = vec![format!(
        "{}: import circle among {}:",
        krate.name,
        component.iter().map(show).collect::<Vec<_>>().join(", ")
    )];
    for from in component {
        for (to, at) in krate.edges.get(from).into_iter().flatten() {
            if inside.contains(to) {
                lines.push(format!("    {} -> {}  ({at})", show(from), show(to)));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn no_import_circle_in_any_crate() {
    let mut report = Vec::new();
    for src in CRATES {
        let krate = read_crate(src);
        for component in circles(&krate.edges) {
            report.push(describe(&krate, &component));
        }
    }
    assert!(report.is_empty(), "\n{}\n", report.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// The checker checks: each of these would pass if the scan saw nothing.

fn crate_from(files: &[(&str, &str)]) -> Crate {
    let files: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|(path, _)| (module_of(Path::new(path)), PathBuf::from(path)))
        .collect();
    Crate {
        name: "sample".into(),
        files,
        edges: BTreeMap::new(),
        paths: Vec::new(),
    }
}

fn scan_sample(files: &[(&str, &str)]) -> Crate {
    let mut krate = crate_from(files);
    for (path, text) in files {
        let module = module_of(Path::new(path));
        let (tokens, _) = drop_test_items(tokenize(&strip(text)));
        scan_module(&mut krate, &module, path, &tokens);
    }
    krate
}

#[test]
fn the_scan_finds_circles_through_every_kind_of_path() {
    let krate = scan_sample(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
        ("a.rs", "use crate::b::{self, Thing};\n"),
        ("b/mod.rs", "pub mod inner;\npub use inner::Deep;\n"),
        ("b/inner.rs", "fn f() { super::super::c::g(); }\n"),
        ("c.rs", "pub fn g() -> crate::a::X { todo() }\n"),
    ]);
    let found = circles(&krate.edges);
    assert_eq!(found.len(), 1, "{found:?}");
    let names: Vec<String> = found[0].iter().map(show).collect();
    assert_eq!(names, ["a", "b", "b::inner", "c"]);
}

#[test]
fn the_scan_skips_comments_strings_tests_and_other_crates() {
    let krate = scan_sample(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        (
            "a.rs",
            "//! See [`crate::b::X`].\nuse crate::b::X;\nconst S: &str = \"crate::b\";\n",
        ),
        (
            "b.rs",
            "/* crate::a */ use other::a::Y; let c = '\"'; // crate::a\n\
             #[cfg(test)]\nmod tests { use crate::a::Z; }\n\
             #[cfg(test)]\nuse crate::a::W;\nfn f(x: &'static str) -> &'static str { x }\n",
        ),
    ]);
    assert!(circles(&krate.edges).is_empty(), "{:?}", krate.edges);
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    assert_eq!(krate.edges.get(&a).map(|m| m.contains_key(&b)), Some(true));
    assert!(!krate.edges.contains_key(&b), "{:?}", krate.edges);
}

#[test]
fn super_inside_an_inline_module_names_its_own_file() {
    let krate = scan_sample(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        ("a.rs", "mod der { use super::Y; }\nuse crate::b::X;\n"),
        ("b.rs", "use super::c;\n"),
    ]);
    let a = vec!["a".to_string()];
    let targets: Vec<String> = krate.edges[&a].keys().map(show).collect();
    assert_eq!(targets, ["b"]);
}

// ---------------------------------------------------------------------------------------
// The shared shell holds no role code, and no package depends upwards.

/// The packages a manifest depends on (any kind), by package name.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let text = fs::read_to_string(root().join(manifest)).expect("manifest");
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_deps = line.trim_matches(['[', ']']).ends_with("dependencies");
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !in_deps {
            continue;
        }
        let package = value
            .split("package")
            .nth(1)
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or(key.trim());
        deps.insert(package.to_string());
        if let Some(path) = value
            .split("path")
            .nth(1)
            .and_then(|rest| rest.split('"').nth(1))
        {
            deps.insert(format!("path:{path}"));
        }
    }
    deps
}

#[test]
fn no_package_depends_on_a_role_or_above_itself() {
    let rules: &[(&str, &[&str])] = &[
        (
            "core/Cargo.toml",
            &[
                "certrelay-shell",
                "certrelay",
                "certrelayd",
                "path:../shell",
                "path:../shell-client",
                "path:../shell-server",
            ],
        ),
        (
            "shell/Cargo.toml",
            &["path:../shell-client", "path:../shell-server"],
        ),
        (
            "shell-server/Cargo.toml",
            &["certrelay", "path:../shell-client"],
        ),
        (
            "shell-client/Cargo.toml",
            &["certrelayd", "path:../shell-server"],
        ),
    ];
    for (manifest, forbidden) in rules {
        let deps = dependencies(manifest);
        if *manifest == "core/Cargo.toml" || *manifest == "shell/Cargo.toml" {
            for role in ROLE_PACKAGES {
                assert!(
                    !deps.contains(*role),
                    "{manifest} depends on the role {role}"
                );
            }
        }
        assert!(deps.contains("certrelay-core") || *manifest == "core/Cargo.toml");
        for f in *forbidden {
            assert!(!deps.contains(*f), "{manifest} depends on {f}");
        }
    }
}

#[test]
fn the_shared_shell_names_no_role_code() {
    let shell = read_crate("shell/src");
    // Role modules: every module of the two role crates that the shell has not got itself.
    let mut role_modules = BTreeSet::new();
    for src in ["shell-client/src", "shell-server/src"] {
        for module in read_crate(src).files.into_keys() {
            if !module.is_empty() && !shell.files.contains_key(&module) {
                role_modules.insert(module[0].clone());
            }
        }
    }
    assert!(role_modules.contains("laptop") && role_modules.contains("serve"));
    for (from, path, at) in &shell.paths {
        assert!(
            !path.first().is_some_and(|m| role_modules.contains(m)),
            "{at}: {} names role code: crate::{}",
            show(from),
            path.join("::")
        );
    }
    let mut files = Vec::new();
    rs_files(&root().join("shell/src"), &mut files);
    for file in files {
        let text = fs::read_to_string(&file).expect("source file");
        for token in tokenize(&strip(&text)) {
            if let Tok::Ident(word) = &token.tok {
                assert!(
                    !ROLE_CRATE_NAMES.contains(&word.as_str()),
                    "{}:{}: names the role crate {word}",
                    file.display(),
                    token.line
                );
            }
        }
    }
}
