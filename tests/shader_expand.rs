//! build.rs's `//#multi` directive (build/expand.rs): a small template expanded for two slot counts, and
//! the errors on bad input, each naming the shader file and line.

#[path = "../build/expand.rs"]
mod expand;

/// `text` as lines of shaders/t.wgsl with their line numbers, expanded.
fn run(text: &str) -> Result<Vec<(String, usize)>, String> {
    let lines: Vec<(String, usize)> = text.lines().map(str::to_string).zip(1..).collect();
    expand::expand(&lines, |l| format!("shaders/t.wgsl:{l}")).map(|(out, _)| out)
}

const TEMPLATE: &str = "\
const WIDE: u32 = 3u;
//#multi k2:a:2 k3:b:WIDE
@group(0) @binding(#) var<uniform> {p}p: P;
//#slot
@group(0) @binding(#) var<storage, read_write> {p}_x{k}: array<f32>;
//#end
@group(0) @binding(#) var<storage, read> {p}_step: array<u32>;
fn {e}() {
    let k = slot_of({p}p.start, 0u, {N});
    switch k {
//#slot
        {case}: { {p}_x{k}[0] = 1.0; }
//#end
    }
}
//#end
fn after() {}";

#[test]
fn expands_each_instance_with_its_slots_bindings_and_cases() {
    let out = run(TEMPLATE).unwrap();
    let text: Vec<&str> = out.iter().map(|(l, _)| l.as_str()).collect();
    let want = "\
const WIDE: u32 = 3u;
@group(0) @binding(0) var<uniform> ap: P;
@group(0) @binding(1) var<storage, read_write> a_x0: array<f32>;
@group(0) @binding(2) var<storage, read_write> a_x1: array<f32>;
@group(0) @binding(3) var<storage, read> a_step: array<u32>;
fn k2() {
    let k = slot_of(ap.start, 0u, 2);
    switch k {
        case 0u: { a_x0[0] = 1.0; }
        default: { a_x1[0] = 1.0; }
    }
}
@group(0) @binding(0) var<uniform> bp: P;
@group(0) @binding(1) var<storage, read_write> b_x0: array<f32>;
@group(0) @binding(2) var<storage, read_write> b_x1: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_x2: array<f32>;
@group(0) @binding(4) var<storage, read> b_step: array<u32>;
fn k3() {
    let k = slot_of(bp.start, 0u, WIDE);
    switch k {
        case 0u: { b_x0[0] = 1.0; }
        case 1u: { b_x1[0] = 1.0; }
        default: { b_x2[0] = 1.0; }
    }
}
fn after() {}";
    assert_eq!(text.join("\n"), want);
    // Every generated line keeps the line of its template, so naga's errors point at the source.
    let origin = |s: &str| out.iter().find(|(l, _)| l.contains(s)).unwrap().1;
    assert_eq!(origin("b_x2: array"), 5);
    assert_eq!(origin("default: { b_x2"), 12);
    assert_eq!(origin("fn after"), 17);
    // What each instance binds (build.rs writes the Rust twin of a named count from it).
    let lines: Vec<(String, usize)> = TEMPLATE.lines().map(str::to_string).zip(1..).collect();
    let (_, multis) = expand::expand(&lines, |l| l.to_string()).unwrap();
    let seen: Vec<_> =
        multis.iter().map(|m| (m.entry.as_str(), m.count_name.as_str(), m.count, m.per_slot, m.bindings)).collect();
    assert_eq!(seen, [("k2", "2", 2, 1, 4), ("k3", "WIDE", 3, 1, 5)]);
}

#[test]
fn text_without_the_directive_passes_through() {
    let text = "fn f() {\n    let x = 1u; // {k} {case} @binding(#) are plain text here\n}";
    let out = run(text).unwrap();
    assert_eq!(out.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join("\n"), text);
}

#[test]
fn bad_input_is_an_error_naming_file_and_line() {
    let cases = [
        ("x\n//#multi k2:a\n//#end", "shaders/t.wgsl:2: //#multi instance `k2:a` is not ENTRY:PREFIX:COUNT"),
        ("//#multi k2:a:\n//#end", "shaders/t.wgsl:1: //#multi instance `k2:a:` is not ENTRY:PREFIX:COUNT"),
        ("//#multi\n//#end", "shaders/t.wgsl:1: //#multi needs at least one ENTRY:PREFIX:COUNT"),
        (
            "//#multi k:a:NOPE\n//#end",
            "shaders/t.wgsl:1: //#multi count `NOPE` is neither a number nor a top-level const",
        ),
        ("//#multi k:a:0\n//#end", "shaders/t.wgsl:1: //#multi count `0` is 0"),
        ("x\ny\n//#multi k:a:2\nfn {e}() {}", "shaders/t.wgsl:3: //#multi without its //#end"),
        ("//#multi k:a:2\n//#slot\nx{k}\n//#end", "shaders/t.wgsl:1: //#multi without its //#end"),
        ("//#multi k:a:2\nlet k = {k};\n//#end", "shaders/t.wgsl:2: `{k}` or `{case}` outside a //#slot block"),
        ("x\n//#slot\n//#end", "shaders/t.wgsl:2: `//#slot` outside a //#multi block"),
        ("//#end", "shaders/t.wgsl:1: `//#end` outside a //#multi block"),
        (
            "//#multi k:a:2\n//#slot\n//#multi j:b:2\n//#end\n//#end\n//#end",
            "shaders/t.wgsl:3: a //#slot block holds no directives",
        ),
        ("//#multi k:a:2\n//#multi j:b:2\n//#end\n//#end", "shaders/t.wgsl:2: //#multi inside a //#multi block"),
    ];
    for (text, want) in cases {
        assert_eq!(run(text).unwrap_err(), want, "for {text:?}");
    }
}
