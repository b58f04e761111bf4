//! The `//#multi` directive of the shader pipeline: a multi-tensor kernel written once and expanded into
//! one entry point per slot count, with one set of bindings and one `switch` case per slot generated.
//!
//! ```wgsl
//! //#multi adam_multi:am:SLOTS adam_multi_wide:aw:ADAM_SLOTS_WIDE
//! @group(0) @binding(#) var<uniform> {p}p: AdamMultiParams;
//! //#slot
//! @group(0) @binding(#) var<storage, read_write> {p}_p{k}: array<f32>;
//! //#end
//! @group(0) @binding(#) var<storage, read> {p}_step: array<u32>;
//! fn {e}(...) { ... slot_of({p}p.start, i, {N}) ... switch k {
//! //#slot
//!         {case}: { x = {p}_p{k}[j]; }
//! //#end
//! } }
//! //#end
//! ```
//!
//! Each `ENTRY:PREFIX:COUNT` instance writes the block once with `{e}` = ENTRY, `{p}` = PREFIX and `{N}` =
//! COUNT as written (a top-level `const` of the composed module or a number); a `//#slot` ... `//#end`
//! block inside is written COUNT times with `{k}` = 0, 1, ... and `{case}` = `case ku` (`default` for the
//! last slot, so a `switch` over the slot index has the default WGSL requires). `@binding(#)` takes the
//! next binding of the instance, counting from 0, so every entry point's bindings are 0..N in
//! declaration order. Shared by build.rs and tests/shader_expand.rs (no dependencies).

use std::fmt::Write as _;

/// One instance of a `//#multi` block.
struct Instance {
    entry: String,
    prefix: String,
    /// COUNT as written (`{N}`).
    count_name: String,
    count: usize,
}

/// What one expanded `//#multi` instance binds (build.rs writes the Rust twin of its count from it).
pub struct Multi {
    /// The entry point.
    pub entry: String,
    /// Its slot count as written: a top-level const's name, or a number.
    pub count_name: String,
    /// The slot count.
    pub count: usize,
    /// Bindings of one slot.
    pub per_slot: usize,
    /// Bindings in all, the uniform included.
    pub bindings: usize,
}

/// The value of `const NAME: u32 = V;` (or `= Vu;`) among `lines`, if there is one.
fn const_value<O>(lines: &[(String, O)], name: &str) -> Option<usize> {
    lines.iter().find_map(|(l, _)| {
        let rest = l.strip_prefix("const ")?.strip_prefix(name)?.trim_start().strip_prefix(':')?;
        let (_, v) = rest.split_once('=')?;
        v.trim().trim_end_matches(';').trim().trim_end_matches('u').parse().ok()
    })
}

/// The index of the `//#end` closing the block opened at `open`, skipping nested `//#slot` blocks.
fn end_of<O>(lines: &[(String, O)], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (i, (l, _)) in lines.iter().enumerate().skip(open + 1) {
        let t = l.trim();
        if t.starts_with("//#slot") || t.starts_with("//#multi") {
            depth += 1;
        } else if t.starts_with("//#end") {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

/// The lines (text and origin) and instances of `lines` with every `//#multi` block expanded.
pub type Expanded<O> = (Vec<(String, O)>, Vec<Multi>);

/// `lines` (text and origin) with every `//#multi` block expanded, and what each instance binds; `at` names
/// an origin (`file:line`) for error messages. Lines outside such blocks pass through unchanged.
pub fn expand<O: Clone>(lines: &[(String, O)], at: impl Fn(&O) -> String) -> Result<Expanded<O>, String> {
    let mut out = Vec::with_capacity(lines.len());
    let mut multis = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (line, origin) = &lines[i];
        let t = line.trim();
        if t.starts_with("//#slot") || t.starts_with("//#end") {
            return Err(format!("{}: `{t}` outside a //#multi block", at(origin)));
        }
        let Some(rest) = t.strip_prefix("//#multi") else {
            out.push(lines[i].clone());
            i += 1;
            continue;
        };
        let mut instances = Vec::new();
        for w in rest.split_whitespace() {
            let parts: Vec<&str> = w.split(':').collect();
            let [entry, prefix, count_name] = parts[..] else {
                return Err(format!("{}: //#multi instance `{w}` is not ENTRY:PREFIX:COUNT", at(origin)));
            };
            let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident(entry) || !ident(prefix) || count_name.is_empty() {
                return Err(format!("{}: //#multi instance `{w}` is not ENTRY:PREFIX:COUNT", at(origin)));
            }
            let count = count_name.parse().ok().or_else(|| const_value(lines, count_name)).ok_or_else(|| {
                format!("{}: //#multi count `{count_name}` is neither a number nor a top-level const", at(origin))
            })?;
            if count == 0 {
                return Err(format!("{}: //#multi count `{count_name}` is 0", at(origin)));
            }
            instances.push(Instance {
                entry: entry.into(),
                prefix: prefix.into(),
                count_name: count_name.into(),
                count,
            });
        }
        if instances.is_empty() {
            return Err(format!("{}: //#multi needs at least one ENTRY:PREFIX:COUNT", at(origin)));
        }
        let end = end_of(lines, i).ok_or_else(|| format!("{}: //#multi without its //#end", at(origin)))?;
        let body = &lines[i + 1..end];
        for inst in &instances {
            let mut binding = 0;
            let mut per_slot = 0;
            let mut j = 0;
            while j < body.len() {
                let (l, o) = &body[j];
                let bt = l.trim();
                if bt.starts_with("//#multi") {
                    return Err(format!("{}: //#multi inside a //#multi block", at(o)));
                }
                if !bt.starts_with("//#slot") {
                    out.push((fill(l, o, inst, None, &mut binding, &at)?, o.clone()));
                    j += 1;
                    continue;
                }
                let close = end_of(body, j).ok_or_else(|| format!("{}: //#slot without its //#end", at(o)))?;
                if let Some((_, n)) = body[j + 1..close].iter().find(|(l, _)| l.trim().starts_with("//#")) {
                    return Err(format!("{}: a //#slot block holds no directives", at(n)));
                }
                for k in 0..inst.count {
                    let before = binding;
                    for (l, o) in &body[j + 1..close] {
                        out.push((fill(l, o, inst, Some(k), &mut binding, &at)?, o.clone()));
                    }
                    if k == 0 {
                        per_slot += binding - before;
                    }
                }
                j = close + 1;
            }
            multis.push(Multi {
                entry: inst.entry.clone(),
                count_name: inst.count_name.clone(),
                count: inst.count,
                per_slot,
                bindings: binding,
            });
        }
        i = end + 1;
    }
    Ok((out, multis))
}

/// One template line of `inst`, in slot `k` where inside a `//#slot` block.
fn fill<O>(
    line: &str,
    origin: &O,
    inst: &Instance,
    k: Option<usize>,
    binding: &mut usize,
    at: &impl Fn(&O) -> String,
) -> Result<String, String> {
    let mut l = line.replace("{e}", &inst.entry).replace("{p}", &inst.prefix).replace("{N}", &inst.count_name);
    match k {
        Some(k) => {
            let case = if k + 1 == inst.count { "default".to_string() } else { format!("case {k}u") };
            l = l.replace("{k}", &k.to_string()).replace("{case}", &case);
        }
        None if l.contains("{k}") || l.contains("{case}") => {
            return Err(format!("{}: `{{k}}` or `{{case}}` outside a //#slot block", at(origin)));
        }
        None => {}
    }
    while let Some(pos) = l.find("@binding(#)") {
        l.replace_range(pos..pos + "@binding(#)".len(), &format!("@binding({binding})"));
        *binding += 1;
    }
    Ok(l)
}

/// The Rust twin of every slot count a `//#multi` instance of `family` names by a WGSL const (`pub const
/// NAME: usize`), so the host lays out as many slots as the kernel has.
pub fn slot_consts(family: &str, multis: &[Multi]) -> String {
    let mut out = String::new();
    let mut done: Vec<&str> = Vec::new();
    for m in multis.iter().filter(|m| m.count_name.parse::<usize>().is_err()) {
        if done.contains(&m.count_name.as_str()) {
            continue;
        }
        done.push(&m.count_name);
        let entries: Vec<String> = multis
            .iter()
            .filter(|o| o.count_name == m.count_name)
            .map(|o| {
                let storage = o.bindings - 1;
                format!(
                    "`{}` (storage buffers: {} a tensor and {} more, {storage} in all)",
                    o.entry,
                    o.per_slot,
                    storage - o.per_slot * o.count
                )
            })
            .collect();
        writeln!(
            out,
            "\n/// Tensors one dispatch of {} serves: `{}` of shaders/{family}.wgsl, generated by build.rs.\n\
             pub const {}: usize = {};",
            entries.join(", "),
            m.count_name,
            m.count_name,
            m.count
        )
        .unwrap();
    }
    out
}
