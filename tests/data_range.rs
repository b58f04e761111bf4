//! `--range`: the pixel range of float image data given rather than read from the values. Each range
//! maps onto [-1, 1]; a value outside the range given is an error naming the file, the value, its image,
//! the range and the span found; 8-bit data and the 2-D mixtures take no other range; the command line
//! passes it through (a hyphenated value included) for the GAN and diffusion.
use std::path::{Path, PathBuf};
mod common;
use common::{output_of, tigel_command};

use tigel::data::images::{load_images, load_images_in, write_npy_f32, PixelRange};
use tigel::data::source::Source;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tigel-data-range-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[track_caller]
fn assert_err<T: std::fmt::Debug>(r: tigel::Result<T>, needles: &[&str]) {
    let e = r.unwrap_err().to_string();
    for n in needles {
        assert!(e.contains(n), "`{e}` should mention `{n}`");
    }
}

/// 5 images of 1×2×2; image 3's last pixel is `odd`, the rest `base`.
fn write(path: &Path, base: f32, odd: f32) {
    let mut v = vec![base; 20];
    v[15] = odd;
    v[0] = 0.0;
    write_npy_f32(path, &v, &[5, 1, 2, 2]).unwrap();
}

#[test]
fn given_ranges_map_and_refuse() {
    let d = tmp("lib");
    let p = d.join("x.npy");
    // Dark 0..255 data that auto takes for 0..1: the range given decides.
    write(&p, 0.5, 1.0);
    assert_eq!(load_images(&p).unwrap().pixels[15], 1.0);
    assert_eq!(load_images_in(&p, PixelRange::Auto).unwrap(), load_images(&p).unwrap());
    let byte = load_images_in(&p, PixelRange::Byte).unwrap();
    assert_eq!(
        (byte.pixels[0], byte.pixels[1], byte.pixels[15]),
        (-1.0, 0.5 * (1.0 / 127.5) - 1.0, 1.0 * (1.0 / 127.5) - 1.0)
    );
    let unit = load_images_in(&p, PixelRange::Unit).unwrap();
    assert_eq!((unit.pixels[0], unit.pixels[1], unit.pixels[15]), (-1.0, 0.0, 1.0));
    let signed = load_images_in(&p, PixelRange::Signed).unwrap();
    assert_eq!((signed.pixels[0], signed.pixels[1], signed.pixels[15]), (0.0, 0.5, 1.0));
    // Outside the range given: the file, the value, its index and image, the range and the span.
    write(&p, 0.5, 200.0);
    assert_err(
        load_images_in(&p, PixelRange::Unit),
        &["x.npy", "200", "index 15", "image 3", "--range 0,1", "[0, 200]"],
    );
    assert_err(load_images_in(&p, PixelRange::Signed), &["x.npy", "--range -1,1"]);
    assert_eq!(load_images_in(&p, PixelRange::Byte).unwrap().pixels[15], 200.0 * (1.0 / 127.5) - 1.0);
    write(&p, -0.5, 0.5);
    assert_err(load_images_in(&p, PixelRange::Byte), &["x.npy", "-0.5", "--range 0,255"]);
    write(&p, 0.5, f32::NAN);
    assert_err(load_images_in(&p, PixelRange::Unit), &["x.npy", "NaN"]);

    // 8-bit data is 0..255 by its type: auto and 0,255 only.
    let idx = d.join("train-images-idx3-ubyte");
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 2];
    bytes.extend((0..20).map(|i| i as u8 * 10));
    std::fs::write(&idx, bytes).unwrap();
    assert_eq!(load_images_in(&idx, PixelRange::Byte).unwrap(), load_images(&idx).unwrap());
    assert_err(load_images_in(&idx, PixelRange::Unit), &["train-images-idx3-ubyte", "--range 0,1", "8-bit"]);
    assert_err(Source::open_in("ring8", PixelRange::Unit), &["ring8", "--range 0,1", "mixture"]);
    assert!(Source::open_in("ring8", PixelRange::Auto).is_ok());

    for (s, r) in [
        ("auto", PixelRange::Auto),
        ("-1,1", PixelRange::Signed),
        ("0,1", PixelRange::Unit),
        ("0, 255", PixelRange::Byte),
    ] {
        assert_eq!(s.parse::<PixelRange>(), Ok(r));
        assert_eq!(r.to_string().parse::<PixelRange>(), Ok(r));
    }
    assert!("0,2".parse::<PixelRange>().unwrap_err().contains("0,1, -1,1, 0,255 or auto"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn command_line_passes_the_range() {
    let d = tmp("cli");
    let p = d.join("x.npy");
    write(&p, 0.5, 1.5);
    let x = p.to_str().unwrap();
    for (kind, range, needle) in [("gan", "0,1", "--range 0,1"), ("diffusion", "-1,1", "--range -1,1")] {
        let (code, _, err) = output_of(
            tigel_command()
                .args(["--backend", "cpu", "train", kind, "--data", x, "--range", range, "--steps", "1"])
                .args(["--out", d.join(kind).to_str().unwrap()]),
        );
        assert!(code != 0 && !err.contains("panicked"), "{kind}: {err}");
        for n in ["x.npy", "1.5", needle] {
            assert!(err.contains(n), "{kind}: `{err}` should mention `{n}`");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}
