//! Build-time shader pipeline.
//!
//! Every `shaders/*.wgsl` is one kernel family. Snippets under `shaders/common/` are shared code that a
//! family pulls in with a line `//#include "common/NAME.wgsl"`; they are composed here, never copied by hand.
//! A multi-tensor kernel is written once in a `//#multi` block and expanded here into one entry point per
//! slot count, its per-slot bindings and `switch` cases generated (build/expand.rs).
//! Each composed family is parsed and validated with naga, so a broken shader fails `cargo build` with the
//! file and line of the original source (not of the composed text). The build then writes the composed
//! sources and a registry (entry points, workgroup sizes, bindings with their access, workgroup memory and
//! the size of every struct as naga lays it out) to `$OUT_DIR`, which `src/kernels/mod.rs` includes.
//! For every struct a family binds as a uniform it also writes the `#[repr(C)]` Rust twin
//! (`$OUT_DIR/params/<family>.rs`, included by `src/kernels/<family>.rs`): fields in offset order with
//! naga's types and explicit padding wherever naga's layout leaves a gap, so the Rust and WGSL layouts
//! cannot drift.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "build/expand.rs"]
mod expand;

/// One composed shader: its text and, for each line, the original file and line it came from.
struct Composed {
    text: String,
    origin: Vec<(PathBuf, usize)>,
    /// The `//#enable` directives met (for example `subgroups`).
    enables: Vec<String>,
}

fn compose(path: &Path, root: &Path, seen: &mut HashSet<PathBuf>, sg: bool, out: &mut Composed) {
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{}: cannot read: {e}", path.display())));
    println!("cargo:rerun-if-changed={}", path.display());
    for (i, line) in src.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("//#include") {
            let name = rest.trim().trim_matches('"');
            let mut inc = root.join(name);
            if !inc.is_file() {
                fail(&format!("{}:{}: included file `{name}` not found under shaders/", path.display(), i + 1));
            }
            // A subgroup variant takes the `_sg` form of a snippet where one exists.
            let sg_form = inc.with_file_name(format!("{}_sg.wgsl", inc.file_stem().unwrap().to_string_lossy()));
            if sg && sg_form.is_file() {
                inc = sg_form;
            }
            // Include-once: a snippet used by two snippets of one family is composed a single time.
            if seen.insert(inc.clone()) {
                compose(&inc, root, seen, sg, out);
            }
            continue;
        }
        if let Some(rest) = t.strip_prefix("//#enable") {
            // A WGSL `enable` directive this code needs on compilers that require one (Chromium's Tint
            // for subgroups); naga rejects it, so it lives in the registry, not in the native source.
            let ext = rest.trim().to_string();
            if !out.enables.contains(&ext) {
                out.enables.push(ext);
            }
            continue;
        }
        if t.starts_with("//#variant") {
            continue;
        }
        out.text.push_str(line);
        out.text.push('\n');
        out.origin.push((path.to_path_buf(), i + 1));
    }
}

/// `c` with its `//#multi` blocks expanded (build/expand.rs), origins kept line for line; returns what
/// each instance binds.
fn expand_multi(c: &mut Composed) -> Vec<expand::Multi> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let lines: Vec<(String, (PathBuf, usize))> =
        c.text.lines().map(str::to_string).zip(c.origin.iter().cloned()).collect();
    let at = |(p, l): &(PathBuf, usize)| format!("{}:{l}", p.strip_prefix(&manifest).unwrap_or(p).display());
    let (out, multis) = expand::expand(&lines, at).unwrap_or_else(|e| fail(&e));
    c.text = out.iter().map(|(l, _)| format!("{l}\n")).collect();
    c.origin = out.into_iter().map(|(_, o)| o).collect();
    multis
}

/// One `//#variant NAME [subgroups] [grid=X,Y,Z] [entries=A,B] CONST=VALUE ...` line of a family: the
/// family composed again with those constants (and, with `subgroups`, the `_sg` forms of its snippets).
struct Variant {
    name: String,
    subgroups: bool,
    /// The base grid is divided (rounding up) by these per axis: a variant whose tiles are k times the
    /// base's along an axis needs k times fewer workgroups there.
    grid_div: [u32; 3],
    /// Entry points the variant is registered for (all when empty).
    entries: Vec<String>,
    consts: Vec<(String, String)>,
}

fn variants(path: &Path) -> Vec<Variant> {
    let src = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<Variant> = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix("//#variant") else { continue };
        let at = format!("{}:{}", path.display(), i + 1);
        let mut words = rest.split_whitespace();
        let name = words.next().unwrap_or_else(|| fail(&format!("{at}: //#variant needs a name")));
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || out.iter().any(|v| v.name == name) {
            fail(&format!("{at}: variant name `{name}` must be unique and alphanumeric"));
        }
        let mut v = Variant {
            name: name.to_string(),
            subgroups: false,
            grid_div: [1, 1, 1],
            entries: Vec::new(),
            consts: Vec::new(),
        };
        for w in words {
            match w.split_once('=') {
                None if w == "subgroups" => v.subgroups = true,
                Some(("grid", g)) => {
                    let d: Vec<u32> = g.split(',').filter_map(|x| x.parse().ok()).filter(|&x| x >= 1).collect();
                    if d.len() != 3 {
                        fail(&format!("{at}: grid={g} must be three divisors >= 1, e.g. grid=2,1,1"));
                    }
                    v.grid_div = [d[0], d[1], d[2]];
                }
                Some(("entries", e)) => v.entries = e.split(',').map(str::to_string).collect(),
                Some((k, val)) => v.consts.push((k.to_string(), val.to_string())),
                None => fail(&format!("{at}: `{w}` is not `subgroups`, `grid=..`, `entries=..` or CONST=VALUE")),
            }
        }
        out.push(v);
    }
    out
}

/// Replaces the value of every top-level `const NAME: T = VALUE;` named in `consts` (the composed text
/// keeps its line count, so origins still hold).
fn substitute(family: &str, variant: &str, text: &str, consts: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hit = vec![false; consts.len()];
    for line in text.lines() {
        let mut l = line.to_string();
        if let Some(rest) = line.strip_prefix("const ") {
            for (j, (k, v)) in consts.iter().enumerate() {
                if rest.strip_prefix(k.as_str()).is_some_and(|r| r.trim_start().starts_with(':')) {
                    let (Some(eq), Some(semi)) = (line.find('='), line.find(';')) else { continue };
                    l = format!("{}= {v}{}", &line[..eq], &line[semi..]);
                    hit[j] = true;
                }
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    for (j, (k, _)) in consts.iter().enumerate() {
        if !hit[j] {
            fail(&format!("shaders/{family}.wgsl: variant `{variant}` sets `{k}`, which is no top-level const"));
        }
    }
    out
}

fn fail(msg: &str) -> ! {
    // Cargo prints a failing build script's stderr; exit rather than panic so the message appears once.
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// An error and its chain of causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Maps a byte offset in the composed text to "file:line: " of the original source.
fn origin_of(c: &Composed, offset: usize) -> String {
    let line = c.text[..offset.min(c.text.len())].matches('\n').count();
    match c.origin.get(line) {
        Some((p, l)) => {
            let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
            format!("{}:{}", p.strip_prefix(&manifest).unwrap_or(p).display(), l)
        }
        None => "<end of shader>".to_string(),
    }
}

/// `git <args>` run in `dir`, trimmed stdout, or None when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).current_dir(dir).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Sets TIGEL_GIT_COMMIT (short hash of HEAD, "unknown" outside a git checkout) for benchmark reports,
/// and reruns when HEAD or the branch it names moves. Only files that exist are watched: cargo would
/// rerun this script on every build for a missing one. In a git worktree `.git` is a file, so the
/// paths come from `git rev-parse --git-path`.
fn git_commit(manifest: &Path) {
    let commit = git(manifest, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TIGEL_GIT_COMMIT={commit}");
    if !manifest.join(".git").exists() {
        return;
    }
    let mut watch = vec![manifest.join(".git/HEAD")];
    let rel = |p: String| manifest.join(p);
    if let Some(head) = git(manifest, &["rev-parse", "--git-path", "HEAD"]) {
        watch.push(rel(head));
    }
    if let Some(branch) = git(manifest, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some(r) = git(manifest, &["rev-parse", "--git-path", &branch]) {
            watch.push(rel(r));
        }
    }
    if let Some(packed) = git(manifest, &["rev-parse", "--git-path", "packed-refs"]) {
        watch.push(rel(packed));
    }
    watch.dedup();
    for p in watch.iter().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

/// Writes `$OUT_DIR/corpus.txt`, the text the language model trains on when no file is given: tigel's
/// own documentation, shaders and sources (README, docs/*.md, shaders/**/*.wgsl, src/**/*.rs, in sorted
/// path order, each behind a `==> path <==` line), so the main job needs no download.
fn embedded_corpus(manifest: &Path, out_dir: &Path) {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, ext, out);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    let mut files = vec![manifest.join("README.md")];
    for (dir, ext) in [("docs", "md"), ("shaders", "wgsl"), ("src", "rs")] {
        let mut found = Vec::new();
        walk(&manifest.join(dir), ext, &mut found);
        found.sort();
        files.extend(found);
        println!("cargo:rerun-if-changed={dir}");
    }
    println!("cargo:rerun-if-changed=README.md");
    let mut text = String::new();
    for f in files {
        let Ok(body) = std::fs::read_to_string(&f) else { continue };
        let rel = f.strip_prefix(manifest).unwrap_or(&f);
        text.push_str(&format!("==> {} <==\n{}\n", rel.display(), body));
    }
    std::fs::write(out_dir.join("corpus.txt"), text).unwrap_or_else(|e| fail(&format!("corpus.txt: {e}")));
}

/// The trailing `// comment` of each field of `struct name { ... }` in the WGSL text.
fn field_comments(text: &str, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(start) = text.find(&format!("struct {name} {{")) else { return out };
    for line in text[start..].lines().skip(1) {
        let line = line.trim();
        if line.starts_with('}') {
            break;
        }
        if let (Some((field, _)), Some((_, comment))) = (line.split_once(':'), line.split_once("//")) {
            out.push((field.trim().to_string(), comment.trim().to_string()));
        }
    }
    out
}

/// The Rust type of a uniform struct member: scalars as themselves, vectors and arrays of scalars or
/// vectors as flat arrays (their stride must equal their element size, so nothing hides between
/// elements), structs by name.
fn rust_type(
    family: &str,
    module: &naga::Module,
    layouter: &naga::proc::Layouter,
    ty: naga::Handle<naga::Type>,
) -> String {
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (naga::ScalarKind::Uint, 4) => "u32",
        (naga::ScalarKind::Sint, 4) => "i32",
        (naga::ScalarKind::Float, 4) => "f32",
        other => fail(&format!("shaders/{family}.wgsl: uniform member of type {other:?} has no Rust twin")),
    };
    let t = &module.types[ty];
    match &t.inner {
        naga::TypeInner::Scalar(s) => scalar(*s).to_string(),
        naga::TypeInner::Vector { size, scalar: s } => format!("[{}; {}]", scalar(*s), *size as u32),
        naga::TypeInner::Array { base, size: naga::ArraySize::Constant(n), stride } => {
            let (elem, lanes) = match &module.types[*base].inner {
                naga::TypeInner::Scalar(s) => (scalar(*s), 1),
                naga::TypeInner::Vector { size, scalar: s } => (scalar(*s), *size as u32),
                other => fail(&format!("shaders/{family}.wgsl: uniform array of {other:?} has no Rust twin")),
            };
            if *stride != layouter[*base].size || *stride != 4 * lanes {
                fail(&format!(
                    "shaders/{family}.wgsl: uniform array with stride {stride} has padding between elements"
                ));
            }
            format!("[{elem}; {}]", n.get() * lanes)
        }
        naga::TypeInner::Struct { .. } => {
            t.name.clone().unwrap_or_else(|| fail(&format!("shaders/{family}.wgsl: unnamed struct")))
        }
        other => fail(&format!("shaders/{family}.wgsl: uniform member of type {other:?} has no Rust twin")),
    }
}

/// The `#[repr(C)]` Rust twin of every struct that `family` binds as a uniform (and of the structs those
/// contain), in naga's type order (a contained struct comes before its container).
fn params_structs(family: &str, module: &naga::Module, layouter: &naga::proc::Layouter, text: &str) -> String {
    let mut wanted = HashSet::new();
    let mut stack: Vec<_> = module
        .global_variables
        .iter()
        .filter(|(_, v)| v.space == naga::AddressSpace::Uniform)
        .map(|(_, v)| v.ty)
        .collect();
    while let Some(h) = stack.pop() {
        if let naga::TypeInner::Struct { members, .. } = &module.types[h].inner {
            if wanted.insert(h) {
                stack.extend(members.iter().map(|m| m.ty));
            }
        }
    }
    let mut out = format!("// Generated by build.rs from shaders/{family}.wgsl. Do not edit.\n");
    for (h, t) in module.types.iter() {
        let (Some(name), naga::TypeInner::Struct { members, span }) = (&t.name, &t.inner) else { continue };
        if !wanted.contains(&h) {
            continue;
        }
        let comments = field_comments(text, name);
        writeln!(
            out,
            "\n/// The uniform struct `{name}` of shaders/{family}.wgsl, field for field (generated by build.rs)."
        )
        .unwrap();
        out.push_str("#[repr(C)]\n#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]\n");
        writeln!(out, "pub struct {name} {{").unwrap();
        let mut at = 0u32;
        let gap = |out: &mut String, at: u32, to: u32| {
            if to > at {
                if !(to - at).is_multiple_of(4) {
                    fail(&format!("shaders/{family}.wgsl: `{name}` has a gap of {} bytes", to - at));
                }
                writeln!(
                    out,
                    "    /// Padding where naga's layout leaves a gap.\n    pub _gap{at}: [u32; {}],",
                    (to - at) / 4
                )
                .unwrap();
            }
        };
        for m in members {
            gap(&mut out, at, m.offset);
            let field =
                m.name.clone().unwrap_or_else(|| fail(&format!("shaders/{family}.wgsl: unnamed member of `{name}`")));
            let doc = match comments.iter().find(|c| c.0 == field) {
                Some((_, c)) => c.clone(),
                None if field.starts_with("_pad") => "Padding to the WGSL layout.".to_string(),
                None => format!("`{field}` of the WGSL struct."),
            };
            writeln!(out, "    /// {doc}").unwrap();
            writeln!(out, "    pub {field}: {},", rust_type(family, module, layouter, m.ty)).unwrap();
            at = m.offset + layouter[m.ty].size;
        }
        gap(&mut out, at, *span);
        out.push_str("}\n");
        writeln!(out, "const _: () = assert!(std::mem::size_of::<{name}>() == {span});").unwrap();
    }
    out
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    git_commit(&manifest);
    embedded_corpus(&manifest, &PathBuf::from(std::env::var("OUT_DIR").unwrap()));
    let root = manifest.join("shaders");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::create_dir_all(out_dir.join("shaders")).unwrap();
    std::fs::create_dir_all(out_dir.join("params")).unwrap();
    println!("cargo:rerun-if-changed=shaders");

    let mut families: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", root.display())))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    families.sort();
    // Snippets are validated as part of the families that include them; track them for rebuilds.
    if let Ok(rd) = std::fs::read_dir(root.join("common")) {
        for e in rd.flatten() {
            println!("cargo:rerun-if-changed={}", e.path().display());
        }
    }

    let mut reg = String::new();
    reg.push_str("// Generated by build.rs from shaders/*.wgsl. Do not edit.\n");
    reg.push_str("/// Every shader family build.rs validated, with its entry points and structs, then every\n/// variant of a family (`family@variant`).\npub static SHADERS: &[ShaderInfo] = &[\n");
    let mut kernels = String::new();
    for path in &families {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let mut c = Composed { text: String::new(), origin: Vec::new(), enables: Vec::new() };
        compose(path, &root, &mut HashSet::new(), false, &mut c);
        let multis = expand_multi(&mut c);
        let params = emit(&mut reg, &mut kernels, &name, &name, None, &c, &out_dir);
        let twins = format!("{params}{}", expand::slot_consts(&name, &multis));
        std::fs::write(out_dir.join("params").join(format!("{name}.rs")), twins).unwrap();
        for v in variants(path) {
            let mut vc = Composed { text: String::new(), origin: Vec::new(), enables: Vec::new() };
            compose(path, &root, &mut HashSet::new(), v.subgroups, &mut vc);
            vc.text = substitute(&name, &v.name, &vc.text, &v.consts);
            expand_multi(&mut vc);
            if v.subgroups && !vc.enables.iter().any(|e| e == "subgroups") {
                fail(&format!("shaders/{name}.wgsl: variant `{}` asks for subgroups but no snippet it includes has an `_sg` form with `//#enable subgroups`", v.name));
            }
            let vname = format!("{name}@{}", v.name);
            if emit(&mut reg, &mut kernels, &vname, &name, Some(&v), &vc, &out_dir) != params {
                fail(&format!(
                    "shaders/{name}.wgsl: variant `{}` changes a uniform struct; variants share the family's params",
                    v.name
                ));
            }
        }
    }
    reg.push_str("];\n");
    reg.push_str("/// One `Kernel` per entry point of every variant (`family@variant::entry`), so each is `'static`.\npub static VARIANT_KERNELS: &[Kernel] = &[\n");
    reg.push_str(&kernels);
    reg.push_str("];\n");
    std::fs::write(out_dir.join("registry_data.rs"), reg).unwrap();
}

/// Validates one composed module (a family or one of its variants), writes its source to
/// `$OUT_DIR/shaders/<name>.wgsl` and its registry entry to `reg` (and, for a variant, its kernels to
/// `kernels`); returns the Rust twins of its uniform structs.
fn emit(
    reg: &mut String,
    kernels: &mut String,
    name: &str,
    family: &str,
    variant: Option<&Variant>,
    c: &Composed,
    out_dir: &Path,
) -> String {
    // Subgroup operations validate only where the module declares `//#enable subgroups`, so the
    // directive the browser's compiler needs can never be missing from the registry.
    // pack2x16float / unpack2x16float (f16 storage in f32 words) need SHADER_FLOAT16_IN_FLOAT32, a
    // downlevel flag every WebGPU-conformant adapter has (no `enable f16;`, no SHADER_F16).
    let base = naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let caps = if c.enables.iter().any(|e| e == "subgroups") {
        naga::valid::Capabilities::SUBGROUP | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
    } else {
        base
    };
    let module = match naga::front::wgsl::parse_str(&c.text) {
        Ok(m) => m,
        Err(e) => {
            let at = e.location(&c.text).map(|l| origin_of(c, l.offset as usize)).unwrap_or_default();
            fail(&format!(
                "{at}: {}\n(the report below numbers lines of the composed shader)\n{}",
                e.message(),
                e.emit_to_string(&c.text)
            ));
        }
    };
    let info = match naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps).validate(&module) {
        Ok(i) => i,
        Err(e) => {
            let at = e.location(&c.text).map(|l| origin_of(c, l.offset as usize)).unwrap_or_default();
            fail(&format!(
                "{at}: {}\n(the report below numbers lines of the composed shader)\n{}",
                chain(e.as_inner()),
                e.emit_to_string(&c.text)
            ));
        }
    };
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();

    let params = params_structs(family, &module, &layouter, &c.text);

    let composed_path = out_dir.join("shaders").join(format!("{name}.wgsl"));
    std::fs::write(&composed_path, &c.text).unwrap();

    writeln!(reg, "    ShaderInfo {{").unwrap();
    writeln!(reg, "        name: {name:?},").unwrap();
    writeln!(reg, "        family: {family:?},").unwrap();
    let (vn, sg, div, consts) = match variant {
        Some(v) => (v.name.as_str(), v.subgroups, v.grid_div, v.consts.clone()),
        None => ("", false, [1, 1, 1], Vec::new()),
    };
    writeln!(reg, "        variant: {vn:?},").unwrap();
    writeln!(reg, "        subgroups: {sg},").unwrap();
    writeln!(reg, "        grid_div: {div:?},").unwrap();
    writeln!(reg, "        consts: &{consts:?},").unwrap();
    writeln!(reg, "        enables: &{:?},", c.enables).unwrap();
    writeln!(reg, "        source: include_str!(concat!(env!(\"OUT_DIR\"), \"/shaders/{name}.wgsl\")),").unwrap();
    writeln!(reg, "        entries: &[").unwrap();
    for (i, ep) in module.entry_points.iter().enumerate() {
        if ep.stage != naga::ShaderStage::Compute {
            fail(&format!("shaders/{name}.wgsl: entry point `{}` is not a compute shader", ep.name));
        }
        let fi = info.get_entry_point(i);
        if let Some(v) = variant {
            if v.entries.is_empty() || v.entries.iter().any(|e| e == &ep.name) {
                writeln!(kernels, "    Kernel {{ shader: {name:?}, entry: {:?} }},", ep.name).unwrap();
            }
        }
        let mut bindings = Vec::new();
        let mut wg_mem = 0u32;
        for (h, var) in module.global_variables.iter() {
            let usage = fi[h];
            if usage.is_empty() {
                continue;
            }
            if var.space == naga::AddressSpace::WorkGroup {
                wg_mem += layouter[var.ty].size;
                continue;
            }
            let Some(rb) = &var.binding else { continue };
            if rb.group != 0 {
                fail(&format!(
                    "shaders/{name}.wgsl: `{}` uses group {}; tigel kernels bind everything in group 0",
                    var.name.as_deref().unwrap_or("?"),
                    rb.group
                ));
            }
            let kind = match var.space {
                naga::AddressSpace::Uniform => "Uniform",
                naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => {
                    "StorageReadWrite"
                }
                naga::AddressSpace::Storage { .. } => "StorageRead",
                other => fail(&format!("shaders/{name}.wgsl: unsupported binding space {other:?}")),
            };
            bindings.push((rb.binding, var.name.clone().unwrap_or_default(), kind, layouter[var.ty].size));
        }
        bindings.sort_by_key(|b| b.0);
        for (i, b) in bindings.iter().enumerate() {
            if b.0 as usize != i {
                fail(&format!(
                    "shaders/{name}.wgsl: entry point `{}` binds {:?}; bindings must be 0..N with no gaps",
                    ep.name,
                    bindings.iter().map(|b| b.0).collect::<Vec<_>>()
                ));
            }
        }
        writeln!(
            reg,
            "            EntryInfo {{ name: {:?}, workgroup_size: {:?}, workgroup_memory: {wg_mem}, bindings: &[",
            ep.name, ep.workgroup_size
        )
        .unwrap();
        for (binding, vname, kind, size) in &bindings {
            writeln!(reg, "                BindingInfo {{ binding: {binding}, name: {vname:?}, kind: BindingKind::{kind}, size: {size} }},").unwrap();
        }
        writeln!(reg, "            ] }},").unwrap();
    }
    writeln!(reg, "        ],").unwrap();
    writeln!(reg, "        structs: &[").unwrap();
    for (h, ty) in module.types.iter() {
        if let (Some(tn), naga::TypeInner::Struct { .. }) = (&ty.name, &ty.inner) {
            writeln!(reg, "            ({tn:?}, {}),", layouter[h].size).unwrap();
        }
    }
    writeln!(reg, "        ],").unwrap();
    writeln!(reg, "    }},").unwrap();
    params
}
